/* test-kernels.c - every kernel backward against central finite differences
 * of its forward (loss = sum(out * r) for a fixed random r), every forward
 * against a naive double-precision reference, each at an aligned and an odd
 * size. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/fdcheck.h"
#include "tests/tap.h"


#define TOL 1e-2

/* ---------------------------------------------------------------- matmul */
typedef struct {
    size_t N, C, OC;
    float *inp, *w, *b, *out, *r;
} mm_ctx;
static double mm_loss(void *p) {
    mm_ctx *c = p;
    ap_matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC, 0);
    return dot_r(c->out, c->r, c->N * c->OC);
}
static void test_matmul(size_t N, size_t C, size_t OC) {
    mm_ctx c = {N, C, OC, rnd(N * C, 1), rnd(OC * C, 0.3f), rnd(OC, 1), zeros(N * OC), rnd(N * OC, 1)};
    mm_loss(&c);
    double err = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < OC; o++) {
            double s = c.b[o];
            for (size_t i = 0; i < C; i++) s += (double)c.inp[n * C + i] * c.w[o * C + i];
            err = fmax(err, fabs(s - c.out[n * OC + o]));
        }
    ok(err < 1e-4, "matmul forward %zux%zux%zu vs double reference (err %.2e)", N, C, OC, err);
    float *dinp = zeros(N * C), *dw = zeros(OC * C), *db = zeros(OC);
    ap_matmul_backward_input(dinp, c.r, c.w, N, C, OC, 0);
    ap_matmul_backward_weight(dw, db, c.r, c.inp, N, C, OC);
    ok(fd_check(mm_loss, &c, c.inp, dinp, N * C, 1e-2f) < TOL, "matmul dinp %zux%zux%zu", N, C, OC);
    ok(fd_check(mm_loss, &c, c.w, dw, OC * C, 1e-2f) < TOL, "matmul dweight %zux%zux%zu", N, C, OC);
    ok(fd_check(mm_loss, &c, c.b, db, OC, 1e-2f) < TOL, "matmul dbias %zux%zux%zu", N, C, OC);
    /* accumulate flags add */
    float *dinp2 = zeros(N * C);
    memcpy(dinp2, dinp, N * C * sizeof(float));
    ap_matmul_backward_input(dinp2, c.r, c.w, N, C, OC, 1);
    double e2 = 0;
    for (size_t i = 0; i < N * C; i++) e2 = fmax(e2, fabs(dinp2[i] - 2 * dinp[i]));
    ok(e2 < 1e-5, "matmul backward_input accumulate adds");
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.r), free(dinp), free(dw), free(db), free(dinp2);
}

/* ------------------------------------------------------------- embedding */
typedef struct {
    size_t N, C, V;
    int32_t *tok;
    float *wte, *out, *r, scale;
} emb_ctx;
static double emb_loss(void *p) {
    emb_ctx *c = p;
    ap_embedding_forward(c->out, c->tok, c->wte, c->N, c->C, c->scale);
    return dot_r(c->out, c->r, c->N * c->C);
}
static void test_embedding(size_t N, size_t C, size_t V, float scale) {
    emb_ctx c = {N, C, V, malloc(N * sizeof(int32_t)), rnd(V * C, 1), zeros(N * C), rnd(N * C, 1), scale};
    for (size_t n = 0; n < N; n++) c.tok[n] = (int32_t)((n * 7) % V); /* repeats when N > V */
    emb_loss(&c);
    ok(c.out[C] == c.wte[c.tok[1] * C] * scale, "embedding forward picks rows (C=%zu)", C);
    float *dw = zeros(V * C);
    ap_embedding_backward(dw, c.r, c.tok, N, C, scale);
    ok(fd_check(emb_loss, &c, c.wte, dw, V * C, 1e-2f) < TOL, "embedding dwte N=%zu C=%zu V=%zu scale=%g",
       N, C, V, scale);
    free(c.tok), free(c.wte), free(c.out), free(c.r), free(dw);
}

