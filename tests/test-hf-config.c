/* test-hf-config.c - config.json parsing (transformers' defaults per family,
 * type/range errors naming the key) and writing (round trip). */
#include <stdlib.h>
#include <unistd.h>

#include "tests/tap.h"
#include "trainer/hf_config.h"

static char err[512];

static int parse(ap_model_config *c, const char *json) {
    err[0] = 0;
    return ap_hf_config_parse(c, json, strlen(json), "config.json", err, sizeof err);
}

/* Parse must fail and the message must contain `needle`. */
static void rejects(const char *json, const char *needle, const char *what) {
    ap_model_config c;
    int rv = parse(&c, json);
    ok(rv == -1 && strstr(err, needle) && strstr(err, "config.json"), "rejects %s (%s)", what, err);
}

static void test_defaults(void) {
    ap_model_config c;
    ok(parse(&c, "{\"model_type\": \"llama\"}") == 0 && c.model_type == AP_MODEL_LLAMA && c.vocab_size == 32000 &&
       c.hidden_size == 4096 && c.intermediate_size == 11008 && c.num_hidden_layers == 32 &&
       c.num_key_value_heads == 32 && c.head_dim == 128 && c.max_position_embeddings == 2048 &&
       c.rms_norm_eps == 1e-6 && c.rope_theta == 10000 && !c.tie_word_embeddings && !c.attention_bias &&
       c.hidden_act == AP_ACT_SILU && c.bos_token_id == 1 && c.eos_token_id == 2 && c.pad_token_id == -1 &&
       c.sliding_window == 0 && !c.qk_norm && !c.norm_plus_one && !c.scale_embeddings,
       "llama defaults are LlamaConfig()'s");
    ok(parse(&c, "{\"model_type\": \"mistral\"}") == 0 && c.num_key_value_heads == 8 && c.sliding_window == 4096 &&
       c.intermediate_size == 14336 && c.max_position_embeddings == 131072 && c.head_dim == 128,
       "mistral defaults: kv 8, sliding_window 4096");
    ok(parse(&c, "{\"model_type\": \"qwen2\"}") == 0 && c.attention_bias == 1 && c.sliding_window == 0 &&
       c.vocab_size == 151936 && c.num_key_value_heads == 32 && c.bos_token_id == -1 && !c.qk_norm,
       "qwen2 defaults: q/k/v bias, no sliding window (use_sliding_window false)");
    ok(parse(&c, "{\"model_type\": \"qwen3\"}") == 0 && c.qk_norm == 1 && c.head_dim == 128 && !c.attention_bias,
       "qwen3 defaults: qk_norm, head_dim 128");
    ok(parse(&c, "{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 2}") == 0 &&
           c.head_dim == 128,
       "qwen3 head_dim stays 128 when hidden_size changes (a class default, not derived)");
    ok(parse(&c, "{\"model_type\": \"gemma\"}") == 0 && c.hidden_act == AP_ACT_GELU_TANH && c.norm_plus_one &&
       c.scale_embeddings && c.tie_word_embeddings && c.head_dim == 256 && c.num_key_value_heads == 16 &&
       c.pad_token_id == 0 && c.eos_token_id == 1 && c.bos_token_id == 2 && c.vocab_size == 256000,
       "gemma defaults: gelu tanh, (1+w) norm, scaled and tied embeddings, head_dim 256");
    ok(parse(&c, "{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_attention_heads\": 4,"
                 " \"num_key_value_heads\": null, \"head_dim\": null}") == 0 &&
       c.head_dim == 16 && c.num_key_value_heads == 4, "llama: null head_dim/kv heads derive from hidden/heads");
    ok(parse(&c, "{\"model_type\": \"gemma\", \"hidden_act\": \"gelu\"}") == 0 && c.hidden_act == AP_ACT_GELU_TANH,
       "gemma's legacy hidden_act gelu means gelu_pytorch_tanh");
    ok(parse(&c, "{\"model_type\": \"llama\", \"eos_token_id\": [128001, 128009], \"vocab_size\": 128256}") == 0 &&
       c.eos_token_id == 128001, "eos_token_id list: first id");
}

