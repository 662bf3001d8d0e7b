/* kernels/cuda/kernels_cuda.cu - fp32 CUDA backend of kernels.h: cuBLAS
 * (TF32 off) for every matrix product, simple one-thread-per-element or
 * one-block-per-row kernels for the rest. Reductions over rows run with one
 * thread per column looping the rows in order, so their summation order is
 * fixed (deterministic, like the CPU backend), at the price of speed. */
#include "kernels/cuda/kernels_cuda.h"

#include <cublas_v2.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

/* ------------------------------------------------------------- context */

static struct {
    int device = -1;
    cudaStream_t stream = 0;
    int own_stream = 0;
    cublasHandle_t blas = nullptr;
    void *scratch = nullptr; /* grow-only device workspace for reductions */
    size_t scratch_bytes = 0;
} ctx;

extern "C" void ap_cuda_check_(cudaError_t e, const char *file, int line) {
    if (e == cudaSuccess) return;
    fprintf(stderr, "%s:%d: CUDA error: %s: %s\n", file, line, cudaGetErrorName(e),
            cudaGetErrorString(e));
    exit(EXIT_FAILURE);
}

extern "C" void ap_cublas_check_(int status, const char *file, int line) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fprintf(stderr, "%s:%d: cuBLAS error: %s (%d)\n", file, line,
            cublasGetStatusString((cublasStatus_t)status), status);
    exit(EXIT_FAILURE);
}

/* after every launch: catches bad configurations at the call site */
#define LAUNCHED() AP_CUDA_CHECK(cudaGetLastError())

extern "C" int ap_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear: no driver / no device is not fatal here */
        return 0;
    }
    return n;
}

static int fail(char *err, size_t errlen, const char *what, cudaError_t e) {
    if (err && errlen)
        snprintf(err, errlen, "%s: %s: %s", what, cudaGetErrorName(e), cudaGetErrorString(e));
    (void)cudaGetLastError();
    return -1;
}

extern "C" int ap_cuda_init(int device, char *err, size_t errlen) {
    if (ctx.blas && ctx.device == device) return 0;
    if (ctx.blas) ap_cuda_shutdown();
    int n = ap_cuda_device_count();
    if (device < 0 || device >= n) {
        if (err && errlen)
            snprintf(err, errlen, "CUDA device %d requested but %d device(s) visible "
                     "(check CUDA_VISIBLE_DEVICES and the driver)", device, n);
        return -1;
    }
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) return fail(err, errlen, "cudaSetDevice", e);
    /* a blocking stream: plain cudaMemcpy calls of the caller (legacy
     * default stream) stay ordered with the ops */
    e = cudaStreamCreate(&ctx.stream);
    if (e != cudaSuccess) return fail(err, errlen, "cudaStreamCreate", e);
    ctx.own_stream = 1;
    cublasStatus_t s = cublasCreate(&ctx.blas);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetStream(ctx.blas, ctx.stream);
    /* parity with the CPU backend: plain fp32 FMA, no TF32 tensor cores */
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasSetMathMode(ctx.blas, CUBLAS_PEDANTIC_MATH);
    if (s != CUBLAS_STATUS_SUCCESS) {
        if (err && errlen) snprintf(err, errlen, "cuBLAS setup: %s", cublasGetStatusString(s));
        if (ctx.blas) cublasDestroy(ctx.blas);
        ctx.blas = nullptr;
        cudaStreamDestroy(ctx.stream);
        ctx.stream = 0;
        ctx.own_stream = 0;
        return -1;
    }
    ctx.device = device;
    return 0;
}

extern "C" void ap_cuda_shutdown(void) {
    if (ctx.stream) cudaStreamSynchronize(ctx.stream);
    if (ctx.scratch) cudaFree(ctx.scratch);
    if (ctx.blas) cublasDestroy(ctx.blas);
    if (ctx.own_stream && ctx.stream) cudaStreamDestroy(ctx.stream);
    ctx.scratch = nullptr;
    ctx.scratch_bytes = 0;
    ctx.blas = nullptr;
    ctx.stream = 0;
    ctx.own_stream = 0;
    ctx.device = -1;
}

