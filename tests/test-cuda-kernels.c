/* test-cuda-kernels.c - every CUDA op against its CPU op (kernels.h) on the
 * same random inputs, at an aligned and an odd size, by normalised error
 * max|gpu - cpu| / max|cpu| (ggml's test-backend-ops style). Prints
 * "1..0 # SKIP no CUDA device" when none is visible. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/kernels_cuda.h"
#include "kernels/kernels.h"
#include "tests/tap.h"

/* products and row reductions sum in another order than OpenBLAS */
#define TOL_SUM 1e-4
/* element-wise ops: a few ulp of expf/tanhf */
#define TOL_ELT 1e-5

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t next_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}
static float frand(void) { return (float)next_u32() / 4294967296.0f * 2.0f - 1.0f; }

static float *rnd(size_t n, float s) {
    float *x = malloc((n ? n : 1) * sizeof(float));
    if (!x) exit(1);
    for (size_t i = 0; i < n; i++) x[i] = frand() * s;
    return x;
}
static float *hcopy(const float *x, size_t n) {
    float *y = malloc((n ? n : 1) * sizeof(float));
    if (!y) exit(1);
    memcpy(y, x, n * sizeof(float));
    return y;
}
static void *up(const void *h, size_t bytes) {
    void *d = NULL;
    AP_CUDA_CHECK(cudaMalloc(&d, bytes ? bytes : 1));
    if (bytes) AP_CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    AP_CUDA_CHECK(cudaDeviceSynchronize()); /* pageable copies may still be in flight */
    return d;
}
static float *upf(const float *h, size_t n) { return up(h, n * sizeof(float)); }

/* compares device d (n) with host ref; one TAP case */
static void check(const char *what, const char *size, const float *d, const float *ref, size_t n,
                  double tol) {
    float *h = malloc((n ? n : 1) * sizeof(float));
    if (!h) exit(1);
    ap_cuda_synchronize();
    AP_CUDA_CHECK(cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost));
    double e = tap_max_rel_err(h, ref, n, 1e-6);
    ok(e <= tol, "%s [%s]: normalised error %.2e <= %.0e", what, size, e, tol);
    free(h);
}

typedef struct {
    const char *name;
    size_t B, T, C, OC, V, M, NH, NKV, D, n_big;
    int window;
} shape;

static void test_matmul(const shape *s) {
    size_t N = s->B * s->T, C = s->C, OC = s->OC;
    float *inp = rnd(N * C, 1), *w = rnd(OC * C, 0.5f), *bias = rnd(OC, 1);
    float *out = rnd(N * OC, 1), *dout = rnd(N * OC, 1);
    float *d_inp = upf(inp, N * C), *d_w = upf(w, OC * C), *d_bias = upf(bias, OC);
    float *d_out = upf(out, N * OC), *d_dout = upf(dout, N * OC);
    for (int acc = 0; acc <= 1; acc++) {
        float *ref = hcopy(out, N * OC);
        ap_cuda_synchronize();
        AP_CUDA_CHECK(cudaMemcpy(d_out, out, N * OC * sizeof(float), cudaMemcpyHostToDevice));
        AP_CUDA_CHECK(cudaDeviceSynchronize());
        ap_matmul_forward(ref, inp, w, bias, N, C, OC, acc);
        ap_matmul_forward_cuda(d_out, d_inp, d_w, d_bias, N, C, OC, acc);
        check(acc ? "matmul_forward +bias accumulate" : "matmul_forward +bias", s->name, d_out,
              ref, N * OC, TOL_SUM);
        free(ref);
    }
    ap_matmul_forward(out, inp, w, NULL, N, C, OC, 0);
    ap_matmul_forward_cuda(d_out, d_inp, d_w, NULL, N, C, OC, 0);
    check("matmul_forward no bias", s->name, d_out, out, N * OC, TOL_SUM);
    for (int acc = 0; acc <= 1; acc++) {
        float *ref = hcopy(inp, N * C);
        float *d_dinp = upf(inp, N * C);
        ap_matmul_backward_input(ref, dout, w, N, C, OC, acc);
        ap_matmul_backward_input_cuda(d_dinp, d_dout, d_w, N, C, OC, acc);
        check(acc ? "matmul_backward_input accumulate" : "matmul_backward_input", s->name, d_dinp,
              ref, N * C, TOL_SUM);
        free(ref);
        AP_CUDA_CHECK(cudaFree(d_dinp));
    }
    float *dw = rnd(OC * C, 1), *db = rnd(OC, 1);
    float *d_dw = upf(dw, OC * C), *d_db = upf(db, OC);
    ap_matmul_backward_weight(dw, db, dout, inp, N, C, OC);
    ap_matmul_backward_weight_cuda(d_dw, d_db, d_dout, d_inp, N, C, OC);
    check("matmul_backward_weight dweight +=", s->name, d_dw, dw, OC * C, TOL_SUM);
    check("matmul_backward_weight dbias +=", s->name, d_db, db, OC, TOL_SUM);
    free(inp); free(w); free(bias); free(out); free(dout); free(dw); free(db);
    cudaFree(d_inp); cudaFree(d_w); cudaFree(d_bias); cudaFree(d_out); cudaFree(d_dout);
    cudaFree(d_dw); cudaFree(d_db);
}

