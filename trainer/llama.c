/* llama.c - the Llama family as a pipeline stage: a contiguous range of
 * decoder layers, optionally with the token embedding in front and the
 * final norm, lm_head and cross-entropy behind. See llama.h. */
#include "trainer/llama.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/carve.h"
#include "kernels/kernels.h"

/* ------------------------------------------------------------ param table */

enum role { R_EMB, R_LN1, R_WQ, R_WK, R_WV, R_BQ, R_BK, R_BV, R_QN, R_KN, R_WO, R_LN2, R_WG, R_WU,
            R_WD, R_NORMF, R_LM };
enum init_kind { I_NORMAL, I_NORM, I_ZERO };

typedef struct {
    char name[128];
    int ndim;
    size_t shape[2];
    int no_decay;
    enum role role;
    enum init_kind init;
    int layer; /* local layer index, -1 for embedding/head */
} pdesc;

typedef struct {
    int n;
    size_t numel;
    pdesc *d; /* NULL: count only */
} ptable;

static void padd(ptable *t, enum role role, int layer, int global_layer, const char *fmt_suffix,
                 size_t rows, size_t cols) {
    if (t->d) {
        pdesc *p = &t->d[t->n];
        memset(p, 0, sizeof *p);
        if (global_layer >= 0)
            snprintf(p->name, sizeof p->name, "model.layers.%d.%s", global_layer, fmt_suffix);
        else
            snprintf(p->name, sizeof p->name, "%s", fmt_suffix);
        p->ndim = cols ? 2 : 1;
        p->shape[0] = rows;
        p->shape[1] = cols;
        p->role = role;
        p->layer = layer;
        int is_norm = role == R_LN1 || role == R_LN2 || role == R_QN || role == R_KN || role == R_NORMF;
        int is_bias = role == R_BQ || role == R_BK || role == R_BV;
        p->no_decay = is_norm || is_bias;
        p->init = is_norm ? I_NORM : is_bias ? I_ZERO : I_NORMAL;
    }
    t->n++;
    t->numel += rows * (cols ? cols : 1);
}

static int is_tied(const ap_model_config *mc) {
    return mc->tie_word_embeddings || mc->model_type == AP_MODEL_GEMMA;
}

/* The stage's parameters in buffer order: q,k,v (and their biases) and
 * gate,up adjacent so that each group is one matrix. */
static void build_table(ptable *t, const ap_model_config *mc, int first, int last, int has_embed,
                        int has_head) {
    size_t C = (size_t)mc->hidden_size, V = (size_t)mc->vocab_size, D = (size_t)mc->head_dim;
    size_t Q = (size_t)mc->num_attention_heads * D, KV = (size_t)mc->num_key_value_heads * D;
    size_t FF = (size_t)mc->intermediate_size;
    if (has_embed) padd(t, R_EMB, -1, -1, "model.embed_tokens.weight", V, C);
    for (int gl = first; gl < last; gl++) {
        int l = gl - first;
        padd(t, R_LN1, l, gl, "input_layernorm.weight", C, 0);
        padd(t, R_WQ, l, gl, "self_attn.q_proj.weight", Q, C);
        padd(t, R_WK, l, gl, "self_attn.k_proj.weight", KV, C);
        padd(t, R_WV, l, gl, "self_attn.v_proj.weight", KV, C);
        if (mc->attention_bias) {
            padd(t, R_BQ, l, gl, "self_attn.q_proj.bias", Q, 0);
            padd(t, R_BK, l, gl, "self_attn.k_proj.bias", KV, 0);
            padd(t, R_BV, l, gl, "self_attn.v_proj.bias", KV, 0);
        }
        if (mc->qk_norm) {
            padd(t, R_QN, l, gl, "self_attn.q_norm.weight", D, 0);
            padd(t, R_KN, l, gl, "self_attn.k_norm.weight", D, 0);
        }
        padd(t, R_WO, l, gl, "self_attn.o_proj.weight", C, Q);
        padd(t, R_LN2, l, gl, "post_attention_layernorm.weight", C, 0);
        padd(t, R_WG, l, gl, "mlp.gate_proj.weight", FF, C);
        padd(t, R_WU, l, gl, "mlp.up_proj.weight", FF, C);
        padd(t, R_WD, l, gl, "mlp.down_proj.weight", C, FF);
    }
    if (has_head) {
        padd(t, R_NORMF, -1, -1, "model.norm.weight", C, 0);
        if (!is_tied(mc))
            padd(t, R_LM, -1, -1, "lm_head.weight", V, C);
        else if (!has_embed) /* head-only stage of a tied model: its own copy */
            padd(t, R_LM, -1, -1, "model.embed_tokens.weight", V, C);
    }
}

/* ---------------------------------------------------------------- structs */

typedef struct {
    float *ln1, *wqkv, *bqkv, *qn, *kn, *wo, *ln2, *wgu, *wdown;
} layer_w;

typedef struct {
    float *ln1;      /* (N, C) */
    float *ln1_rstd; /* (N) */
    float *qkv;      /* (N, S) q, k normed + roped; v */
    float *qk_raw;   /* (N, Q + KV) q, k before q_norm/k_norm (qk_norm only) */
    float *qk_rstd;  /* (N, H + KVH) (qk_norm only) */
    float *att;      /* (B, H, T, T) */
    float *y;        /* (N, Q) attention output */
    float *mid;      /* (N, C) residual after attention */
    float *ln2;      /* (N, C) */
    float *ln2_rstd; /* (N) */
    float *gu;       /* (N, 2I) gate | up */
    float *h;        /* (N, FF) act(gate) * up */
} layer_acts;

/* Output gradients of one layer's matrix products (what W needs). */
typedef struct {
    float *dqkv;  /* (N, S) */
    float *dattn; /* (N, C) grad at o_proj's output */
    float *dgu;   /* (N, 2I) */
    float *dmlp;  /* (N, C) grad at down_proj's output */
} layer_douts;