extern "C" cudaStream_t ap_cuda_stream(void) { return ctx.stream; }

extern "C" void ap_cuda_set_stream(cudaStream_t s) {
    if (ctx.own_stream && ctx.stream && ctx.stream != s) {
        AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
        AP_CUDA_CHECK(cudaStreamDestroy(ctx.stream));
        ctx.own_stream = 0;
    }
    ctx.stream = s;
    if (ctx.blas) AP_CUBLAS_CHECK(cublasSetStream(ctx.blas, s));
}

extern "C" void ap_cuda_synchronize(void) { AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream)); }

static cublasHandle_t blas(void) {
    if (!ctx.blas) {
        fprintf(stderr, "autopipe: a CUDA kernel was called before ap_cuda_init\n");
        exit(EXIT_FAILURE);
    }
    return ctx.blas;
}

static void *scratch(size_t bytes) {
    if (bytes > ctx.scratch_bytes) {
        AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
        if (ctx.scratch) AP_CUDA_CHECK(cudaFree(ctx.scratch));
        AP_CUDA_CHECK(cudaMalloc(&ctx.scratch, bytes));
        ctx.scratch_bytes = bytes;
    }
    return ctx.scratch;
}

static unsigned blocks_for(size_t n, unsigned threads) {
    size_t b = (n + threads - 1) / threads;
    return (unsigned)(b ? b : 1);
}

/* Row-major C (M, N) = alpha op(A) (M, K) op(B) (K, N) + beta C, as the
 * column-major product C^T = op(B)^T op(A)^T (no copies, swapped operands). */
static void gemm(int ta, int tb, size_t M, size_t N, size_t K, float alpha, const float *A,
                 size_t lda, const float *B, size_t ldb, float beta, float *C, size_t ldc) {
    if (M == 0 || N == 0) return;
    AP_CUBLAS_CHECK(cublasGemmEx(blas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &alpha, B,
                                 CUDA_R_32F, (int)ldb, A, CUDA_R_32F, (int)lda, &beta, C,
                                 CUDA_R_32F, (int)ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* The same, batched: matrix i at A + i sA, B + i sB, C + i sC (a stride may be 0). */
static void gemm_batched(int ta, int tb, size_t M, size_t N, size_t K, float alpha,
                         const float *A, size_t lda, long long sA, const float *B, size_t ldb,
                         long long sB, float beta, float *C, size_t ldc, long long sC,
                         size_t count) {
    if (M == 0 || N == 0 || count == 0) return;
    AP_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
        blas(), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M,
        (int)K, &alpha, B, CUDA_R_32F, (int)ldb, sB, A, CUDA_R_32F, (int)lda, sA, &beta, C,
        CUDA_R_32F, (int)ldc, sC, (int)count, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

/* ----------------------------------------------------- block reductions */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result. shm holds 32 values of T. */
template <typename T> __device__ T block_sum(T v, T *shm) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads(); /* shm may still be read from a previous call */
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : (T)0;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v, float *shm) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    v = lane < nw ? shm[lane] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

#define ROW_THREADS 256

/* ---------------------------------------------------------------- matmul */

/* out (N, OC): rows = bias (add = 0) or rows += bias (add = 1) */
__global__ void bias_rows_kernel(float *out, const float *bias, size_t N, size_t OC, int add) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * OC) return;
    float b = bias[i % OC];
    out[i] = add ? out[i] + b : b;
}

/* dst (C) += column sums of src (N, C), rows in order (one thread per column) */
__global__ void colsum_acc_kernel(float *dst, const float *src, size_t N, size_t C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    float acc = dst[i];
    for (size_t n = 0; n < N; n++) acc += src[n * C + i];
    dst[i] = acc;
}

extern "C" void ap_matmul_forward_cuda(float *out, const float *inp, const float *weight,
                                       const float *bias, size_t N, size_t C, size_t OC,
                                       int accumulate) {
    float beta = accumulate ? 1.0f : 0.0f;
    if (bias && !accumulate) { /* like torch.addmm: bias first, then += inp @ w^T */
        bias_rows_kernel<<<blocks_for(N * OC, 256), 256, 0, ctx.stream>>>(out, bias, N, OC, 0);
        LAUNCHED();
        beta = 1.0f;
    }
    gemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
    if (bias && accumulate) {
        bias_rows_kernel<<<blocks_for(N * OC, 256), 256, 0, ctx.stream>>>(out, bias, N, OC, 1);
        LAUNCHED();
    }
}

extern "C" void ap_matmul_backward_input_cuda(float *dinp, const float *dout, const float *weight,
                                              size_t N, size_t C, size_t OC, int accumulate) {
    gemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, accumulate ? 1.0f : 0.0f, dinp, C);
}

