/* custom_model.h - the AutoPipeline guide's `CustomModel` as a pipeline stage
 * (trainer/stage.h): a second model family next to trainer/llama.h, to show
 * that the engine knows models only through the stage interface.
 *
 *   x = embedding(input_ids)                               (first stage)
 *   for each layer (post-norm):
 *       x = norm1(x + attention(x))     multi-head self-attention, CAUSAL
 *       x = norm2(x + mlp(x))           Linear(C, 4C), exact GELU, Linear(4C, C)
 *   logits = output_proj(x)                                (last stage, with bias)
 *   loss = cross-entropy(logits, labels), -100 ignored
 *
 * The guide's block calls nn.MultiheadAttention without a mask; as a language
 * model trained on next-token labels it must not see the future, so the
 * attention here is causal (attn_mask = the upper triangle). The LayerNorms
 * have weight and bias, eps = model.rms_norm_eps (1e-5 default, nn.LayerNorm's).
 * Heads: model.num_attention_heads (the guide hard-codes 8); head size
 * hidden_size / heads; scores scaled by 1/sqrt(head size) as in PyTorch.
 * The MLP width is 4 x hidden_size as in the guide (model.intermediate_size
 * is not used). Sizes read from ap_model_config: vocab_size, hidden_size,
 * num_hidden_layers, num_attention_heads, rms_norm_eps, initializer_range.
 *
 * Parameter FQNs are the PyTorch module names, with global layer indices:
 *   embedding.weight                                        (V, C)
 *   layers.N.attention.in_proj_weight (3C, C), in_proj_bias (3C)   q | k | v rows
 *   layers.N.attention.out_proj.weight (C, C), .bias (C)
 *   layers.N.mlp.0.weight (4C, C), mlp.0.bias (4C), mlp.2.weight (C, 4C), mlp.2.bias (C)
 *   layers.N.norm1.weight, norm1.bias, norm2.weight, norm2.bias   (C)
 *   output_proj.weight (V, C), output_proj.bias (V)
 * Module FQNs (for plans): embedding, layers.N, output_proj.
 *
 * backward = backward_input then backward_weight, bit for bit: backward runs
 * exactly those two. backward_input computes the input gradient and the
 * LayerNorm grads and keeps the output gradients of the matrix products in
 * the slot; backward_weight turns them into the weight and bias grads (and
 * the embedding grad). */
#ifndef AP_CUSTOM_MODEL_H
#define AP_CUSTOM_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model_config.h"
#include "trainer/stage.h"

/* Layers [first_layer, last_layer); has_embed: the stage reads token ids
 * through `embedding`; has_head: it ends with output_proj and the loss.
 * Microbatch B x T, up to max_slots in flight. Parameters are zero until
 * ap_custom_init_params. 0, or -1 with a message in err. */
int ap_custom_stage_create(ap_stage **out, const ap_model_config *mc, int first_layer, int last_layer,
                           int has_embed, int has_head, int B, int T, int max_slots, char *err, size_t errlen);

/* Weights ~ normal(0, initializer_range), a function of (seed, FQN, element
 * index) only, so any split of the model starts from the same numbers;
 * LayerNorm weights 1, every bias 0. */
void ap_custom_init_params(ap_stage *s, uint64_t seed);

/* The message of the last failed forward/backward ("" if none). */
const char *ap_custom_stage_error(const ap_stage *s);

/* Parameters of a part of the model; the whole model: (mc, 0, L, 1, 1). */
long long ap_custom_param_count(const ap_model_config *mc, int first_layer, int last_layer, int has_embed,
                                int has_head);

/* Bytes of activations one microbatch of B x T keeps from F to its W. */
size_t ap_custom_act_bytes(const ap_model_config *mc, int first_layer, int last_layer, int has_embed,
                           int has_head, int B, int T);

#endif
