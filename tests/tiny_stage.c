/* tiny_stage.c - see tiny_stage.h. Plain loops: the model is a few hundred
 * floats wide, and what is under test is the pipeline around it. */
#include "tests/tiny_stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int V, C, nl, tie_here; /* tie_here: lm_head is E itself (first and last stage) */
    size_t BT;
    float *E, *dE, *H, *dH;         /* (V, C); H may alias E */
    float **W, **dW, **bias, **dbias; /* (nl) -> (C, C) / (C) */
    /* per slot (max_slots + 1: the last one is scratch for no-grad forwards) */
    int32_t **tok, **lab;  /* (BT) */
    float **xs, **hs;      /* ((nl+1) BT C), (nl BT C) */
    float **dpre, **dx0;   /* (nl BT C), (BT C) */
    float **dlogits;       /* (BT V) */
    float *g, *g2, *logits;
} tiny;

static unsigned long long mix(unsigned long long z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void init_param(float *p, size_t n, const char *name, unsigned seed, float scale) {
    unsigned long long h = 1469598103934665603ULL ^ seed;
    for (const char *c = name; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ULL;
    for (size_t i = 0; i < n; i++) {
        double u = (double)(mix(h + i) >> 11) / 9007199254740992.0; /* [0, 1) */
        p[i] = (float)((2 * u - 1) * scale);
    }
}

static void linear(float *out, const float *x, const float *w, const float *b, size_t N, int C, int OC) {
    for (size_t n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            float acc = b ? b[o] : 0.0f;
            for (int i = 0; i < C; i++) acc += x[n * C + i] * w[(size_t)o * C + i];
            out[n * OC + o] = acc;
        }
}

static int fwd(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in, float *out,
               const int32_t *labels, double *loss_sum, long *n_tokens) {
    (void)pos; /* no attention: positions change nothing */
    tiny *t = s->impl;
    int sl = slot < 0 ? s->max_slots : slot;
    if (sl > s->max_slots) return -1;
    size_t BT = t->BT, BTC = BT * t->C;
    int C = t->C, V = t->V;
    float *x = t->xs[sl];
    if (s->is_first) {
        for (size_t n = 0; n < BT; n++) {
            if (tokens[n] < 0 || tokens[n] >= V) return -2;
            memcpy(x + n * C, t->E + (size_t)tokens[n] * C, C * sizeof(float));
        }
        memcpy(t->tok[sl], tokens, BT * sizeof(int32_t));
    } else {
        memcpy(x, in, BTC * sizeof(float));
    }
    for (int l = 0; l < t->nl; l++) {
        float *xl = x + l * BTC, *h = t->hs[sl] + l * BTC, *xn = x + (l + 1) * BTC;
        linear(h, xl, t->W[l], t->bias[l], BT, C, C);
        for (size_t i = 0; i < BTC; i++) {
            h[i] = tanhf(h[i]);
            xn[i] = xl[i] + h[i];
        }
    }
    float *xL = x + t->nl * BTC;
    if (!s->is_last) {
        memcpy(out, xL, BTC * sizeof(float));
        return 0;
    }
    memcpy(t->lab[sl], labels, BT * sizeof(int32_t));
    linear(t->logits, xL, t->H, NULL, BT, C, V);
    for (size_t n = 0; n < BT; n++) {
        if (labels[n] == -100) continue;
        if (labels[n] < 0 || labels[n] >= V) return -3;
        float *lg = t->logits + n * V;
        float mx = lg[0];
        for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
        double se = 0;
        for (int v = 0; v < V; v++) se += exp((double)lg[v] - mx);
        *loss_sum += log(se) + mx - lg[labels[n]];
        *n_tokens += 1;
    }
    return 0;
}

static int bwd_input(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    tiny *t = s->impl;
    if (slot < 0 || slot >= s->max_slots) return -1;
    size_t BT = t->BT, BTC = BT * t->C;
    int C = t->C, V = t->V;
    float *x = t->xs[slot], *g = t->g;
    if (s->is_last) {
        float *xL = x + t->nl * BTC, *dl = t->dlogits[slot];
        linear(dl, xL, t->H, NULL, BT, C, V);
        for (size_t n = 0; n < BT; n++) {
            float *r = dl + n * V;
            int y = t->lab[slot][n];
            if (y == -100) {
                memset(r, 0, V * sizeof(float));
                continue;
            }
            float mx = r[0];
            for (int v = 1; v < V; v++) mx = r[v] > mx ? r[v] : mx;
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)r[v] - mx);
            for (int v = 0; v < V; v++) r[v] = (float)(exp((double)r[v] - mx) / se) * dloss;
            r[y] -= dloss;
        }
        for (size_t n = 0; n < BT; n++) /* g = dlogits @ H */
            for (int i = 0; i < C; i++) {
                float acc = 0;
                for (int v = 0; v < V; v++) acc += dl[n * V + v] * t->H[(size_t)v * C + i];
                g[n * C + i] = acc;
            }
    } else {
        memcpy(g, dout, BTC * sizeof(float));
    }
    for (int l = t->nl - 1; l >= 0; l--) {
        const float *h = t->hs[slot] + l * BTC;
        float *dp = t->dpre[slot] + l * BTC;
        for (size_t i = 0; i < BTC; i++) dp[i] = g[i] * (1 - h[i] * h[i]);
        for (size_t n = 0; n < BT; n++) /* g += dpre @ W */
            for (int i = 0; i < C; i++) {
                float acc = 0;
                for (int j = 0; j < C; j++) acc += dp[n * C + j] * t->W[l][(size_t)j * C + i];
                t->g2[n * C + i] = g[n * C + i] + acc;
            }
        memcpy(g, t->g2, BTC * sizeof(float));
    }
    if (s->is_first)
        memcpy(t->dx0[slot], g, BTC * sizeof(float));
    else
        memcpy(din, g, BTC * sizeof(float));
    return 0;
}