extern "C" void ap_matmul_backward_weight_cuda(float *dweight, float *dbias, const float *dout,
                                               const float *inp, size_t N, size_t C, size_t OC) {
    gemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        colsum_acc_kernel<<<blocks_for(OC, 256), 256, 0, ctx.stream>>>(dbias, dout, N, OC);
        LAUNCHED();
    }
}

/* ------------------------------------------------------------- embedding */

__global__ void embedding_forward_kernel(float *out, const int32_t *tokens, const float *wte,
                                         size_t N, size_t C, float scale) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * C) return;
    size_t n = i / C, c = i % C;
    float w = wte[(size_t)tokens[n] * C + c];
    out[i] = scale == 1.0f ? w : w * scale;
}

/* one thread per column, rows in token order: repeated tokens never race
 * and the summation order is the CPU backend's */
__global__ void embedding_backward_kernel(float *dwte, const float *dout, const int32_t *tokens,
                                          size_t N, size_t C, float scale) {
    size_t c = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    for (size_t n = 0; n < N; n++) {
        float g = dout[n * C + c];
        dwte[(size_t)tokens[n] * C + c] += scale == 1.0f ? g : g * scale;
    }
}

extern "C" void ap_embedding_forward_cuda(float *out, const int32_t *tokens, const float *wte,
                                          size_t N, size_t C, float scale) {
    if (N * C == 0) return;
    embedding_forward_kernel<<<blocks_for(N * C, 256), 256, 0, ctx.stream>>>(out, tokens, wte, N,
                                                                             C, scale);
    LAUNCHED();
}

extern "C" void ap_embedding_backward_cuda(float *dwte, const float *dout, const int32_t *tokens,
                                           size_t N, size_t C, float scale) {
    if (N * C == 0) return;
    embedding_backward_kernel<<<blocks_for(C, 128), 128, 0, ctx.stream>>>(dwte, dout, tokens, N,
                                                                          C, scale);
    LAUNCHED();
}

/* --------------------------------------------------------------- RMSNorm */

/* one block per row; out may alias inp (every element is read, reduced,
 * then written by the same thread) */
__global__ void rmsnorm_forward_kernel(float *out, float *rstd, const float *inp,
                                       const float *weight, size_t C, float eps, int plus_one) {
    __shared__ double shm[32];
    size_t n = blockIdx.x;
    const float *x = inp + n * C;
    float *o = out + n * C;
    double ss = 0;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) ss += (double)x[i] * x[i];
    ss = block_sum(ss, shm);
    float r = 1.0f / sqrtf((float)(ss / (double)C) + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x)
        o[i] = plus_one ? (x[i] * r) * (1.0f + weight[i]) : weight[i] * (x[i] * r);
}

__global__ void rmsnorm_dweight_kernel(float *dweight, const float *dout, const float *inp,
                                       const float *rstd, size_t N, size_t C) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= C) return;
    float acc = dweight[i];
    for (size_t n = 0; n < N; n++) acc += dout[n * C + i] * (inp[n * C + i] * rstd[n]);
    dweight[i] = acc;
}

/* y_i = w_i x_i r:  dx_j = r (g_j w_j - x_j r^2 mean_i(g_i w_i x_i)); dinp may alias dout */
__global__ void rmsnorm_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                    const float *weight, const float *rstd, size_t C,
                                    int plus_one, int accumulate) {
    __shared__ double shm[32];
    size_t n = blockIdx.x;
    const float *g = dout + n * C, *x = inp + n * C;
    float *dx = dinp + n * C;
    float r = rstd[n];
    double dot = 0;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) {
        float w = plus_one ? 1.0f + weight[i] : weight[i];
        dot += (double)(g[i] * w) * x[i];
    }
    dot = block_sum(dot, shm);
    float k = (float)(dot / (double)C) * r * r;
    for (size_t i = threadIdx.x; i < C; i += blockDim.x) {
        float w = plus_one ? 1.0f + weight[i] : weight[i];
        float d = r * (g[i] * w - x[i] * k);
        dx[i] = accumulate ? dx[i] + d : d;
    }
}

