/* kernels.h - the tensor ops of a decoder-only transformer, as forward /
 * backward pairs (llm.c style: outputs first, then inputs, then sizes).
 *
 * One interface for every backend; kernels/cpu/ is fp32 on the CPU with
 * OpenBLAS for the matrix products and OpenMP for the rest. Row-major
 * throughout; N is the number of token rows (B*T). "accumulate" flags and
 * every gradient of a parameter add (+=) into their output, as autograd
 * does, so grads of several microbatches sum; input gradients overwrite
 * unless told to accumulate.
 *
 * Reductions over rows (weight and bias grads, norms) run in a fixed order
 * that does not depend on the thread count, so results are bit-identical
 * between runs with the same shapes. */
#ifndef AP_KERNELS_H
#define AP_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* Threads for the kernels (n < 1: 1; at most AP_KERNELS_MAX_THREADS). All
 * parallelism is one OpenMP team: OpenBLAS is set to one thread and large
 * matrix products are split across the team by the kernels. */
#define AP_KERNELS_MAX_THREADS 64
void ap_kernels_set_threads(int n);
int ap_kernels_threads(void);

/* ---- linear layer: out = inp @ weight^T + bias (torch.nn.Linear) ---- */
/* out (N, OC) (+)= inp (N, C) @ weight^T (OC, C) + bias (OC, may be NULL) */
void ap_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       size_t N, size_t C, size_t OC, int accumulate);
/* dinp (N, C) (+)= dout (N, OC) @ weight (OC, C) */
void ap_matmul_backward_input(float *dinp, const float *dout, const float *weight,
                              size_t N, size_t C, size_t OC, int accumulate);
/* dweight (OC, C) += dout^T (OC, N) @ inp (N, C); dbias (OC, may be NULL) += column sums of dout */
void ap_matmul_backward_weight(float *dweight, float *dbias, const float *dout, const float *inp,
                               size_t N, size_t C, size_t OC);

/* ---- token embedding: out[n] = wte[tokens[n]] * scale ---- */
/* out (N, C), tokens (N) in [0, V), wte (V, C) */
void ap_embedding_forward(float *out, const int32_t *tokens, const float *wte, size_t N, size_t C,
                          float scale);
/* dwte (V, C) += scattered dout (N, C) * scale, rows in token order */
void ap_embedding_backward(float *dwte, const float *dout, const int32_t *tokens, size_t N, size_t C,
                           float scale);

/* ---- RMSNorm: out = inp * rsqrt(mean(inp^2) + eps) * w  (plus_one: * (1 + w), Gemma) ---- */
/* out (N, C) (may alias inp), rstd (N), inp (N, C), weight (C) */
void ap_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, size_t N,
                        size_t C, float eps, int plus_one);
/* dinp (N, C) (+)= ..., may alias dout when !accumulate; dweight (C) += ...; dout (N, C) */
void ap_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, size_t N, size_t C, int plus_one,
                         int accumulate);

/* ---- rotary position embeddings, as HF transformers computes them ---- */
enum { AP_ROPE_KIND_DEFAULT = 0, AP_ROPE_KIND_LINEAR = 1, AP_ROPE_KIND_LLAMA3 = 2 };
/* inv_freq (D/2) = 1 / theta^(2i/D) in fp32, then rope_scaling `kind` applied
 * (linear: / factor; llama3: low/high frequency bands, smooth in between). */
void ap_rope_inv_freq(float *inv_freq, size_t D, double theta, int kind, double factor,
                      double low_freq_factor, double high_freq_factor, int original_max_pos);
/* cos, sin (T, D/2) for positions 0..T-1 (the two halves of HF's emb are equal) */
void ap_rope_cos_sin(float *cos_, float *sin_, const float *inv_freq, size_t T, size_t D);
/* In place on x: N rows, each nh heads of D floats starting at x + row *
 * stride. Row n is at position pos[n] (0 <= pos[n] < T; HF's position_ids,
 * which restart at each example of a packed sequence), or n % T when pos is
 * NULL. rotate_half convention:
 * x1' = x1 cos - x2 sin, x2' = x2 cos + x1 sin (x1, x2 the halves of a head). */
void ap_rope_forward(float *x, const float *cos_, const float *sin_, const int32_t *pos, size_t N, size_t T,
                     size_t nh, size_t D, size_t stride);
/* In place: dx = rotation by -angle of dout (same layout). */
void ap_rope_backward(float *dx, const float *cos_, const float *sin_, const int32_t *pos, size_t N, size_t T,
                      size_t nh, size_t D, size_t stride);