typedef struct {
    float *lnf;      /* (N, C) */
    float *lnf_rstd; /* (N) */
    float *probs;    /* (N, V) logits -> probs -> dlogits */
} head_acts;

enum slot_state { S_FREE, S_FORWARD, S_INPUT_DONE };

typedef struct {
    enum slot_state state;
    float dloss;
    int32_t *tokens; /* (N) first stage */
    int32_t *labels; /* (N) last stage */
    int32_t *pos;    /* (N) position ids when the microbatch has them (packed rows) */
    int has_pos;
    float *resid;    /* (L + 1, N, C): each layer's input, then the stage output */
    layer_acts *layers; /* L, without checkpointing */
    head_acts head;     /* without checkpointing */
    layer_douts *stash; /* L, the FF/W split */
    float *stash_emb;   /* (N, C) */
} slot_t;

typedef struct {
    ap_model_config mc;
    int L, ckpt, tied, first, last, plus_one, act, window, max_slots;
    size_t B, T, N, C, H, KVH, D, Q, KV, S, FF, V;
    float eps, emb_scale, att_scale;
    float *wte, *dwte, *lm, *dlm, *normf, *dnormf;
    layer_w *w, *g; /* params, grads per local layer */
    float *cos_, *sin_; /* (T, D/2) */
    pdesc *desc;
    float *acts_mem;
    size_t acts_bytes;
    float *stash_mem;
    size_t stash_bytes;
    slot_t *slots;
    /* shared scratch */
    layer_acts sl;
    head_acts sh;
    float *ping, *dres, *dln, *dy, *dh, *datt;
    layer_douts sd;
    char err[512];
} llama;

static void set_err(llama *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(llama *m, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->err, sizeof m->err, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------- carving */

/* One layer's activations for N rows; the attention probabilities only
 * with_att (decoding attends over its cache instead). */
static void carve_layer_acts(const llama *m, layer_acts *a, float *base, size_t *off, size_t N, int with_att) {
    a->ln1 = ap_carve(base, off, N * m->C);
    a->ln1_rstd = ap_carve(base, off, N);
    a->qkv = ap_carve(base, off, N * m->S);
    a->qk_raw = m->mc.qk_norm ? ap_carve(base, off, N * (m->Q + m->KV)) : NULL;
    a->qk_rstd = m->mc.qk_norm ? ap_carve(base, off, N * (m->H + m->KVH)) : NULL;
    a->att = with_att ? ap_carve(base, off, m->B * m->H * m->T * m->T) : NULL;
    a->y = ap_carve(base, off, N * m->Q);
    a->mid = ap_carve(base, off, N * m->C);
    a->ln2 = ap_carve(base, off, N * m->C);
    a->ln2_rstd = ap_carve(base, off, N);
    a->gu = ap_carve(base, off, N * 2 * m->FF);
    a->h = ap_carve(base, off, N * m->FF);
}

static void carve_head(const llama *m, head_acts *h, float *base, size_t *off) {
    h->lnf = ap_carve(base, off, m->N * m->C);
    h->lnf_rstd = ap_carve(base, off, m->N);
    h->probs = ap_carve(base, off, m->N * m->V);
}

static void carve_douts(const llama *m, layer_douts *d, float *base, size_t *off) {
    d->dqkv = ap_carve(base, off, m->N * m->S);
    d->dattn = ap_carve(base, off, m->N * m->C);
    d->dgu = ap_carve(base, off, m->N * 2 * m->FF);
    d->dmlp = ap_carve(base, off, m->N * m->C);
}

/* Activations, one allocation: every slot's region, then the shared scratch.
 * Without checkpointing a slot keeps every layer's activations; with it,
 * only each layer's input (resid) and the scratch holds one layer. */
static size_t carve_acts(llama *m, float *base) {
    size_t off = 0, N = m->N, C = m->C;
    for (int s = 0; s < m->max_slots; s++) {
        slot_t *sl = &m->slots[s];
        sl->tokens = m->first ? (int32_t *)ap_carve(base, &off, N) : NULL;
        sl->labels = m->last ? (int32_t *)ap_carve(base, &off, N) : NULL;
        sl->pos = (int32_t *)ap_carve(base, &off, N);
        sl->resid = ap_carve(base, &off, (size_t)(m->L + 1) * N * C);
        if (!m->ckpt) {
            for (int l = 0; l < m->L; l++) carve_layer_acts(m, &sl->layers[l], base, &off, N, 1);
            if (m->last) carve_head(m, &sl->head, base, &off);
        }
    }
    carve_layer_acts(m, &m->sl, base, &off, N, 1);
    if (m->last) carve_head(m, &m->sh, base, &off);
    m->ping = ap_carve(base, &off, 2 * N * C); /* two (N, C) buffers for the no-grad forward */
    m->dres = ap_carve(base, &off, N * C);
    m->dln = ap_carve(base, &off, N * C);
    m->dy = ap_carve(base, &off, N * m->Q);
    m->dh = ap_carve(base, &off, N * m->FF);
    m->datt = ap_carve(base, &off, AP_KERNELS_MAX_THREADS * m->T * m->T); /* untouched pages cost no RSS */
    carve_douts(m, &m->sd, base, &off);
    return off;
}

static size_t carve_stash(llama *m, float *base) {
    size_t off = 0;
    for (int s = 0; s < m->max_slots; s++) {
        slot_t *sl = &m->slots[s];
        for (int l = 0; l < m->L; l++) carve_douts(m, &sl->stash[l], base, &off);
        sl->stash_emb = m->first ? ap_carve(base, &off, m->N * m->C) : NULL;
    }
    return off;
}

static void *alloc_floats(size_t n, size_t *bytes) {
    size_t b = (n * sizeof(float) + 63) & ~(size_t)63;
    if (b == 0) b = 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, b) != 0) return NULL;
    if (bytes) *bytes = b;
    return p;
}

/* ---------------------------------------------------------------- layers */

/* A layer is attention_in, attention over the positions, attention_out: the
 * training forward runs N = B*T rows with the attention kernel; decoding
 * (ap_llama_decode) runs one row against its KV cache. */