extern "C" void ap_rmsnorm_forward_cuda(float *out, float *rstd, const float *inp,
                                        const float *weight, size_t N, size_t C, float eps,
                                        int plus_one) {
    if (N == 0) return;
    rmsnorm_forward_kernel<<<(unsigned)N, ROW_THREADS, 0, ctx.stream>>>(out, rstd, inp, weight, C,
                                                                       eps, plus_one);
    LAUNCHED();
}

extern "C" void ap_rmsnorm_backward_cuda(float *dinp, float *dweight, const float *dout,
                                         const float *inp, const float *weight, const float *rstd,
                                         size_t N, size_t C, int plus_one, int accumulate) {
    if (N == 0) return;
    /* weight grad first: dinp may alias dout */
    if (dweight) {
        rmsnorm_dweight_kernel<<<blocks_for(C, 128), 128, 0, ctx.stream>>>(dweight, dout, inp,
                                                                           rstd, N, C);
        LAUNCHED();
    }
    rmsnorm_dinp_kernel<<<(unsigned)N, ROW_THREADS, 0, ctx.stream>>>(dinp, dout, inp, weight,
                                                                    rstd, C, plus_one, accumulate);
    LAUNCHED();
}

/* ------------------------------------------------------------------ RoPE */

__global__ void rope_kernel(float *x, const float *cos_, const float *sin_, size_t N, size_t T,
                            size_t nh, size_t D, size_t stride, float sign) {
    size_t half = D / 2;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * nh * half) return;
    size_t i = idx % half, h = (idx / half) % nh, n = idx / (half * nh);
    const float *c = cos_ + (n % T) * half, *s = sin_ + (n % T) * half;
    float *v = x + n * stride + h * D;
    float x1 = v[i], x2 = v[i + half], si = sign * s[i];
    v[i] = x1 * c[i] + (-x2) * si;
    v[i + half] = x2 * c[i] + x1 * si;
}

extern "C" void ap_rope_forward_cuda(float *x, const float *cos_, const float *sin_, size_t N,
                                     size_t T, size_t nh, size_t D, size_t stride) {
    size_t work = N * nh * (D / 2);
    if (work == 0) return;
    rope_kernel<<<blocks_for(work, 256), 256, 0, ctx.stream>>>(x, cos_, sin_, N, T, nh, D, stride,
                                                               1.0f);
    LAUNCHED();
}

extern "C" void ap_rope_backward_cuda(float *dx, const float *cos_, const float *sin_, size_t N,
                                      size_t T, size_t nh, size_t D, size_t stride) {
    size_t work = N * nh * (D / 2);
    if (work == 0) return;
    rope_kernel<<<blocks_for(work, 256), 256, 0, ctx.stream>>>(dx, cos_, sin_, N, T, nh, D,
                                                               stride, -1.0f);
    LAUNCHED();
}

/* ------------------------------------------------------------- attention */

/* In place on rows of (rows, T) scores: row r is query i = r % T; keys
 * [lo, i] kept (softmax), the rest 0. One block per row. */
__global__ void causal_softmax_kernel(float *a, size_t T, int window) {
    __shared__ float shm[32];
    size_t r = blockIdx.x, i = r % T;
    size_t lo = (window > 0 && i + 1 > (size_t)window) ? i + 1 - (size_t)window : 0;
    float *row = a + r * T;
    float mx = -INFINITY;
    for (size_t j = lo + threadIdx.x; j <= i; j += blockDim.x) mx = fmaxf(mx, row[j]);
    mx = block_max(mx, shm);
    float sum = 0;
    for (size_t j = lo + threadIdx.x; j <= i; j += blockDim.x) {
        float e = expf(row[j] - mx);
        row[j] = e;
        sum += e;
    }
    sum = block_sum(sum, shm);
    float inv = 1.0f / sum;
    for (size_t j = threadIdx.x; j < T; j += blockDim.x)
        row[j] = (j >= lo && j <= i) ? row[j] * inv : 0.0f;
}

