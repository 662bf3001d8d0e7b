/* config.h - the run configuration: NeMo-AutoModel-shaped YAML sections with
 * `--section.key value` overrides. Every key comes from the one table in
 * launcher/config_schema.def; C code reads `cfg->SECTION.KEY`, e.g.
 * cfg->distributed.pp_size, cfg->optimizer.betas[0],
 * cfg->autopipeline.module_fqns_per_model_part.
 *
 * Types: INT -> int; FLOAT -> double; BOOL -> int (0/1); STR -> char *
 * (NULL = null); ENUM -> int (index of the name, see the AP_* constants below;
 * null = -1); LIST_STR -> ap_strlist; LIST_LIST_STR -> ap_strlistlist (null =
 * n == 0); LIST_FLOAT -> double KEY[N] with n_KEY. Nullable INT and FLOAT keys
 * also get `int has_KEY` (0 when null; the value is then -1 / 0.0).
 *
 * Errors: every function returns 0 on success and -1 on error with one
 * message in err (file:line:column for the YAML file, the flag for an
 * override); commands print it and exit 2 (AP_EXIT_USAGE). */
#ifndef AP_CONFIG_H
#define AP_CONFIG_H

/* autoconf's header (PACKAGE_VERSION, AP_HAVE_CUDA): a launcher/ file that
 * writes #include "config.h" finds this file first, so it gets both. */
#include <config.h>

#include <stddef.h>
#include <stdio.h>

#include "launcher/topology.h" /* enum ap_round_mode */
#include "trainer/model_config.h"

typedef struct {
    char **v;
    int n;
} ap_strlist;

typedef struct {
    ap_strlist *v;
    int n;
} ap_strlistlist;

/* ---- the struct, generated from the schema ---- */
#define AP_FIELD_INT(k) int k;
#define AP_FIELD_INT_N(k) int k; int has_##k;
#define AP_FIELD_FLOAT(k) double k;
#define AP_FIELD_FLOAT_N(k) double k; int has_##k;
#define AP_FIELD_BOOL(k) int k;
#define AP_FIELD_STR(k) char *k;
#define AP_FIELD_STR_N(k) char *k;
#define AP_FIELD_ENUM(k) int k;
#define AP_FIELD_ENUM_N(k) int k;
#define AP_FIELD_LIST_STR(k) ap_strlist k;
#define AP_FIELD_LIST_STR_N(k) ap_strlist k;
#define AP_FIELD_LIST_LIST_STR(k) ap_strlistlist k;
#define AP_FIELD_LIST_LIST_STR_N(k) ap_strlistlist k;
#define AP_CFG_MAX_FLOATS 8
#define AP_FIELD_LIST_FLOAT(k) double k[AP_CFG_MAX_FLOATS]; int n_##k;

typedef struct ap_config {
#define AP_SECTION(s, help) struct ap_config_##s {
#define AP_KEY(s, k, type, def, range, extra, help) AP_FIELD_##type(k)
#define AP_END(s) } s;
#include "launcher/config_schema.def"
#undef AP_SECTION
#undef AP_KEY
#undef AP_END
} ap_config;

/* ENUM values (index in the schema's name list). */
/* round_virtual_stages_to_pp_multiple: enum ap_round_mode (AP_ROUND_NONE/UP/DOWN, topology.h). */
/* model.model_type uses enum ap_model_type (same order: llama mistral qwen2 qwen3 gemma). */
enum { AP_FORMAT_AUTO = 0, AP_FORMAT_TEXT, AP_FORMAT_TOKENS, AP_FORMAT_SFT_JSONL }; /* dataset.format */
enum { AP_DECAY_COSINE = 0, AP_DECAY_LINEAR, AP_DECAY_CONSTANT };                  /* lr_decay_style */
enum { AP_PROGRESS_AUTO = 0, AP_PROGRESS_ON, AP_PROGRESS_OFF };                    /* logging.progress */
enum { AP_DEVICE_CPU = 0, AP_DEVICE_CUDA };                                        /* runtime.device */

/* ---- the schema, for code that walks every key ---- */
enum ap_cfg_type {
    AP_CFG_INT, AP_CFG_FLOAT, AP_CFG_BOOL, AP_CFG_STR, AP_CFG_ENUM,
    AP_CFG_LIST_STR, AP_CFG_LIST_LIST_STR, AP_CFG_LIST_FLOAT
};

typedef struct {
    const char *section, *key;
    enum ap_cfg_type type;
    int nullable;
    const char *def;   /* default as YAML text */
    const char *range; /* "[1,)" or "" */
    const char *extra; /* enum names "a|b" or the LIST_FLOAT count */
    const char *help;
    size_t offset;     /* of the value in ap_config */
    long has_offset;   /* of has_KEY, or -1 */
} ap_cfg_key;

