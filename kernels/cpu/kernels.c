/* kernels/cpu/kernels.c - fp32 CPU backend of kernels.h: OpenBLAS sgemm for
 * every matrix product, OpenMP over rows (or column blocks, for reductions
 * over rows, so the summation order never depends on the thread count). */
#include "kernels/kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many floats of work a loop runs on one thread. */
#define PAR_MIN 16384
/* Column block for reductions over rows (grad of norm weights, biases, embeddings). */
#define COL_BLOCK 64

static int n_threads = 1;

/* All parallelism is OpenMP: OpenBLAS always runs single-threaded inside
 * the calling thread, and large products are split across the OpenMP team
 * below. Two thread pools (OpenMP's and OpenBLAS's pthreads) spinning on the
 * same cores slowed a 2-thread step 3x on a shared machine. */
void ap_kernels_set_threads(int n) {
    if (n < 1) n = 1;
    if (n > AP_KERNELS_MAX_THREADS) n = AP_KERNELS_MAX_THREADS;
    n_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(1);
}

int ap_kernels_threads(void) { return n_threads; }

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Row-major C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C, split over
 * the threads along the larger of M and N (never along K, so every element
 * is summed in the same order by one single-threaded sgemm). */
static void gemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                 size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    enum CBLAS_TRANSPOSE TA = ta ? CblasTrans : CblasNoTrans, TB = tb ? CblasTrans : CblasNoTrans;
    int nt = n_threads;
    if (nt == 1 || (double)M * N * K < (double)(1 << 21)) {
        cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb,
                    beta, C, (int)ldc);
        return;
    }
    int split_m = M >= N;
    size_t D = split_m ? M : N;
    size_t chunk = ((D + (size_t)nt - 1) / (size_t)nt + 15) & ~(size_t)15;
#pragma omp parallel for schedule(static, 1) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        size_t lo = (size_t)t * chunk, hi = lo + chunk < D ? lo + chunk : D;
        if (lo >= hi) continue;
        if (split_m) {
            const float *a = ta ? A + lo : A + lo * lda;
            cblas_sgemm(CblasRowMajor, TA, TB, (int)(hi - lo), (int)N, (int)K, alpha, a, (int)lda, B,
                        (int)ldb, beta, C + lo * ldc, (int)ldc);
        } else {
            const float *b = tb ? B + lo * ldb : B + lo;
            cblas_sgemm(CblasRowMajor, TA, TB, (int)M, (int)(hi - lo), (int)K, alpha, A, (int)lda, b,
                        (int)ldb, beta, C + lo, (int)ldc);
        }
    }
}

/* ------------------------------------------------------------------ matmul */

void ap_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       size_t N, size_t C, size_t OC, int accumulate) {
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias && !accumulate) {
        /* like torch.addmm: bias rows first, then out = inp @ w^T + out */
#pragma omp parallel for if (N * OC > PAR_MIN)
        for (size_t n = 0; n < N; n++) memcpy(out + n * OC, bias, OC * sizeof(float));
        beta = 1.0f;
    }
    gemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
    if (bias && accumulate) {
#pragma omp parallel for if (N * OC > PAR_MIN)
        for (size_t n = 0; n < N; n++)
            for (size_t o = 0; o < OC; o++) out[n * OC + o] += bias[o];
    }
}

void ap_matmul_backward_input(float *dinp, const float *dout, const float *weight, size_t N,
                              size_t C, size_t OC, int accumulate) {
    gemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, accumulate ? 1.0f : 0.0f, dinp, C);
}

/* dst (C) += sum over rows n of src (N, C) [* scale per row], rows in order. */
static void colsum_acc(float *dst, const float *src, size_t N, size_t C) {
    size_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t b = 0; b < nblocks; b++) {
        size_t lo = b * COL_BLOCK, hi = lo + COL_BLOCK < C ? lo + COL_BLOCK : C;
        float acc[COL_BLOCK];
        for (size_t i = lo; i < hi; i++) acc[i - lo] = dst[i];
        for (size_t n = 0; n < N; n++)
            for (size_t i = lo; i < hi; i++) acc[i - lo] += src[n * C + i];
        for (size_t i = lo; i < hi; i++) dst[i] = acc[i - lo];
    }
}

