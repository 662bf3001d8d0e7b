/* tiny_stage.h - a small residual-tanh language model behind trainer/stage.h,
 * for the executor's proofs: cheap enough to run every schedule under mpirun
 * in seconds, with the parts that matter to a pipeline (token embedding on the
 * first stage, an lm_head or a tied embedding and the loss on the last, split
 * backward I/W, activation slots).
 *
 *   x0 = E[tokens]                      model.embed_tokens.weight (V, C)
 *   x_{l+1} = x_l + tanh(x_l W_l^T + b_l)  model.layers.l.mlp.weight (C, C), .bias (C)
 *   logits = x_L H^T                    lm_head.weight (V, C), or E when tied
 *   loss_sum = sum over labels != -100 of cross-entropy
 *
 * Parameters are initialised from (seed, name, index) alone, so any split of
 * the layers into stages starts from the same values as the whole model. */
#ifndef AP_TESTS_TINY_STAGE_H
#define AP_TESTS_TINY_STAGE_H

#include "trainer/stage.h"

int tiny_stage_create(ap_stage **out, int stage_id, int num_stages, int first_layer, int last_layer, int V,
                      int C, int B, int T, int tie, int max_slots, unsigned seed);

#endif
