/* model_family.c - the registry of model families; see model_family.h. */
#include "trainer/model_family.h"

#include <stdio.h>
#include <string.h>

#include "examples/custom_model.h"
#include "launcher/config.h"
#include "trainer/generate.h"
#include "trainer/llama.h"
#include "trainer/param_count.h"

/* ---- llama family (trainer/llama.h) ---- */

/* Floats per microbatch, following llama.c's activation tables: each layer's
 * input, then (without checkpointing) norms, q/k/v, attention probabilities,
 * attention output, residual, MLP gate|up and product; the head's norm and
 * logits. Estimate: the I/W stash of zero-bubble schedules is not counted. */
static size_t llama_act_bytes(const ap_model_config *mc, int first, int last, int has_embed, int has_head, int B,
                              int T, int ckpt) {
    (void)has_embed;
    size_t N = (size_t)B * (size_t)T, C = (size_t)mc->hidden_size, L = (size_t)(last - first);
    size_t H = (size_t)mc->num_attention_heads, KVH = (size_t)mc->num_key_value_heads, D = (size_t)mc->head_dim;
    size_t I = (size_t)mc->intermediate_size, V = (size_t)mc->vocab_size;
    size_t layer = N * (3 * C + 2 + (H + 2 * KVH) * D + H * D + 3 * I) + (size_t)B * H * (size_t)T * (size_t)T;
    if (mc->qk_norm) layer += N * ((H + KVH) * D + H + KVH);
    size_t f = (L + 1) * N * C + (ckpt ? 0 : L * layer) + (has_head ? N * (C + 1 + V) : 0);
    return f * sizeof(float) + 2 * N * sizeof(int32_t);
}

static const ap_model_family llama_family = {
    .name = "llama",
    .targets = {"nemo_automodel.NeMoAutoModelForCausalLM.from_config",
                "nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained", NULL},
    .stage_create = ap_llama_stage_create,
    .init_params = ap_llama_init_params,
    .stage_error = ap_llama_stage_error,
    .param_count = ap_model_param_count,
    .act_bytes = llama_act_bytes,
    .flops_per_token = ap_model_flops_per_token,
    .embed_module = "model.embed_tokens",
    .layer_module = "model.layers.%d",
    .head_modules = {"model.norm", "lm_head", NULL},
    .shared_module = "model.rotary_emb",
    .can_tie = 1,
    .load_dir = ap_model_dir_load,
};

/* ---- the guide's CustomModel (examples/custom_model.h) ---- */

static int custom_create(ap_stage **out, const ap_model_config *mc, int first, int last, int has_embed,
                         int has_head, int B, int T, int max_slots, int ckpt, char *err, size_t errlen) {
    if (ckpt) {
        snprintf(err, errlen, "model.activation_checkpointing: not implemented by the custom model (set false)");
        return -1;
    }
    if (mc->tie_word_embeddings) {
        snprintf(err, errlen, "model.tie_word_embeddings: the custom model has separate embedding and output_proj "
                              "weights (set false)");
        return -1;
    }
    return ap_custom_stage_create(out, mc, first, last, has_embed, has_head, B, T, max_slots, err, errlen);
}

static size_t custom_act_bytes(const ap_model_config *mc, int first, int last, int has_embed, int has_head, int B,
                               int T, int ckpt) {
    (void)ckpt;
    return ap_custom_act_bytes(mc, first, last, has_embed, has_head, B, T);
}

/* As ap_model_flops_per_token counts: 6 x the matrix-product parameters
 * (12 C^2 per layer and output_proj's V C) + 12 L C T for the attention
 * score/value products at full length. */
static double custom_flops(const ap_model_config *mc, int T) {
    double C = mc->hidden_size, L = mc->num_hidden_layers, V = mc->vocab_size;
    return 6.0 * (L * 12.0 * C * C + V * C) + 12.0 * L * C * T;
}

static const ap_model_family custom_family = {
    .name = "custom",
    .targets = {"examples.custom_model.CustomModel", NULL},
    .stage_create = custom_create,
    .init_params = ap_custom_init_params,
    .stage_error = ap_custom_stage_error,
    .param_count = ap_custom_param_count,
    .act_bytes = custom_act_bytes,
    .flops_per_token = custom_flops,
    .embed_module = "embedding",
    .layer_module = "layers.%d",
    .head_modules = {"output_proj", NULL},
    .can_tie = 0,
    .load_dir = NULL,
};

/* ---- the registry: one line per family ---- */
const ap_model_family *const ap_model_families[] = {
    &llama_family,
    &custom_family,
    NULL,
};

const ap_model_family *ap_model_family_find(const char *name) {
    for (int i = 0; ap_model_families[i]; i++)
        if (name && !strcmp(ap_model_families[i]->name, name)) return ap_model_families[i];
    return NULL;
}

const ap_model_family *ap_model_family_for_target(const char *target, char *err, size_t errlen) {
    if (!target) return &llama_family;
    for (int i = 0; ap_model_families[i]; i++)
        for (int j = 0; ap_model_families[i]->targets[j]; j++)
            if (!strcmp(ap_model_families[i]->targets[j], target)) return ap_model_families[i];
    size_t o = (size_t)snprintf(err, errlen, "model._target_: no model family builds '%s' (known:", target);
    for (int i = 0; ap_model_families[i]; i++)
        for (int j = 0; ap_model_families[i]->targets[j] && o < errlen; j++)
            o += (size_t)snprintf(err + o, errlen - o, " %s", ap_model_families[i]->targets[j]);
    if (o < errlen) snprintf(err + o, errlen - o, ")");
    return NULL;
}

const ap_model_family *ap_model_family_for_config(const ap_config *cfg, char *err, size_t errlen) {
    return ap_model_family_for_target(cfg->model._target_, err, errlen);
}

const char *ap_model_family_model_name(const ap_model_family *f, const ap_model_config *mc) {
    static const char *types[] = {"llama", "mistral", "qwen2", "qwen3", "gemma"};
    if (f != &llama_family) return f->name;
    return (unsigned)mc->model_type < 5 ? types[mc->model_type] : "?";
}