static int bwd_weight(ap_stage *s, int slot) {
    tiny *t = s->impl;
    if (slot < 0 || slot >= s->max_slots) return -1;
    size_t BT = t->BT, BTC = BT * t->C;
    int C = t->C, V = t->V;
    const float *x = t->xs[slot];
    for (int l = 0; l < t->nl; l++) {
        const float *xl = x + l * BTC, *dp = t->dpre[slot] + l * BTC;
        for (int j = 0; j < C; j++) {
            float db = 0;
            for (size_t n = 0; n < BT; n++) db += dp[n * C + j];
            t->dbias[l][j] += db;
            for (int i = 0; i < C; i++) {
                float acc = 0;
                for (size_t n = 0; n < BT; n++) acc += dp[n * C + j] * xl[n * C + i];
                t->dW[l][(size_t)j * C + i] += acc;
            }
        }
    }
    if (s->is_last) {
        const float *xL = x + t->nl * BTC, *dl = t->dlogits[slot];
        for (int v = 0; v < V; v++)
            for (int i = 0; i < C; i++) {
                float acc = 0;
                for (size_t n = 0; n < BT; n++) acc += dl[n * V + v] * xL[n * C + i];
                t->dH[(size_t)v * C + i] += acc;
            }
    }
    if (s->is_first)
        for (size_t n = 0; n < BT; n++)
            for (int i = 0; i < C; i++) t->dE[(size_t)t->tok[slot][n] * C + i] += t->dx0[slot][n * C + i];
    return 0;
}

static int bwd(ap_stage *s, int slot, const float *dout, float dloss, float *din) {
    int rc = bwd_input(s, slot, dout, dloss, din);
    return rc ? rc : bwd_weight(s, slot);
}

static void destroy(ap_stage *s) {
    tiny *t = s->impl;
    if (t) {
        for (int i = 0; i <= s->max_slots; i++) {
            if (t->tok) free(t->tok[i]);
            if (t->lab) free(t->lab[i]);
            if (t->xs) free(t->xs[i]);
            if (t->hs) free(t->hs[i]);
            if (t->dpre) free(t->dpre[i]);
            if (t->dx0) free(t->dx0[i]);
            if (t->dlogits) free(t->dlogits[i]);
        }
        free(t->tok), free(t->lab), free(t->xs), free(t->hs), free(t->dpre), free(t->dx0), free(t->dlogits);
        free(t->W), free(t->dW), free(t->bias), free(t->dbias);
        free(t->g), free(t->g2), free(t->logits);
        free(t);
    }
    free(s->params);
    free(s->grads);
    free(s->refs);
    free(s);
}

static const ap_stage_ops tiny_ops = {fwd, bwd, bwd_input, bwd_weight, destroy};

