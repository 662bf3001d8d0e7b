/* hf_load.h - Hugging Face model weights into (and out of) a stage's named
 * parameters.
 *
 * A stage (trainer/stage.h) names its parameters by HF FQN with global layer
 * indices, so loading is a lookup by name in model.safetensors (or the
 * shards of model.safetensors.index.json), whatever the stage's layer range.
 * Every shape is checked against the stage's before a byte is read; F32,
 * BF16 and F16 files load as fp32. */
#ifndef AP_HF_LOAD_H
#define AP_HF_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model_config.h"
#include "trainer/stage.h"

/* Fills every parameter of `s` from the safetensors files in model_dir.
 * - Tied embeddings: a tied model's file has model.embed_tokens.weight and
 *   usually no lm_head.weight; a stage's tied head copy is itself named
 *   model.embed_tokens.weight. If config.json says tie_word_embeddings and
 *   only lm_head.weight is stored, it serves model.embed_tokens.weight.
 * - Base-model files without the "model." prefix (what LlamaModel, not
 *   LlamaForCausalLM, saves) are accepted.
 * - A tensor in the file that belongs to this stage (one of its layers, or
 *   its embedding/final norm) but matches no parameter is an error: it means
 *   config.json and the weights disagree (e.g. biases the config lacks).
 *   rotary_emb.inv_freq buffers of old checkpoints are ignored.
 * 0, or -1 with a message naming the file and the tensor. */
int ap_load_hf_weights(ap_stage *s, const char *model_dir, char *err, size_t errlen);

/* Writes a Hugging Face model directory: config.json from `mc` and the
 * parameters of stages[0..n-1] (a whole model split any way; a name held by
 * several stages, like a tied embedding's copies, is written once, from the
 * first stage holding it) as model.safetensors in `dtype` (AP_ST_F32 or
 * AP_ST_BF16 of checkpoint/safetensors.h), sharded with an index above
 * shard_bytes (0: one file). The directory is created if missing. */
int ap_save_hf_model(ap_stage *const *stages, int n, const ap_model_config *mc, const char *dir, int dtype,
                     uint64_t shard_bytes, char *err, size_t errlen);

#endif
