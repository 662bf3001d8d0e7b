/* ckpt-synth.h - a synthetic Llama-like model for the checkpoint tests:
 * HF FQNs with global layer indices, split into stages like the trainer
 * does, values a pure function of (FQN, index, kind, seed) so any rank of
 * any layout can check what it loaded without the writer's memory. */
#ifndef AP_TESTS_CKPT_SYNTH_H
#define AP_TESTS_CKPT_SYNTH_H

#include "checkpoint/ckpt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int layers, hidden, inter, vocab, kv;
} synth_model;

static inline synth_model synth_default(int layers) {
    synth_model m = {layers, 16, 40, 96, 8};
    return m;
}

static inline char *synth_config_json(const synth_model *m) {
    char *s = malloc(512);
    snprintf(s, 512,
             "{\n  \"model_type\": \"llama\",\n  \"architectures\": [\"LlamaForCausalLM\"],\n  \"vocab_size\": %d,\n"
             "  \"hidden_size\": %d,\n  \"intermediate_size\": %d,\n  \"num_hidden_layers\": %d,\n"
             "  \"num_attention_heads\": 4,\n  \"num_key_value_heads\": 2,\n  \"rms_norm_eps\": 1e-05,\n"
             "  \"tie_word_embeddings\": false,\n  \"torch_dtype\": \"float32\"\n}\n",
             m->vocab, m->hidden, m->inter, m->layers);
    return s;
}

static inline uint32_t synth_hash(const char *s) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static inline float synth_val(uint32_t h, size_t i, int kind, int seed) {
    uint64_t x = h * 0x9E3779B97F4A7C15ull + i * 0xBF58476D1CE4E5B9ull + (uint64_t)kind * 0x94D049BB133111EBull + (uint64_t)seed;
    x ^= x >> 31;
    x *= 0xD6E8FEB86965A7F9ull;
    x ^= x >> 29;
    float v = (float)((x >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
    return kind == 2 ? v * v : v;
}

/* Tensors of stage s of S (layers split evenly, remainder to the first ones). */
typedef struct {
    ap_ckpt_tensor *t;
    int n, cap;
    int first_layer, last_layer;
} synth_stage;

static inline void synth_add(synth_stage *st, const char *name, int ndim, size_t d0, size_t d1) {
    if (st->n == st->cap) st->t = realloc(st->t, sizeof *st->t * (size_t)(st->cap = st->cap ? 2 * st->cap : 16));
    ap_ckpt_tensor *t = &st->t[st->n++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->ndim = ndim;
    t->shape[0] = d0;
    t->shape[1] = d1;
    size_t n = ndim == 1 ? d0 : d0 * d1;
    t->param = calloc(n, 4);
    t->exp_avg = calloc(n, 4);
    t->exp_avg_sq = calloc(n, 4);
}

static inline void synth_layer_range(const synth_model *m, int s, int S, int *first, int *last) {
    int base = m->layers / S, rem = m->layers % S;
    *first = s * base + (s < rem ? s : rem);
    *last = *first + base + (s < rem ? 1 : 0);
}

static inline synth_stage synth_stage_tensors(const synth_model *m, int s, int S) {
    synth_stage st = {0};
    synth_layer_range(m, s, S, &st.first_layer, &st.last_layer);
    size_t C = (size_t)m->hidden, I = (size_t)m->inter, V = (size_t)m->vocab, K = (size_t)m->kv;
    char nm[160];
    if (s == 0) synth_add(&st, "model.embed_tokens.weight", 2, V, C);
    for (int l = st.first_layer; l < st.last_layer; l++) {
#define L(x, nd, a, b) (snprintf(nm, sizeof nm, "model.layers.%d." x, l), synth_add(&st, nm, nd, a, b))
        L("input_layernorm.weight", 1, C, 0);
        L("self_attn.q_proj.weight", 2, C, C);
        L("self_attn.k_proj.weight", 2, K, C);
        L("self_attn.v_proj.weight", 2, K, C);
        L("self_attn.o_proj.weight", 2, C, C);
        L("post_attention_layernorm.weight", 1, C, 0);
        L("mlp.gate_proj.weight", 2, I, C);
        L("mlp.up_proj.weight", 2, I, C);
        L("mlp.down_proj.weight", 2, C, I);
#undef L
    }
    if (s == S - 1) {
        synth_add(&st, "model.norm.weight", 1, C, 0);
        synth_add(&st, "lm_head.weight", 2, V, C);
    }
    return st;
}

static inline size_t synth_numel(const ap_ckpt_tensor *t) {
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

static inline void synth_fill(synth_stage *st, int seed) {
    for (int i = 0; i < st->n; i++) {
        ap_ckpt_tensor *t = &st->t[i];
        uint32_t h = synth_hash(t->name);
        for (size_t j = 0; j < synth_numel(t); j++) {
            t->param[j] = synth_val(h, j, 0, seed);
            t->exp_avg[j] = synth_val(h, j, 1, seed);
            t->exp_avg_sq[j] = synth_val(h, j, 2, seed);
        }
    }
}

/* Number of elements differing from the generator (bitwise), over all arrays. */
static inline size_t synth_check(const synth_stage *st, int seed, const char **first_bad) {
    size_t bad = 0;
    for (int i = 0; i < st->n; i++) {
        const ap_ckpt_tensor *t = &st->t[i];
        uint32_t h = synth_hash(t->name);
        for (size_t j = 0; j < synth_numel(t); j++) {
            float a = synth_val(h, j, 0, seed), b = synth_val(h, j, 1, seed), c = synth_val(h, j, 2, seed);
            if (memcmp(&a, &t->param[j], 4) || memcmp(&b, &t->exp_avg[j], 4) || memcmp(&c, &t->exp_avg_sq[j], 4)) {
                if (!bad && first_bad) *first_bad = t->name;
                bad++;
            }
        }
    }
    return bad;
}

static inline void synth_clear(synth_stage *st) {
    for (int i = 0; i < st->n; i++) {
        size_t n = synth_numel(&st->t[i]) * 4;
        memset(st->t[i].param, 0, n);
        memset(st->t[i].exp_avg, 0, n);
        memset(st->t[i].exp_avg_sq, 0, n);
    }
}

static inline void synth_free(synth_stage *st) {
    for (int i = 0; i < st->n; i++) {
        free((char *)st->t[i].name);
        free(st->t[i].param);
        free(st->t[i].exp_avg);
        free(st->t[i].exp_avg_sq);
    }
    free(st->t);
    memset(st, 0, sizeof *st);
}

#endif
