/* hf_config.c - config.json <-> ap_model_config, with the defaults of
 * transformers' LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config and
 * GemmaConfig (checked against transformers 5.24). */
#include "common/error.h"
#include "common/file.h"
#include "trainer/hf_config.h"

#include "launcher/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIG_BYTES (16u << 20)

static const char *const type_names[] = {
    [AP_MODEL_LLAMA] = "llama", [AP_MODEL_MISTRAL] = "mistral", [AP_MODEL_QWEN2] = "qwen2",
    [AP_MODEL_QWEN3] = "qwen3", [AP_MODEL_GEMMA] = "gemma",
};
static const char *const arch_names[] = {
    [AP_MODEL_LLAMA] = "LlamaForCausalLM", [AP_MODEL_MISTRAL] = "MistralForCausalLM",
    [AP_MODEL_QWEN2] = "Qwen2ForCausalLM", [AP_MODEL_QWEN3] = "Qwen3ForCausalLM",
    [AP_MODEL_GEMMA] = "GemmaForCausalLM",
};
#define NTYPES ((int)(sizeof type_names / sizeof *type_names))

const char *ap_model_type_name(enum ap_model_type t) {
    return (int)t >= 0 && (int)t < NTYPES ? type_names[t] : NULL;
}

int ap_model_type_from_name(const char *name, enum ap_model_type *out) {
    for (int i = 0; name && i < NTYPES; i++)
        if (!strcmp(name, type_names[i])) { *out = (enum ap_model_type)i; return 0; }
    return -1;
}

const char *ap_model_types_supported(void) { return "llama, mistral, qwen2, qwen3, gemma"; }

void ap_hf_config_defaults(ap_model_config *c, enum ap_model_type t) {
    memset(c, 0, sizeof *c);
    c->model_type = t;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->rope_scaling = AP_ROPE_DEFAULT;
    c->rope_factor = 1.0;
    c->hidden_act = AP_ACT_SILU;
    c->initializer_range = 0.02;
    c->pad_token_id = -1;
    switch (t) {
    case AP_MODEL_LLAMA:
        c->vocab_size = 32000, c->hidden_size = 4096, c->intermediate_size = 11008;
        c->num_hidden_layers = 32, c->num_attention_heads = 32, c->num_key_value_heads = 32;
        c->max_position_embeddings = 2048, c->bos_token_id = 1, c->eos_token_id = 2;
        break;
    case AP_MODEL_MISTRAL:
        c->vocab_size = 32000, c->hidden_size = 4096, c->intermediate_size = 14336;
        c->num_hidden_layers = 32, c->num_attention_heads = 32, c->num_key_value_heads = 8;
        c->max_position_embeddings = 4096 * 32, c->bos_token_id = 1, c->eos_token_id = 2;
        c->sliding_window = 4096;
        break;
    case AP_MODEL_QWEN2:
    case AP_MODEL_QWEN3:
        c->vocab_size = 151936, c->hidden_size = 4096, c->intermediate_size = 22016;
        c->num_hidden_layers = 32, c->num_attention_heads = 32, c->num_key_value_heads = 32;
        c->max_position_embeddings = 32768, c->bos_token_id = -1, c->eos_token_id = -1;
        c->attention_bias = t == AP_MODEL_QWEN2; /* Qwen2Attention: q/k/v bias=True, always */
        c->qk_norm = t == AP_MODEL_QWEN3;
        break;
    case AP_MODEL_GEMMA:
        c->vocab_size = 256000, c->hidden_size = 3072, c->intermediate_size = 24576;
        c->num_hidden_layers = 28, c->num_attention_heads = 16, c->num_key_value_heads = 16;
        c->max_position_embeddings = 8192, c->pad_token_id = 0, c->eos_token_id = 1, c->bos_token_id = 2;
        c->hidden_act = AP_ACT_GELU_TANH, c->norm_plus_one = 1, c->scale_embeddings = 1;
        c->tie_word_embeddings = 1;
        break;
    }
    c->head_dim = t == AP_MODEL_QWEN3 ? 128 : t == AP_MODEL_GEMMA ? 256 : c->hidden_size / c->num_attention_heads;
    c->rope_original_max_position_embeddings = c->max_position_embeddings;
}