void ap_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp,
                               size_t N, size_t C, size_t OC) {
    gemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) colsum_acc(dbias, dout, N, OC);
}

/* --------------------------------------------------------------- embedding */

void ap_embedding_forward(float *out, const int32_t *tokens, const float *wte, size_t N, size_t C,
                          float scale) {
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *row = wte + (size_t)tokens[n] * C;
        float *o = out + n * C;
        if (scale == 1.0f)
            memcpy(o, row, C * sizeof(float));
        else
            for (size_t i = 0; i < C; i++) o[i] = row[i] * scale;
    }
}

void ap_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, size_t N, size_t C,
                           float scale) {
    /* parallel over column blocks, rows in token order: no write conflicts
     * on repeated tokens and a fixed summation order */
    size_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t b = 0; b < nblocks; b++) {
        size_t lo = b * COL_BLOCK, hi = lo + COL_BLOCK < C ? lo + COL_BLOCK : C;
        for (size_t n = 0; n < N; n++) {
            float *d = dwte + (size_t)tokens[n] * C;
            const float *g = dout + n * C;
            if (scale == 1.0f)
                for (size_t i = lo; i < hi; i++) d[i] += g[i];
            else
                for (size_t i = lo; i < hi; i++) d[i] += g[i] * scale;
        }
    }
}

/* ----------------------------------------------------------------- RMSNorm */

void ap_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, size_t N,
                        size_t C, float eps, int plus_one) {
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        double ss = 0;
        for (size_t i = 0; i < C; i++) ss += (double)x[i] * x[i];
        float var = (float)(ss / (double)C);
        float r = 1.0f / sqrtf(var + eps);
        rstd[n] = r;
        if (plus_one)
            for (size_t i = 0; i < C; i++) o[i] = (x[i] * r) * (1.0f + weight[i]);
        else
            for (size_t i = 0; i < C; i++) o[i] = weight[i] * (x[i] * r);
    }
}

void ap_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, size_t N, size_t C, int plus_one,
                         int accumulate) {
    /* weight grad first: dinp may alias dout */
    if (dweight) {
        size_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (N * C > PAR_MIN)
        for (size_t b = 0; b < nblocks; b++) {
            size_t lo = b * COL_BLOCK, hi = lo + COL_BLOCK < C ? lo + COL_BLOCK : C;
            float acc[COL_BLOCK];
            for (size_t i = lo; i < hi; i++) acc[i - lo] = dweight[i];
            for (size_t n = 0; n < N; n++) {
                const float *g = dout + n * C, *x = inp + n * C;
                float r = rstd[n];
                for (size_t i = lo; i < hi; i++) acc[i - lo] += g[i] * (x[i] * r);
            }
            for (size_t i = lo; i < hi; i++) dweight[i] = acc[i - lo];
        }
    }
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *g = dout + n * C, *x = inp + n * C;
        float *dx = dinp + n * C;
        float r = rstd[n];
        /* y_i = w_i x_i r:  dx_j = r (g_j w_j - x_j r^2 mean_i(g_i w_i x_i)) */
        double dot = 0;
        for (size_t i = 0; i < C; i++) {
            float w = plus_one ? 1.0f + weight[i] : weight[i];
            dot += (double)(g[i] * w) * x[i];
        }
        float k = (float)(dot / (double)C) * r * r;
        if (accumulate)
            for (size_t i = 0; i < C; i++) {
                float w = plus_one ? 1.0f + weight[i] : weight[i];
                dx[i] += r * (g[i] * w - x[i] * k);
            }
        else
            for (size_t i = 0; i < C; i++) {
                float w = plus_one ? 1.0f + weight[i] : weight[i];
                dx[i] = r * (g[i] * w - x[i] * k);
            }
    }
}

/* -------------------------------------------------------------------- RoPE */