/* a->qkv (N, S) from x (N, C): ln1, q/k/v projections, q/k norms, RoPE at pos. */
static void attention_in(const llama *m, int l, const layer_acts *a, const int32_t *pos, const float *x, size_t N) {
    const layer_w *w = &m->w[l];
    size_t C = m->C, S = m->S, Q = m->Q, KV = m->KV;
    ap_rmsnorm_forward(a->ln1, a->ln1_rstd, x, w->ln1, N, C, m->eps, m->plus_one);
    ap_matmul_forward(a->qkv, a->ln1, w->wqkv, w->bqkv, N, C, S, 0);
    if (m->mc.qk_norm) {
        /* Qwen3: RMSNorm over head_dim of every q and k head, before RoPE */
        size_t QK = Q + KV, HK = m->H + m->KVH;
#pragma omp parallel for if (N * QK > 16384)
        for (size_t n = 0; n < N; n++) {
            memcpy(a->qk_raw + n * QK, a->qkv + n * S, QK * sizeof(float));
            ap_rmsnorm_forward(a->qkv + n * S, a->qk_rstd + n * HK, a->qk_raw + n * QK, w->qn, m->H,
                               m->D, m->eps, m->plus_one);
            ap_rmsnorm_forward(a->qkv + n * S + Q, a->qk_rstd + n * HK + m->H, a->qk_raw + n * QK + Q,
                               w->kn, m->KVH, m->D, m->eps, m->plus_one);
        }
    }
    ap_rope_forward(a->qkv, m->cos_, m->sin_, pos, N, m->T, m->H, m->D, S);
    ap_rope_forward(a->qkv + Q, m->cos_, m->sin_, pos, N, m->T, m->KVH, m->D, S);
}

/* out (N, C) from x and the attention output a->y (N, Q): o_proj and the
 * residual, ln2, the gated MLP and its residual. */
static void attention_out(const llama *m, int l, const layer_acts *a, const float *x, float *out, size_t N) {
    const layer_w *w = &m->w[l];
    size_t C = m->C, Q = m->Q, FF = m->FF;
    memcpy(a->mid, x, N * C * sizeof(float));
    ap_matmul_forward(a->mid, a->y, w->wo, NULL, N, Q, C, 1); /* mid = x + o_proj(y) */
    ap_rmsnorm_forward(a->ln2, a->ln2_rstd, a->mid, w->ln2, N, C, m->eps, m->plus_one);
    ap_matmul_forward(a->gu, a->ln2, w->wgu, NULL, N, C, 2 * FF, 0);
    ap_glu_forward(a->h, a->gu, N, FF, m->act);
    memcpy(out, a->mid, N * C * sizeof(float));
    ap_matmul_forward(out, a->h, w->wdown, NULL, N, FF, C, 1); /* out = mid + down_proj(h) */
}

static void layer_forward(const llama *m, int l, const layer_acts *a, const int32_t *pos, const float *x,
                          float *out) {
    attention_in(m, l, a, pos, x, m->N);
    ap_attention_forward(a->y, a->att, a->qkv, pos, m->B, m->T, m->H, m->KVH, m->D, m->window, m->att_scale);
    attention_out(m, l, a, x, out, m->N);
}

/* dres (N, C): in, the gradient at the layer output; out, at its input x.
 * Fills d (the matrix products' output grads) and accumulates the RMSNorm
 * weight grads. */
static void layer_backward_input(const llama *m, int l, const layer_acts *a, const int32_t *pos, const float *x,
                                 float *dres, const layer_douts *d) {
    const layer_w *w = &m->w[l], *g = &m->g[l];
    size_t N = m->N, C = m->C, S = m->S, Q = m->Q, KV = m->KV, FF = m->FF;
    /* MLP */
    memcpy(d->dmlp, dres, N * C * sizeof(float));
    ap_matmul_backward_input(m->dh, d->dmlp, w->wdown, N, FF, C, 0);
    ap_glu_backward(d->dgu, m->dh, a->gu, N, FF, m->act);
    ap_matmul_backward_input(m->dln, d->dgu, w->wgu, N, C, 2 * FF, 0);
    ap_rmsnorm_backward(dres, g->ln2, m->dln, a->mid, w->ln2, a->ln2_rstd, N, C, m->plus_one, 1);
    /* attention */
    memcpy(d->dattn, dres, N * C * sizeof(float));
    ap_matmul_backward_input(m->dy, d->dattn, w->wo, N, Q, C, 0);
    ap_attention_backward(d->dqkv, m->datt, m->dy, a->qkv, a->att, m->B, m->T, m->H, m->KVH, m->D,
                          m->window, m->att_scale);
    ap_rope_backward(d->dqkv, m->cos_, m->sin_, pos, N, m->T, m->H, m->D, S);
    ap_rope_backward(d->dqkv + Q, m->cos_, m->sin_, pos, N, m->T, m->KVH, m->D, S);
    if (m->mc.qk_norm) {
        /* token by token: the q_norm/k_norm weight grads sum over tokens in order */
        size_t QK = Q + KV, HK = m->H + m->KVH;
        for (size_t n = 0; n < N; n++) {
            ap_rmsnorm_backward(d->dqkv + n * S, g->qn, d->dqkv + n * S, a->qk_raw + n * QK, w->qn,
                                a->qk_rstd + n * HK, m->H, m->D, m->plus_one, 0);
            ap_rmsnorm_backward(d->dqkv + n * S + Q, g->kn, d->dqkv + n * S + Q,
                                a->qk_raw + n * QK + Q, w->kn, a->qk_rstd + n * HK + m->H, m->KVH,
                                m->D, m->plus_one, 0);
        }
    }
    ap_matmul_backward_input(m->dln, d->dqkv, w->wqkv, N, C, S, 0);
    ap_rmsnorm_backward(dres, g->ln1, m->dln, x, w->ln1, a->ln1_rstd, N, C, m->plus_one, 1);
}