static void test_embedding(const shape *s) {
    size_t N = s->B * s->T, C = s->C, V = s->V / 8 + 3; /* few rows: tokens repeat */
    int32_t *tok = malloc(N * sizeof(int32_t));
    if (!tok) exit(1);
    for (size_t n = 0; n < N; n++) tok[n] = (int32_t)(next_u32() % V);
    float *wte = rnd(V * C, 1), *out = rnd(N * C, 1), *dout = rnd(N * C, 1);
    int32_t *d_tok = up(tok, N * sizeof(int32_t));
    float *d_wte = upf(wte, V * C), *d_out = upf(out, N * C), *d_dout = upf(dout, N * C);
    float scales[2] = {1.0f, 2.5f};
    for (int k = 0; k < 2; k++) {
        char what[64];
        ap_embedding_forward(out, tok, wte, N, C, scales[k]);
        ap_embedding_forward_cuda(d_out, d_tok, d_wte, N, C, scales[k]);
        snprintf(what, sizeof what, "embedding_forward scale %g", scales[k]);
        check(what, s->name, d_out, out, N * C, TOL_ELT);
        float *dwte = rnd(V * C, 1), *d_dwte = upf(dwte, V * C);
        ap_embedding_backward(dwte, dout, tok, N, C, scales[k]);
        ap_embedding_backward_cuda(d_dwte, d_dout, d_tok, N, C, scales[k]);
        snprintf(what, sizeof what, "embedding_backward scale %g (repeated tokens)", scales[k]);
        check(what, s->name, d_dwte, dwte, V * C, TOL_ELT);
        free(dwte);
        cudaFree(d_dwte);
    }
    free(tok); free(wte); free(out); free(dout);
    cudaFree(d_tok); cudaFree(d_wte); cudaFree(d_out); cudaFree(d_dout);
}

static void test_rmsnorm(const shape *s) {
    size_t N = s->B * s->T, C = s->C;
    float *inp = rnd(N * C, 2), *w = rnd(C, 1), *dout = rnd(N * C, 1);
    float *d_inp = upf(inp, N * C), *d_w = upf(w, C), *d_dout = upf(dout, N * C);
    for (int plus_one = 0; plus_one <= 1; plus_one++) {
        char what[80];
        float *out = malloc(N * C * sizeof(float)), *rstd = malloc(N * sizeof(float));
        float *d_out = upf(inp, N * C), *d_rstd = upf(inp, N);
        if (!out || !rstd) exit(1);
        ap_rmsnorm_forward(out, rstd, inp, w, N, C, 1e-6f, plus_one);
        ap_rmsnorm_forward_cuda(d_out, d_rstd, d_inp, d_w, N, C, 1e-6f, plus_one);
        snprintf(what, sizeof what, "rmsnorm_forward%s out", plus_one ? " (gemma 1+w)" : "");
        check(what, s->name, d_out, out, N * C, TOL_SUM);
        snprintf(what, sizeof what, "rmsnorm_forward%s rstd", plus_one ? " (gemma 1+w)" : "");
        check(what, s->name, d_rstd, rstd, N, TOL_SUM);
        for (int acc = 0; acc <= 1; acc++) {
            float *dinp = rnd(N * C, 1), *dw = rnd(C, 1);
            float *d_dinp = upf(dinp, N * C), *d_dw = upf(dw, C);
            ap_rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, C, plus_one, acc);
            ap_rmsnorm_backward_cuda(d_dinp, d_dw, d_dout, d_inp, d_w, d_rstd, N, C, plus_one,
                                     acc);
            snprintf(what, sizeof what, "rmsnorm_backward%s%s dinp", plus_one ? " (gemma)" : "",
                     acc ? " accumulate" : "");
            check(what, s->name, d_dinp, dinp, N * C, TOL_SUM);
            snprintf(what, sizeof what, "rmsnorm_backward%s%s dweight", plus_one ? " (gemma)" : "",
                     acc ? " accumulate" : "");
            check(what, s->name, d_dw, dw, C, TOL_SUM);
            free(dinp); free(dw);
            cudaFree(d_dinp); cudaFree(d_dw);
        }
        free(out); free(rstd);
        cudaFree(d_out); cudaFree(d_rstd);
    }
    free(inp); free(w); free(dout);
    cudaFree(d_inp); cudaFree(d_w); cudaFree(d_dout);
}