void ap_rope_inv_freq(float *inv_freq, size_t D, double theta, int kind, double factor,
                      double low_freq_factor, double high_freq_factor, int original_max_pos) {
    size_t half = D / 2;
    /* transformers: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), all fp32 */
    for (size_t i = 0; i < half; i++) {
        float e = (float)(2 * i) / (float)D;
        inv_freq[i] = 1.0f / powf((float)theta, e);
    }
    if (kind == AP_ROPE_KIND_LINEAR) {
        for (size_t i = 0; i < half; i++) inv_freq[i] = inv_freq[i] / (float)factor;
    } else if (kind == AP_ROPE_KIND_LLAMA3) {
        /* _compute_llama3_parameters, in its order of fp32 operations */
        float old_len = (float)original_max_pos;
        float low_wl = (float)(original_max_pos / low_freq_factor);
        float high_wl = (float)(original_max_pos / high_freq_factor);
        float f = (float)factor, lo = (float)low_freq_factor;
        float span = (float)(high_freq_factor - low_freq_factor);
        float two_pi = (float)(2 * M_PI);
        for (size_t i = 0; i < half; i++) {
            float inv = inv_freq[i];
            float wavelen = two_pi / inv;
            float llama = wavelen > low_wl ? inv / f : inv;
            float smooth = (old_len / wavelen - lo) / span;
            float smoothed = (1.0f - smooth) * llama / f + smooth * llama;
            int medium = !(wavelen < high_wl) && !(wavelen > low_wl);
            inv_freq[i] = medium ? smoothed : llama;
        }
    }
}

void ap_rope_cos_sin(float *cos_, float *sin_, const float *inv_freq, size_t T, size_t D) {
    size_t half = D / 2;
    for (size_t t = 0; t < T; t++)
        for (size_t i = 0; i < half; i++) {
            float a = inv_freq[i] * (float)t;
            cos_[t * half + i] = cosf(a);
            sin_[t * half + i] = sinf(a);
        }
}

static void rope_apply(float *x, const float *cos_, const float *sin_, const int32_t *pos, size_t N, size_t T,
                       size_t nh, size_t D, size_t stride, float sign) {
    size_t half = D / 2;
#pragma omp parallel for if (N * nh * D > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        size_t t = pos ? (size_t)pos[n] : n % T;
        const float *c = cos_ + t * half, *s = sin_ + t * half;
        for (size_t h = 0; h < nh; h++) {
            float *v = x + n * stride + h * D;
            for (size_t i = 0; i < half; i++) {
                float x1 = v[i], x2 = v[i + half], si = sign * s[i];
                v[i] = x1 * c[i] + (-x2) * si;
                v[i + half] = x2 * c[i] + x1 * si;
            }
        }
    }
}

void ap_rope_forward(float *x, const float *cos_, const float *sin_, const int32_t *pos, size_t N, size_t T,
                     size_t nh, size_t D, size_t stride) {
    rope_apply(x, cos_, sin_, pos, N, T, nh, D, stride, 1.0f);
}

void ap_rope_backward(float *dx, const float *cos_, const float *sin_, const int32_t *pos, size_t N, size_t T,
                      size_t nh, size_t D, size_t stride) {
    rope_apply(dx, cos_, sin_, pos, N, T, nh, D, stride, -1.0f);
}

/* --------------------------------------------------------------- attention */

/* Keys visible to query i: [lo, i]. */
static inline size_t window_lo(size_t i, int window) {
    return (window > 0 && i + 1 > (size_t)window) ? i + 1 - (size_t)window : 0;
}

/* Causal products run over blocks of ATT_QB query rows: block [r0, r1)
 * needs only keys [window_lo(r0), r1), which skips the masked upper
 * triangle (and, with a sliding window, the far past). */
#define ATT_QB 64

/* One (batch, head): scores, masked softmax, P V. pos: the row's position
 * ids or NULL. */
