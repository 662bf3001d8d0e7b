/* kernels_cuda.h - the CUDA backend of kernels/kernels.h.
 *
 * Every op has the CPU op's name with a _cuda suffix, the same argument
 * order, shapes and semantics (accumulate flags, aliasing, ignore_index),
 * and takes DEVICE pointers (host pointers where noted). All work is queued
 * on one stream and one cuBLAS handle set up by ap_cuda_init (the "current
 * stream"); ops that return a host value (cross-entropy loss, sumsq,
 * absmax) synchronise that stream.
 *
 * Matrix products go through cuBLAS in fp32 with TF32 tensor-op math off,
 * so results match the CPU backend to fp32 rounding. Reductions over rows
 * (weight and bias grads, embedding grads, norms) run in a fixed order, so
 * results are bit-identical between runs with the same shapes.
 *
 * Errors inside the backend (a failed launch, out of device memory, a
 * cuBLAS failure) are fatal: AP_CUDA_CHECK prints file:line and the CUDA
 * error and exits, as llm.c does. Only ap_cuda_init reports through err. */
#ifndef AP_KERNELS_CUDA_H
#define AP_KERNELS_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- device, stream, cuBLAS handle ---- */

/* Number of CUDA devices; 0 when there is none or no usable driver (the
 * error is cleared, so callers can skip). */
int ap_cuda_device_count(void);
/* Selects `device`, creates the stream and cuBLAS handle (TF32 off).
 * Returns 0, or -1 with the reason in err. Calling it again is a no-op
 * returning 0 when the same device is already set up. */
int ap_cuda_init(int device, char *err, size_t errlen);
/* Frees the stream, the cuBLAS handle and the scratch buffers. */
void ap_cuda_shutdown(void);
cudaStream_t ap_cuda_stream(void);
/* Queue later ops on s (not owned; 0 = the legacy default stream). */
void ap_cuda_set_stream(cudaStream_t s);
void ap_cuda_synchronize(void);

/* Fatal-error helpers behind the macros (print "file:line: what: why", exit 1). */
void ap_cuda_check_(cudaError_t e, const char *file, int line);
void ap_cublas_check_(int status, const char *file, int line);
#define AP_CUDA_CHECK(call) ap_cuda_check_((call), __FILE__, __LINE__)
#define AP_CUBLAS_CHECK(call) ap_cublas_check_((int)(call), __FILE__, __LINE__)

/* ---- linear layer ---- */
void ap_matmul_forward_cuda(float *out, const float *inp, const float *weight, const float *bias,
                            size_t N, size_t C, size_t OC, int accumulate);
void ap_matmul_backward_input_cuda(float *dinp, const float *dout, const float *weight, size_t N,
                                   size_t C, size_t OC, int accumulate);
void ap_matmul_backward_weight_cuda(float *dweight, float *dbias, const float *dout,
                                    const float *inp, size_t N, size_t C, size_t OC);

/* ---- token embedding ---- */
void ap_embedding_forward_cuda(float *out, const int32_t *tokens, const float *wte, size_t N,
                               size_t C, float scale);
void ap_embedding_backward_cuda(float *dwte, const float *dout, const int32_t *tokens, size_t N,
                                size_t C, float scale);

/* ---- RMSNorm (plus_one: Gemma's (1 + w)) ---- */
void ap_rmsnorm_forward_cuda(float *out, float *rstd, const float *inp, const float *weight,
                             size_t N, size_t C, float eps, int plus_one);
void ap_rmsnorm_backward_cuda(float *dinp, float *dweight, const float *dout, const float *inp,
                              const float *weight, const float *rstd, size_t N, size_t C,
                              int plus_one, int accumulate);

/* ---- rotary embeddings: cos_, sin_ (T, D/2) on the device, made on the
 * host by ap_rope_inv_freq + ap_rope_cos_sin and copied once ---- */
void ap_rope_forward_cuda(float *x, const float *cos_, const float *sin_, size_t N, size_t T,
                          size_t nh, size_t D, size_t stride);
void ap_rope_backward_cuda(float *dx, const float *cos_, const float *sin_, size_t N, size_t T,
                           size_t nh, size_t D, size_t stride);

/* ---- causal GQA attention (layout as ap_attention_forward) ---- */
void ap_attention_forward_cuda(float *y, float *att, const float *qkv, size_t B, size_t T,
                               size_t NH, size_t NKV, size_t D, int window, float scale);
/* scratch: at least (NH / NKV, T, T) floats (the CPU op's (threads, T, T)
 * is enough whenever threads >= NH / NKV; (NH, T, T) always is). */
void ap_attention_backward_cuda(float *dqkv, float *scratch, const float *dy, const float *qkv,
                                const float *att, size_t B, size_t T, size_t NH, size_t NKV,
                                size_t D, float scale);

/* ---- gated MLP activation ---- */
void ap_glu_forward_cuda(float *h, const float *gu, size_t N, size_t M, int act);
void ap_glu_backward_cuda(float *dgu, const float *dh, const float *gu, size_t N, size_t M,
                          int act);

/* ---- cross-entropy, ignore_index -100 (synchronises; count on the host) ---- */
double ap_crossentropy_forward_cuda(float *probs, long *count, const float *logits,
                                    const int32_t *labels, size_t N, size_t V);
void ap_crossentropy_backward_cuda(float *dlogits, const float *probs, const int32_t *labels,
                                   float dloss, size_t N, size_t V);

/* ---- AdamW (decay_mask on the device or NULL; ranges and h on the host) ---- */
void ap_adamw_update_cuda(float *param, float *m, float *v, const float *grad, size_t n,
                          const uint8_t *decay_mask, float grad_scale, long step,
                          const ap_adamw_hparams *h);
void ap_adamw_update_ranges_cuda(float *param, float *m, float *v, const float *grad,
                                 const ap_adamw_range *ranges, size_t n_ranges, float grad_scale,
                                 long step, const ap_adamw_hparams *h);

/* ---- global gradient norm pieces (sumsq, absmax synchronise) ---- */
double ap_sumsq_cuda(const float *x, size_t n);
float ap_absmax_cuda(const float *x, size_t n);
void ap_scale_cuda(float *x, size_t n, float s);

#ifdef __cplusplus
}
#endif

#endif