/* dS = P (dP - rowsum(P dP)) * scale on rows of (rows, T), 0 above the diagonal */
__global__ void softmax_backward_kernel(float *ds, const float *p_all, size_t T, float scale) {
    __shared__ float shm[32];
    size_t r = blockIdx.x, i = r % T;
    const float *p = p_all + r * T;
    float *d = ds + r * T;
    float dot = 0;
    for (size_t j = threadIdx.x; j <= i; j += blockDim.x) dot += p[j] * d[j];
    dot = block_sum(dot, shm);
    for (size_t j = threadIdx.x; j < T; j += blockDim.x)
        d[j] = j <= i ? p[j] * (d[j] - dot) * scale : 0.0f;
}

extern "C" void ap_attention_forward_cuda(float *y, float *att, const float *qkv, size_t B,
                                          size_t T, size_t NH, size_t NKV, size_t D, int window,
                                          float scale) {
    size_t S = (NH + 2 * NKV) * D, Q = NH * D, group = NH / NKV;
    if (B * T * NH == 0) return;
    /* per (batch, kv head): the group's query heads as one strided batch
     * sharing K and V (stride 0) */
    for (size_t b = 0; b < B; b++)
        for (size_t kvh = 0; kvh < NKV; kvh++) {
            const float *base = qkv + b * T * S;
            const float *q = base + kvh * group * D, *k = base + Q + kvh * D;
            float *a = att + (b * NH + kvh * group) * T * T;
            /* scores (T, T) = scale Q K^T */
            gemm_batched(0, 1, T, T, D, scale, q, S, (long long)D, k, S, 0, 0.0f, a, T,
                         (long long)(T * T), group);
        }
    causal_softmax_kernel<<<(unsigned)(B * NH * T), ROW_THREADS, 0, ctx.stream>>>(att, T, window);
    LAUNCHED();
    for (size_t b = 0; b < B; b++)
        for (size_t kvh = 0; kvh < NKV; kvh++) {
            const float *v = qkv + b * T * S + Q + NKV * D + kvh * D;
            const float *a = att + (b * NH + kvh * group) * T * T;
            /* y (T, D) = P V, into the head's columns of y (B, T, NH D) */
            gemm_batched(0, 0, T, D, T, 1.0f, a, T, (long long)(T * T), v, S, 0, 0.0f,
                         y + b * T * Q + kvh * group * D, Q, (long long)D, group);
        }
}

extern "C" void ap_attention_backward_cuda(float *dqkv, float *scratch_, const float *dy,
                                           const float *qkv, const float *att, size_t B, size_t T,
                                           size_t NH, size_t NKV, size_t D, float scale) {
    size_t S = (NH + 2 * NKV) * D, Q = NH * D, group = NH / NKV;
    if (B * T * NH == 0) return;
    for (size_t b = 0; b < B; b++)
        for (size_t kvh = 0; kvh < NKV; kvh++) {
            const float *base = qkv + b * T * S;
            const float *k = base + Q + kvh * D, *v = base + Q + NKV * D + kvh * D;
            float *dbase = dqkv + b * T * S;
            float *dk = dbase + Q + kvh * D, *dv = dbase + Q + NKV * D + kvh * D;
            size_t h0 = kvh * group;
            const float *a = att + (b * NH + h0) * T * T;
            const float *g = dy + b * T * Q + h0 * D;
            AP_CUDA_CHECK(cudaMemset2DAsync(dk, S * sizeof(float), 0, D * sizeof(float), T,
                                            ctx.stream));
            AP_CUDA_CHECK(cudaMemset2DAsync(dv, S * sizeof(float), 0, D * sizeof(float), T,
                                            ctx.stream));
            /* dP (T, T) = dY V^T for every head of the group */
            gemm_batched(0, 1, T, T, D, 1.0f, g, Q, (long long)D, v, S, 0, 0.0f, scratch_, T,
                         (long long)(T * T), group);
            /* dV += P^T dY, head by head (they add into the same dV) */
            for (size_t j = 0; j < group; j++)
                gemm(1, 0, T, D, T, 1.0f, a + j * T * T, T, g + j * D, Q, 1.0f, dv, S);
            softmax_backward_kernel<<<(unsigned)(group * T), ROW_THREADS, 0, ctx.stream>>>(
                scratch_, a, T, scale);
            LAUNCHED();
            /* dQ = dS K (each head its own columns) */
            gemm_batched(0, 0, T, D, T, 1.0f, scratch_, T, (long long)(T * T), k, S, 0, 0.0f,
                         dbase + h0 * D, S, (long long)D, group);
            /* dK += dS^T Q, head by head */
            for (size_t j = 0; j < group; j++)
                gemm(1, 0, T, D, T, 1.0f, scratch_ + j * T * T, T, base + (h0 + j) * D, S, 1.0f,
                     dk, S);
        }
}