/* ---------------------------------------------------------------- rmsnorm */
typedef struct {
    size_t N, C;
    int p1;
    float *inp, *w, *out, *rstd, *r;
} rn_ctx;
static double rn_loss(void *p) {
    rn_ctx *c = p;
    ap_rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f, c->p1);
    return dot_r(c->out, c->r, c->N * c->C);
}
static void test_rmsnorm(size_t N, size_t C, int p1) {
    rn_ctx c = {N, C, p1, rnd(N * C, 2), rnd(C, 1), zeros(N * C), zeros(N), rnd(N * C, 1)};
    rn_loss(&c);
    double err = 0;
    for (size_t n = 0; n < N; n++) {
        double ss = 0;
        for (size_t i = 0; i < C; i++) ss += (double)c.inp[n * C + i] * c.inp[n * C + i];
        double r = 1 / sqrt(ss / C + 1e-5);
        for (size_t i = 0; i < C; i++) {
            double w = p1 ? 1.0 + c.w[i] : c.w[i];
            err = fmax(err, fabs(c.inp[n * C + i] * r * w - c.out[n * C + i]));
        }
    }
    ok(err < 1e-5, "rmsnorm%s forward N=%zu C=%zu vs double (err %.2e)", p1 ? " (1+w)" : "", N, C, err);
    float *dinp = zeros(N * C), *dw = zeros(C);
    ap_rmsnorm_backward(dinp, dw, c.r, c.inp, c.w, c.rstd, N, C, p1, 0);
    ok(fd_check(rn_loss, &c, c.inp, dinp, N * C, 1e-2f) < TOL, "rmsnorm%s dinp N=%zu C=%zu", p1 ? " (1+w)" : "", N, C);
    ok(fd_check(rn_loss, &c, c.w, dw, C, 1e-2f) < TOL, "rmsnorm%s dweight N=%zu C=%zu", p1 ? " (1+w)" : "", N, C);
    /* in place (dinp aliases dout) gives the same */
    float *g = malloc(N * C * sizeof(float)), *dw2 = zeros(C);
    memcpy(g, c.r, N * C * sizeof(float));
    ap_rmsnorm_backward(g, dw2, g, c.inp, c.w, c.rstd, N, C, p1, 0);
    ok(memcmp(g, dinp, N * C * sizeof(float)) == 0 && memcmp(dw, dw2, C * sizeof(float)) == 0,
       "rmsnorm backward in place is identical");
    free(c.inp), free(c.w), free(c.out), free(c.rstd), free(c.r), free(dinp), free(dw), free(g), free(dw2);
}

/* Position ids of packed rows: examples of 1, 2, 3, ... tokens back to back
 * in each row of T (HF position_ids restart at every example). */
static int32_t *packed_pos(size_t B, size_t T) {
    int32_t *pos = malloc(B * T * sizeof *pos);
    for (size_t b = 0; b < B; b++)
        for (size_t t = 0, len = 1 + b, p = 0; t < T; t++) {
            pos[b * T + t] = (int32_t)p;
            if (++p == len) p = 0, len++;
        }
    return pos;
}

