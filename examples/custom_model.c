/* custom_model.c - the guide's CustomModel as a pipeline stage; see custom_model.h. */
#include "examples/custom_model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/carve.h"
#include "kernels/kernels.h"

enum { INIT_NORMAL, INIT_ONE, INIT_ZERO };

typedef struct {
    float *win, *bin, *wo, *bo, *w0, *b0, *w2, *b2, *n1w, *n1b, *n2w, *n2b;
} cm_w;

/* What one layer keeps from F to W. */
typedef struct {
    float *qkv;          /* (N, 3C) in_proj output: q | k | v */
    float *att;          /* (B, H, T, T) softmax */
    float *y;            /* (N, C) attention output before out_proj */
    float *r1;           /* (N, C) x + attn(x) */
    float *mean1, *rstd1; /* (N) */
    float *x1;           /* (N, C) norm1 output */
    float *h, *g;        /* (N, F) mlp.0 output, GELU of it */
    float *r2;           /* (N, C) x1 + mlp(x1) */
    float *mean2, *rstd2; /* (N) */
} cm_acts;

/* Output gradients of the matrix products, from I to W. */
typedef struct {
    float *dqkv; /* (N, 3C) */
    float *da;   /* (N, C) at out_proj's output */
    float *dh;   /* (N, F) at mlp.0's output */
    float *dm;   /* (N, C) at mlp.2's output */
} cm_douts;

enum slot_state { S_FREE, S_FORWARD, S_INPUT_DONE };

typedef struct {
    enum slot_state state;
    int32_t *tokens, *labels; /* (N) */
    float *resid;             /* (L + 1, N, C): each layer's input, then the stage output */
    cm_acts *layers;          /* (L) */
    cm_douts *stash;          /* (L) */
    float *probs;             /* (N, V) logits -> probs -> dlogits (last stage) */
    float *demb;              /* (N, C) gradient at the embedding output (first stage) */
} cm_slot;

typedef struct {
    size_t L, B, T, N, C, H, D, F, V;
    int has_embed, has_head, max_slots;
    float eps, scale;
    double init_std; /* initializer_range */
    float *wte, *dwte, *wout, *bout, *dwout, *dbout;
    cm_w *w, *g;
    unsigned char *init_kind; /* (n_refs) */
    cm_slot *slots;           /* max_slots + 1: the last one serves no-grad forwards */
    float *acts_mem;
    int32_t *ids_mem;
    float *dx, *dt, *dg, *dy, *att_scratch;
    size_t att_scratch_n;
    char err[512];
} custom;