static void test_rope(const shape *s) {
    size_t N = s->B * s->T, T = s->T, D = s->D, nh = s->NH, stride = (s->NH + 2 * s->NKV) * D;
    float *inv = malloc(D / 2 * sizeof(float));
    float *cs = malloc(T * D / 2 * sizeof(float)), *sn = malloc(T * D / 2 * sizeof(float));
    if (!inv || !cs || !sn) exit(1);
    ap_rope_inv_freq(inv, D, 10000.0, AP_ROPE_KIND_DEFAULT, 1, 1, 4, 8192);
    ap_rope_cos_sin(cs, sn, inv, T, D);
    float *x = rnd(N * stride, 1);
    float *d_x = upf(x, N * stride), *d_cs = upf(cs, T * D / 2), *d_sn = upf(sn, T * D / 2);
    ap_rope_forward(x, cs, sn, NULL, N, T, nh, D, stride);
    ap_rope_forward_cuda(d_x, d_cs, d_sn, N, T, nh, D, stride);
    check("rope_forward (query heads of qkv, others untouched)", s->name, d_x, x, N * stride,
          TOL_ELT);
    ap_rope_backward(x, cs, sn, NULL, N, T, nh, D, stride);
    ap_rope_backward_cuda(d_x, d_cs, d_sn, N, T, nh, D, stride);
    check("rope_backward", s->name, d_x, x, N * stride, TOL_ELT);
    free(inv); free(cs); free(sn); free(x);
    cudaFree(d_x); cudaFree(d_cs); cudaFree(d_sn);
}

static void test_attention(const shape *s) {
    size_t B = s->B, T = s->T, NH = s->NH, NKV = s->NKV, D = s->D;
    size_t S = (NH + 2 * NKV) * D, Q = NH * D;
    float scale = 1.0f / sqrtf((float)D);
    float *qkv = rnd(B * T * S, 1), *dy = rnd(B * T * Q, 1);
    float *y = malloc(B * T * Q * sizeof(float)), *att = malloc(B * NH * T * T * sizeof(float));
    float *dqkv = malloc(B * T * S * sizeof(float));
    float *scr = malloc((size_t)AP_KERNELS_MAX_THREADS * T * T * sizeof(float));
    if (!y || !att || !dqkv || !scr) exit(1);
    float *d_qkv = upf(qkv, B * T * S), *d_dy = upf(dy, B * T * Q);
    float *d_y = upf(dy, B * T * Q), *d_dqkv = upf(qkv, B * T * S);
    float *d_att = NULL, *d_scr = NULL;
    AP_CUDA_CHECK(cudaMalloc((void **)&d_att, B * NH * T * T * sizeof(float)));
    AP_CUDA_CHECK(cudaMalloc((void **)&d_scr, NH * T * T * sizeof(float)));
    char what[96];
    ap_attention_forward(y, att, qkv, NULL, B, T, NH, NKV, D, s->window, scale);
    ap_attention_forward_cuda(d_y, d_att, d_qkv, B, T, NH, NKV, D, s->window, scale);
    snprintf(what, sizeof what, "attention_forward y (NH %zu NKV %zu window %d)", NH, NKV,
             s->window);
    check(what, s->name, d_y, y, B * T * Q, TOL_SUM);
    check("attention_forward att (probabilities, 0 where masked)", s->name, d_att, att,
          B * NH * T * T, TOL_SUM);
    ap_attention_backward(dqkv, scr, dy, qkv, att, B, T, NH, NKV, D, 0, scale);
    ap_attention_backward_cuda(d_dqkv, d_scr, d_dy, d_qkv, d_att, B, T, NH, NKV, D, scale);
    check("attention_backward dqkv", s->name, d_dqkv, dqkv, B * T * S, TOL_SUM);
    free(qkv); free(dy); free(y); free(att); free(dqkv); free(scr);
    cudaFree(d_qkv); cudaFree(d_dy); cudaFree(d_y); cudaFree(d_att); cudaFree(d_dqkv);
    cudaFree(d_scr);
}