static void test_rope(void) {
    ap_model_config c;
    ok(parse(&c, "{\"model_type\": \"llama\", \"rope_theta\": 500000.0, \"max_position_embeddings\": 131072,"
                 " \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0,"
                 " \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}}") == 0 &&
       c.rope_scaling == AP_ROPE_LLAMA3 && c.rope_theta == 500000 && c.rope_factor == 8 &&
       c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4 && c.rope_original_max_position_embeddings == 8192,
       "llama3 rope_scaling (Llama 3.1 config)");
    ok(parse(&c, "{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 5e5,"
                 " \"factor\": 32, \"low_freq_factor\": 1, \"high_freq_factor\": 4}}") == 0 &&
       c.rope_scaling == AP_ROPE_LLAMA3 && c.rope_theta == 5e5 && c.rope_original_max_position_embeddings == 2048,
       "transformers 5 rope_parameters; original_max_position_embeddings defaults to max_position_embeddings");
    ok(parse(&c, "{\"model_type\": \"qwen2\", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2}}") == 0 &&
       c.rope_scaling == AP_ROPE_LINEAR && c.rope_factor == 2, "legacy rope_scaling.type linear");
    ok(parse(&c, "{\"model_type\": \"llama\", \"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 1e6}}")
           == 0 && c.rope_scaling == AP_ROPE_DEFAULT && c.rope_theta == 1e6, "rope_parameters default with theta");
    rejects("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
            "default, linear, llama3", "rope_type yarn");
    rejects("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"linear\"}}", "factor",
            "linear without factor");
    rejects("{\"model_type\": \"llama\", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8,"
            " \"low_freq_factor\": 4, \"high_freq_factor\": 1}}", "high_freq_factor", "llama3 with high <= low");
    rejects("{\"model_type\": \"llama\", \"rope_scaling\": \"linear\"}", "rope_scaling", "rope_scaling not an object");
    rejects("{\"model_type\": \"llama\", \"partial_rotary_factor\": 0.5}", "partial_rotary_factor",
            "partial rotary");
}

static void test_windows(void) {
    ap_model_config c;
    ok(parse(&c, "{\"model_type\": \"mistral\", \"sliding_window\": null}") == 0 && c.sliding_window == 0,
       "mistral sliding_window null: full attention");
    ok(parse(&c, "{\"model_type\": \"qwen2\", \"num_hidden_layers\": 4, \"use_sliding_window\": true,"
                 " \"sliding_window\": 64, \"max_window_layers\": 0}") == 0 && c.sliding_window == 64,
       "qwen2 use_sliding_window on all layers");
    ok(parse(&c, "{\"model_type\": \"qwen2\", \"num_hidden_layers\": 4, \"use_sliding_window\": true,"
                 " \"sliding_window\": 64, \"max_window_layers\": 28}") == 0 && c.sliding_window == 0,
       "qwen2 max_window_layers >= layers: no layer slides");
    ok(parse(&c, "{\"model_type\": \"qwen2\", \"sliding_window\": 64}") == 0 && c.sliding_window == 0,
       "qwen2 sliding_window without use_sliding_window is ignored (as in Qwen2Config)");
    ok(parse(&c, "{\"model_type\": \"qwen2\", \"use_sliding_window\": true, \"max_window_layers\": 0,"
                 " \"sliding_window\": null}") == 0 && c.sliding_window == 0,
       "qwen2 use_sliding_window with a null window: full attention");
    rejects("{\"model_type\": \"qwen2\", \"num_hidden_layers\": 4, \"use_sliding_window\": true,"
            " \"max_window_layers\": 2}", "per-layer", "qwen2 window on some layers only");
    rejects("{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2, \"use_sliding_window\": true,"
            " \"layer_types\": [\"full_attention\", \"sliding_attention\"]}", "per-layer", "mixed layer_types");
    rejects("{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2, \"layer_types\": [\"full_attention\"]}",
            "layer_types", "layer_types of the wrong length");
    rejects("{\"model_type\": \"mistral\", \"sliding_window\": 0}", "sliding_window", "mistral window 0");
}