/* ---- typed access to keys; every error names the file and the key ---- */

typedef struct {
    const cJSON *root;
    const char *file;
    char *err;
    size_t errlen;
} reader;

/* 1: key present and not null; 0: absent or null. */
static const cJSON *get(const reader *r, const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj ? obj : r->root, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* An integer key in [lo, hi]; absent/null leaves *out unchanged. */
static int get_int(const reader *r, const cJSON *obj, const char *key, int *out, long lo, long hi) {
    const cJSON *v = get(r, obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return ap_errf(r->err, r->errlen, "%s: key '%s' must be an integer", r->file, key);
    if (v->valuedouble < (double)lo || v->valuedouble > (double)hi)
        return ap_errf(r->err, r->errlen, "%s: key '%s' = %.17g is out of range [%ld, %ld]", r->file, key,
                    v->valuedouble, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

/* A number key with lo < value <= hi (lo_incl: lo <= value). */
static int get_num(const reader *r, const cJSON *obj, const char *key, double *out, double lo, int lo_incl,
                   double hi) {
    const cJSON *v = get(r, obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return ap_errf(r->err, r->errlen, "%s: key '%s' must be a number", r->file, key);
    double d = v->valuedouble;
    if ((lo_incl ? d < lo : d <= lo) || d > hi)
        return ap_errf(r->err, r->errlen, "%s: key '%s' = %.17g is out of range %s%g, %g]", r->file, key, d,
                    lo_incl ? "[" : "(", lo, hi);
    *out = d;
    return 0;
}

static int get_bool(const reader *r, const cJSON *obj, const char *key, int *out) {
    const cJSON *v = get(r, obj, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return ap_errf(r->err, r->errlen, "%s: key '%s' must be true or false", r->file, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A string key; NULL when absent or null. */
static int get_str(const reader *r, const cJSON *obj, const char *key, const char **out) {
    const cJSON *v = get(r, obj, key);
    *out = NULL;
    if (!v) return 0;
    if (!cJSON_IsString(v)) return ap_errf(r->err, r->errlen, "%s: key '%s' must be a string", r->file, key);
    *out = v->valuestring;
    return 0;
}

/* A token id: integer, or a list whose first entry counts (eos lists); null = -1. */
static int get_token(const reader *r, const char *key, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(r->root, key);
    if (!v) return 0;
    if (cJSON_IsNull(v)) { *out = -1; return 0; }
    if (cJSON_IsArray(v)) {
        if (!cJSON_GetArraySize(v)) { *out = -1; return 0; }
        v = v->child;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 2147483647.0)
        return ap_errf(r->err, r->errlen, "%s: key '%s' must be a non-negative integer token id (or null)", r->file, key);
    *out = (int)v->valuedouble;
    return 0;
}

#define MAXDIM 1048576L  /* bounds that keep every product of sizes in size_t and ints */
#define MAXVOCAB 16777216L

/* rope_parameters (transformers 5) or rope_scaling (4.x); rope_theta inside or at top level. */
static int read_rope(const reader *r, ap_model_config *c) {
    const cJSON *rp = get(r, NULL, "rope_scaling");
    const char *key = "rope_scaling";
    if (!rp || (cJSON_IsObject(rp) && !rp->child)) rp = get(r, NULL, "rope_parameters"), key = "rope_parameters";
    if (get_num(r, NULL, "rope_theta", &c->rope_theta, 0, 0, 1e12)) return -1;
    double prf = 1.0;
    if (get_num(r, NULL, "partial_rotary_factor", &prf, 0, 0, 1)) return -1;
    if (get_int(r, NULL, "original_max_position_embeddings", &c->rope_original_max_position_embeddings, 1,
                1L << 30)) return -1;
    c->rope_scaling = AP_ROPE_DEFAULT;
    if (rp) {
        if (!cJSON_IsObject(rp)) return ap_errf(r->err, r->errlen, "%s: key '%s' must be an object or null", r->file, key);
        char k[96];
        const char *type = NULL, *legacy = NULL;
        snprintf(k, sizeof k, "%s.rope_type", key);
        if (get_str(r, rp, "rope_type", &type)) return -1;
        if (get_str(r, rp, "type", &legacy)) return -1;
        if (!type) type = legacy ? legacy : "default";
        if (!strcmp(type, "default")) c->rope_scaling = AP_ROPE_DEFAULT;
        else if (!strcmp(type, "linear")) c->rope_scaling = AP_ROPE_LINEAR;
        else if (!strcmp(type, "llama3")) c->rope_scaling = AP_ROPE_LLAMA3;
        else
            return ap_errf(r->err, r->errlen, "%s: key '%s' = '%s' is not supported (supported: default, linear, llama3)",
                        r->file, k, type);
        if (get_num(r, rp, "rope_theta", &c->rope_theta, 0, 0, 1e12)) return -1;
        if (get_num(r, rp, "partial_rotary_factor", &prf, 0, 0, 1)) return -1;
        if (c->rope_scaling != AP_ROPE_DEFAULT) {
            if (!get(r, rp, "factor"))
                return ap_errf(r->err, r->errlen, "%s: key '%s.factor' is required for rope_type %s", r->file, key, type);
            if (get_num(r, rp, "factor", &c->rope_factor, 0, 0, 1e6)) return -1;
        }
        if (c->rope_scaling == AP_ROPE_LLAMA3) {
            if (!get(r, rp, "low_freq_factor") || !get(r, rp, "high_freq_factor"))
                return ap_errf(r->err, r->errlen, "%s: keys '%s.low_freq_factor' and '%s.high_freq_factor' are required "
                            "for rope_type llama3", r->file, key, key);
            if (get_num(r, rp, "low_freq_factor", &c->rope_low_freq_factor, 0, 0, 1e6) ||
                get_num(r, rp, "high_freq_factor", &c->rope_high_freq_factor, 0, 0, 1e6) ||
                get_int(r, rp, "original_max_position_embeddings", &c->rope_original_max_position_embeddings, 1,
                        1L << 30))
                return -1;
            if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
                return ap_errf(r->err, r->errlen, "%s: key '%s.high_freq_factor' must exceed low_freq_factor", r->file,
                            key);
        }
    }
    if (prf != 1.0)
        return ap_errf(r->err, r->errlen, "%s: key 'partial_rotary_factor' = %g is not supported (only 1.0)", r->file, prf);
    return 0;
}

/* use_sliding_window / max_window_layers / layer_types (qwen2, qwen3): one
 * window for all layers or none; a per-layer mix is rejected. */
static int read_qwen_window(const reader *r, ap_model_config *c) {
    int use = 0, window = 4096, max_window_layers = 28;
    if (get_bool(r, NULL, "use_sliding_window", &use) || get_int(r, NULL, "sliding_window", &window, 1, 1L << 30) ||
        get_int(r, NULL, "max_window_layers", &max_window_layers, 0, 1L << 30))
        return -1;
    const cJSON *sw = cJSON_GetObjectItemCaseSensitive(r->root, "sliding_window");
    if (sw && cJSON_IsNull(sw)) use = 0; /* Qwen2Config: a null window makes every layer full attention */
    int n = c->num_hidden_layers, n_sliding = 0;
    const cJSON *lt = get(r, NULL, "layer_types");
    if (lt) {
        if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != n)
            return ap_errf(r->err, r->errlen, "%s: key 'layer_types' must be a list of %d strings", r->file, n);
        for (const cJSON *e = lt->child; e; e = e->next) {
            if (!cJSON_IsString(e) || (strcmp(e->valuestring, "full_attention") &&
                                       strcmp(e->valuestring, "sliding_attention")))
                return ap_errf(r->err, r->errlen, "%s: key 'layer_types' entries must be \"full_attention\" or "
                            "\"sliding_attention\"", r->file);
            n_sliding += !strcmp(e->valuestring, "sliding_attention");
        }
    } else if (use) {
        n_sliding = max_window_layers >= n ? 0 : n - max_window_layers;
    }
    /* sliding layers without use_sliding_window have no window in transformers */
    if (!use) n_sliding = 0;
    if (n_sliding && n_sliding != n)
        return ap_errf(r->err, r->errlen, "%s: %d of %d layers use a sliding window (use_sliding_window with "
                    "max_window_layers/layer_types): per-layer windows are not supported, only all or none",
                    r->file, n_sliding, n);
    c->sliding_window = n_sliding ? window : 0;
    return 0;
}

int ap_model_config_check(const ap_model_config *c, const char *name, char *err, size_t errlen) {
    if (!ap_model_type_name(c->model_type)) return ap_errf(err, errlen, "%s: unknown model_type", name);
    struct { const char *key; long v, lo, hi; } ints[] = {
        {"vocab_size", c->vocab_size, 1, MAXVOCAB},
        {"hidden_size", c->hidden_size, 1, MAXDIM},
        {"intermediate_size", c->intermediate_size, 1, MAXDIM},
        {"num_hidden_layers", c->num_hidden_layers, 1, 4096},
        {"num_attention_heads", c->num_attention_heads, 1, 4096},
        {"num_key_value_heads", c->num_key_value_heads, 1, 4096},
        {"head_dim", c->head_dim, 2, 4096},
        {"max_position_embeddings", c->max_position_embeddings, 1, 1L << 30},
        {"sliding_window", c->sliding_window, 0, 1L << 30},
    };
    for (size_t i = 0; i < sizeof ints / sizeof *ints; i++)
        if (ints[i].v < ints[i].lo || ints[i].v > ints[i].hi)
            return ap_errf(err, errlen, "%s: key '%s' = %ld is out of range [%ld, %ld]", name, ints[i].key, ints[i].v,
                        ints[i].lo, ints[i].hi);
    if (c->num_attention_heads % c->num_key_value_heads)
        return ap_errf(err, errlen, "%s: num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)", name,
                    c->num_attention_heads, c->num_key_value_heads);
    if (c->head_dim % 2) return ap_errf(err, errlen, "%s: key 'head_dim' = %d must be even (rotary embeddings)", name,
                                     c->head_dim);
    if ((long)c->num_attention_heads * c->head_dim > MAXDIM)
        return ap_errf(err, errlen, "%s: num_attention_heads x head_dim = %ld is too large", name,
                    (long)c->num_attention_heads * c->head_dim);
    if (!(c->rms_norm_eps > 0 && c->rms_norm_eps < 1))
        return ap_errf(err, errlen, "%s: key 'rms_norm_eps' = %g must be in (0, 1)", name, c->rms_norm_eps);
    if (!(c->rope_theta > 0 && isfinite(c->rope_theta)))
        return ap_errf(err, errlen, "%s: key 'rope_theta' = %g must be positive", name, c->rope_theta);
    if (c->rope_scaling != AP_ROPE_DEFAULT && !(c->rope_factor > 0 && isfinite(c->rope_factor)))
        return ap_errf(err, errlen, "%s: rope scaling factor = %g must be positive", name, c->rope_factor);
    if (c->rope_scaling == AP_ROPE_LLAMA3 &&
        !(c->rope_low_freq_factor > 0 && c->rope_high_freq_factor > c->rope_low_freq_factor &&
          c->rope_original_max_position_embeddings > 0))
        return ap_errf(err, errlen, "%s: llama3 rope scaling needs 0 < low_freq_factor < high_freq_factor and "
                    "original_max_position_embeddings > 0", name);
    if (!(c->initializer_range >= 0 && c->initializer_range <= 1))
        return ap_errf(err, errlen, "%s: key 'initializer_range' = %g must be in [0, 1]", name, c->initializer_range);
    if (c->hidden_act != AP_ACT_SILU && c->hidden_act != AP_ACT_GELU_TANH)
        return ap_errf(err, errlen, "%s: unknown hidden_act", name);
    if ((unsigned)c->rope_scaling > AP_ROPE_LLAMA3) return ap_errf(err, errlen, "%s: unknown rope scaling", name);
    return 0;
}

int ap_hf_config_parse(ap_model_config *c, const char *json, size_t len, const char *file, char *err,
                       size_t errlen) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) return ap_errf(err, errlen, "%s: not valid JSON", file);
    reader rd = {root, file, err, errlen}, *r = &rd;
    int rv = -1;
    const char *mt = NULL, *act = NULL;
    if (!cJSON_IsObject(root)) {
        ap_errf(err, errlen, "%s: not a JSON object", file);
        goto done;
    }
    if (get_str(r, NULL, "model_type", &mt)) goto done;
    enum ap_model_type t;
    if (!mt) {
        ap_errf(err, errlen, "%s: key 'model_type' is missing (supported: %s)", file, ap_model_types_supported());
        goto done;
    }
    if (ap_model_type_from_name(mt, &t)) {
        ap_errf(err, errlen, "%s: model_type '%.64s' is not supported (supported: %s)", file, mt,
             ap_model_types_supported());
        goto done;
    }
    ap_hf_config_defaults(c, t);
    int kv = -1, hd = -1;
    if (get_int(r, NULL, "vocab_size", &c->vocab_size, 1, MAXVOCAB) ||
        get_int(r, NULL, "hidden_size", &c->hidden_size, 1, MAXDIM) ||
        get_int(r, NULL, "intermediate_size", &c->intermediate_size, 1, MAXDIM) ||
        get_int(r, NULL, "num_hidden_layers", &c->num_hidden_layers, 1, 4096) ||
        get_int(r, NULL, "num_attention_heads", &c->num_attention_heads, 1, 4096) ||
        get_int(r, NULL, "num_key_value_heads", &kv, 1, 4096) ||
        get_int(r, NULL, "head_dim", &hd, 2, 4096) ||
        get_int(r, NULL, "max_position_embeddings", &c->max_position_embeddings, 1, 1L << 30) ||
        get_num(r, NULL, "rms_norm_eps", &c->rms_norm_eps, 0, 0, 0.5) ||
        get_num(r, NULL, "initializer_range", &c->initializer_range, 0, 1, 1) ||
        get_bool(r, NULL, "tie_word_embeddings", &c->tie_word_embeddings) ||
        get_token(r, "bos_token_id", &c->bos_token_id) || get_token(r, "eos_token_id", &c->eos_token_id) ||
        get_token(r, "pad_token_id", &c->pad_token_id) || get_str(r, NULL, "hidden_act", &act))
        goto done;
    /* Derived defaults follow the config classes' __post_init__: an absent key
     * takes the class default, an explicit null the derived value. */
    int has_kv = cJSON_HasObjectItem(root, "num_key_value_heads"), has_hd = cJSON_HasObjectItem(root, "head_dim");
    if (kv > 0) c->num_key_value_heads = kv;
    else if (has_kv || t == AP_MODEL_LLAMA) c->num_key_value_heads = c->num_attention_heads;
    if (hd > 0) c->head_dim = hd;
    else if (has_hd || (t != AP_MODEL_QWEN3 && t != AP_MODEL_GEMMA)) c->head_dim = c->hidden_size / c->num_attention_heads;
    c->rope_original_max_position_embeddings = c->max_position_embeddings;
    if (act) {
        if (!strcmp(act, "silu") || !strcmp(act, "swish")) c->hidden_act = AP_ACT_SILU;
        else if (!strcmp(act, "gelu_pytorch_tanh") || (t == AP_MODEL_GEMMA && !strcmp(act, "gelu")))
            c->hidden_act = AP_ACT_GELU_TANH; /* GemmaConfig maps the legacy "gelu" to the tanh form */
        else {
            ap_errf(err, errlen, "%s: key 'hidden_act' = '%.64s' is not supported (supported: silu, gelu_pytorch_tanh)",
                 file, act);
            goto done;
        }
    }
    if (read_rope(r, c)) goto done;
    /* Keys whose math autopipe does not implement: reject instead of ignoring. */
    int flag = 0;
    if (t == AP_MODEL_LLAMA && (get_bool(r, NULL, "mlp_bias", &flag) || flag)) {
        if (flag) ap_errf(err, errlen, "%s: key 'mlp_bias' = true is not supported", file);
        goto done;
    }
    if (t != AP_MODEL_QWEN2) {
        flag = 0;
        if (get_bool(r, NULL, "attention_bias", &flag)) goto done;
        if (flag) {
            ap_errf(err, errlen, "%s: key 'attention_bias' = true (biases on q/k/v/o projections) is not supported for "
                 "model_type %s", file, mt);
            goto done;
        }
    }
    if (t == AP_MODEL_GEMMA) {
        flag = 0;
        if (get_bool(r, NULL, "use_bidirectional_attention", &flag)) goto done;
        if (flag) {
            ap_errf(err, errlen, "%s: key 'use_bidirectional_attention' = true is not supported", file);
            goto done;
        }
    }
    if (t == AP_MODEL_MISTRAL) {
        const cJSON *sw = cJSON_GetObjectItemCaseSensitive(root, "sliding_window");
        if (sw && cJSON_IsNull(sw)) c->sliding_window = 0;
        else if (get_int(r, NULL, "sliding_window", &c->sliding_window, 1, 1L << 30)) goto done;
    } else if (t == AP_MODEL_QWEN2 || t == AP_MODEL_QWEN3) {
        if (read_qwen_window(r, c)) goto done;
    } else {
        /* llama and gemma models have no sliding window in transformers */
        c->sliding_window = 0;
    }
    if (c->bos_token_id >= c->vocab_size) c->bos_token_id = -1;
    if (c->eos_token_id >= c->vocab_size) c->eos_token_id = -1;
    if (c->pad_token_id >= c->vocab_size) c->pad_token_id = -1;
    rv = ap_model_config_check(c, file, err, errlen);
done:
    cJSON_Delete(root);
    return rv;
}

int ap_hf_config_read(ap_model_config *c, const char *path, char *err, size_t errlen) {
    char file[4096];
    struct stat st;
    if (stat(path, &st)) return ap_errf(err, errlen, "%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        if (snprintf(file, sizeof file, "%s/config.json", path) >= (int)sizeof file)
            return ap_errf(err, errlen, "%s: path too long", path);
    } else {
        if (snprintf(file, sizeof file, "%s", path) >= (int)sizeof file)
            return ap_errf(err, errlen, "%s: path too long", path);
    }
    size_t n;
    char *buf = ap_read_file(file, MAX_CONFIG_BYTES, &n, err, errlen);
    if (!buf) return -1;
    int rv = ap_hf_config_parse(c, buf, n, file, err, errlen);
    free(buf);
    return rv;
}

/* ---- writing ---- */

static cJSON *token_or_null(int id) { return id >= 0 ? cJSON_CreateNumber(id) : cJSON_CreateNull(); }

char *ap_hf_config_to_json(const ap_model_config *c, char *err, size_t errlen) {
    if (ap_model_config_check(c, "model config", err, errlen)) return NULL;
    enum ap_model_type t = c->model_type;
    const char *tn = type_names[t];
    /* What each HF class can express: the family fixes these flags. */
    if (c->attention_bias != (t == AP_MODEL_QWEN2) || c->qk_norm != (t == AP_MODEL_QWEN3) ||
        c->norm_plus_one != (t == AP_MODEL_GEMMA) || c->scale_embeddings != (t == AP_MODEL_GEMMA)) {
        ap_errf(err, errlen, "model config: attention_bias/qk_norm/norm_plus_one/scale_embeddings do not match what "
             "model_type %s implies; config.json cannot express this model", tn);
        return NULL;
    }
    if (c->sliding_window && t != AP_MODEL_MISTRAL && t != AP_MODEL_QWEN2 && t != AP_MODEL_QWEN3) {
        ap_errf(err, errlen, "model config: sliding_window is not expressible for model_type %s", tn);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject(), *arch = cJSON_AddArrayToObject(o, "architectures");
    char *text = NULL;
    if (!arch) goto oom;
    cJSON_AddItemToArray(arch, cJSON_CreateString(arch_names[t]));
    cJSON_AddStringToObject(o, "model_type", tn);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "hidden_size", c->hidden_size);
    cJSON_AddNumberToObject(o, "intermediate_size", c->intermediate_size);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->num_hidden_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->num_attention_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->num_key_value_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    if (c->rope_scaling == AP_ROPE_DEFAULT) {
        cJSON_AddNullToObject(o, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        if (!rs) goto oom;
        cJSON_AddStringToObject(rs, "rope_type", c->rope_scaling == AP_ROPE_LINEAR ? "linear" : "llama3");
        cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        if (c->rope_scaling == AP_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings", c->rope_original_max_position_embeddings);
        }
    }
    cJSON_AddStringToObject(o, "hidden_act", c->hidden_act == AP_ACT_SILU ? "silu" : "gelu_pytorch_tanh");
    if (t != AP_MODEL_QWEN2 && t != AP_MODEL_MISTRAL) cJSON_AddFalseToObject(o, "attention_bias");
    if (t == AP_MODEL_MISTRAL) {
        if (c->sliding_window) cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
        else cJSON_AddNullToObject(o, "sliding_window");
    } else if (t == AP_MODEL_QWEN2 || t == AP_MODEL_QWEN3) {
        cJSON_AddBoolToObject(o, "use_sliding_window", c->sliding_window > 0);
        if (c->sliding_window) cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
        else cJSON_AddNullToObject(o, "sliding_window");
        cJSON_AddNumberToObject(o, "max_window_layers", 0);
    }
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddNumberToObject(o, "initializer_range", c->initializer_range);
    cJSON_AddItemToObject(o, "bos_token_id", token_or_null(c->bos_token_id));
    cJSON_AddItemToObject(o, "eos_token_id", token_or_null(c->eos_token_id));
    cJSON_AddItemToObject(o, "pad_token_id", token_or_null(c->pad_token_id));
    cJSON_AddStringToObject(o, "torch_dtype", "float32");
    cJSON_AddBoolToObject(o, "use_cache", 1);
    if (!(text = cJSON_Print(o))) goto oom;
    cJSON_Delete(o);
    return text;
oom:
    cJSON_Delete(o);
    ap_errf(err, errlen, "model config: out of memory");
    return NULL;
}

int ap_hf_config_write(const ap_model_config *c, const char *dir, char *err, size_t errlen) {
    char path[4096], tmp[4200];
    if (snprintf(path, sizeof path, "%s/config.json", dir) >= (int)sizeof path)
        return ap_errf(err, errlen, "%s: path too long", dir);
    char *text = ap_hf_config_to_json(c, err, errlen);
    if (!text) return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    size_t n = strlen(text);
    int bad = !f || fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF || fflush(f) || fsync(fileno(f));
    if (f && fclose(f)) bad = 1;
    free(text);
    if (bad || rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return ap_errf(err, errlen, "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

/* ---- model.pretrained_model_name_or_path: the launcher's config reads an HF
 * directory through this hook (launcher/config.h), installed when this file
 * is linked in, so the launcher does not depend on the trainer. ---- */

int ap_hf_config_reader(const char *dir, ap_model_config *mc, char *err, size_t errlen) {
    return ap_hf_config_read(mc, dir, err, errlen);
}

__attribute__((constructor)) static void install_pretrained_reader(void) {
    ap_config_set_pretrained_reader(ap_hf_config_reader);
}