/* ------------------------------------------------------------------- rope */
typedef struct {
    size_t N, T, nh, D, stride;
    float *x, *work, *cs, *sn, *r;
    const int32_t *pos;
} rp_ctx;
static double rp_loss(void *p) {
    rp_ctx *c = p;
    memcpy(c->work, c->x, c->N * c->stride * sizeof(float));
    ap_rope_forward(c->work, c->cs, c->sn, c->pos, c->N, c->T, c->nh, c->D, c->stride);
    return dot_r(c->work, c->r, c->N * c->stride);
}
static void test_rope(size_t N, size_t T, size_t nh, size_t D, size_t extra, int packed) {
    size_t stride = nh * D + extra, half = D / 2;
    float *inv = zeros(half);
    int32_t *pos = packed ? packed_pos(N / T, T) : NULL;
    rp_ctx c = {N, T, nh, D, stride, rnd(N * stride, 1), zeros(N * stride), zeros(T * half), zeros(T * half),
                rnd(N * stride, 1), pos};
    ap_rope_inv_freq(inv, D, 10000.0, AP_ROPE_KIND_DEFAULT, 1, 1, 1, 1);
    ap_rope_cos_sin(c.cs, c.sn, inv, T, D);
    double err = 0;
    rp_loss(&c);
    for (size_t n = 0; n < N; n++)
        for (size_t h = 0; h < nh; h++)
            for (size_t i = 0; i < D; i++) {
                double th = (double)(pos ? (size_t)pos[n] : n % T) * pow(10000.0, -(double)(2 * (i % half)) / D);
                const float *v = c.x + n * stride + h * D;
                double rot = i < half ? -v[i + half] : v[i - half];
                double ref = v[i] * cos(th) + rot * sin(th);
                err = fmax(err, fabs(ref - c.work[n * stride + h * D + i]));
            }
    const char *how = packed ? " (packed position ids)" : "";
    ok(err < 1e-4, "rope forward N=%zu D=%zu%s vs rotate_half in double (err %.2e)", N, D, how, err);
    int untouched = 1;
    for (size_t n = 0; n < N; n++)
        for (size_t i = nh * D; i < stride; i++) untouched &= c.work[n * stride + i] == c.x[n * stride + i];
    ok(untouched, "rope leaves the columns past nh*D alone");
    float *g = malloc(N * stride * sizeof(float));
    memcpy(g, c.r, N * stride * sizeof(float));
    ap_rope_backward(g, c.cs, c.sn, pos, N, T, nh, D, stride);
    ok(fd_check(rp_loss, &c, c.x, g, N * stride, 1e-2f) < TOL, "rope backward N=%zu nh=%zu D=%zu%s", N, nh, D, how);
    free(pos), free(inv), free(c.x), free(c.work), free(c.cs), free(c.sn), free(c.r), free(g);
}

static void test_rope_scaling(void) {
    size_t D = 16;
    float def[8], lin[8], l3[8];
    ap_rope_inv_freq(def, D, 500000.0, AP_ROPE_KIND_DEFAULT, 0, 0, 0, 0);
    ap_rope_inv_freq(lin, D, 500000.0, AP_ROPE_KIND_LINEAR, 4.0, 0, 0, 0);
    ap_rope_inv_freq(l3, D, 500000.0, AP_ROPE_KIND_LLAMA3, 8.0, 1.0, 4.0, 8192);
    int ok_lin = 1;
    for (int i = 0; i < 8; i++) ok_lin &= lin[i] == def[i] / 4.0f;
    ok(ok_lin, "rope linear scaling divides inv_freq by factor");
    ok(def[0] == 1.0f && fabsf(def[1] - powf(500000.0f, -2.0f / 16)) < 1e-7f, "rope default inv_freq = theta^(-2i/D)");
    /* llama3: wavelength < 8192/4 kept, > 8192/1 divided by 8, smooth in between */
    int ok3 = 1, saw_mid = 0;
    for (int i = 0; i < 8; i++) {
        double wl = 2 * M_PI / def[i];
        if (wl < 2048) ok3 &= l3[i] == def[i];
        else if (wl > 8192) ok3 &= fabsf(l3[i] - def[i] / 8) <= 1e-6f * def[i];
        else {
            double s = (8192 / wl - 1) / 3;
            ok3 &= fabs(l3[i] - ((1 - s) * def[i] / 8 + s * def[i])) < 1e-6 * def[i];
            saw_mid = 1;
        }
    }
    ok(ok3 && saw_mid, "rope llama3 scaling: high, low and medium frequency bands");
}

