/* llama.h - the Llama family (llama, mistral, qwen2, qwen3, gemma) as a
 * pipeline stage (trainer/stage.h) over a contiguous range of decoder layers.
 *
 * Family differences come from ap_model_config flags only: grouped-query
 * heads (num_key_value_heads), sliding_window (mistral/qwen2), attention_bias
 * (q/k/v biases, qwen2), qk_norm (per-head RMSNorm on q and k before RoPE,
 * qwen3), norm_plus_one + scale_embeddings + GeGLU (gemma), rope_scaling.
 *
 * Parameters carry HF FQNs with global layer indices:
 *   model.embed_tokens.weight                              (first stage)
 *   model.layers.N.input_layernorm.weight
 *   model.layers.N.self_attn.{q,k,v}_proj.weight [.bias with attention_bias]
 *   model.layers.N.self_attn.{q,k}_norm.weight             (qk_norm)
 *   model.layers.N.self_attn.o_proj.weight
 *   model.layers.N.post_attention_layernorm.weight
 *   model.layers.N.mlp.{gate,up,down}_proj.weight
 *   model.norm.weight, lm_head.weight                      (last stage)
 * In the flat parameter buffer q,k,v (and their biases) and gate,up are
 * adjacent, so each group runs as one fused matrix product.
 *
 * Tied embeddings (tie_word_embeddings, and always for gemma, which has no
 * lm_head): a stage with both embedding and head holds ONE tensor,
 * model.embed_tokens.weight, used by both. A stage with only the head of a
 * tied model holds its own copy, also named model.embed_tokens.weight; the
 * pipeline must sum that gradient with the first stage's before the
 * optimizer step (and keep the copies equal).
 *
 * Labels given to the last stage are already aligned with positions:
 * labels[b][t] is the target of position t (the data loader shifts).
 * Positions are 0..T-1 in every row.
 *
 * Memory: parameters, gradients and activations are each ONE allocation
 * carved by a table. Activations: max_slots slot regions (each layer's
 * activations, or with checkpointing only each layer's input) plus one
 * shared scratch region (recompute, no-grad forward, backward buffers).
 * The I/W split (backward_input then backward_weight) keeps, per slot, the
 * output gradients of the matrix products between I and W; that stash is
 * one more allocation made on the first backward_input call.
 *
 * backward = backward_input then backward_weight, bit for bit: both run the
 * same per-layer code in the same order. backward_input also accumulates the
 * (cheap) RMSNorm weight grads; backward_weight does every matrix-product
 * weight and bias grad and the embedding grad. */
#ifndef AP_LLAMA_H
#define AP_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model_config.h"
#include "trainer/stage.h"

/* Layers [first_layer, last_layer) of the model in `mc`; has_embed: the stage
 * starts with embed_tokens (reads token ids); has_head: it ends with
 * model.norm + lm_head + cross-entropy. Microbatch B x T, up to max_slots
 * microbatches in flight. Parameters are zero until loaded or initialised.
 * Returns 0, or -1 with a message in err. */
int ap_llama_stage_create(ap_stage **out, const ap_model_config *mc, int first_layer,
                          int last_layer, int has_embed, int has_head, int B, int T,
                          int max_slots, int activation_checkpointing, char *err, size_t errlen);

/* No-grad forward of a last stage returning the logits (B, T, V) instead of
 * the loss (for eval, generation and parity checks). 0 or -1 (see
 * ap_llama_stage_error). */
int ap_llama_forward_logits(ap_stage *s, const int32_t *tokens, const float *in, float *logits);

/* Decoding with a KV cache (autopipe generate): a stage holding the
 * embedding and layers [0, L) runs one token at a time at the next position,
 * attending to the keys and values cached for the positions before it; up to
 * the stage's T positions. out (C): the last layer's output for that token.
 * Matches the stage's forward on the whole prefix (tests/test-generate.c). */
typedef struct ap_llama_kv ap_llama_kv;
ap_llama_kv *ap_llama_kv_create(const ap_stage *s); /* NULL: not a Llama stage, or out of memory */
void ap_llama_kv_free(ap_llama_kv *kv);
int ap_llama_kv_len(const ap_llama_kv *kv); /* positions cached */
void ap_llama_kv_reset(ap_llama_kv *kv);
int ap_llama_decode(ap_stage *s, ap_llama_kv *kv, int32_t token, float *out);

/* The message of the last failed forward/backward call of this stage ("" if none). */
const char *ap_llama_stage_error(const ap_stage *s);

/* Seeded HF-like init: linear and embedding weights ~ normal(0,
 * initializer_range), RMSNorm weights 1 (0 with norm_plus_one), biases 0.
 * Deterministic and split-independent: element i of the parameter named F
 * is a function of (seed, F, i) only:
 *   key = splitmix64(seed ^ fnv1a64(F)),
 *   u1 = ((splitmix64(key + 2i) >> 11) + 1) * 2^-53, u2 = (splitmix64(key + 2i + 1) >> 11) * 2^-53,
 *   value = (float)(initializer_range * sqrt(-2 ln u1) * cos(2 pi u2))   (Box-Muller)
 * where splitmix64(x) is the finaliser of SplitMix64 applied to x + 0x9E3779B97F4A7C15.
 * As in transformers, the pad_token_id row of model.embed_tokens.weight is 0
 * (and lookups of the pad token add nothing to that row's gradient). */
void ap_llama_init_params(ap_stage *s, uint64_t seed);

/* Find a parameter by FQN (NULL if the stage has none). */
ap_param_ref *ap_llama_find_param(ap_stage *s, const char *name);

/* Parameter count of a part of the model (tied head-only parts count their copy). */
size_t ap_llama_param_count(const ap_model_config *mc, int first_layer, int last_layer,
                            int has_embed, int has_head);

/* Model FLOPs per trained token (forward + backward) for MFU:
 * 6 N + 12 L H D T, where N counts the parameters of every matrix product
 * (layers' projections and lm_head, tied or not; not the embedding lookup)
 * and the second term is the attention score/value products at full
 * (non-causal) length T, as PaLM and nanoGPT count them. */
double ap_model_flops_per_token(const ap_model_config *mc, int T);

#endif