/* ---- causal self-attention with grouped-query heads ----
 * qkv (B, T, S) with S = (NH + 2 NKV) D: per token NH query heads, then NKV
 * key heads, then NKV value heads (the output of one fused q/k/v projection).
 * Query head h reads key/value head h / (NH / NKV). window > 0: a query at
 * position i sees keys j with i - window < j <= i (HF Mistral/Qwen2 sliding
 * window); window <= 0: all j <= i. Scores are scaled by `scale` (1/sqrt(D)).
 * The products run through cblas_sgemm per (batch, head). */
/* pos (B, T) position ids or NULL: with pos, a query at i also sees only
 * keys j >= i - pos[i], its own example of a packed row (what transformers'
 * varlen attention does for position_ids that restart); pos[i] <= i.
 * y (B, T, NH D), att (B, NH, T, T) softmax probabilities (0 where masked):
 * the backward reads the mask from att. */
void ap_attention_forward(float *y, float *att, const float *qkv, const int32_t *pos, size_t B, size_t T,
                          size_t NH, size_t NKV, size_t D, int window, float scale);
/* dqkv (B, T, S) overwritten; dy (B, T, NH D);
 * scratch (nt, T, T) with nt = ap_kernels_threads() (or AP_KERNELS_MAX_THREADS) */
void ap_attention_backward(float *dqkv, float *scratch, const float *dy, const float *qkv,
                           const float *att, size_t B, size_t T, size_t NH, size_t NKV, size_t D,
                           int window, float scale);

/* ---- gated MLP activation: h = act(gate) * up ---- */
enum { AP_GLU_SILU = 0, AP_GLU_GELU_TANH = 1 }; /* SwiGLU, GeGLU (gelu_pytorch_tanh) */
/* h (N, M); gu (N, 2M): per row gate (M) then up (M), M = intermediate_size */
void ap_glu_forward(float *h, const float *gu, size_t N, size_t M, int act);
/* dgu (N, 2M) overwritten; dh (N, M) */
void ap_glu_backward(float *dgu, const float *dh, const float *gu, size_t N, size_t M, int act);

/* ---- cross-entropy over the vocabulary, ignore_index -100 ----
 * probs (N, V) = softmax(logits) (may alias logits). Returns the sum over
 * labelled rows of -log softmax(logits)[label] (fp32 per row, summed in
 * double) and sets *count to the number of labelled rows. Labels must be
 * -100 or in [0, V) (the caller checks). */
double ap_crossentropy_forward(float *probs, long *count, const float *logits,
                               const int32_t *labels, size_t N, size_t V);
/* dlogits (N, V) = dloss * (probs - onehot(label)) on labelled rows, 0 on
 * ignored rows (may alias probs). */
void ap_crossentropy_backward(float *dlogits, const float *probs, const int32_t *labels,
                              float dloss, size_t N, size_t V);

/* ---- AdamW, torch.optim.AdamW semantics ----
 * p *= 1 - lr wd (decoupled decay); m = lerp(m, g, 1 - b1);
 * v = b2 v + (1 - b2) g^2; p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
 * g = grad * grad_scale (e.g. the clipping factor); step t counts from 1. */
typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} ap_adamw_hparams;
/* param, m, v, grad (n); decay_mask (n) 1 = decay, 0 = no decay; NULL: decay all */
void ap_adamw_update(float *param, float *m, float *v, const float *grad, size_t n,
                     const uint8_t *decay_mask, float grad_scale, long step,
                     const ap_adamw_hparams *h);
/* The same over [begin, end) ranges of one flat buffer, each with its own decay flag. */
typedef struct {
    size_t begin, end;
    int decay;
} ap_adamw_range;
void ap_adamw_update_ranges(float *param, float *m, float *v, const float *grad,
                            const ap_adamw_range *ranges, size_t n_ranges, float grad_scale,
                            long step, const ap_adamw_hparams *h);

/* ---- global gradient norm pieces ---- */
/* sum of x^2 in double, in fixed-size chunks (same result for any thread count) */
double ap_sumsq(const float *x, size_t n);
/* max |x| (inf-norm); NaN if any element is NaN */
float ap_absmax(const float *x, size_t n);
/* x *= s */
void ap_scale(float *x, size_t n, float s);

/* ---- LayerNorm (torch.nn.LayerNorm, elementwise affine with bias) ----
 * out = (inp - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var
 * biased (over C). mean, rstd (N) are kept for the backward. */
void ap_layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                          const float *bias, size_t N, size_t C, float eps);
/* dinp (N, C) (+)= ... (must not alias dout); dweight, dbias (C) += ... */
void ap_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                           const float *weight, const float *mean, const float *rstd, size_t N, size_t C,
                           int accumulate);

/* ---- exact GELU (torch.nn.GELU(), approximate='none'): x * Phi(x) ---- */
/* out (n) (may alias inp) */
void ap_gelu_forward(float *out, const float *inp, size_t n);
/* dinp (n) = dout * gelu'(inp) (may alias dout) */
void ap_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);

#endif