/* -------------------------------------------------------------- attention */
typedef struct {
    size_t B, T, NH, NKV, D;
    int window;
    float *qkv, *y, *att, *r;
    const int32_t *pos;
} at_ctx;
static double at_loss(void *p) {
    at_ctx *c = p;
    ap_attention_forward(c->y, c->att, c->qkv, c->pos, c->B, c->T, c->NH, c->NKV, c->D, c->window,
                         1.0f / sqrtf((float)c->D));
    return dot_r(c->y, c->r, c->B * c->T * c->NH * c->D);
}
static void test_attention(size_t B, size_t T, size_t NH, size_t NKV, size_t D, int window, int packed) {
    size_t S = (NH + 2 * NKV) * D, Q = NH * D;
    int32_t *pos = packed ? packed_pos(B, T) : NULL;
    at_ctx c = {B, T, NH, NKV, D, window, rnd(B * T * S, 1), zeros(B * T * Q), zeros(B * NH * T * T),
                rnd(B * T * Q, 1), pos};
    at_loss(&c);
    /* naive reference in double */
    double err = 0;
    double *sc = malloc(T * sizeof(double));
    for (size_t b = 0; b < B; b++)
        for (size_t h = 0; h < NH; h++)
            for (size_t i = 0; i < T; i++) {
                const float *q = c.qkv + (b * T + i) * S + h * D;
                size_t kh = h / (NH / NKV);
                double mx = -INFINITY, sum = 0;
                for (size_t j = 0; j < T; j++) {
                    int vis = j <= i && (window <= 0 || i - j < (size_t)window) &&
                              (!pos || j + (size_t)pos[b * T + i] >= i); /* i's own example */
                    if (!vis) { sc[j] = -INFINITY; continue; }
                    const float *k = c.qkv + (b * T + j) * S + Q + kh * D;
                    double s = 0;
                    for (size_t d = 0; d < D; d++) s += (double)q[d] * k[d];
                    sc[j] = s / sqrt((double)D);
                    mx = fmax(mx, sc[j]);
                }
                for (size_t j = 0; j < T; j++) sum += sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                for (size_t d = 0; d < D; d++) {
                    double o = 0;
                    for (size_t j = 0; j < T; j++)
                        if (sc[j] != -INFINITY)
                            o += exp(sc[j] - mx) / sum * c.qkv[(b * T + j) * S + Q + NKV * D + kh * D + d];
                    err = fmax(err, fabs(o - c.y[(b * T + i) * Q + h * D + d]));
                }
            }
    free(sc);
    const char *how = packed ? " packed" : "";
    ok(err < 1e-5, "attention forward B=%zu T=%zu H=%zu/%zu D=%zu window=%d%s vs double (err %.2e)", B, T, NH,
       NKV, D, window, how, err);
    float *dqkv = rnd(B * T * S, 1), *scr = zeros(AP_KERNELS_MAX_THREADS * T * T); /* garbage in dqkv: must be overwritten */
    ap_attention_backward(dqkv, scr, c.r, c.qkv, c.att, B, T, NH, NKV, D, window, 1.0f / sqrtf((float)D));
    ok(fd_check(at_loss, &c, c.qkv, dqkv, B * T * S, 1e-2f) < TOL,
       "attention backward dq,dk,dv B=%zu T=%zu H=%zu/%zu D=%zu window=%d%s", B, T, NH, NKV, D, window, how);
    free(pos), free(c.qkv), free(c.y), free(c.att), free(c.r), free(dqkv), free(scr);
}

/* -------------------------------------------------------------------- GLU */
typedef struct {
    size_t N, I;
    int act;
    float *gu, *h, *r;
} glu_ctx;
static double glu_loss(void *p) {
    glu_ctx *c = p;
    ap_glu_forward(c->h, c->gu, c->N, c->I, c->act);
    return dot_r(c->h, c->r, c->N * c->I);
}
static void test_glu(size_t N, size_t I, int act) {
    glu_ctx c = {N, I, act, rnd(N * 2 * I, 3), zeros(N * I), rnd(N * I, 1)};
    glu_loss(&c);
    double err = 0;
    for (size_t n = 0; n < N; n++)
        for (size_t i = 0; i < I; i++) {
            double g = c.gu[n * 2 * I + i], u = c.gu[n * 2 * I + I + i];
            double a = act == AP_GLU_SILU ? g / (1 + exp(-g))
                                          : 0.5 * g * (1 + tanh(sqrt(2 / M_PI) * (g + 0.044715 * g * g * g)));
            err = fmax(err, fabs(a * u - c.h[n * I + i]));
        }
    const char *nm = act == AP_GLU_SILU ? "swiglu" : "geglu";
    ok(err < 1e-5, "%s forward N=%zu I=%zu vs double (err %.2e)", nm, N, I, err);
    float *dgu = zeros(N * 2 * I);
    ap_glu_backward(dgu, c.r, c.gu, N, I, act);
    ok(fd_check(glu_loss, &c, c.gu, dgu, N * 2 * I, 1e-2f) < TOL, "%s backward N=%zu I=%zu", nm, N, I);
    free(c.gu), free(c.h), free(c.r), free(dgu);
}