extern const ap_cfg_key ap_cfg_keys[];
extern const int ap_cfg_nkeys;
const ap_cfg_key *ap_cfg_find(const char *section, const char *key);

/* ---- loading ---- */

/* All keys at their defaults (the built-in config). Frees nothing: call on a
 * zeroed or freed struct. Returns 0. */
int ap_config_defaults(ap_config *cfg);

/* Defaults, then the YAML file `path` (NULL: none), then the overrides
 * (argv-style: "--section.key" "value" or "--section.key=value"; the values
 * are YAML: 3, 1e-4, true, null, [a, b], [[a, b], [c]]), then validation.
 * On error cfg is left freed and -1 returned with the message in err. */
int ap_config_load(ap_config *cfg, const char *path, int argc, char **overrides, char *err,
                   size_t errlen);

/* The built-in default config: the key defaults plus ap_config_builtin_yaml
 * (a tiny Llama-shaped model on pp_size 2), then the overrides. This is what
 * a subcommand runs without --config. */
extern const char ap_config_builtin_yaml[];
int ap_config_load_builtin(ap_config *cfg, int argc, char **overrides, char *err, size_t errlen);

/* Applies one override to a loaded config ("section.key", YAML value text). */
int ap_config_set(ap_config *cfg, const char *dotted_key, const char *value, char *err,
                  size_t errlen);

/* Cross-key checks (also run by ap_config_load): sequence_parallel false,
 * norm_type 2 or inf, _target_ names known, heads divisible, ... */
int ap_config_validate(const ap_config *cfg, char *err, size_t errlen);

/* A flag a subcommand handles itself, for ap_config_from_args. */
typedef struct {
    const char *name; /* without the dashes: "max-modules"; "h" for -h */
    int has_arg;      /* takes a value: "--name V" or "--name=V" */
} ap_cli_flag;

/* The common subcommand command line: argv[0] is the subcommand;
 *   [--config FILE | --config=FILE] [--section.key VALUE | --section.key=VALUE]...
 * in any order (overrides always win over the file). Arguments that are
 * declared in `flags` (NULL-terminated by name == NULL; may be NULL) and
 * positional arguments are copied in order to rest[1..] (rest[0] = argv[0],
 * rest[*nrest] = NULL; rest needs argc + 1 slots) for the caller's getopt_long.
 * Any other "--flag" is an error. Loads the config (the built-in default,
 * ap_config_load_builtin, when there is no --config; only the key defaults,
 * unchecked, when a declared "help" or "h" flag is present).
 * Returns 0, or -1 with the message in err (exit 2). */
int ap_config_from_args(ap_config *cfg, int argc, char **argv, const ap_cli_flag *flags,
                        char **rest, int *nrest, char *err, size_t errlen);

/* Writes the config as YAML that ap_config_load reads back to the same
 * values. Returns 0 or -1 (write error). */
int ap_config_emit_yaml(const ap_config *cfg, FILE *f);

/* The same YAML as a malloc'd string (free it), e.g. to store in a
 * checkpoint; NULL on failure. */
char *ap_config_to_yaml(const ap_config *cfg);

/* Defaults, then the YAML text (e.g. read back from a checkpoint; `name`
 * labels messages), then validation. 0, or -1 with cfg freed. */
int ap_config_load_string(ap_config *cfg, const char *yaml, const char *name, char *err,
                          size_t errlen);

/* The markdown configuration reference (one table per section). */
void ap_config_emit_reference(FILE *f);

/* Lists the keys for a subcommand's --help (`  --section.key TYPE (default)`). */
void ap_config_emit_help(FILE *f);

/* Name of an ENUM value ("up"), or "null". */
const char *ap_config_enum_name(const char *section, const char *key, int value);

void ap_config_free(ap_config *cfg);

/* `autopipe config` (launcher/cmd_config.c). */
int ap_cmd_config(int argc, char **argv);

/* ---- the model section ---- */

/* Reader of an HF model directory's config.json, for from_pretrained. The
 * hf_config part installs it (ap_config_set_pretrained_reader); until one is
 * installed a config with pretrained_model_name_or_path is an error. */
typedef int (*ap_pretrained_reader_fn)(const char *dir, ap_model_config *mc, char *err,
                                       size_t errlen);
void ap_config_set_pretrained_reader(ap_pretrained_reader_fn fn);

/* Fills mc from the `model` section (from_config), with the family's fixed
 * traits (qwen2 biases, qwen3 q/k norms, gemma's norm/activation/embedding
 * scale); from_pretrained reads the directory through the installed reader.
 * Checks the shapes (heads divide, head_dim). */
int ap_config_model(const ap_config *cfg, ap_model_config *mc, char *err, size_t errlen);

#endif