static void layer_backward_weight(const llama *m, int l, const layer_acts *a,
                                  const layer_douts *d) {
    const layer_w *g = &m->g[l];
    size_t N = m->N, C = m->C, S = m->S, Q = m->Q, FF = m->FF;
    ap_matmul_backward_weight(g->wdown, NULL, d->dmlp, a->h, N, FF, C);
    ap_matmul_backward_weight(g->wgu, NULL, d->dgu, a->ln2, N, C, 2 * FF);
    ap_matmul_backward_weight(g->wo, NULL, d->dattn, a->y, N, Q, C);
    ap_matmul_backward_weight(g->wqkv, g->bqkv, d->dqkv, a->ln1, N, C, S);
}

/* ------------------------------------------------------------------ head */

static double head_forward(const llama *m, const head_acts *h, const float *x,
                           const int32_t *labels, long *count) {
    ap_rmsnorm_forward(h->lnf, h->lnf_rstd, x, m->normf, m->N, m->C, m->eps, m->plus_one);
    ap_matmul_forward(h->probs, h->lnf, m->lm, NULL, m->N, m->C, m->V, 0);
    return ap_crossentropy_forward(h->probs, count, h->probs, labels, m->N, m->V);
}

/* h->probs already holds dlogits; writes dres (N, C), the grad at x. */
static void head_backward_input(const llama *m, const head_acts *h, const float *x, float *dres) {
    ap_matmul_backward_input(m->dln, h->probs, m->lm, m->N, m->C, m->V, 0);
    ap_rmsnorm_backward(dres, m->dnormf, m->dln, x, m->normf, h->lnf_rstd, m->N, m->C, m->plus_one,
                        0);
}

/* ------------------------------------------------------------ stage ops */

static float *resid_at(const llama *m, const slot_t *sl, int l) {
    return sl->resid + (size_t)l * m->N * m->C;
}

static int check_ids(llama *m, const int32_t *ids, int allow_ignore, const char *what) {
    for (size_t n = 0; n < m->N; n++) {
        int32_t t = ids[n];
        if ((t < 0 || (size_t)t >= m->V) && !(allow_ignore && t == -100)) {
            set_err(m, "%s[%zu][%zu] = %d is outside [0, vocab_size=%zu)%s", what, n / m->T,
                    n % m->T, (int)t, m->V, allow_ignore ? " and is not -100" : "");
            return -1;
        }
    }
    return 0;
}

/* Position ids must restart at 0 or count up by one: i - pos[i] is where
 * token i's example starts, and it has to lie in the row. */
static int check_pos(llama *m, const int32_t *pos) {
    for (size_t n = 0; n < m->N; n++) {
        size_t t = n % m->T;
        if (pos[n] != 0 && (t == 0 || pos[n] != pos[n - 1] + 1)) {
            set_err(m, "position_ids[%zu][%zu] = %d: expected 0 (an example starts) or %d (one more than the "
                    "previous)", n / m->T, t, (int)pos[n], t ? (int)pos[n - 1] + 1 : 0);
            return -1;
        }
    }
    return 0;
}

static int forward_impl(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in,
                        float *out, const int32_t *labels, double *loss_sum, long *n_tokens, float *logits) {
    llama *m = s->impl;
    size_t NC = m->N * m->C;
    m->err[0] = 0;
    if (slot >= m->max_slots) {
        set_err(m, "forward: slot %d out of range [0, %d)", slot, m->max_slots);
        return -1;
    }
    if (slot >= 0 && m->slots[slot].state != S_FREE) {
        set_err(m, "forward: slot %d still holds a microbatch (run its backward first)", slot);
        return -1;
    }
    if (m->first && !tokens) return set_err(m, "forward: first stage needs tokens"), -1;
    if (!m->first && !in) return set_err(m, "forward: stage needs its input hidden states"), -1;
    if (m->last && slot >= 0 && !labels) return set_err(m, "forward: last stage needs labels"), -1;
    if (logits && (!m->last || slot >= 0))
        return set_err(m, "forward_logits: needs the last stage and a no-grad forward"), -1;
    if (!m->last && !out) return set_err(m, "forward: stage needs an output buffer"), -1;
    if (m->first && check_ids(m, tokens, 0, "tokens")) return -1;
    if (m->last && labels && check_ids(m, labels, 1, "labels")) return -1;
    if (pos && check_pos(m, pos)) return -1;

    slot_t *sl = slot >= 0 ? &m->slots[slot] : NULL;
    if (sl && (sl->has_pos = pos != NULL)) memcpy(sl->pos, pos, m->N * sizeof(int32_t));
    float *x0 = sl ? sl->resid : m->ping;
    if (m->first) {
        ap_embedding_forward(x0, tokens, m->wte, m->N, m->C, m->emb_scale);
        if (sl) memcpy(sl->tokens, tokens, m->N * sizeof(int32_t));
    } else {
        memcpy(x0, in, NC * sizeof(float));
    }
    const float *x = x0;
    for (int l = 0; l < m->L; l++) {
        float *y = sl ? resid_at(m, sl, l + 1) : m->ping + ((l + 1) % 2) * NC;
        const layer_acts *a = (sl && !m->ckpt) ? &sl->layers[l] : &m->sl;
        layer_forward(m, l, a, pos, x, y);
        x = y;
    }
    if (logits) {
        ap_rmsnorm_forward(m->sh.lnf, m->sh.lnf_rstd, x, m->normf, m->N, m->C, m->eps, m->plus_one);
        ap_matmul_forward(logits, m->sh.lnf, m->lm, NULL, m->N, m->C, m->V, 0);
    } else if (m->last) {
        if (labels) {
            const head_acts *h = (sl && !m->ckpt) ? &sl->head : &m->sh;
            long cnt = 0;
            double loss = head_forward(m, h, x, labels, &cnt);
            if (loss_sum) *loss_sum += loss;
            if (n_tokens) *n_tokens += cnt;
            if (sl) memcpy(sl->labels, labels, m->N * sizeof(int32_t));
        }
    } else {
        memcpy(out, x, NC * sizeof(float));
    }
    if (sl) sl->state = S_FORWARD;
    return 0;
}

