/* param_count.h - parameter counts from a model config, without building the
 * model (the planner's per-stage figures). */
#ifndef AP_PARAM_COUNT_H
#define AP_PARAM_COUNT_H

#include "trainer/model_config.h"

/* Parameters held by a stage with transformer layers [first_layer, last_layer),
 * embed_tokens when has_embed, and the final norm + lm_head when has_head.
 * Counts grouped-query k/v projections, qwen2's q/k/v biases and qwen3's q/k
 * norms. With tie_word_embeddings a stage holding both ends counts the shared
 * tensor once; a last stage without the embedding holds its own copy (as a
 * pipeline stage must). The whole model: (mc, 0, L, 1, 1). -1 on bad input. */
long long ap_model_param_count(const ap_model_config *mc, int first_layer, int last_layer,
                               int has_embed, int has_head);

/* Parameters of one transformer layer. */
long long ap_model_layer_param_count(const ap_model_config *mc);

#endif
