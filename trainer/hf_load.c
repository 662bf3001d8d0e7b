/* hf_load.c - HF safetensors <-> a stage's named parameters (see hf_load.h). */
#include "common/error.h"
#include "trainer/hf_load.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint/safetensors.h"
#include "trainer/hf_config.h"

/* The stored name for parameter `name`: itself, or without "model." (base-model files). */
static const ap_st_tensor *lookup(const ap_st_model *st, const char *name) {
    const ap_st_tensor *t = ap_st_find(st, name);
    if (!t && !strncmp(name, "model.", 6)) t = ap_st_find(st, name + 6);
    return t;
}

/* Strips the "model." prefix for comparisons between file and stage names. */
static const char *bare(const char *name) { return strncmp(name, "model.", 6) ? name : name + 6; }

/* Does file tensor `name` belong to stage s (so that some parameter must take it)? */
static int belongs(const ap_stage *s, const char *name) {
    const char *b = bare(name);
    size_t n = strlen(b);
    if (n >= 19 && !strcmp(b + n - 19, "rotary_emb.inv_freq")) return 0; /* a buffer, not a parameter */
    int layer, len = 0;
    if (sscanf(b, "layers.%d.%n", &layer, &len) == 1 && len > 0)
        return layer >= s->first_layer && layer < s->last_layer;
    if (!strcmp(b, "embed_tokens.weight")) return s->is_first;
    if (!strcmp(b, "norm.weight")) return s->is_last;
    return 0; /* lm_head.weight may be a tied model's redundant copy */
}

int ap_load_hf_weights(ap_stage *s, const char *model_dir, char *err, size_t errlen) {
    ap_st_model *st = NULL;
    if (ap_st_open(&st, model_dir, err, errlen)) return -1;
    int rv = -1, tied = -1; /* -1: config.json not read yet */
    char *used = calloc((size_t)ap_st_count(st) + 1, 1);
    if (!used) {
        ap_errf(err, errlen, "%s: out of memory", model_dir);
        goto done;
    }
    for (int i = 0; i < s->n_refs; i++) {
        ap_param_ref *r = &s->refs[i];
        const ap_st_tensor *t = lookup(st, r->name);
        const char *alt = !strcmp(r->name, "model.embed_tokens.weight") ? "lm_head.weight"
                        : !strcmp(r->name, "lm_head.weight")            ? "model.embed_tokens.weight"
                                                                         : NULL;
        if (!t && alt) {
            /* The other half of a tied pair serves only if config.json says tied. */
            if (tied < 0) {
                ap_model_config mc;
                char e2[256];
                tied = ap_hf_config_read(&mc, model_dir, e2, sizeof e2) == 0 && mc.tie_word_embeddings;
            }
            if (tied) t = lookup(st, alt);
        }
        if (!t) {
            ap_errf(err, errlen, "%s: tensor '%s' not found (needed by the stage of layers [%d, %d)%s)",
                 ap_st_file(st, 0), r->name, s->first_layer, s->last_layer,
                 alt ? "; for tied embeddings config.json must say tie_word_embeddings" : "");
            goto done;
        }
        size_t shape[4];
        for (int d = 0; d < r->ndim && d < 4; d++) shape[d] = r->shape[d];
        if (ap_st_read_f32(st, t->name, r->param, r->ndim, shape, err, errlen)) goto done;
        used[t - ap_st_at(st, 0)] = 1;
    }
    for (int i = 0; i < ap_st_count(st); i++) {
        const ap_st_tensor *t = ap_st_at(st, i);
        if (!used[i] && belongs(s, t->name)) {
            ap_errf(err, errlen, "%s: tensor '%s' is not a parameter of this model: config.json and the weights "
                 "disagree (e.g. attention_bias, qk norms, model_type)", ap_st_file(st, t->file), t->name);
            goto done;
        }
    }
    rv = 0;
done:
    free(used);
    ap_st_close(st);
    return rv;
}

int ap_save_hf_model(ap_stage *const *stages, int n, const ap_model_config *mc, const char *dir, int dtype,
                     uint64_t shard_bytes, char *err, size_t errlen) {
    if (mkdir(dir, 0755) && errno != EEXIST) return ap_errf(err, errlen, "%s: cannot create: %s", dir, strerror(errno));
    int total = 0;
    for (int k = 0; k < n; k++) total += stages[k]->n_refs;
    ap_st_out *out = calloc((size_t)total + 1, sizeof *out);
    if (!out) return ap_errf(err, errlen, "%s: out of memory", dir);
    int m = 0;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < stages[k]->n_refs; i++) {
            const ap_param_ref *r = &stages[k]->refs[i];
            int dup = 0;
            for (int j = 0; j < m && !dup; j++) dup = !strcmp(out[j].name, r->name);
            if (dup) continue;
            out[m].name = r->name;
            out[m].ndim = r->ndim;
            for (int d = 0; d < r->ndim && d < 4; d++) out[m].shape[d] = r->shape[d];
            out[m].data = r->param;
            m++;
        }
    }
    int rv = ap_st_write(dir, NULL, out, m, (ap_st_dtype)dtype, shard_bytes, err, errlen);
    free(out);
    if (rv) return -1;
    return ap_hf_config_write(mc, dir, err, errlen);
}