static void attention_head_forward(float *y, float *a, const float *q, const float *k,
                                   const float *v, const int32_t *pos, size_t T, size_t D, size_t S, size_t Q,
                                   int window, float scale) {
    for (size_t r0 = 0; r0 < T; r0 += ATT_QB) {
        size_t r1 = r0 + ATT_QB < T ? r0 + ATT_QB : T, k0 = window_lo(r0, window);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)(r1 - k0), (int)D,
                    scale, q + r0 * S, (int)S, k + k0 * S, (int)S, 0.0f, a + r0 * T + k0, (int)T);
        for (size_t i = r0; i < r1; i++) {
            size_t lo = window_lo(i, window);
            if (pos && i - (size_t)pos[i] > lo) lo = i - (size_t)pos[i]; /* start of i's example */
            float *row = a + i * T;
            float mx = -INFINITY;
            for (size_t j = lo; j <= i; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = 0;
            for (size_t j = lo; j <= i; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (size_t j = 0; j < lo; j++) row[j] = 0;
            for (size_t j = lo; j <= i; j++) row[j] *= inv;
            for (size_t j = i + 1; j < T; j++) row[j] = 0;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)D, (int)(r1 - k0),
                    1.0f, a + r0 * T + k0, (int)T, v + k0 * S, (int)S, 0.0f, y + r0 * Q, (int)Q);
    }
}

void ap_attention_forward(float *y, float *att, const float *qkv, const int32_t *pos, size_t B, size_t T,
                          size_t NH, size_t NKV, size_t D, int window, float scale) {
    size_t S = (NH + 2 * NKV) * D, Q = NH * D, group = NH / NKV;
    /* one task per (batch, head), each a single-threaded sgemm pair */
#pragma omp parallel for schedule(static) if (n_threads > 1)
    for (size_t bh = 0; bh < B * NH; bh++) {
        size_t b = bh / NH, h = bh % NH;
        const float *base = qkv + b * T * S;
        attention_head_forward(y + b * T * Q + h * D, att + bh * T * T, base + h * D,
                               base + Q + (h / group) * D, base + Q + NKV * D + (h / group) * D,
                               pos ? pos + b * T : NULL, T, D, S, Q, window, scale);
    }
}

void ap_attention_backward(float *dqkv, float *scratch, const float *dy, const float *qkv,
                           const float *att, size_t B, size_t T, size_t NH, size_t NKV, size_t D,
                           int window, float scale) {
    size_t S = (NH + 2 * NKV) * D, Q = NH * D, group = NH / NKV;
    /* one task per (batch, kv head): the query heads of a group add into the
     * same dk, dv, so they run in order inside one task */
#pragma omp parallel for schedule(static) if (n_threads > 1)
    for (size_t bk = 0; bk < B * NKV; bk++) {
        size_t b = bk / NKV, kvh = bk % NKV;
        float *ds = scratch + (size_t)thread_id() * T * T;
        const float *k = qkv + b * T * S + Q + kvh * D;
        const float *v = qkv + b * T * S + Q + NKV * D + kvh * D;
        float *dk = dqkv + b * T * S + Q + kvh * D;
        float *dv = dqkv + b * T * S + Q + NKV * D + kvh * D;
        for (size_t t = 0; t < T; t++) {
            memset(dk + t * S, 0, D * sizeof(float));
            memset(dv + t * S, 0, D * sizeof(float));
        }
        for (size_t h = kvh * group; h < (kvh + 1) * group; h++) {
            const float *q = qkv + b * T * S + h * D;
            float *dq = dqkv + b * T * S + h * D;
            const float *a = att + (b * NH + h) * T * T;
            const float *g = dy + b * T * Q + h * D;
            for (size_t r0 = 0; r0 < T; r0 += ATT_QB) {
                size_t r1 = r0 + ATT_QB < T ? r0 + ATT_QB : T, k0 = window_lo(r0, window);
                int m = (int)(r1 - r0), nk = (int)(r1 - k0);
                const float *p = a + r0 * T + k0;
                float *d = ds + r0 * T + k0;
                /* dP = dY V^T;  dV += P^T dY */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, nk, (int)D, 1.0f, g + r0 * Q,
                            (int)Q, v + k0 * S, (int)S, 0.0f, d, (int)T);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, (int)D, m, 1.0f, p, (int)T,
                            g + r0 * Q, (int)Q, 1.0f, dv + k0 * S, (int)S);
                /* softmax backward: dS = P (dP - rowsum(P dP)) * scale (0 where P is) */
                for (size_t i = 0; i < (size_t)m; i++) {
                    const float *pi = p + i * T;
                    float *di = d + i * T, dot = 0;
                    for (size_t j = 0; j < (size_t)nk; j++) dot += pi[j] * di[j];
                    for (size_t j = 0; j < (size_t)nk; j++) di[j] = pi[j] * (di[j] - dot) * scale;
                }
                /* dQ = dS K;  dK += dS^T Q */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, (int)D, nk, 1.0f, d, (int)T,
                            k + k0 * S, (int)S, 0.0f, dq + r0 * S, (int)S);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, (int)D, m, 1.0f, d, (int)T,
                            q + r0 * S, (int)S, 1.0f, dk + k0 * S, (int)S);
            }
        }
    }
}