static void set_err(custom *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(custom *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
}


/* One slot's activations; sl NULL: only count. */
static void carve_slot(const custom *m, cm_slot *sl, float *base, size_t *off) {
    size_t N = m->N, C = m->C, F = m->F;
    float *r = ap_carve(base, off, (m->L + 1) * N * C);
    if (sl) sl->resid = r;
    for (size_t l = 0; l < m->L; l++) {
        cm_acts a;
        cm_douts d;
        a.qkv = ap_carve(base, off, N * 3 * C);
        a.att = ap_carve(base, off, m->B * m->H * m->T * m->T);
        a.y = ap_carve(base, off, N * C);
        a.r1 = ap_carve(base, off, N * C);
        a.mean1 = ap_carve(base, off, N);
        a.rstd1 = ap_carve(base, off, N);
        a.x1 = ap_carve(base, off, N * C);
        a.h = ap_carve(base, off, N * F);
        a.g = ap_carve(base, off, N * F);
        a.r2 = ap_carve(base, off, N * C);
        a.mean2 = ap_carve(base, off, N);
        a.rstd2 = ap_carve(base, off, N);
        d.dqkv = ap_carve(base, off, N * 3 * C);
        d.da = ap_carve(base, off, N * C);
        d.dh = ap_carve(base, off, N * F);
        d.dm = ap_carve(base, off, N * C);
        if (sl) sl->layers[l] = a, sl->stash[l] = d;
    }
    float *p = m->has_head ? ap_carve(base, off, N * m->V) : NULL;
    float *e = m->has_embed ? ap_carve(base, off, N * C) : NULL;
    if (sl) sl->probs = p, sl->demb = e;
}

static void dims_of(custom *m, const ap_model_config *mc, int first, int last, int has_embed, int has_head, int B,
                    int T) {
    m->L = (size_t)(last - first);
    m->B = (size_t)B;
    m->T = (size_t)T;
    m->N = m->B * m->T;
    m->C = (size_t)mc->hidden_size;
    m->H = (size_t)mc->num_attention_heads;
    m->D = m->C / m->H;
    m->F = 4 * m->C;
    m->V = (size_t)mc->vocab_size;
    m->has_embed = has_embed;
    m->has_head = has_head;
}

size_t ap_custom_act_bytes(const ap_model_config *mc, int first_layer, int last_layer, int has_embed, int has_head,
                           int B, int T) {
    custom m = {0};
    if (mc->hidden_size < 1 || mc->num_attention_heads < 1 || last_layer < first_layer) return 0;
    dims_of(&m, mc, first_layer, last_layer, has_embed, has_head, B, T);
    size_t off = 0;
    carve_slot(&m, NULL, NULL, &off);
    return off * sizeof(float) + (size_t)(has_embed + has_head) * m.N * sizeof(int32_t);
}

/* ---- parameters ---- */

typedef struct {
    ap_stage *s;
    custom *m;
    size_t off;
    int n;
} ptab;

/* Registers a tensor; returns its place in the flat buffer (NULL while counting). */
static float *padd(ptab *t, int kind, int no_decay, size_t d0, size_t d1, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static float *padd(ptab *t, int kind, int no_decay, size_t d0, size_t d1, const char *fmt, ...) {
    size_t numel = d0 * (d1 ? d1 : 1), off = t->off;
    t->off += numel;
    ap_stage *s = t->s;
    int i = t->n++;
    if (!s->params) return NULL;
    ap_param_ref *r = &s->refs[i];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->name, sizeof r->name, fmt, ap);
    va_end(ap);
    r->ndim = d1 ? 2 : 1;
    r->shape[0] = d0;
    r->shape[1] = d1;
    r->numel = numel;
    r->param = s->params + off;
    r->grad = s->grads + off;
    r->no_decay = no_decay;
    t->m->init_kind[i] = (unsigned char)kind;
    return r->param;
}

/* Walks the parameters in buffer order; with s->params set, fills refs and
 * the weight/grad pointers (grad = param + (grads - params)). */
static void param_table(ptab *t, int first) {
    custom *m = t->m;
    size_t C = m->C, F = m->F, V = m->V;
    ptrdiff_t gd = t->s->params ? t->s->grads - t->s->params : 0;
#define GRAD(p) ((p) ? (p) + gd : NULL)
    if (m->has_embed) {
        m->wte = padd(t, INIT_NORMAL, 0, V, C, "embedding.weight");
        m->dwte = GRAD(m->wte);
    }
    for (size_t l = 0; l < m->L; l++) {
        int n = first + (int)l;
        cm_w w;
        w.win = padd(t, INIT_NORMAL, 0, 3 * C, C, "layers.%d.attention.in_proj_weight", n);
        w.bin = padd(t, INIT_ZERO, 1, 3 * C, 0, "layers.%d.attention.in_proj_bias", n);
        w.wo = padd(t, INIT_NORMAL, 0, C, C, "layers.%d.attention.out_proj.weight", n);
        w.bo = padd(t, INIT_ZERO, 1, C, 0, "layers.%d.attention.out_proj.bias", n);
        w.w0 = padd(t, INIT_NORMAL, 0, F, C, "layers.%d.mlp.0.weight", n);
        w.b0 = padd(t, INIT_ZERO, 1, F, 0, "layers.%d.mlp.0.bias", n);
        w.w2 = padd(t, INIT_NORMAL, 0, C, F, "layers.%d.mlp.2.weight", n);
        w.b2 = padd(t, INIT_ZERO, 1, C, 0, "layers.%d.mlp.2.bias", n);
        w.n1w = padd(t, INIT_ONE, 1, C, 0, "layers.%d.norm1.weight", n);
        w.n1b = padd(t, INIT_ZERO, 1, C, 0, "layers.%d.norm1.bias", n);
        w.n2w = padd(t, INIT_ONE, 1, C, 0, "layers.%d.norm2.weight", n);
        w.n2b = padd(t, INIT_ZERO, 1, C, 0, "layers.%d.norm2.bias", n);
        if (m->w) {
            m->w[l] = w;
            m->g[l] = (cm_w){GRAD(w.win), GRAD(w.bin), GRAD(w.wo), GRAD(w.bo), GRAD(w.w0), GRAD(w.b0),
                             GRAD(w.w2),  GRAD(w.b2),  GRAD(w.n1w), GRAD(w.n1b), GRAD(w.n2w), GRAD(w.n2b)};
        }
    }
    if (m->has_head) {
        m->wout = padd(t, INIT_NORMAL, 0, V, C, "output_proj.weight");
        m->bout = padd(t, INIT_ZERO, 1, V, 0, "output_proj.bias");
        m->dwout = GRAD(m->wout);
        m->dbout = GRAD(m->bout);
    }
#undef GRAD
}

long long ap_custom_param_count(const ap_model_config *mc, int first_layer, int last_layer, int has_embed,
                                int has_head) {
    if (last_layer < first_layer || mc->hidden_size < 1 || mc->vocab_size < 1) return -1;
    long long C = mc->hidden_size, V = mc->vocab_size, F = 4 * C;
    long long layer = 3 * C * C + 3 * C + C * C + C + F * C + F + C * F + C + 4 * C;
    return (has_embed ? V * C : 0) + (last_layer - first_layer) * layer + (has_head ? V * C + V : 0);
}

/* ---- forward ---- */

/* pos: packed rows' position ids (the model has no positional encoding; they
 * only keep attention within each example), or NULL. */
static void layer_forward(custom *m, const cm_w *w, const cm_acts *a, const int32_t *pos, const float *x,
                          float *out) {
    size_t N = m->N, C = m->C, F = m->F;
    ap_matmul_forward(a->qkv, x, w->win, w->bin, N, C, 3 * C, 0);
    ap_attention_forward(a->y, a->att, a->qkv, pos, m->B, m->T, m->H, m->H, m->D, 0, m->scale);
    ap_matmul_forward(a->r1, a->y, w->wo, w->bo, N, C, C, 0);
    for (size_t i = 0; i < N * C; i++) a->r1[i] += x[i];
    ap_layernorm_forward(a->x1, a->mean1, a->rstd1, a->r1, w->n1w, w->n1b, N, C, m->eps);
    ap_matmul_forward(a->h, a->x1, w->w0, w->b0, N, C, F, 0);
    ap_gelu_forward(a->g, a->h, N * F);
    ap_matmul_forward(a->r2, a->g, w->w2, w->b2, N, F, C, 0);
    for (size_t i = 0; i < N * C; i++) a->r2[i] += a->x1[i];
    ap_layernorm_forward(out, a->mean2, a->rstd2, a->r2, w->n2w, w->n2b, N, C, m->eps);
}

static int cm_forward(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in,
                      float *out, const int32_t *labels, double *loss_sum, long *n_tokens) {
    custom *m = s->impl;
    if (slot >= m->max_slots) {
        set_err(m, "custom stage %d: slot %d out of range (max_slots %d)", s->stage_id, slot, m->max_slots);
        return -1;
    }
    cm_slot *sl = &m->slots[slot < 0 ? m->max_slots : slot];
    if (sl->state != S_FREE) {
        set_err(m, "custom stage %d: forward into slot %d, still in use", s->stage_id, slot);
        return -1;
    }
    size_t N = m->N, C = m->C, V = m->V;
    for (size_t n = 0; pos && n < N; n++)
        if (pos[n] < 0 || (size_t)pos[n] > n % m->T) {
            set_err(m, "custom stage %d: position id %d at %zu outside [0, %zu]", s->stage_id, (int)pos[n], n,
                    n % m->T);
            return -1;
        }
    float *x = sl->resid;
    if (m->has_embed) {
        if (!tokens) {
            set_err(m, "custom stage %d: the first stage needs token ids", s->stage_id);
            return -1;
        }
        for (size_t n = 0; n < N; n++)
            if (tokens[n] < 0 || (size_t)tokens[n] >= V) {
                set_err(m, "custom stage %d: token id %d at %zu outside the vocabulary [0, %zu)", s->stage_id,
                        (int)tokens[n], n, V);
                return -1;
            }
        memcpy(sl->tokens, tokens, N * sizeof *tokens);
        ap_embedding_forward(x, tokens, m->wte, N, C, 1.0f);
    } else {
        if (!in) {
            set_err(m, "custom stage %d: no input activations", s->stage_id);
            return -1;
        }
        memcpy(x, in, N * C * sizeof *x);
    }
    for (size_t l = 0; l < m->L; l++) layer_forward(m, &m->w[l], &sl->layers[l], pos, x + l * N * C, x + (l + 1) * N * C);
    const float *xl = x + m->L * N * C;
    if (m->has_head) {
        if (!labels) {
            set_err(m, "custom stage %d: the last stage needs labels", s->stage_id);
            return -1;
        }
        for (size_t n = 0; n < N; n++)
            if (labels[n] != -100 && (labels[n] < 0 || (size_t)labels[n] >= V)) {
                set_err(m, "custom stage %d: label %d at %zu is neither -100 nor in [0, %zu)", s->stage_id,
                        (int)labels[n], n, V);
                return -1;
            }
        memcpy(sl->labels, labels, N * sizeof *labels);
        ap_matmul_forward(sl->probs, xl, m->wout, m->bout, N, C, V, 0);
        long cnt = 0;
        double loss = ap_crossentropy_forward(sl->probs, &cnt, sl->probs, labels, N, V);
        if (loss_sum) *loss_sum += loss;
        if (n_tokens) *n_tokens += cnt;
    } else if (out) {
        memcpy(out, xl, N * C * sizeof *out);
    }
    sl->state = slot < 0 ? S_FREE : S_FORWARD;
    return 0;
}

/* ---- backward ---- */

/* m->dx holds the gradient at the layer's output; leaves the one at its input. */
static void layer_backward_input(custom *m, const cm_w *w, cm_w *g, const cm_acts *a, const cm_douts *d) {
    size_t N = m->N, C = m->C, F = m->F;
    /* x_out = norm2(r2), r2 = x1 + mlp(x1) */
    ap_layernorm_backward(m->dt, g->n2w, g->n2b, m->dx, a->r2, w->n2w, a->mean2, a->rstd2, N, C, 0);
    memcpy(d->dm, m->dt, N * C * sizeof(float));
    ap_matmul_backward_input(m->dg, d->dm, w->w2, N, F, C, 0);
    ap_gelu_backward(d->dh, m->dg, a->h, N * F);
    ap_matmul_backward_input(m->dt, d->dh, w->w0, N, C, F, 1); /* dx1 = dr2 + mlp path */
    /* x1 = norm1(r1), r1 = x + attn(x) */
    ap_layernorm_backward(m->dx, g->n1w, g->n1b, m->dt, a->r1, w->n1w, a->mean1, a->rstd1, N, C, 0);
    memcpy(d->da, m->dx, N * C * sizeof(float));
    ap_matmul_backward_input(m->dy, d->da, w->wo, N, C, C, 0);
    ap_attention_backward(d->dqkv, m->att_scratch, m->dy, a->qkv, a->att, m->B, m->T, m->H, m->H, m->D, 0, m->scale);
    ap_matmul_backward_input(m->dx, d->dqkv, w->win, N, C, 3 * C, 1); /* dx = dr1 + attention path */
}

static int cm_backward_input(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    custom *m = s->impl;
    if (slot < 0 || slot >= m->max_slots || m->slots[slot].state != S_FORWARD) {
        set_err(m, "custom stage %d: backward of slot %d without its forward", s->stage_id, slot);
        return -1;
    }
    size_t nt = (size_t)ap_kernels_threads() * m->T * m->T;
    if (nt > m->att_scratch_n) { /* attention backward: (threads, T, T) */
        float *p = realloc(m->att_scratch, nt * sizeof(float));
        if (!p) {
            set_err(m, "custom stage %d: out of memory", s->stage_id);
            return -1;
        }
        m->att_scratch = p;
        m->att_scratch_n = nt;
    }
    cm_slot *sl = &m->slots[slot];
    size_t N = m->N, C = m->C, V = m->V;
    if (m->has_head) {
        ap_crossentropy_backward(sl->probs, sl->probs, sl->labels, dloss, N, V);
        ap_matmul_backward_input(m->dx, sl->probs, m->wout, N, C, V, 0);
    } else {
        if (!dout) {
            set_err(m, "custom stage %d: no output gradient", s->stage_id);
            return -1;
        }
        memcpy(m->dx, dout, N * C * sizeof(float));
    }
    for (size_t l = m->L; l-- > 0;) layer_backward_input(m, &m->w[l], &m->g[l], &sl->layers[l], &sl->stash[l]);
    if (m->has_embed) memcpy(sl->demb, m->dx, N * C * sizeof(float));
    else if (din) memcpy(din, m->dx, N * C * sizeof(float));
    sl->state = S_INPUT_DONE;
    return 0;
}

static int cm_backward_weight(ap_stage *s, int slot) {
    custom *m = s->impl;
    if (slot < 0 || slot >= m->max_slots || m->slots[slot].state != S_INPUT_DONE) {
        set_err(m, "custom stage %d: weight gradient of slot %d before its input gradient", s->stage_id, slot);
        return -1;
    }
    cm_slot *sl = &m->slots[slot];
    size_t N = m->N, C = m->C, F = m->F;
    if (m->has_head) ap_matmul_backward_weight(m->dwout, m->dbout, sl->probs, sl->resid + m->L * N * C, N, C, m->V);
    for (size_t l = m->L; l-- > 0;) {
        const cm_acts *a = &sl->layers[l];
        const cm_douts *d = &sl->stash[l];
        cm_w *g = &m->g[l];
        ap_matmul_backward_weight(g->w2, g->b2, d->dm, a->g, N, F, C);
        ap_matmul_backward_weight(g->w0, g->b0, d->dh, a->x1, N, C, F);
        ap_matmul_backward_weight(g->wo, g->bo, d->da, a->y, N, C, C);
        ap_matmul_backward_weight(g->win, g->bin, d->dqkv, sl->resid + l * N * C, N, C, 3 * C);
    }
    if (m->has_embed) ap_embedding_backward(m->dwte, sl->demb, sl->tokens, N, C, 1.0f);
    sl->state = S_FREE;
    return 0;
}

static int cm_backward(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    if (cm_backward_input(s, slot, dout, dloss, din)) return -1;
    return cm_backward_weight(s, slot);
}

static void cm_destroy(ap_stage *s) {
    custom *m = s->impl;
    if (m) {
        free(m->w);
        free(m->g);
        free(m->init_kind);
        if (m->slots)
            for (int i = 0; i <= m->max_slots; i++) free(m->slots[i].layers), free(m->slots[i].stash);
        free(m->slots);
        free(m->acts_mem);
        free(m->ids_mem);
        free(m->dx);
        free(m->att_scratch);
        free(m);
    }
    free(s->params);
    free(s->grads);
    free(s->refs);
    free(s);
}

static const ap_stage_ops cm_ops = {cm_forward, cm_backward, cm_backward_input, cm_backward_weight, cm_destroy};

int ap_custom_stage_create(ap_stage **out, const ap_model_config *mc, int first_layer, int last_layer,
                           int has_embed, int has_head, int B, int T, int max_slots, char *err, size_t errlen) {
    *out = NULL;
    if (mc->vocab_size < 1 || mc->hidden_size < 1 || mc->num_attention_heads < 1 ||
        mc->hidden_size % mc->num_attention_heads) {
        snprintf(err, errlen,
                 "custom model: vocab_size %d, hidden_size %d, num_attention_heads %d: sizes must be positive and "
                 "the heads must divide hidden_size",
                 mc->vocab_size, mc->hidden_size, mc->num_attention_heads);
        return -1;
    }
    if (first_layer < 0 || last_layer < first_layer || last_layer > mc->num_hidden_layers ||
        (first_layer == last_layer && !has_embed && !has_head)) {
        snprintf(err, errlen, "custom model: layers [%d, %d) of %d: not a stage", first_layer, last_layer,
                 mc->num_hidden_layers);
        return -1;
    }
    if (B < 1 || T < 1 || max_slots < 1 || max_slots > 4096) {
        snprintf(err, errlen, "custom model: microbatch %d x %d with %d slots: expected positive sizes", B, T,
                 max_slots);
        return -1;
    }
    ap_stage *s = calloc(1, sizeof *s);
    custom *m = calloc(1, sizeof *m);
    if (!s || !m) goto oom;
    s->ops = &cm_ops;
    s->impl = m;
    dims_of(m, mc, first_layer, last_layer, has_embed, has_head, B, T);
    m->max_slots = max_slots;
    m->eps = (float)(mc->rms_norm_eps > 0 ? mc->rms_norm_eps : 1e-5);
    m->scale = 1.0f / sqrtf((float)m->D);
    m->init_std = mc->initializer_range;
    s->is_first = has_embed;
    s->is_last = has_head;
    s->first_layer = first_layer;
    s->last_layer = last_layer;
    s->B = B;
    s->T = T;
    s->act_numel = m->N * m->C;
    s->max_slots = max_slots;
    /* parameters: count, allocate, then fill the table */
    ptab t = {s, m, 0, 0};
    param_table(&t, first_layer);
    s->n_params = t.off;
    s->n_refs = t.n;
    s->params = calloc(t.off ? t.off : 1, sizeof(float));
    s->grads = calloc(t.off ? t.off : 1, sizeof(float));
    s->refs = calloc((size_t)t.n ? (size_t)t.n : 1, sizeof *s->refs);
    m->init_kind = calloc((size_t)t.n ? (size_t)t.n : 1, 1);
    m->w = calloc(m->L ? m->L : 1, sizeof *m->w);
    m->g = calloc(m->L ? m->L : 1, sizeof *m->g);
    if (!s->params || !s->grads || !s->refs || !m->init_kind || !m->w || !m->g) goto oom;
    t = (ptab){s, m, 0, 0};
    param_table(&t, first_layer);
    /* activations: max_slots + 1 slots in one allocation */
    size_t per = 0;
    carve_slot(m, NULL, NULL, &per);
    size_t ns = (size_t)max_slots + 1, N = m->N, C = m->C;
    m->slots = calloc(ns, sizeof *m->slots);
    m->acts_mem = malloc(ns * per * sizeof(float));
    m->ids_mem = malloc(ns * 2 * N * sizeof(int32_t));
    m->dx = malloc((3 * N * C + N * m->F) * sizeof(float));
    if (!m->slots || !m->acts_mem || !m->ids_mem || !m->dx) goto oom;
    m->dt = m->dx + N * C;
    m->dy = m->dt + N * C;
    m->dg = m->dy + N * C;
    for (size_t i = 0; i < ns; i++) {
        cm_slot *sl = &m->slots[i];
        sl->layers = calloc(m->L ? m->L : 1, sizeof *sl->layers);
        sl->stash = calloc(m->L ? m->L : 1, sizeof *sl->stash);
        if (!sl->layers || !sl->stash) goto oom;
        size_t off = 0;
        carve_slot(m, sl, m->acts_mem + i * per, &off);
        sl->tokens = m->ids_mem + i * 2 * N;
        sl->labels = sl->tokens + N;
    }
    *out = s;
    return 0;
oom:
    snprintf(err, errlen, "custom model: out of memory for layers [%d, %d) at microbatch %d x %d", first_layer,
             last_layer, B, T);
    if (s) cm_destroy(s);
    else free(m);
    return -1;
}

const char *ap_custom_stage_error(const ap_stage *s) { return ((const custom *)s->impl)->err; }

/* ---- init ---- */

static uint64_t splitmix64(uint64_t x) {
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void ap_custom_init_params(ap_stage *s, uint64_t seed) {
    const custom *m = s->impl;
    for (int r = 0; r < s->n_refs; r++) {
        ap_param_ref *p = &s->refs[r];
        int kind = m->init_kind[r];
        if (kind != INIT_NORMAL) {
            for (size_t i = 0; i < p->numel; i++) p->param[i] = kind == INIT_ONE ? 1.0f : 0.0f;
            continue;
        }
        uint64_t h = 1469598103934665603ull; /* FNV-1a of the FQN */
        for (const char *c = p->name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        uint64_t key = splitmix64(seed ^ h);
        for (size_t i = 0; i < p->numel; i++) {
            double u1 = ((double)(splitmix64(key + 2 * i) >> 11) + 1) * 0x1p-53;
            double u2 = (double)(splitmix64(key + 2 * i + 1) >> 11) * 0x1p-53;
            p->param[i] = (float)(m->init_std * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
        }
    }
}