static int llama_forward(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in,
                         float *out, const int32_t *labels, double *loss_sum, long *n_tokens) {
    return forward_impl(s, slot, tokens, pos, in, out, labels, loss_sum, n_tokens, NULL);
}

enum bw_mode { BW_FULL, BW_INPUT, BW_WEIGHT };

static int run_backward(ap_stage *s, int slot, const float *dout, float dloss, float *din,
                        enum bw_mode mode) {
    llama *m = s->impl;
    size_t NC = m->N * m->C;
    static const char *names[] = {"backward", "backward_input", "backward_weight"};
    m->err[0] = 0;
    if (slot < 0 || slot >= m->max_slots) {
        set_err(m, "%s: slot %d out of range [0, %d)", names[mode], slot, m->max_slots);
        return -1;
    }
    slot_t *sl = &m->slots[slot];
    enum slot_state need = mode == BW_WEIGHT ? S_INPUT_DONE : S_FORWARD;
    if (sl->state != need) {
        set_err(m, "%s: slot %d is %s", names[mode], slot,
                sl->state == S_FREE ? "empty (no forward ran into it)"
                : sl->state == S_FORWARD ? "forwarded but backward_input has not run"
                                         : "waiting for backward_weight");
        return -1;
    }
    if (mode != BW_WEIGHT && !m->last && !dout)
        return set_err(m, "%s: stage needs the output gradient", names[mode]), -1;
    if (mode != BW_WEIGHT && !m->first && !din)
        return set_err(m, "%s: stage needs an input-gradient buffer", names[mode]), -1;
    if (mode == BW_INPUT && !m->stash_mem) {
        size_t n = carve_stash(m, NULL);
        m->stash_mem = alloc_floats(n, &m->stash_bytes);
        if (!m->stash_mem)
            return set_err(m, "%s: cannot allocate %zu MiB for the FF/W stash", names[mode],
                           n * sizeof(float) >> 20), -1;
        carve_stash(m, m->stash_mem);
    }

    float *dres = m->dres;
    if (mode != BW_WEIGHT) {
        if (m->last)
            sl->dloss = dloss;
        else
            memcpy(dres, dout, NC * sizeof(float));
    }
    if (m->last) {
        const head_acts *h = m->ckpt ? &m->sh : &sl->head;
        const float *x = resid_at(m, sl, m->L);
        if (m->ckpt) {
            long cnt;
            head_forward(m, h, x, sl->labels, &cnt);
        }
        if (m->ckpt || mode != BW_WEIGHT)
            ap_crossentropy_backward(h->probs, h->probs, sl->labels, sl->dloss, m->N, m->V);
        if (mode != BW_WEIGHT) head_backward_input(m, h, x, dres);
        if (mode != BW_INPUT) ap_matmul_backward_weight(m->dlm, NULL, h->probs, h->lnf, m->N, m->C, m->V);
    }
    const int32_t *pos = sl->has_pos ? sl->pos : NULL;
    for (int l = m->L - 1; l >= 0; l--) {
        const layer_acts *a = m->ckpt ? &m->sl : &sl->layers[l];
        const float *x = resid_at(m, sl, l);
        if (m->ckpt) layer_forward(m, l, a, pos, x, m->ping); /* recompute, same bits */
        const layer_douts *d = mode == BW_FULL ? &m->sd : &sl->stash[l];
        if (mode != BW_WEIGHT) layer_backward_input(m, l, a, pos, x, dres, d);
        if (mode != BW_INPUT) layer_backward_weight(m, l, a, d);
    }
    if (m->first) {
        if (mode == BW_INPUT) memcpy(sl->stash_emb, dres, NC * sizeof(float));
        if (mode != BW_INPUT) {
            float *demb = mode == BW_FULL ? dres : sl->stash_emb;
            /* transformers builds nn.Embedding(padding_idx=pad_token_id): lookups of
             * the pad token add nothing to its row's gradient */
            int pad = m->mc.pad_token_id;
            if (pad >= 0)
                for (size_t n = 0; n < m->N; n++)
                    if (sl->tokens[n] == pad) memset(demb + n * m->C, 0, m->C * sizeof(float));
            ap_embedding_backward(m->dwte, demb, sl->tokens, m->N, m->C, m->emb_scale);
        }
    } else if (mode != BW_WEIGHT) {
        memcpy(din, dres, NC * sizeof(float));
    }
    sl->state = mode == BW_INPUT ? S_INPUT_DONE : S_FREE;
    return 0;
}

static int llama_backward(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    return run_backward(s, slot, dout, dloss, din, BW_FULL);
}
static int llama_backward_input(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    return run_backward(s, slot, dout, dloss, din, BW_INPUT);
}
static int llama_backward_weight(ap_stage *s, int slot) {
    return run_backward(s, slot, NULL, 0, NULL, BW_WEIGHT);
}

static void llama_destroy(ap_stage *s) {
    if (!s) return;
    llama *m = s->impl;
    if (m) {
        if (m->slots)
            for (int i = 0; i < m->max_slots; i++) {
                free(m->slots[i].layers);
                free(m->slots[i].stash);
            }
        free(m->slots);
        free(m->w);
        free(m->g);
        free(m->cos_);
        free(m->sin_);
        free(m->desc);
        free(m->acts_mem);
        free(m->stash_mem);
        free(m);
    }
    free(s->params);
    free(s->grads);
    free(s->refs);
    free(s);
}

static const ap_stage_ops llama_ops = {
    .forward = llama_forward,
    .backward = llama_backward,
    .backward_input = llama_backward_input,
    .backward_weight = llama_backward_weight,
    .destroy = llama_destroy,
};

int ap_llama_forward_logits(ap_stage *s, const int32_t *tokens, const float *in, float *logits) {
    if (!logits) return set_err(s->impl, "forward_logits: no output buffer"), -1;
    return forward_impl(s, -1, tokens, NULL, in, NULL, NULL, NULL, NULL, logits);
}

