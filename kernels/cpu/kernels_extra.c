/* kernels_extra.c - LayerNorm and exact GELU (see kernels.h), for models
 * other than the Llama family (examples/custom_model.c). Same rules as
 * kernels.c: rows in parallel, column reductions over rows in a fixed order
 * so results do not depend on the thread count. */
#include <math.h>
#include <stddef.h>

#include "kernels/kernels.h"

#define PAR_MIN 16384
#define COL_BLOCK 64

void ap_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, size_t N, size_t C, float eps) {
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        float *o = out + n * C;
        double s = 0;
        for (size_t i = 0; i < C; i++) s += x[i];
        float m = (float)(s / (double)C);
        double v = 0;
        for (size_t i = 0; i < C; i++) {
            float d = x[i] - m;
            v += (double)d * d;
        }
        float r = 1.0f / sqrtf((float)(v / (double)C) + eps);
        mean[n] = m;
        rstd[n] = r;
        for (size_t i = 0; i < C; i++) o[i] = (x[i] - m) * r * weight[i] + bias[i];
    }
}

void ap_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                           const float *weight, const float *mean, const float *rstd, size_t N, size_t C,
                           int accumulate) {
    /* parameter grads: per column block, rows in order */
    size_t nblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t b = 0; b < nblocks; b++) {
        size_t lo = b * COL_BLOCK, hi = lo + COL_BLOCK < C ? lo + COL_BLOCK : C;
        float aw[COL_BLOCK], ab[COL_BLOCK];
        for (size_t i = lo; i < hi; i++) aw[i - lo] = dweight[i], ab[i - lo] = dbias[i];
        for (size_t n = 0; n < N; n++) {
            const float *g = dout + n * C, *x = inp + n * C;
            float m = mean[n], r = rstd[n];
            for (size_t i = lo; i < hi; i++) {
                aw[i - lo] += g[i] * ((x[i] - m) * r);
                ab[i - lo] += g[i];
            }
        }
        for (size_t i = lo; i < hi; i++) dweight[i] = aw[i - lo], dbias[i] = ab[i - lo];
    }
#pragma omp parallel for if (N * C > PAR_MIN)
    for (size_t n = 0; n < N; n++) {
        const float *g = dout + n * C, *x = inp + n * C;
        float *dx = dinp + n * C;
        float m = mean[n], r = rstd[n];
        /* xhat = (x - m) r, dxhat = g w:
         * dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) */
        double s1 = 0, s2 = 0;
        for (size_t i = 0; i < C; i++) {
            float dxh = g[i] * weight[i];
            s1 += dxh;
            s2 += (double)dxh * ((x[i] - m) * r);
        }
        float a = (float)(s1 / (double)C), bq = (float)(s2 / (double)C);
        for (size_t i = 0; i < C; i++) {
            float v = r * (g[i] * weight[i] - a - (x[i] - m) * r * bq);
            dx[i] = accumulate ? dx[i] + v : v;
        }
    }
}

void ap_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2));
    }
}

void ap_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
        dinp[i] = dout[i] * (cdf + x * pdf);
    }
}