int tiny_stage_create(ap_stage **out, int stage_id, int num_stages, int first_layer, int last_layer, int V,
                      int C, int B, int T, int tie, int max_slots, unsigned seed) {
    ap_stage *s = calloc(1, sizeof *s);
    tiny *t = calloc(1, sizeof *t);
    if (!s || !t) goto oom;
    s->ops = &tiny_ops;
    s->impl = t;
    s->stage_id = stage_id;
    s->num_stages = num_stages;
    s->is_first = stage_id == 0;
    s->is_last = stage_id == num_stages - 1;
    s->first_layer = first_layer;
    s->last_layer = last_layer;
    s->B = B;
    s->T = T;
    s->max_slots = max_slots;
    t->V = V, t->C = C, t->nl = last_layer - first_layer;
    t->BT = (size_t)B * T;
    s->act_numel = t->BT * C;
    t->tie_here = tie && s->is_first && s->is_last;
    /* The parameter table: embedding, layers, lm_head (or the tied copy). */
    int nref = (s->is_first ? 1 : 0) + 2 * t->nl + (s->is_last && !t->tie_here ? 1 : 0);
    s->refs = calloc((size_t)nref, sizeof *s->refs);
    if (!s->refs) goto oom;
    size_t VC = (size_t)V * C;
    int r = 0;
    if (s->is_first) {
        snprintf(s->refs[r].name, sizeof s->refs[r].name, "model.embed_tokens.weight");
        s->refs[r].ndim = 2, s->refs[r].shape[0] = V, s->refs[r].shape[1] = C, s->refs[r++].numel = VC;
    }
    for (int l = first_layer; l < last_layer; l++) {
        snprintf(s->refs[r].name, sizeof s->refs[r].name, "model.layers.%d.mlp.weight", l);
        s->refs[r].ndim = 2, s->refs[r].shape[0] = C, s->refs[r].shape[1] = C, s->refs[r++].numel = (size_t)C * C;
        snprintf(s->refs[r].name, sizeof s->refs[r].name, "model.layers.%d.mlp.bias", l);
        s->refs[r].ndim = 1, s->refs[r].shape[0] = C, s->refs[r].numel = C, s->refs[r++].no_decay = 1;
    }
    if (s->is_last && !t->tie_here) {
        snprintf(s->refs[r].name, sizeof s->refs[r].name, tie ? "model.embed_tokens.weight" : "lm_head.weight");
        s->refs[r].ndim = 2, s->refs[r].shape[0] = V, s->refs[r].shape[1] = C, s->refs[r++].numel = VC;
    }
    s->n_refs = nref;
    for (int i = 0; i < nref; i++) s->n_params += s->refs[i].numel;
    s->params = calloc(s->n_params, sizeof(float));
    s->grads = calloc(s->n_params, sizeof(float));
    if (!s->params || !s->grads) goto oom;
    size_t off = 0;
    for (int i = 0; i < nref; i++) {
        ap_param_ref *p = &s->refs[i];
        p->param = s->params + off;
        p->grad = s->grads + off;
        off += p->numel;
        float scale = p->ndim == 1 ? 0.1f : (p->shape[0] == (size_t)V ? 0.5f : 1.0f / sqrtf((float)C));
        init_param(p->param, p->numel, p->name, seed, scale);
    }
    t->W = calloc((size_t)t->nl + 1, sizeof(float *));
    t->dW = calloc((size_t)t->nl + 1, sizeof(float *));
    t->bias = calloc((size_t)t->nl + 1, sizeof(float *));
    t->dbias = calloc((size_t)t->nl + 1, sizeof(float *));
    if (!t->W || !t->dW || !t->bias || !t->dbias) goto oom;
    r = 0;
    if (s->is_first) t->E = s->refs[0].param, t->dE = s->refs[0].grad, r = 1;
    for (int l = 0; l < t->nl; l++, r += 2) {
        t->W[l] = s->refs[r].param, t->dW[l] = s->refs[r].grad;
        t->bias[l] = s->refs[r + 1].param, t->dbias[l] = s->refs[r + 1].grad;
    }
    if (s->is_last) {
        if (t->tie_here)
            t->H = t->E, t->dH = t->dE;
        else
            t->H = s->refs[r].param, t->dH = s->refs[r].grad;
    }
    int ns = max_slots + 1;
    size_t BTC = t->BT * C;
    t->tok = calloc(ns, sizeof *t->tok), t->lab = calloc(ns, sizeof *t->lab);
    t->xs = calloc(ns, sizeof *t->xs), t->hs = calloc(ns, sizeof *t->hs);
    t->dpre = calloc(ns, sizeof *t->dpre), t->dx0 = calloc(ns, sizeof *t->dx0);
    t->dlogits = calloc(ns, sizeof *t->dlogits);
    if (!t->tok || !t->lab || !t->xs || !t->hs || !t->dpre || !t->dx0 || !t->dlogits) goto oom;
    for (int i = 0; i < ns; i++) {
        t->tok[i] = calloc(t->BT, sizeof(int32_t));
        t->lab[i] = calloc(t->BT, sizeof(int32_t));
        t->xs[i] = calloc((t->nl + 1) * BTC, sizeof(float));
        t->hs[i] = calloc(t->nl * BTC + 1, sizeof(float));
        t->dpre[i] = calloc(t->nl * BTC + 1, sizeof(float));
        t->dx0[i] = calloc(BTC, sizeof(float));
        t->dlogits[i] = calloc(t->BT * V, sizeof(float));
        if (!t->tok[i] || !t->lab[i] || !t->xs[i] || !t->hs[i] || !t->dpre[i] || !t->dx0[i] || !t->dlogits[i])
            goto oom;
    }
    t->g = calloc(BTC, sizeof(float));
    t->g2 = calloc(BTC, sizeof(float));
    t->logits = calloc(t->BT * V, sizeof(float));
    if (!t->g || !t->g2 || !t->logits) goto oom;
    *out = s;
    return 0;
oom:
    if (s) {
        s->impl = t;
        if (t) destroy(s);
        else free(s);
    }
    return -1;
}