/* ------------------------------------------------------------- gated MLP */

#define GELU_BETA 0.7978845608028654f
#define GELU_KAPPA 0.044715f

__global__ void glu_forward_kernel(float *h, const float *gu, size_t N, size_t M, int act) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * M) return;
    size_t n = idx / M, i = idx % M;
    float g = gu[n * 2 * M + i], u = gu[n * 2 * M + M + i];
    if (act == AP_GLU_SILU) {
        h[idx] = g / (1.0f + expf(-g)) * u;
    } else {
        float inner = GELU_BETA * (g + GELU_KAPPA * (g * g * g));
        h[idx] = 0.5f * g * (1.0f + tanhf(inner)) * u;
    }
}

__global__ void glu_backward_kernel(float *dgu, const float *dh, const float *gu, size_t N,
                                    size_t M, int act) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * M) return;
    size_t n = idx / M, i = idx % M;
    float x = gu[n * 2 * M + i], u = gu[n * 2 * M + M + i], d = dh[idx];
    float *dg = dgu + n * 2 * M + i, *du = dgu + n * 2 * M + M + i;
    if (act == AP_GLU_SILU) {
        float s = 1.0f / (1.0f + expf(-x));
        *du = d * (x * s);
        *dg = d * u * (s * (1.0f + x * (1.0f - s)));
    } else {
        float x2 = x * x;
        float t = tanhf(GELU_BETA * (x + GELU_KAPPA * x2 * x));
        *du = d * (0.5f * x * (1.0f + t));
        float dgelu =
            0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * x2);
        *dg = d * u * dgelu;
    }
}

extern "C" void ap_glu_forward_cuda(float *h, const float *gu, size_t N, size_t M, int act) {
    if (N * M == 0) return;
    glu_forward_kernel<<<blocks_for(N * M, 256), 256, 0, ctx.stream>>>(h, gu, N, M, act);
    LAUNCHED();
}

extern "C" void ap_glu_backward_cuda(float *dgu, const float *dh, const float *gu, size_t N,
                                     size_t M, int act) {
    if (N * M == 0) return;
    glu_backward_kernel<<<blocks_for(N * M, 256), 256, 0, ctx.stream>>>(dgu, dh, gu, N, M, act);
    LAUNCHED();
}

/* --------------------------------------------------------- cross-entropy */

/* one block per row: probs = softmax(logits) (may alias), row_loss[n] */
__global__ void crossentropy_forward_kernel(float *probs, float *row_loss, const float *logits,
                                            const int32_t *labels, size_t V) {
    __shared__ float shm[32];
    size_t n = blockIdx.x;
    const float *x = logits + n * V;
    float *p = probs + n * V;
    int32_t y = labels[n];
    float mx = -INFINITY;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, x[i]);
    mx = block_max(mx, shm);
    float xy = (y >= 0 && (size_t)y < V) ? x[y] : 0.0f;
    __syncthreads(); /* every thread has read x[y] before p overwrites x */
    float sum = 0;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) {
        float e = expf(x[i] - mx);
        p[i] = e;
        sum += e;
    }
    sum = block_sum(sum, shm);
    float inv = 1.0f / sum;
    for (size_t i = threadIdx.x; i < V; i += blockDim.x) p[i] *= inv;
    if (threadIdx.x == 0) row_loss[n] = y >= 0 ? logf(sum) - (xy - mx) : 0.0f;
}

