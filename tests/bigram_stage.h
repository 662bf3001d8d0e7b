/* bigram_stage.h - a bigram model behind trainer/stage.h for the
 * training-loop tests: logits = embed[token] @ head^T + bias, masked
 * cross-entropy. Real forward and backward (no shortcuts), small enough that
 * a test runs hundreds of steps in a second; the bias is no_decay. */
#ifndef AP_TESTS_BIGRAM_STAGE_H
#define AP_TESTS_BIGRAM_STAGE_H

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/stage.h"

typedef struct {
    int V, C;
    float *embed, *head, *bias;    /* into params: (V, C), (V, C), (V) */
    float *dembed, *dhead, *dbias; /* into grads */
    int32_t *tokens, *labels;      /* slot 0: (B, T) */
    float *h, *probs;              /* slot 0: (B*T, C), (B*T, V) */
} bigram_impl;

static int bigram_forward(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in,
                        float *out, const int32_t *labels, double *loss_sum, long *n_tokens) {
    (void)pos; /* no attention: positions change nothing */
    (void)in;
    (void)out;
    bigram_impl *t = s->impl;
    size_t N = (size_t)s->B * s->T, V = t->V, C = t->C;
    double loss = 0;
    long count = 0;
    for (size_t n = 0; n < N; n++) {
        if (tokens[n] < 0 || tokens[n] >= (int)V) return -1;
        const float *e = t->embed + (size_t)tokens[n] * C;
        float *h = t->h + n * C, *p = t->probs + n * V;
        memcpy(h, e, C * sizeof(float));
        float mx = -INFINITY;
        for (size_t v = 0; v < V; v++) {
            float z = t->bias[v];
            for (size_t c = 0; c < C; c++) z += h[c] * t->head[v * C + c];
            p[v] = z;
            if (z > mx || z != z) mx = z;
        }
        double sum = 0;
        for (size_t v = 0; v < V; v++) sum += (p[v] = expf(p[v] - mx));
        for (size_t v = 0; v < V; v++) p[v] = (float)(p[v] / sum);
        if (labels[n] != -100) {
            loss += -log((double)p[labels[n]]);
            count++;
        }
    }
    *loss_sum += loss;
    *n_tokens += count;
    if (slot >= 0) {
        memcpy(t->tokens, tokens, N * sizeof(int32_t));
        memcpy(t->labels, labels, N * sizeof(int32_t));
    }
    return 0;
}

static int bigram_backward(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    (void)slot;
    (void)dout;
    (void)din;
    bigram_impl *t = s->impl;
    size_t N = (size_t)s->B * s->T, V = t->V, C = t->C;
    float *dh = malloc(C * sizeof(float));
    if (!dh) return -1;
    for (size_t n = 0; n < N; n++) {
        if (t->labels[n] == -100) continue;
        const float *h = t->h + n * C, *p = t->probs + n * V;
        memset(dh, 0, C * sizeof(float));
        for (size_t v = 0; v < V; v++) {
            float g = dloss * (p[v] - (v == (size_t)t->labels[n] ? 1.0f : 0.0f));
            t->dbias[v] += g;
            for (size_t c = 0; c < C; c++) {
                t->dhead[v * C + c] += g * h[c];
                dh[c] += g * t->head[v * C + c];
            }
        }
        float *de = t->dembed + (size_t)t->tokens[n] * C;
        for (size_t c = 0; c < C; c++) de[c] += dh[c];
    }
    free(dh);
    return 0;
}

static void bigram_destroy(ap_stage *s) {
    bigram_impl *t = s->impl;
    free(t->tokens);
    free(t->labels);
    free(t->h);
    free(t->probs);
    free(t);
    free(s->params);
    free(s->grads);
    free(s->refs);
    free(s);
}

static const ap_stage_ops bigram_ops = {bigram_forward, bigram_backward, NULL, NULL, bigram_destroy};

static ap_stage *bigram_stage_create(int V, int C, int B, int T, unsigned seed) {
    ap_stage *s = calloc(1, sizeof *s);
    bigram_impl *t = calloc(1, sizeof *t);
    size_t N = (size_t)B * T;
    s->ops = &bigram_ops;
    s->num_stages = 1;
    s->is_first = s->is_last = 1;
    s->B = B;
    s->T = T;
    s->max_slots = 1;
    s->n_params = 2 * (size_t)V * C + V;
    s->params = calloc(s->n_params, sizeof(float));
    s->grads = calloc(s->n_params, sizeof(float));
    s->impl = t;
    t->V = V;
    t->C = C;
    t->embed = s->params;
    t->head = s->params + (size_t)V * C;
    t->bias = s->params + 2 * (size_t)V * C;
    t->dembed = s->grads;
    t->dhead = s->grads + (size_t)V * C;
    t->dbias = s->grads + 2 * (size_t)V * C;
    t->tokens = malloc(N * sizeof(int32_t));
    t->labels = malloc(N * sizeof(int32_t));
    t->h = malloc(N * C * sizeof(float));
    t->probs = malloc(N * V * sizeof(float));
    s->n_refs = 3;
    s->refs = calloc(3, sizeof *s->refs);
    const char *names[3] = {"model.embed_tokens.weight", "lm_head.weight", "lm_head.bias"};
    float *ptrs[3] = {t->embed, t->head, t->bias}, *gptrs[3] = {t->dembed, t->dhead, t->dbias};
    for (int i = 0; i < 3; i++) {
        ap_param_ref *r = &s->refs[i];
        snprintf(r->name, sizeof r->name, "%s", names[i]);
        r->ndim = i < 2 ? 2 : 1;
        r->shape[0] = (size_t)V;
        r->shape[1] = i < 2 ? (size_t)C : 0;
        r->numel = i < 2 ? (size_t)V * C : (size_t)V;
        r->param = ptrs[i];
        r->grad = gptrs[i];
        r->no_decay = i == 2;
    }
    /* small uniform init from a fixed LCG: same parameters for the same seed */
    unsigned x = seed * 2654435761u + 1;
    for (size_t i = 0; i < 2 * (size_t)V * C; i++) {
        x = x * 1664525u + 1013904223u;
        s->params[i] = 0.1f * ((float)(x >> 8) / 16777216.0f - 0.5f);
    }
    return s;
}

#endif