static void test_glu(const shape *s) {
    size_t N = s->B * s->T, M = s->M;
    float *gu = rnd(N * 2 * M, 3), *dh = rnd(N * M, 1);
    float *h = malloc(N * M * sizeof(float)), *dgu = malloc(N * 2 * M * sizeof(float));
    if (!h || !dgu) exit(1);
    float *d_gu = upf(gu, N * 2 * M), *d_dh = upf(dh, N * M);
    float *d_h = upf(dh, N * M), *d_dgu = upf(gu, N * 2 * M);
    for (int act = AP_GLU_SILU; act <= AP_GLU_GELU_TANH; act++) {
        const char *an = act == AP_GLU_SILU ? "swiglu" : "geglu";
        char what[64];
        ap_glu_forward(h, gu, N, M, act);
        ap_glu_forward_cuda(d_h, d_gu, N, M, act);
        snprintf(what, sizeof what, "glu_forward %s", an);
        check(what, s->name, d_h, h, N * M, TOL_ELT);
        ap_glu_backward(dgu, dh, gu, N, M, act);
        ap_glu_backward_cuda(d_dgu, d_dh, d_gu, N, M, act);
        snprintf(what, sizeof what, "glu_backward %s", an);
        check(what, s->name, d_dgu, dgu, N * 2 * M, TOL_ELT);
    }
    free(gu); free(dh); free(h); free(dgu);
    cudaFree(d_gu); cudaFree(d_dh); cudaFree(d_h); cudaFree(d_dgu);
}

static void test_crossentropy(const shape *s) {
    size_t N = s->B * s->T, V = s->V;
    float *logits = rnd(N * V, 4);
    int32_t *lab = malloc(N * sizeof(int32_t));
    if (!lab) exit(1);
    for (size_t n = 0; n < N; n++) lab[n] = n % 5 == 3 ? -100 : (int32_t)(next_u32() % V);
    float *d_logits = upf(logits, N * V);
    int32_t *d_lab = up(lab, N * sizeof(int32_t));
    long cnt_cpu = 0, cnt_gpu = 0;
    /* in place, as the trainer calls it (probs aliases logits) */
    double l_cpu = ap_crossentropy_forward(logits, &cnt_cpu, logits, lab, N, V);
    double l_gpu = ap_crossentropy_forward_cuda(d_logits, &cnt_gpu, d_logits, d_lab, N, V);
    double rel = fabs(l_gpu - l_cpu) / fmax(fabs(l_cpu), 1e-6);
    ok(cnt_cpu == cnt_gpu && rel <= TOL_ELT,
       "crossentropy_forward loss [%s]: %.6f vs %.6f (rel %.2e), count %ld vs %ld", s->name,
       l_gpu, l_cpu, rel, cnt_gpu, cnt_cpu);
    check("crossentropy_forward probs (in place)", s->name, d_logits, logits, N * V, TOL_ELT);
    float *dl = malloc(N * V * sizeof(float));
    if (!dl) exit(1);
    float *d_dl = upf(logits, N * V);
    ap_crossentropy_backward(dl, logits, lab, 1.0f / (float)cnt_cpu, N, V);
    ap_crossentropy_backward_cuda(d_dl, d_logits, d_lab, 1.0f / (float)cnt_cpu, N, V);
    check("crossentropy_backward (ignored rows 0)", s->name, d_dl, dl, N * V, TOL_ELT);
    free(logits); free(lab); free(dl);
    cudaFree(d_logits); cudaFree(d_lab); cudaFree(d_dl);
}