/* ---------------------------------------------------------- cross-entropy */
typedef struct {
    size_t N, V;
    float *logits, *probs;
    int32_t *labels;
    long count;
} ce_ctx;
static double ce_loss(void *p) {
    ce_ctx *c = p;
    return ap_crossentropy_forward(c->probs, &c->count, c->logits, c->labels, c->N, c->V);
}
static void test_ce(size_t N, size_t V) {
    ce_ctx c = {N, V, rnd(N * V, 4), zeros(N * V), malloc(N * sizeof(int32_t)), 0};
    long want = 0;
    for (size_t n = 0; n < N; n++) {
        c.labels[n] = n % 3 == 1 ? -100 : (int32_t)((n * 5 + 1) % V);
        want += c.labels[n] != -100;
    }
    double loss = ce_loss(&c), ref = 0;
    for (size_t n = 0; n < N; n++) {
        if (c.labels[n] < 0) continue;
        double mx = -INFINITY, s = 0;
        for (size_t i = 0; i < V; i++) mx = fmax(mx, c.logits[n * V + i]);
        for (size_t i = 0; i < V; i++) s += exp(c.logits[n * V + i] - mx);
        ref += log(s) + mx - c.logits[n * V + c.labels[n]];
    }
    ok(c.count == want && fabs(loss - ref) < 1e-5 * fabs(ref),
       "cross-entropy N=%zu V=%zu: loss sum vs double, count %ld of %zu (ignore_index -100)", N, V, c.count, N);
    float *d = zeros(N * V);
    ap_crossentropy_backward(d, c.probs, c.labels, 1.0f, N, V);
    ok(fd_check(ce_loss, &c, c.logits, d, N * V, 1e-2f) < TOL, "cross-entropy dlogits N=%zu V=%zu", N, V);
    /* in place with a scale (fd_check left probs of a perturbed input) */
    ce_loss(&c);
    float *p2 = malloc(N * V * sizeof(float));
    memcpy(p2, c.probs, N * V * sizeof(float));
    ap_crossentropy_backward(p2, p2, c.labels, 0.5f, N, V);
    double e = 0;
    for (size_t i = 0; i < N * V; i++) e = fmax(e, fabs(p2[i] - 0.5 * d[i]));
    ok(e < 1e-7, "cross-entropy backward in place scales by dloss");
    free(c.logits), free(c.probs), free(c.labels), free(d), free(p2);
}