const char *ap_llama_stage_error(const ap_stage *s) {
    if (!s || s->ops != &llama_ops) return "";
    return ((const llama *)s->impl)->err;
}

/* ------------------------------------------------------- KV-cache decoding */

struct ap_llama_kv {
    int cap, n;     /* positions held / used */
    float *k, *v;   /* (L, cap, KV) keys after q/k norm and RoPE, values */
    float *p;       /* (cap) one head's attention weights */
    float *scratch; /* one token's activations, carved into `a` */
    layer_acts a;   /* of one row, without attention probabilities */
};

ap_llama_kv *ap_llama_kv_create(const ap_stage *s) {
    if (!s || s->ops != &llama_ops) return NULL;
    const llama *m = s->impl;
    ap_llama_kv *kv = calloc(1, sizeof *kv);
    if (!kv) return NULL;
    size_t L = (size_t)m->L, T = m->T, KV = m->KV;
    kv->cap = (int)T;
    kv->k = malloc(L * T * KV * sizeof(float));
    kv->v = malloc(L * T * KV * sizeof(float));
    kv->p = malloc(T * sizeof(float));
    size_t n = 0;
    carve_layer_acts(m, &kv->a, NULL, &n, 1, 0);
    kv->scratch = malloc(n * sizeof(float));
    if (!kv->k || !kv->v || !kv->p || !kv->scratch) {
        ap_llama_kv_free(kv);
        return NULL;
    }
    n = 0;
    carve_layer_acts(m, &kv->a, kv->scratch, &n, 1, 0);
    return kv;
}

void ap_llama_kv_free(ap_llama_kv *kv) {
    if (!kv) return;
    free(kv->k), free(kv->v), free(kv->p), free(kv->scratch);
    free(kv);
}

int ap_llama_kv_len(const ap_llama_kv *kv) { return kv->n; }
void ap_llama_kv_reset(ap_llama_kv *kv) { kv->n = 0; }

/* One token at position kv->n through every layer: attention_in, its keys and
 * values into the cache, attention of its queries over the cached positions
 * (causal, and the sliding window), attention_out. out (C) carries the
 * hidden state from layer to layer. */
int ap_llama_decode(ap_stage *s, ap_llama_kv *kv, int32_t token, float *out) {
    llama *m = s->impl;
    m->err[0] = 0;
    if (!m->first || s->first_layer != 0)
        return set_err(m, "decode: needs a stage holding the embedding and every layer from 0"), -1;
    if (kv->n >= kv->cap) return set_err(m, "decode: the cache holds its %d positions", kv->cap), -1;
    if (token < 0 || (size_t)token >= m->V)
        return set_err(m, "decode: token %d is outside [0, vocab_size=%zu)", (int)token, m->V), -1;
    const layer_acts *a = &kv->a;
    size_t C = m->C, Q = m->Q, KV = m->KV, D = m->D, p = (size_t)kv->n, group = m->H / m->KVH;
    size_t lo = m->window > 0 && p + 1 > (size_t)m->window ? p + 1 - (size_t)m->window : 0;
    int32_t pos = (int32_t)p;
    ap_embedding_forward(out, &token, m->wte, 1, C, m->emb_scale);
    for (int l = 0; l < m->L; l++) {
        float *kc = kv->k + (size_t)l * kv->cap * KV, *vc = kv->v + (size_t)l * kv->cap * KV;
        attention_in(m, l, a, &pos, out, 1);
        memcpy(kc + p * KV, a->qkv + Q, KV * sizeof(float));
        memcpy(vc + p * KV, a->qkv + Q + KV, KV * sizeof(float));
        for (size_t h = 0; h < m->H; h++) {
            const float *q = a->qkv + h * D;
            size_t off = (h / group) * D;
            float mx = -INFINITY, sum = 0;
            for (size_t j = lo; j <= p; j++) {
                float sc = 0;
                for (size_t d = 0; d < D; d++) sc += q[d] * kc[j * KV + off + d];
                kv->p[j] = sc * m->att_scale;
                mx = kv->p[j] > mx ? kv->p[j] : mx;
            }
            for (size_t j = lo; j <= p; j++) sum += kv->p[j] = expf(kv->p[j] - mx);
            float *y = a->y + h * D;
            memset(y, 0, D * sizeof(float));
            for (size_t j = lo; j <= p; j++)
                for (size_t d = 0; d < D; d++) y[d] += kv->p[j] / sum * vc[j * KV + off + d];
        }
        attention_out(m, l, a, out, out, 1); /* x and out alias: attention_out copies x into mid first */
    }
    kv->n++;
    return 0;
}

/* ---------------------------------------------------------------- create */