static void test_adamw(const shape *s) {
    size_t n = s->n_big;
    ap_adamw_hparams h = {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f};
    float *p = rnd(n, 1), *m = rnd(n, 0.01f), *v = rnd(n, 0.01f), *g = rnd(n, 1);
    for (size_t i = 0; i < n; i++) v[i] = fabsf(v[i]);
    uint8_t *mask = malloc(n);
    if (!mask) exit(1);
    for (size_t i = 0; i < n; i++) mask[i] = (i / 1000) % 3 != 0;
    float *d_p = upf(p, n), *d_m = upf(m, n), *d_v = upf(v, n), *d_g = upf(g, n);
    uint8_t *d_mask = up(mask, n);
    for (long step = 1; step <= 3; step++) {
        ap_adamw_update(p, m, v, g, n, mask, 0.7f, step, &h);
        ap_adamw_update_cuda(d_p, d_m, d_v, d_g, n, d_mask, 0.7f, step, &h);
    }
    check("adamw_update (decay mask, 3 steps) param", s->name, d_p, p, n, TOL_ELT);
    check("adamw_update m", s->name, d_m, m, n, TOL_ELT);
    check("adamw_update v", s->name, d_v, v, n, TOL_ELT);
    ap_adamw_range r[3] = {{0, n / 3, 1}, {n / 3, n / 2, 0}, {n / 2 + 7, n, 1}};
    ap_adamw_update_ranges(p, m, v, g, r, 3, 1.0f, 4, &h);
    ap_adamw_update_ranges_cuda(d_p, d_m, d_v, d_g, r, 3, 1.0f, 4, &h);
    check("adamw_update_ranges param (a gap left untouched)", s->name, d_p, p, n, TOL_ELT);
    ap_adamw_update(p, m, v, g, n, NULL, 1.0f, 5, &h);
    ap_adamw_update_cuda(d_p, d_m, d_v, d_g, n, NULL, 1.0f, 5, &h);
    check("adamw_update (no mask) param", s->name, d_p, p, n, TOL_ELT);
    free(p); free(m); free(v); free(g); free(mask);
    cudaFree(d_p); cudaFree(d_m); cudaFree(d_v); cudaFree(d_g); cudaFree(d_mask);
}

static void test_norms(const shape *s) {
    size_t n = s->n_big;
    float *x = rnd(n, 3);
    float *d_x = upf(x, n);
    double a = ap_sumsq(x, n), b = ap_sumsq_cuda(d_x, n);
    ok(fabs(a - b) <= 1e-10 * a, "sumsq [%s] n=%zu: %.10g vs %.10g", s->name, n, b, a);
    float ma = ap_absmax(x, n), mb = ap_absmax_cuda(d_x, n);
    ok(ma == mb, "absmax [%s]: %g vs %g", s->name, mb, ma);
    ap_scale(x, n, -0.37f);
    ap_scale_cuda(d_x, n, -0.37f);
    check("scale", s->name, d_x, x, n, 0.0);
    float nanv = NAN;
    ap_cuda_synchronize();
    AP_CUDA_CHECK(cudaMemcpy(d_x + n - 1, &nanv, sizeof(float), cudaMemcpyHostToDevice));
    AP_CUDA_CHECK(cudaDeviceSynchronize());
    ok(isnan(ap_absmax_cuda(d_x, n)), "absmax [%s]: NaN in the last element gives NaN", s->name);
    free(x);
    cudaFree(d_x);
}

int main(void) {
    int ndev = ap_cuda_device_count();
    if (ndev < 1) {
        printf("1..0 # SKIP no CUDA device\n");
        return 0;
    }
    char err[256];
    if (ap_cuda_init(0, err, sizeof err) != 0) {
        printf("not ok 1 - ap_cuda_init: %s\n1..1\n", err);
        return 1;
    }
    ap_kernels_set_threads(1);
    /* aligned: powers of two; odd: primes, a sliding window, 3 query heads per kv head */
    shape shapes[2] = {
        {"aligned", 2, 32, 128, 256, 512, 256, 4, 2, 16, (size_t)1 << 18, 0},
        {"odd", 3, 13, 77, 45, 301, 51, 6, 2, 10, 200003, 5},
    };
    for (int i = 0; i < 2; i++) {
        const shape *s = &shapes[i];
        test_matmul(s);
        test_embedding(s);
        test_rmsnorm(s);
        test_rope(s);
        test_attention(s);
        test_glu(s);
        test_crossentropy(s);
        test_adamw(s);
        test_norms(s);
    }
    ap_cuda_shutdown();
    return tap_done();
}