/* ------------------------------------------------------------------ AdamW */
static void test_adamw(size_t n) {
    float *p = rnd(n, 1), *m = zeros(n), *v = zeros(n);
    double *rp = malloc(n * sizeof(double)), *rm = calloc(n, sizeof(double)), *rv = calloc(n, sizeof(double));
    uint8_t *mask = malloc(n);
    for (size_t i = 0; i < n; i++) rp[i] = p[i], mask[i] = i % 5 != 0;
    ap_adamw_hparams h = {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
    double err = 0;
    for (long t = 1; t <= 5; t++) {
        float *g = rnd(n, 1);
        ap_adamw_update(p, m, v, g, n, mask, 0.5f, t, &h);
        for (size_t i = 0; i < n; i++) {
            double gi = 0.5 * g[i];
            if (mask[i]) rp[i] *= 1 - 1e-2 * 0.1;
            rm[i] = 0.9 * rm[i] + 0.1 * gi;
            rv[i] = 0.95 * rv[i] + 0.05 * gi * gi;
            double mh = rm[i] / (1 - pow(0.9, t)), vh = rv[i] / (1 - pow(0.95, t));
            rp[i] -= 1e-2 * mh / (sqrt(vh) + 1e-8);
            err = fmax(err, fabs(rp[i] - p[i]));
        }
        free(g);
    }
    ok(err < 1e-5, "adamw n=%zu, 5 steps, decay mask, grad scale vs double reference (err %.2e)", n, err);
    /* ranges give the same as the mask */
    float *p2 = rnd(n, 1), *m2 = zeros(n), *v2 = zeros(n), *p3 = malloc(n * sizeof(float)), *m3 = zeros(n),
          *v3 = zeros(n), *g = rnd(n, 1);
    memcpy(p3, p2, n * sizeof(float));
    for (size_t i = 0; i < n; i++) mask[i] = i >= n / 2;
    ap_adamw_range rg[2] = {{0, n / 2, 0}, {n / 2, n, 1}};
    ap_adamw_update(p2, m2, v2, g, n, mask, 1.0f, 1, &h);
    ap_adamw_update_ranges(p3, m3, v3, g, rg, 2, 1.0f, 1, &h);
    ok(memcmp(p2, p3, n * sizeof(float)) == 0, "adamw per-range decay equals the per-element mask");
    free(p), free(m), free(v), free(rp), free(rm), free(rv), free(mask), free(p2), free(m2), free(v2),
        free(p3), free(m3), free(v3), free(g);
}

static void test_norms(size_t n) {
    float *x = rnd(n, 2);
    double ref = 0;
    float mx = 0;
    for (size_t i = 0; i < n; i++) ref += (double)x[i] * x[i], mx = fmaxf(mx, fabsf(x[i]));
    ok(fabs(ap_sumsq(x, n) - ref) < 1e-9 * ref, "sumsq n=%zu vs double", n);
    ok(ap_absmax(x, n) == mx, "absmax n=%zu", n);
    x[n / 2] = NAN;
    ok(isnan(ap_absmax(x, n)) && isnan(ap_sumsq(x, n)), "absmax and sumsq report NaN (n=%zu)", n);
    x[n / 2] = 1;
    ap_scale(x, n, 2.0f);
    ok(x[n / 2] == 2.0f, "scale");
    free(x);
}

int main(void) {
    ap_kernels_set_threads(1);
    ok(ap_kernels_threads() == 1, "threads set to 1");
    test_matmul(8, 64, 32);
    test_matmul(7, 37, 29);
    test_embedding(16, 64, 8, 1.0f);
    test_embedding(13, 37, 5, 6.0827627f);
    test_rmsnorm(8, 64, 0);
    test_rmsnorm(7, 37, 0);
    test_rmsnorm(8, 64, 1);
    test_rmsnorm(5, 33, 1);
    test_rope(8, 4, 2, 16, 0, 0);
    test_rope(7, 3, 3, 10, 5, 0);
    test_rope(14, 7, 3, 10, 5, 1);
    test_rope_scaling();
    test_attention(2, 16, 4, 2, 8, 0, 0);
    test_attention(1, 7, 3, 1, 6, 0, 0);
    test_attention(2, 9, 4, 4, 4, 3, 0);
    test_attention(1, 16, 2, 1, 8, 5, 0);
    test_attention(1, 150, 2, 1, 8, 0, 0);  /* several query blocks */
    test_attention(1, 150, 2, 2, 6, 70, 0); /* blocks that skip the far past */
    test_attention(3, 16, 4, 2, 8, 0, 1);   /* packed rows: each example sees only itself */
    test_attention(2, 9, 3, 1, 6, 4, 1);    /* ... and a sliding window */
    test_attention(1, 150, 2, 1, 8, 0, 1);  /* ... over several query blocks */
    test_glu(8, 32, AP_GLU_SILU);
    test_glu(5, 19, AP_GLU_SILU);
    test_glu(8, 32, AP_GLU_GELU_TANH);
    test_glu(5, 19, AP_GLU_GELU_TANH);
    test_ce(8, 32);
    test_ce(7, 13);
    test_adamw(1024);
    test_adamw(1001);
    test_norms(1 << 18);
    test_norms(1001);
    /* a big run through OpenMP with 2 threads gives the same bits as 1 thread */
    {
        size_t N = 512, C = 256;
        float *x = rnd(N * C, 1), *w = rnd(C, 1), *g = rnd(N * C, 1), *o1 = zeros(N * C), *o2 = zeros(N * C);
        float *r1 = zeros(N), *r2 = zeros(N), *d1 = zeros(N * C), *d2 = zeros(N * C), *w1 = zeros(C), *w2 = zeros(C);
        ap_rmsnorm_forward(o1, r1, x, w, N, C, 1e-6f, 0);
        ap_rmsnorm_backward(d1, w1, g, x, w, r1, N, C, 0, 0);
        ap_kernels_set_threads(2);
        ap_rmsnorm_forward(o2, r2, x, w, N, C, 1e-6f, 0);
        ap_rmsnorm_backward(d2, w2, g, x, w, r2, N, C, 0, 0);
        ap_kernels_set_threads(1);
        ok(!memcmp(o1, o2, N * C * 4) && !memcmp(d1, d2, N * C * 4) && !memcmp(w1, w2, C * 4),
           "rmsnorm forward/backward bit-identical with 1 and 2 threads");
        /* matrix products split over 2 threads (M and N splits) */
        size_t OC = 384;
        float *wt = rnd(OC * C, 0.1f), *y1 = zeros(N * OC), *y2 = zeros(N * OC), *dw1 = zeros(OC * C),
              *dw2 = zeros(OC * C), *gi1 = zeros(N * C), *gi2 = zeros(N * C), *gy = rnd(N * OC, 1);
        ap_matmul_forward(y1, x, wt, NULL, N, C, OC, 0);
        ap_matmul_backward_input(gi1, gy, wt, N, C, OC, 0);
        ap_matmul_backward_weight(dw1, NULL, gy, x, N, C, OC);
        ap_kernels_set_threads(2);
        ap_matmul_forward(y2, x, wt, NULL, N, C, OC, 0);
        ap_matmul_backward_input(gi2, gy, wt, N, C, OC, 0);
        ap_matmul_backward_weight(dw2, NULL, gy, x, N, C, OC);
        ap_kernels_set_threads(1);
        ok(tap_max_rel_err(y2, y1, N * OC, 1e-6) < 1e-6 && tap_max_rel_err(gi2, gi1, N * C, 1e-6) < 1e-6 &&
               tap_max_rel_err(dw2, dw1, OC * C, 1e-6) < 1e-6,
           "matmul forward/backward split over 2 threads equals 1 thread");
        free(wt), free(y1), free(y2), free(dw1), free(dw2), free(gi1), free(gi2), free(gy);
        /* attention over (batch, head) tasks on 2 threads: bit-identical */
        size_t Bt = 3, Tt = 32, NH = 4, NKV = 2, D = 16, S = (NH + 2 * NKV) * D;
        float *qkv = rnd(Bt * Tt * S, 1), *ya = zeros(Bt * Tt * NH * D), *yb = zeros(Bt * Tt * NH * D);
        float *aa = zeros(Bt * NH * Tt * Tt), *ab = zeros(Bt * NH * Tt * Tt), *dya = rnd(Bt * Tt * NH * D, 1);
        float *qa = zeros(Bt * Tt * S), *qb = zeros(Bt * Tt * S), *scr = zeros(AP_KERNELS_MAX_THREADS * Tt * Tt);
        ap_attention_forward(ya, aa, qkv, NULL, Bt, Tt, NH, NKV, D, 0, 0.25f);
        ap_attention_backward(qa, scr, dya, qkv, aa, Bt, Tt, NH, NKV, D, 0, 0.25f);
        ap_kernels_set_threads(2);
        ap_attention_forward(yb, ab, qkv, NULL, Bt, Tt, NH, NKV, D, 0, 0.25f);
        ap_attention_backward(qb, scr, dya, qkv, ab, Bt, Tt, NH, NKV, D, 0, 0.25f);
        ap_kernels_set_threads(1);
        ok(!memcmp(ya, yb, Bt * Tt * NH * D * 4) && !memcmp(qa, qb, Bt * Tt * S * 4),
           "attention forward/backward bit-identical with 1 and 2 threads");
        free(qkv), free(ya), free(yb), free(aa), free(ab), free(dya), free(qa), free(qb), free(scr);
        free(x), free(w), free(g), free(o1), free(o2), free(r1), free(r2), free(d1), free(d2), free(w1), free(w2);
    }
    return tap_done();
}