static int check_config(const ap_model_config *mc, int first, int last, int B, int T,
                        int max_slots, char *err, size_t errlen) {
#define BAD(...) return snprintf(err, errlen, __VA_ARGS__), -1
    if (mc->vocab_size <= 0) BAD("model.vocab_size must be > 0 (got %d)", mc->vocab_size);
    if (mc->hidden_size <= 0) BAD("model.hidden_size must be > 0 (got %d)", mc->hidden_size);
    if (mc->intermediate_size <= 0)
        BAD("model.intermediate_size must be > 0 (got %d)", mc->intermediate_size);
    if (mc->num_hidden_layers < 0)
        BAD("model.num_hidden_layers must be >= 0 (got %d)", mc->num_hidden_layers);
    if (mc->num_attention_heads <= 0 || mc->num_key_value_heads <= 0)
        BAD("model.num_attention_heads (%d) and num_key_value_heads (%d) must be > 0",
            mc->num_attention_heads, mc->num_key_value_heads);
    if (mc->num_attention_heads % mc->num_key_value_heads)
        BAD("model.num_attention_heads (%d) must be a multiple of num_key_value_heads (%d)",
            mc->num_attention_heads, mc->num_key_value_heads);
    if (mc->head_dim <= 0 || mc->head_dim % 2)
        BAD("model.head_dim must be even and > 0 for rotary embeddings (got %d)", mc->head_dim);
    if (!(mc->rms_norm_eps > 0)) BAD("model.rms_norm_eps must be > 0 (got %g)", mc->rms_norm_eps);
    if (!(mc->rope_theta > 0)) BAD("model.rope_theta must be > 0 (got %g)", mc->rope_theta);
    if (mc->rope_scaling != AP_ROPE_DEFAULT && !(mc->rope_factor > 0))
        BAD("model.rope_scaling.factor must be > 0 (got %g)", mc->rope_factor);
    if (mc->rope_scaling == AP_ROPE_LLAMA3 &&
        (!(mc->rope_high_freq_factor > mc->rope_low_freq_factor) || !(mc->rope_low_freq_factor > 0) ||
         mc->rope_original_max_position_embeddings <= 0))
        BAD("llama3 rope_scaling needs high_freq_factor > low_freq_factor > 0 and "
            "original_max_position_embeddings > 0 (got %g, %g, %d)",
            mc->rope_high_freq_factor, mc->rope_low_freq_factor,
            mc->rope_original_max_position_embeddings);
    if (first < 0 || last < first || last > mc->num_hidden_layers)
        BAD("layer range [%d, %d) is not inside [0, num_hidden_layers=%d)", first, last,
            mc->num_hidden_layers);
    if (B <= 0 || T <= 0) BAD("microbatch size (%d) and seq_len (%d) must be > 0", B, T);
    if (max_slots <= 0) BAD("max_slots must be > 0 (got %d)", max_slots);
    if ((double)B * T * mc->vocab_size > 4e9 || (double)T * T * mc->num_attention_heads * B > 4e9)
        BAD("microbatch %d x %d is too large for this model (logits or attention over 2^32 floats)", B, T);
    return 0;
#undef BAD
}

int ap_llama_stage_create(ap_stage **out, const ap_model_config *mc, int first_layer,
                          int last_layer, int has_embed, int has_head, int B, int T,
                          int max_slots, int activation_checkpointing, char *err, size_t errlen) {
    *out = NULL;
    if (check_config(mc, first_layer, last_layer, B, T, max_slots, err, errlen)) return -1;
    ap_stage *s = calloc(1, sizeof *s);
    llama *m = calloc(1, sizeof *m);
    if (!s || !m) {
        free(s);
        free(m);
        snprintf(err, errlen, "out of memory creating a stage");
        return -1;
    }
    s->impl = m;
    s->ops = &llama_ops;
    m->mc = *mc;
    m->L = last_layer - first_layer;
    m->ckpt = activation_checkpointing != 0;
    m->tied = is_tied(mc);
    m->first = has_embed != 0;
    m->last = has_head != 0;
    m->plus_one = mc->norm_plus_one;
    m->act = mc->hidden_act == AP_ACT_GELU_TANH ? AP_GLU_GELU_TANH : AP_GLU_SILU;
    m->window = mc->sliding_window > 0 ? mc->sliding_window : 0;
    m->max_slots = max_slots;
    m->B = (size_t)B;
    m->T = (size_t)T;
    m->N = m->B * m->T;
    m->C = (size_t)mc->hidden_size;
    m->H = (size_t)mc->num_attention_heads;
    m->KVH = (size_t)mc->num_key_value_heads;
    m->D = (size_t)mc->head_dim;
    m->Q = m->H * m->D;
    m->KV = m->KVH * m->D;
    m->S = m->Q + 2 * m->KV;
    m->FF = (size_t)mc->intermediate_size;
    m->V = (size_t)mc->vocab_size;
    m->eps = (float)mc->rms_norm_eps;
    /* Gemma: normalizer = torch.tensor(hidden_size**0.5, dtype=hidden dtype) */
    m->emb_scale = mc->scale_embeddings ? (float)sqrt((double)mc->hidden_size) : 1.0f;
    m->att_scale = (float)pow((double)mc->head_dim, -0.5);

    s->is_first = m->first;
    s->is_last = m->last;
    s->first_layer = first_layer;
    s->last_layer = last_layer;
    s->B = B;
    s->T = T;
    s->act_numel = m->N * m->C;
    s->max_slots = max_slots;
    s->num_stages = 1;

    /* parameter table -> params, grads (one allocation each) */
    ptable t = {0};
    build_table(&t, mc, first_layer, last_layer, m->first, m->last);
    m->desc = calloc((size_t)t.n + 1, sizeof(pdesc));
    s->refs = calloc((size_t)t.n + 1, sizeof(ap_param_ref));
    m->w = calloc((size_t)m->L + 1, sizeof(layer_w));
    m->g = calloc((size_t)m->L + 1, sizeof(layer_w));
    m->slots = calloc((size_t)max_slots, sizeof(slot_t));
    m->cos_ = malloc(m->T * (m->D / 2) * sizeof(float));
    m->sin_ = malloc(m->T * (m->D / 2) * sizeof(float));
    float *inv_freq = malloc((m->D / 2) * sizeof(float));
    s->n_params = t.numel;
    s->params = alloc_floats(t.numel, NULL);
    s->grads = alloc_floats(t.numel, NULL);
    int fail = !m->desc || !s->refs || !m->w || !m->g || !m->slots || !m->cos_ || !m->sin_ ||
               !inv_freq || !s->params || !s->grads;
    for (int i = 0; !fail && i < max_slots; i++) {
        m->slots[i].layers = calloc((size_t)m->L + 1, sizeof(layer_acts));
        m->slots[i].stash = calloc((size_t)m->L + 1, sizeof(layer_douts));
        fail = !m->slots[i].layers || !m->slots[i].stash;
    }
    if (fail) {
        free(inv_freq);
        llama_destroy(s);
        snprintf(err, errlen, "out of memory for %zu parameters (%zu MiB)", t.numel,
                 t.numel * sizeof(float) >> 20);
        return -1;
    }
    memset(s->params, 0, t.numel * sizeof(float));
    memset(s->grads, 0, t.numel * sizeof(float));
    t.n = 0;
    t.numel = 0;
    t.d = m->desc;
    build_table(&t, mc, first_layer, last_layer, m->first, m->last);
    s->n_refs = t.n;
    size_t off = 0;
    for (int i = 0; i < t.n; i++) {
        pdesc *p = &m->desc[i];
        ap_param_ref *r = &s->refs[i];
        snprintf(r->name, sizeof r->name, "%s", p->name);
        r->ndim = p->ndim;
        r->shape[0] = p->shape[0];
        r->shape[1] = p->ndim == 2 ? p->shape[1] : 0;
        r->numel = p->shape[0] * (p->ndim == 2 ? p->shape[1] : 1);
        r->param = s->params + off;
        r->grad = s->grads + off;
        r->no_decay = p->no_decay;
        off += r->numel;
        layer_w *w = p->layer >= 0 ? &m->w[p->layer] : NULL;
        layer_w *g = p->layer >= 0 ? &m->g[p->layer] : NULL;
        switch (p->role) {
        case R_EMB: m->wte = r->param; m->dwte = r->grad; break;
        case R_LN1: w->ln1 = r->param; g->ln1 = r->grad; break;
        case R_WQ: w->wqkv = r->param; g->wqkv = r->grad; break;
        case R_BQ: w->bqkv = r->param; g->bqkv = r->grad; break;
        case R_QN: w->qn = r->param; g->qn = r->grad; break;
        case R_KN: w->kn = r->param; g->kn = r->grad; break;
        case R_WO: w->wo = r->param; g->wo = r->grad; break;
        case R_LN2: w->ln2 = r->param; g->ln2 = r->grad; break;
        case R_WG: w->wgu = r->param; g->wgu = r->grad; break;
        case R_WD: w->wdown = r->param; g->wdown = r->grad; break;
        case R_NORMF: m->normf = r->param; m->dnormf = r->grad; break;
        case R_LM: m->lm = r->param; m->dlm = r->grad; break;
        case R_WK: case R_WV: case R_BK: case R_BV: case R_WU: break; /* parts of a fused group */
        }
    }
    if (m->last && !m->lm) { /* tied, with the embedding in this stage: one tensor */
        m->lm = m->wte;
        m->dlm = m->dwte;
    }

    ap_rope_inv_freq(inv_freq, m->D, mc->rope_theta, (int)mc->rope_scaling, mc->rope_factor,
                     mc->rope_low_freq_factor, mc->rope_high_freq_factor,
                     mc->rope_original_max_position_embeddings);
    ap_rope_cos_sin(m->cos_, m->sin_, inv_freq, m->T, m->D);
    free(inv_freq);

    size_t n = carve_acts(m, NULL);
    m->acts_mem = alloc_floats(n, &m->acts_bytes);
    if (!m->acts_mem) {
        snprintf(err, errlen, "out of memory for activations: %zu MiB (microbatch %d x %d, %d slots%s)",
                 n * sizeof(float) >> 20, B, T, max_slots,
                 m->ckpt ? "" : "; try model.activation_checkpointing: true");
        llama_destroy(s);
        return -1;
    }
    carve_acts(m, m->acts_mem);
    *out = s;
    return 0;
}