/* --------------------------------------------------------------- gated MLP */

#define GELU_BETA 0.7978845608028654f /* sqrt(2/pi) = M_SQRT2 * M_2_SQRTPI * 0.5 */
#define GELU_KAPPA 0.044715f

void ap_glu_forward(float *h, const float *gu, size_t N, size_t M, int act) {
#pragma omp parallel for if (N * M > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *g = gu + n * 2 * M, *u = g + M;
        float *o = h + n * M;
        if (act == AP_GLU_SILU)
            for (size_t i = 0; i < M; i++) o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        else
            for (size_t i = 0; i < M; i++) {
                float x = g[i], inner = GELU_BETA * (x + GELU_KAPPA * (x * x * x));
                o[i] = 0.5f * x * (1.0f + tanhf(inner)) * u[i];
            }
    }
}

void ap_glu_backward(float *dgu, const float *dh, const float *gu, size_t N, size_t M, int act) {
#pragma omp parallel for if (N * M > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *g = gu + n * 2 * M, *u = g + M, *d = dh + n * M;
        float *dg = dgu + n * 2 * M, *du = dg + M;
        if (act == AP_GLU_SILU)
            for (size_t i = 0; i < M; i++) {
                float s = 1.0f / (1.0f + expf(-g[i]));
                du[i] = d[i] * (g[i] * s);
                dg[i] = d[i] * u[i] * (s * (1.0f + g[i] * (1.0f - s)));
            }
        else
            for (size_t i = 0; i < M; i++) {
                float x = g[i], x2 = x * x;
                float t = tanhf(GELU_BETA * (x + GELU_KAPPA * x2 * x));
                du[i] = d[i] * (0.5f * x * (1.0f + t));
                float dgelu = 0.5f * (1.0f + t) +
                              0.5f * x * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x2);
                dg[i] = d[i] * u[i] * dgelu;
            }
    }
}

/* ----------------------------------------------------------- cross-entropy */

double ap_crossentropy_forward(float *probs, long *count, const float *logits,
                               const int32_t *labels, size_t N, size_t V) {
    /* Rows in blocks with the per-row losses on the stack: no allocation, so a
     * NaN result always means a non-finite loss; rows are summed in order, so
     * the total does not depend on the thread count. */
    enum { CE_BLOCK = 256 };
    float row_loss[CE_BLOCK];
    double total = 0;
    long cnt = 0;
    for (size_t n0 = 0; n0 < N; n0 += CE_BLOCK) {
        size_t nb = N - n0 < CE_BLOCK ? N - n0 : CE_BLOCK;
#pragma omp parallel for if (nb * V > PAR_MIN)
        for (size_t j = 0; j < nb; j++) {
            size_t n = n0 + j;
            const float *x = logits + n * V;
            float *p = probs + n * V;
            float mx = -INFINITY;
            for (size_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
            int32_t y = labels[n];
            float xy = y >= 0 ? x[y] : 0; /* before p overwrites x when aliased */
            float sum = 0;
            for (size_t i = 0; i < V; i++) {
                p[i] = expf(x[i] - mx);
                sum += p[i];
            }
            float inv = 1.0f / sum;
            for (size_t i = 0; i < V; i++) p[i] *= inv;
            row_loss[j] = y >= 0 ? logf(sum) - (xy - mx) : 0.0f;
        }
        for (size_t j = 0; j < nb; j++)
            if (labels[n0 + j] != -100) {
                cnt++;
                total += row_loss[j];
            }
    }
    *count = cnt;
    return total;
}

void ap_crossentropy_backward(float *dlogits, const float *probs, const int32_t *labels,
                              float dloss, size_t N, size_t V) {
#pragma omp parallel for if (N * V > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *p = probs + n * V;
        float *d = dlogits + n * V;
        int32_t y = labels[n];
        if (y < 0) {
            memset(d, 0, V * sizeof(float));
            continue;
        }
        for (size_t i = 0; i < V; i++) d[i] = (p[i] - (i == (size_t)y ? 1.0f : 0.0f)) * dloss;
    }
}