__global__ void crossentropy_backward_kernel(float *dlogits, const float *probs,
                                             const int32_t *labels, float dloss, size_t N,
                                             size_t V) {
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= N * V) return;
    size_t n = idx / V, i = idx % V;
    int32_t y = labels[n];
    dlogits[idx] = y < 0 ? 0.0f : (probs[idx] - (i == (size_t)y ? 1.0f : 0.0f)) * dloss;
}

extern "C" double ap_crossentropy_forward_cuda(float *probs, long *count, const float *logits,
                                               const int32_t *labels, size_t N, size_t V) {
    *count = 0;
    if (N == 0) return 0.0;
    float *row_loss = (float *)scratch(N * sizeof(float));
    crossentropy_forward_kernel<<<(unsigned)N, ROW_THREADS, 0, ctx.stream>>>(probs, row_loss,
                                                                            logits, labels, V);
    LAUNCHED();
    std::vector<float> loss(N);
    std::vector<int32_t> lab(N);
    AP_CUDA_CHECK(cudaMemcpyAsync(loss.data(), row_loss, N * sizeof(float),
                                  cudaMemcpyDeviceToHost, ctx.stream));
    AP_CUDA_CHECK(cudaMemcpyAsync(lab.data(), labels, N * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                  ctx.stream));
    AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    /* summed on the host in row order, in double, as the CPU backend does */
    double total = 0;
    long cnt = 0;
    for (size_t n = 0; n < N; n++)
        if (lab[n] != -100) {
            cnt++;
            total += loss[n];
        }
    *count = cnt;
    return total;
}

extern "C" void ap_crossentropy_backward_cuda(float *dlogits, const float *probs,
                                              const int32_t *labels, float dloss, size_t N,
                                              size_t V) {
    if (N * V == 0) return;
    crossentropy_backward_kernel<<<blocks_for(N * V, 256), 256, 0, ctx.stream>>>(
        dlogits, probs, labels, dloss, N, V);
    LAUNCHED();
}

/* ----------------------------------------------------------------- AdamW */

struct adamw_consts {
    float step_size, bc2_sqrt, lr_wd, w1, b2, w2, eps;
};

/* decay_mask NULL: decay = fixed_decay for all */
__global__ void adamw_kernel(float *param, float *m, float *v, const float *grad, size_t n,
                             const uint8_t *decay_mask, int fixed_decay, float grad_scale,
                             adamw_consts k) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    int decay = decay_mask ? decay_mask[i] != 0 : fixed_decay;
    float keep = decay ? 1.0f - k.lr_wd : 1.0f;
    float g = grad[i] * grad_scale;
    float p = param[i] * keep;
    float mi = m[i] + k.w1 * (g - m[i]);
    float vi = v[i] * k.b2 + k.w2 * g * g;
    float denom = sqrtf(vi) / k.bc2_sqrt + k.eps;
    m[i] = mi;
    v[i] = vi;
    param[i] = p - k.step_size * (mi / denom);
}

/* the scalars exactly as the CPU backend (torch's python floats) makes them */
static adamw_consts adamw_make(long step, const ap_adamw_hparams *h) {
    double bc1 = 1.0 - pow((double)h->beta1, (double)step);
    double bc2 = 1.0 - pow((double)h->beta2, (double)step);
    adamw_consts k;
    k.step_size = (float)((double)h->lr / bc1);
    k.bc2_sqrt = (float)sqrt(bc2);
    k.lr_wd = h->lr * h->weight_decay;
    k.w1 = 1.0f - h->beta1;
    k.b2 = h->beta2;
    k.w2 = 1.0f - h->beta2;
    k.eps = h->eps;
    return k;
}