ap_param_ref *ap_llama_find_param(ap_stage *s, const char *name) {
    for (int i = 0; i < s->n_refs; i++)
        if (strcmp(s->refs[i].name, name) == 0) return &s->refs[i];
    return NULL;
}

/* ------------------------------------------------------------------ init */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

void ap_llama_init_params(ap_stage *s, uint64_t seed) {
    llama *m = s->impl;
    double std = m->mc.initializer_range;
    for (int i = 0; i < s->n_refs; i++) {
        ap_param_ref *r = &s->refs[i];
        const pdesc *p = &m->desc[i];
        if (p->init == I_NORM) {
            float v = m->plus_one ? 0.0f : 1.0f;
            for (size_t j = 0; j < r->numel; j++) r->param[j] = v;
        } else if (p->init == I_ZERO) {
            memset(r->param, 0, r->numel * sizeof(float));
        } else {
            uint64_t key = splitmix64(seed ^ fnv1a64(r->name));
            float *dst = r->param;
            size_t nel = r->numel;
#pragma omp parallel for if (nel > 65536)
            for (size_t j = 0; j < nel; j++) {
                uint64_t a = splitmix64(key + 2 * (uint64_t)j), b = splitmix64(key + 2 * (uint64_t)j + 1);
                double u1 = ((double)(a >> 11) + 1.0) * 0x1.0p-53;
                double u2 = (double)(b >> 11) * 0x1.0p-53;
                dst[j] = (float)(std * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
            }
            /* like transformers' _init_weights for nn.Embedding(padding_idx=pad_token_id)
             * (also the tied head-only copy, which carries the same name) */
            int pad = m->mc.pad_token_id;
            if (strcmp(r->name, "model.embed_tokens.weight") == 0 && pad >= 0 && (size_t)pad < m->V)
                memset(dst + (size_t)pad * m->C, 0, m->C * sizeof(float));
        }
    }
}

/* ---------------------------------------------------------------- counts */

size_t ap_llama_param_count(const ap_model_config *mc, int first_layer, int last_layer,
                            int has_embed, int has_head) {
    ptable t = {0};
    build_table(&t, mc, first_layer, last_layer, has_embed, has_head);
    return t.numel;
}

double ap_model_flops_per_token(const ap_model_config *mc, int T) {
    double C = mc->hidden_size, D = mc->head_dim, H = mc->num_attention_heads;
    double Q = H * D, KV = (double)mc->num_key_value_heads * D, FF = mc->intermediate_size;
    double L = mc->num_hidden_layers, V = mc->vocab_size;
    double n_matmul = L * (C * (Q + 2 * KV) + Q * C + 3 * C * FF) + V * C;
    return 6.0 * n_matmul + 12.0 * L * H * D * (double)T;
}