/* ------------------------------------------------------------------- AdamW */

static void adamw_range(float *param, float *m, float *v, const float *grad, size_t n, int decay,
                        float grad_scale, long step, const ap_adamw_hparams *h) {
    /* torch.optim.AdamW (_single_tensor_adamw): python-float scalars */
    double bc1 = 1.0 - pow((double)h->beta1, (double)step);
    double bc2 = 1.0 - pow((double)h->beta2, (double)step);
    float step_size = (float)((double)h->lr / bc1);
    float bc2_sqrt = (float)sqrt(bc2);
    float keep = decay ? 1.0f - h->lr * h->weight_decay : 1.0f;
    float w1 = 1.0f - h->beta1, b2 = h->beta2, w2 = 1.0f - h->beta2, eps = h->eps;
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float p = param[i] * keep;
        float mi = m[i] + w1 * (g - m[i]); /* lerp with weight < 0.5 */
        float vi = v[i] * b2 + w2 * g * g;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        m[i] = mi;
        v[i] = vi;
        param[i] = p - step_size * (mi / denom);
    }
}

void ap_adamw_update(float *param, float *m, float *v, const float *grad, size_t n,
                     const uint8_t *decay_mask, float grad_scale, long step,
                     const ap_adamw_hparams *h) {
    if (!decay_mask) {
        adamw_range(param, m, v, grad, n, 1, grad_scale, step, h);
        return;
    }
    /* runs of equal mask values */
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && decay_mask[j] == decay_mask[i]) j++;
        adamw_range(param + i, m + i, v + i, grad + i, j - i, decay_mask[i] != 0, grad_scale, step,
                    h);
        i = j;
    }
}

void ap_adamw_update_ranges(float *param, float *m, float *v, const float *grad,
                            const ap_adamw_range *ranges, size_t n_ranges, float grad_scale,
                            long step, const ap_adamw_hparams *h) {
    for (size_t r = 0; r < n_ranges; r++) {
        size_t b = ranges[r].begin, e = ranges[r].end;
        if (e > b)
            adamw_range(param + b, m + b, v + b, grad + b, e - b, ranges[r].decay, grad_scale,
                        step, h);
    }
}

/* ---------------------------------------------------------------- norms */

#define SUMSQ_CHUNK ((size_t)1 << 16)

double ap_sumsq(const float *x, size_t n) {
    size_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double stackbuf[64];
    double *part = nchunks <= 64 ? stackbuf : malloc(nchunks * sizeof(double));
    if (!part) { /* out of memory: one serial pass, same chunked order */
        double total = 0;
        for (size_t c = 0; c < nchunks; c++) {
            double s = 0;
            size_t lo = c * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
            for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
            total += s;
        }
        return total;
    }
#pragma omp parallel for if (nchunks > 1)
    for (size_t c = 0; c < nchunks; c++) {
        double s = 0;
        size_t lo = c * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
        for (size_t i = lo; i < hi; i++) s += (double)x[i] * x[i];
        part[c] = s;
    }
    double total = 0;
    for (size_t c = 0; c < nchunks; c++) total += part[c];
    if (part != stackbuf) free(part);
    return total;
}

float ap_absmax(const float *x, size_t n) {
    float mx = 0;
    int nan = 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a != a) nan = 1;
        if (a > mx) mx = a;
    }
    return nan ? NAN : mx;
}

void ap_scale(float *x, size_t n, float s) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] *= s;
}
