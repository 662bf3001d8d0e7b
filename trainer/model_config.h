/* model_config.h - the architecture of a decoder-only model, in Hugging Face
 * config.json terms. Filled from config.json (trainer/hf_config.c) or from the
 * YAML `model` section; read by the model, the planner and the checkpoints. */
#ifndef AP_MODEL_CONFIG_H
#define AP_MODEL_CONFIG_H

enum ap_model_type { AP_MODEL_LLAMA, AP_MODEL_MISTRAL, AP_MODEL_QWEN2, AP_MODEL_QWEN3, AP_MODEL_GEMMA };
enum ap_act { AP_ACT_SILU, AP_ACT_GELU_TANH };             /* hidden_act */
enum ap_rope_scaling { AP_ROPE_DEFAULT, AP_ROPE_LINEAR, AP_ROPE_LLAMA3 };

typedef struct {
    enum ap_model_type model_type;
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;    /* < num_attention_heads: grouped-query attention */
    int head_dim;               /* usually hidden_size / num_attention_heads */
    int max_position_embeddings;
    double rms_norm_eps;
    double rope_theta;
    enum ap_rope_scaling rope_scaling;
    double rope_factor;                 /* linear and llama3 */
    double rope_low_freq_factor;        /* llama3 */
    double rope_high_freq_factor;       /* llama3 */
    int rope_original_max_position_embeddings; /* llama3 */
    int sliding_window;         /* 0: full causal attention */
    int attention_bias;         /* q/k/v projections have biases (qwen2) */
    int qk_norm;                /* RMSNorm on q and k per head (qwen3) */
    enum ap_act hidden_act;
    int norm_plus_one;          /* RMSNorm scales by (1 + w) (gemma) */
    int scale_embeddings;       /* embeddings times sqrt(hidden_size) (gemma) */
    int tie_word_embeddings;    /* lm_head shares embed_tokens' tensor */
    double initializer_range;
    int bos_token_id, eos_token_id, pad_token_id; /* -1 when absent */
} ap_model_config;

#endif
