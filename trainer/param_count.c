/* param_count.c - see param_count.h. Shapes as in transformers' Llama family. */
#include "trainer/param_count.h"

long long ap_model_layer_param_count(const ap_model_config *mc) {
    long long H = mc->hidden_size, I = mc->intermediate_size, hd = mc->head_dim;
    long long q = (long long)mc->num_attention_heads * hd, kv = (long long)mc->num_key_value_heads * hd;
    long long n = H * q + 2 * H * kv + q * H; /* q_proj, k_proj, v_proj, o_proj */
    if (mc->attention_bias) n += q + 2 * kv;  /* qwen2: q/k/v biases, none on o_proj */
    if (mc->qk_norm) n += 2 * hd;              /* qwen3: q_norm, k_norm over head_dim */
    n += 3 * H * I;                            /* gate_proj, up_proj, down_proj */
    n += 2 * H;                                /* input_layernorm, post_attention_layernorm */
    return n;
}

long long ap_model_param_count(const ap_model_config *mc, int first_layer, int last_layer,
                               int has_embed, int has_head) {
    if (!mc || first_layer < 0 || last_layer < first_layer || last_layer > mc->num_hidden_layers ||
        mc->hidden_size < 1 || mc->head_dim < 1 || mc->vocab_size < 1)
        return -1;
    long long H = mc->hidden_size, V = mc->vocab_size;
    long long n = (last_layer - first_layer) * ap_model_layer_param_count(mc);
    if (has_embed) n += V * H;
    if (has_head) {
        n += H; /* model.norm */
        if (!(mc->tie_word_embeddings && has_embed)) n += V * H;
    }
    return n;
}