static void test_errors(void) {
    rejects("{\"model_type\": \"gpt2\"}", "llama, mistral, qwen2, qwen3, gemma", "unsupported model_type");
    rejects("{\"hidden_size\": 64}", "model_type", "missing model_type");
    rejects("{\"model_type\": 3}", "'model_type' must be a string", "model_type not a string");
    rejects("{\"model_type\": \"llama\", \"hidden_size\": \"64\"}", "'hidden_size' must be an integer",
            "string where an integer belongs");
    rejects("{\"model_type\": \"llama\", \"hidden_size\": 64.5}", "'hidden_size' must be an integer",
            "fractional size");
    rejects("{\"model_type\": \"llama\", \"vocab_size\": -1}", "'vocab_size'", "negative vocab");
    rejects("{\"model_type\": \"llama\", \"num_hidden_layers\": 1e12}", "'num_hidden_layers'", "huge layer count");
    rejects("{\"model_type\": \"llama\", \"num_attention_heads\": 32, \"num_key_value_heads\": 5}",
            "multiple of num_key_value_heads", "kv heads not dividing heads");
    rejects("{\"model_type\": \"llama\", \"rms_norm_eps\": 0}", "'rms_norm_eps'", "zero eps");
    rejects("{\"model_type\": \"llama\", \"rope_theta\": -1}", "'rope_theta'", "negative rope_theta");
    rejects("{\"model_type\": \"llama\", \"tie_word_embeddings\": 1}", "'tie_word_embeddings' must be true or false",
            "tie as a number");
    rejects("{\"model_type\": \"llama\", \"hidden_act\": \"gelu\"}", "silu, gelu_pytorch_tanh", "llama with gelu");
    rejects("{\"model_type\": \"llama\", \"attention_bias\": true}", "attention_bias", "llama attention_bias (o bias)");
    rejects("{\"model_type\": \"llama\", \"mlp_bias\": true}", "mlp_bias", "mlp_bias");
    rejects("{\"model_type\": \"gemma\", \"use_bidirectional_attention\": true}", "bidirectional",
            "bidirectional gemma");
    rejects("{\"model_type\": \"llama\", \"bos_token_id\": \"<s>\"}", "'bos_token_id'", "token id as a string");
    rejects("[1, 2]", "not a JSON object", "a JSON array");
    rejects("{\"model_type\": \"llama\", ", "not valid JSON", "truncated JSON");
    rejects("{\"model_type\": \"llama\", \"hidden_size\": 30, \"num_attention_heads\": 4}", "head_dim",
            "odd derived head_dim");
    ap_model_config c;
    ok(ap_hf_config_read(&c, "/nonexistent-dir", err, sizeof err) == -1 && strstr(err, "/nonexistent-dir"),
       "missing directory named in the error");
}

static int same(const ap_model_config *a, const ap_model_config *b) {
    return a->model_type == b->model_type && a->vocab_size == b->vocab_size && a->hidden_size == b->hidden_size &&
           a->intermediate_size == b->intermediate_size && a->num_hidden_layers == b->num_hidden_layers &&
           a->num_attention_heads == b->num_attention_heads && a->num_key_value_heads == b->num_key_value_heads &&
           a->head_dim == b->head_dim && a->max_position_embeddings == b->max_position_embeddings &&
           a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta &&
           a->rope_scaling == b->rope_scaling && a->rope_factor == b->rope_factor &&
           a->rope_low_freq_factor == b->rope_low_freq_factor && a->rope_high_freq_factor == b->rope_high_freq_factor &&
           a->rope_original_max_position_embeddings == b->rope_original_max_position_embeddings &&
           a->sliding_window == b->sliding_window && a->attention_bias == b->attention_bias &&
           a->qk_norm == b->qk_norm && a->hidden_act == b->hidden_act && a->norm_plus_one == b->norm_plus_one &&
           a->scale_embeddings == b->scale_embeddings && a->tie_word_embeddings == b->tie_word_embeddings &&
           a->initializer_range == b->initializer_range && a->bos_token_id == b->bos_token_id &&
           a->eos_token_id == b->eos_token_id && a->pad_token_id == b->pad_token_id;
}

