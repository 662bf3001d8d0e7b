/* hf_config.h - Hugging Face config.json <-> ap_model_config.
 *
 * Reads the config.json of a llama, mistral, qwen2, qwen3 or gemma model with
 * the defaults of the matching transformers config class (LlamaConfig, ...),
 * so a config.json that omits a key means what it means to transformers.
 * Every key that autopipe uses is type- and range-checked; an error names the
 * file and the key. Keys that change the math in a way autopipe does not
 * implement (mlp_bias, an o_proj bias, dynamic/yarn rope, per-layer sliding
 * windows) are rejected rather than ignored. */
#ifndef AP_HF_CONFIG_H
#define AP_HF_CONFIG_H

#include <stddef.h>

#include "trainer/model_config.h"

/* "llama", "mistral", ...; NULL for an unknown value. */
const char *ap_model_type_name(enum ap_model_type t);
/* Parses a model_type name; -1 if unsupported. */
int ap_model_type_from_name(const char *name, enum ap_model_type *out);
/* The supported model_type names, for messages: "llama, mistral, qwen2, qwen3, gemma". */
const char *ap_model_types_supported(void);

/* The defaults of transformers' config class for `t` (e.g. GemmaConfig()):
 * the model that a config.json holding only {"model_type": ...} describes. */
void ap_hf_config_defaults(ap_model_config *cfg, enum ap_model_type t);

/* Parses config.json text (len bytes, need not be NUL-terminated); `name`
 * is the file name used in messages. 0 on success, -1 with err set. */
int ap_hf_config_parse(ap_model_config *cfg, const char *json, size_t len, const char *name,
                       char *err, size_t errlen);

/* Reads `path`: a config.json file, or a model directory holding one. */
int ap_hf_config_read(ap_model_config *cfg, const char *path, char *err, size_t errlen);

/* Checks sizes and combinations (what the parser checks after defaults);
 * `name` is used in messages. 0 or -1 with err set. */
int ap_model_config_check(const ap_model_config *cfg, const char *name, char *err, size_t errlen);

/* config.json text for `cfg` (malloc'd, caller frees), readable back by
 * ap_hf_config_parse and by transformers' AutoConfig. NULL with err set when
 * the config is not expressible in the model type's HF config class (e.g.
 * qk_norm on a llama). */
char *ap_hf_config_to_json(const ap_model_config *cfg, char *err, size_t errlen);

/* Writes config.json into directory `dir` (through a temporary file and rename). */
int ap_hf_config_write(const ap_model_config *cfg, const char *dir, char *err, size_t errlen);

/* ap_hf_config_read with the argument order of launcher/config.h's
 * ap_pretrained_reader_fn; installed as that hook when this file is linked. */
int ap_hf_config_reader(const char *dir, ap_model_config *mc, char *err, size_t errlen);

#endif
