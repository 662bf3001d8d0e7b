/* generate.h - sampling continuations from a model (`autopipe generate`).
 *
 * The model runs as two stages of trainer/llama.h: the embedding and every
 * decoder layer (returning hidden states), and a head-only stage that holds
 * model.norm and lm_head, applied here to the last position only. Within the
 * window, tokens run one at a time against a KV cache (ap_llama_decode), so
 * each new token costs one position, not the whole context; a context longer
 * than the window keeps its last T tokens, at positions 0..T-1, and is rerun
 * whole for every new token (positions shift, cached keys would not match). */
#ifndef AP_GENERATE_H
#define AP_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/model_config.h"
#include "trainer/stage.h"

/* A model directory is a Hugging Face one (config.json + safetensors) or,
 * when the checkpoint part installs a reader that recognises it, an
 * autopipe checkpoint. */
typedef struct {
    int (*is_checkpoint)(const char *dir);
    int (*read_config)(const char *dir, ap_model_config *mc, char *err, size_t errlen);
    int (*load_weights)(ap_stage *s, const char *dir, char *err, size_t errlen); /* the tensors s holds */
} ap_model_dir_reader;
void ap_set_checkpoint_model_reader(const ap_model_dir_reader *r);
int ap_model_dir_config(const char *dir, ap_model_config *mc, char *err, size_t errlen);
int ap_model_dir_load(ap_stage *s, const char *dir, char *err, size_t errlen);

typedef struct {
    ap_model_config mc;
    ap_stage *body, *head;
    int T;                 /* context window */
    int32_t *ctx;          /* (T) */
    float *hidden;         /* (T, C) */
    float *xn, *rstd;      /* (C), (1) */
    const float *norm_w, *lm_w;
    struct ap_llama_kv *kv; /* NULL: always rerun the context (use_cache 0) */
    int32_t *kv_tok;        /* (T) the tokens in kv */
} ap_generator;

/* Builds the stages for a context of T tokens (parameters zero); use_cache 0
 * reruns the context for every token (the reference the cache is tested against). */
int ap_generator_init(ap_generator *g, const ap_model_config *mc, int T, int use_cache, char *err, size_t errlen);
/* Loads a model directory's weights (ap_model_dir_load). */
int ap_generator_load(ap_generator *g, const char *dir, char *err, size_t errlen);
/* Copies the parameters of a whole-model stage (same config), by name. */
int ap_generator_copy_from(ap_generator *g, const ap_stage *full, char *err, size_t errlen);
/* logits (V) of the token after tokens[0..n) (the last T of them). */
int ap_generator_logits(ap_generator *g, const int32_t *tokens, size_t n, float *logits, char *err, size_t errlen);
/* Appends up to max_new tokens to the n prompt tokens in buf (capacity
 * n + max_new); temperature 0 = greedy. Stops after the model's EOS (kept).
 * *n_out = total tokens in buf. */
int ap_generate(ap_generator *g, int32_t *buf, size_t n, int max_new, double temperature, uint64_t seed,
                size_t *n_out, char *err, size_t errlen);
void ap_generator_free(ap_generator *g);

/* `autopipe generate --model DIR --prompt TEXT | --tokens 1,2,3 ...` */
int ap_cmd_generate(int argc, char **argv);

#endif