static void test_roundtrip(void) {
    char tmpl[] = "/tmp/test-hf-config.XXXXXX";
    char *dir = mkdtemp(tmpl);
    ok(dir != NULL, "temporary directory");
    if (!dir) return;
    for (int t = AP_MODEL_LLAMA; t <= AP_MODEL_GEMMA; t++) {
        ap_model_config a, b;
        ap_hf_config_defaults(&a, (enum ap_model_type)t);
        a.vocab_size = 259, a.hidden_size = 48, a.intermediate_size = 100, a.num_hidden_layers = 3;
        a.num_attention_heads = 6, a.num_key_value_heads = 2, a.head_dim = 10, a.rms_norm_eps = 1e-5;
        a.rope_theta = 123456.5, a.initializer_range = 0.01, a.tie_word_embeddings = t % 2, a.pad_token_id = 258;
        if (t == AP_MODEL_LLAMA) {
            a.rope_scaling = AP_ROPE_LLAMA3, a.rope_factor = 8, a.rope_low_freq_factor = 1;
            a.rope_high_freq_factor = 4, a.rope_original_max_position_embeddings = 1024;
        }
        if (t == AP_MODEL_GEMMA) a.rope_scaling = AP_ROPE_LINEAR, a.rope_factor = 2.5;
        if (t == AP_MODEL_MISTRAL || t == AP_MODEL_QWEN2) a.sliding_window = 7;
        if (t == AP_MODEL_QWEN3) a.sliding_window = 0;
        int w = ap_hf_config_write(&a, dir, err, sizeof err);
        int r = w ? -1 : ap_hf_config_read(&b, dir, err, sizeof err);
        ok(w == 0 && r == 0 && same(&a, &b), "%s: write config.json and read it back unchanged %s",
           ap_model_type_name((enum ap_model_type)t), err);
    }
    ap_model_config a;
    ap_hf_config_defaults(&a, AP_MODEL_LLAMA);
    a.qk_norm = 1;
    char *j = ap_hf_config_to_json(&a, err, sizeof err);
    ok(!j && strstr(err, "cannot express"), "a llama with qk_norm is not written as config.json");
    free(j);
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    unlink(path);
    rmdir(dir);
}

/* config.json files written by transformers 5.24's save_pretrained (the parity fixtures). */
static void test_fixture_configs(void) {
    const char *top = getenv("top_srcdir");
    char path[1024];
    ap_model_config c;
    struct { const char *name; enum ap_model_type t; int tie, kv, hd, window; enum ap_rope_scaling rope; } fx[] = {
        {"llama", AP_MODEL_LLAMA, 0, 2, 8, 0, AP_ROPE_DEFAULT},
        {"llama_tied", AP_MODEL_LLAMA, 1, 2, 8, 0, AP_ROPE_DEFAULT},
        {"llama_rope3", AP_MODEL_LLAMA, 1, 2, 8, 0, AP_ROPE_LLAMA3},
        {"llama_bf16", AP_MODEL_LLAMA, 0, 1, 8, 0, AP_ROPE_DEFAULT},
        {"mistral", AP_MODEL_MISTRAL, 0, 2, 8, 5, AP_ROPE_DEFAULT},
        {"qwen2", AP_MODEL_QWEN2, 1, 2, 8, 0, AP_ROPE_LINEAR},
        {"qwen3", AP_MODEL_QWEN3, 0, 2, 16, 0, AP_ROPE_DEFAULT},
        {"gemma", AP_MODEL_GEMMA, 1, 1, 16, 0, AP_ROPE_DEFAULT},
    };
    for (size_t i = 0; i < sizeof fx / sizeof *fx; i++) {
        snprintf(path, sizeof path, "%s/tests/fixtures/hf/%s", top ? top : "..", fx[i].name);
        int rv = ap_hf_config_read(&c, path, err, sizeof err);
        ok(rv == 0 && c.model_type == fx[i].t && c.tie_word_embeddings == fx[i].tie && c.vocab_size == 64 &&
           c.hidden_size == 32 && c.num_attention_heads == 4 && c.num_key_value_heads == fx[i].kv &&
           c.head_dim == fx[i].hd && c.sliding_window == fx[i].window && c.rope_scaling == fx[i].rope,
           "fixture %s: config.json from transformers 5.24 %s", fx[i].name, rv ? err : "");
    }
    snprintf(path, sizeof path, "%s/tests/fixtures/hf/llama_rope3", top ? top : "..");
    ok(ap_hf_config_read(&c, path, err, sizeof err) == 0 && c.rope_factor == 4 && c.rope_low_freq_factor == 1 &&
       c.rope_high_freq_factor == 4 && c.rope_original_max_position_embeddings == 16 && c.rope_theta == 10000,
       "llama3 rope_parameters as transformers 5 writes them");
    snprintf(path, sizeof path, "%s/tests/fixtures/hf/qwen3", top ? top : "..");
    ok(ap_hf_config_read(&c, path, err, sizeof err) == 0 && c.rope_theta == 1e6 && c.qk_norm, "qwen3 rope_theta 1e6");
}

int main(void) {
    test_fixture_configs();
    test_defaults();
    test_rope();
    test_windows();
    test_errors();
    test_roundtrip();
    return tap_done();
}
