/* model_family.h - the registry of model families: how the pipeline, the
 * single-process trainer and the planner build a model without knowing it.
 *
 * A family is a table of functions over the stage interface (trainer/stage.h):
 * create a stage for layers [first, last) with or without the embedding and
 * the head, initialise its parameters, count parameters and activation bytes
 * from the config, name its modules. The config picks the family with
 * model._target_ (NeMo's way of naming what builds the model):
 *   nemo_automodel.NeMoAutoModelForCausalLM.from_config / .from_pretrained
 *       -> "llama" (llama, mistral, qwen2, qwen3, gemma: trainer/llama.h)
 *   examples.custom_model.CustomModel
 *       -> "custom" (the guide's CustomModel: examples/custom_model.h)
 * Adding a model = one entry in ap_model_families[] (model_family.c) and its
 * target in launcher/config_schema.def (docs/custom-model.md). */
#ifndef AP_MODEL_FAMILY_H
#define AP_MODEL_FAMILY_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model_config.h"
#include "trainer/stage.h"

struct ap_config;

typedef struct {
    const char *name;           /* "llama" */
    const char *targets[4];     /* model._target_ values that pick it (NULL-terminated) */
    /* Layers [first, last) of the model; has_embed: reads token ids;
     * has_head: ends with the loss. B x T microbatches, max_slots in flight. */
    int (*stage_create)(ap_stage **out, const ap_model_config *mc, int first_layer, int last_layer, int has_embed,
                        int has_head, int B, int T, int max_slots, int activation_checkpointing, char *err,
                        size_t errlen);
    /* Seeded init, the same numbers for any split (a function of seed, FQN, index). */
    void (*init_params)(ap_stage *s, uint64_t seed);
    /* The last forward/backward error of a stage of this family ("" if none). */
    const char *(*stage_error)(const ap_stage *s);
    /* Parameters of a part (the planner's per-stage counts; the whole model: 0, L, 1, 1). */
    long long (*param_count)(const ap_model_config *mc, int first_layer, int last_layer, int has_embed,
                             int has_head);
    /* Bytes one microbatch of B x T keeps alive from its F to its B (or W). */
    size_t (*act_bytes)(const ap_model_config *mc, int first_layer, int last_layer, int has_embed, int has_head,
                        int B, int T, int activation_checkpointing);
    /* Model FLOPs per trained token at sequence length T (forward + backward), for MFU. */
    double (*flops_per_token)(const ap_model_config *mc, int T);
    /* Module FQNs of a part, in order, for plans: embedding, layers, head. */
    const char *embed_module;   /* "model.embed_tokens" */
    const char *layer_module;   /* printf format of layer N: "model.layers.%d" */
    const char *head_modules[3]; /* "model.norm", "lm_head" */
    const char *shared_module;  /* on every stage the split marks has_rotary: "model.rotary_emb"; NULL: none */
    /* Tied input/output embeddings supported (the pipeline sums the copies). */
    int can_tie;
    /* Loads pretrained weights from a directory; NULL: the family has none. */
    int (*load_dir)(ap_stage *s, const char *dir, char *err, size_t errlen);
} ap_model_family;

/* Every family, NULL-terminated. */
extern const ap_model_family *const ap_model_families[];

/* By name ("llama", "custom"); NULL if none. */
const ap_model_family *ap_model_family_find(const char *name);

/* The family that model._target_ names (NULL target: llama). NULL, with
 * the known targets in err, if none. */
const ap_model_family *ap_model_family_for_target(const char *target, char *err, size_t errlen);

/* Same, from a loaded config. */
const ap_model_family *ap_model_family_for_config(const struct ap_config *cfg, char *err, size_t errlen);

/* The model's name for plans and logs: the family, or the Llama-family model_type. */
const char *ap_model_family_model_name(const ap_model_family *f, const ap_model_config *mc);

#endif