extern "C" void ap_adamw_update_cuda(float *param, float *m, float *v, const float *grad, size_t n,
                                     const uint8_t *decay_mask, float grad_scale, long step,
                                     const ap_adamw_hparams *h) {
    if (n == 0) return;
    adamw_kernel<<<blocks_for(n, 256), 256, 0, ctx.stream>>>(param, m, v, grad, n, decay_mask, 1,
                                                             grad_scale, adamw_make(step, h));
    LAUNCHED();
}

extern "C" void ap_adamw_update_ranges_cuda(float *param, float *m, float *v, const float *grad,
                                            const ap_adamw_range *ranges, size_t n_ranges,
                                            float grad_scale, long step,
                                            const ap_adamw_hparams *h) {
    adamw_consts k = adamw_make(step, h);
    for (size_t r = 0; r < n_ranges; r++) {
        size_t b = ranges[r].begin, e = ranges[r].end;
        if (e <= b) continue;
        adamw_kernel<<<blocks_for(e - b, 256), 256, 0, ctx.stream>>>(
            param + b, m + b, v + b, grad + b, e - b, nullptr, ranges[r].decay != 0, grad_scale, k);
        LAUNCHED();
    }
}

/* ----------------------------------------------------------------- norms */

#define SUMSQ_CHUNK ((size_t)1 << 16)

/* one block per chunk of SUMSQ_CHUNK floats: part[c] = sum of x^2 in double */
__global__ void sumsq_kernel(double *part, const float *x, size_t n) {
    __shared__ double shm[32];
    size_t lo = (size_t)blockIdx.x * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
    double s = 0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)x[i] * x[i];
    s = block_sum(s, shm);
    if (threadIdx.x == 0) part[blockIdx.x] = s;
}

/* per block: max |x| over its chunk, NaN if any NaN */
__global__ void absmax_kernel(float *part, const float *x, size_t n) {
    __shared__ float shm[32];
    size_t lo = (size_t)blockIdx.x * SUMSQ_CHUNK, hi = lo + SUMSQ_CHUNK < n ? lo + SUMSQ_CHUNK : n;
    float mx = 0;
    float nan = 0; /* 1 if a NaN was seen (fmaxf drops NaNs) */
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        float a = fabsf(x[i]);
        if (a != a) nan = 1;
        else mx = fmaxf(mx, a);
    }
    mx = block_max(mx, shm);
    nan = block_max(nan, shm);
    if (threadIdx.x == 0) part[blockIdx.x] = nan > 0 ? NAN : mx;
}

__global__ void scale_kernel(float *x, size_t n, float s) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

extern "C" double ap_sumsq_cuda(const float *x, size_t n) {
    if (n == 0) return 0.0;
    size_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    double *part = (double *)scratch(nchunks * sizeof(double));
    sumsq_kernel<<<(unsigned)nchunks, ROW_THREADS, 0, ctx.stream>>>(part, x, n);
    LAUNCHED();
    std::vector<double> host(nchunks);
    AP_CUDA_CHECK(cudaMemcpyAsync(host.data(), part, nchunks * sizeof(double),
                                  cudaMemcpyDeviceToHost, ctx.stream));
    AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    double total = 0; /* chunks in order, as the CPU backend */
    for (size_t c = 0; c < nchunks; c++) total += host[c];
    return total;
}

extern "C" float ap_absmax_cuda(const float *x, size_t n) {
    if (n == 0) return 0.0f;
    size_t nchunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    float *part = (float *)scratch(nchunks * sizeof(float));
    absmax_kernel<<<(unsigned)nchunks, ROW_THREADS, 0, ctx.stream>>>(part, x, n);
    LAUNCHED();
    std::vector<float> host(nchunks);
    AP_CUDA_CHECK(cudaMemcpyAsync(host.data(), part, nchunks * sizeof(float),
                                  cudaMemcpyDeviceToHost, ctx.stream));
    AP_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
    float mx = 0;
    for (size_t c = 0; c < nchunks; c++) {
        if (host[c] != host[c]) return NAN;
        if (host[c] > mx) mx = host[c];
    }
    return mx;
}

extern "C" void ap_scale_cuda(float *x, size_t n, float s) {
    if (n == 0) return;
    scale_kernel<<<blocks_for(n, 256), 256, 0, ctx.stream>>>(x, n, s);
    LAUNCHED();
}
