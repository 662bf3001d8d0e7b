/* topology.h - the rank layout of a pp x dp x tp mesh, and AutoPipeline's
 * stage helpers. Pure functions, no MPI, no allocation: the SPANK plugin
 * compiles this file alone, so both sides agree on the rank order.
 *
 * Rank order: pp slowest, tp fastest:
 *     rank = (pp_rank * dp + dp_rank) * tp + tp_rank
 * so tp groups are neighbours on a node and pipeline stages may span nodes. */
#ifndef AP_TOPOLOGY_H
#define AP_TOPOLOGY_H

#include <stddef.h>

enum ap_axis { AP_AXIS_PP = 0, AP_AXIS_DP = 1, AP_AXIS_TP = 2, AP_NAXES = 3 };

typedef struct {
    int size[AP_NAXES]; /* pp, dp, tp sizes, each >= 1 */
} ap_mesh;

typedef struct {
    int r[AP_NAXES]; /* pp_rank, dp_rank, tp_rank */
} ap_coord;

/* Largest world the helpers accept (keeps every product inside int). */
#define AP_MESH_MAX_RANKS (1 << 24)

/* 0 if every size is >= 1 and the product is <= AP_MESH_MAX_RANKS, else -1. */
int ap_mesh_check(const ap_mesh *m);
int ap_mesh_world(const ap_mesh *m);
const char *ap_axis_name(enum ap_axis a); /* "pp", "dp", "tp" */

/* rank <-> coordinates; -1 when out of range. */
int ap_mesh_rank(const ap_mesh *m, ap_coord c);
int ap_mesh_coord(const ap_mesh *m, int rank, ap_coord *out);

/* The ranks of the axis-`a` group that contains `rank`, in axis order:
 * out[i] is the rank whose coordinate on `a` is i. Writes m->size[a] ranks;
 * returns that count, or -1 on bad input. */
int ap_mesh_group(const ap_mesh *m, enum ap_axis a, int rank, int *out, size_t cap);

/* ---- AutoPipeline's functional API (same names and semantics) ---- */

/* CUSTOM: placement given by a schedule CSV file (stage_ids_this_rank rejects it). */
enum ap_stage_style { AP_STYLE_LOOP = 0, AP_STYLE_V = 1, AP_STYLE_CUSTOM = 2 };

/* Stage ids held by pp_rank: loop gives r, r+p, r+2p, ...; v gives
 * (r, 2p-1-r) and requires num_stages == 2 * pp_size. Writes at most cap ids;
 * returns the count, or -1 (and a message in err) on bad input. */
int stage_ids_this_rank(int pp_rank, int pp_size, int num_stages, enum ap_stage_style style,
                        int *out, size_t cap, char *err, size_t errlen);

/* How calculate_virtual_stages rounds a stage count that is not a multiple
 * of pp_size (autopipeline.round_virtual_stages_to_pp_multiple). */
enum ap_round_mode { AP_ROUND_NONE = -1, AP_ROUND_UP = 0, AP_ROUND_DOWN = 1 };

/* Number of (virtual) stages and stages per rank. layers_per_stage < 0 means
 * None: 1 stage per rank for single-stage schedules, 2 otherwise. Else
 * num_stages = ceil(num_layers / layers_per_stage), which must be a multiple of
 * pp_size unless `round` says up or down; a single-stage schedule then needs
 * exactly 1 stage per rank and a multi-stage one at least 2. Returns 0, or -1
 * with the reason in err. */
int calculate_virtual_stages(int num_layers, int layers_per_stage, int pp_size,
                             int is_single_stage_schedule, enum ap_round_mode round,
                             int *num_virtual_stages, int *stages_per_rank, char *err,
                             size_t errlen);

/* The modules of one stage, as generate_hf_model_fqn_per_model_part lays them
 * out; ap_stage_modules_fqn() spells them. */
typedef struct {
    int first_layer, last_layer; /* transformer layers [first, last) */
    int has_embed;               /* PREFIXembed_tokens */
    int has_norm;                /* PREFIXnorm */
    int has_lm_head;             /* lm_head (never prefixed, as in HF) */
    int has_rotary;              /* PREFIXrotary_emb */
    const char *prefix;          /* fqn_prefix, e.g. "model." (not owned) */
} ap_stage_modules;

/* Splits num_layers evenly over num_stages, the first num_layers % num_stages
 * stages getting one more; embed_tokens on stage 0 (when asked), norm on the
 * last stage, lm_head there too (when asked), rotary_emb on every stage (when
 * asked). Writes num_stages entries (cap must allow); returns num_stages, or -1
 * when num_stages < 1 or num_stages > num_layers. */
int generate_hf_model_fqn_per_model_part(int num_stages, int num_layers, int include_embeddings,
                                         int include_lm_head, int include_rotary_emb,
                                         const char *fqn_prefix, ap_stage_modules *out,
                                         size_t cap, char *err, size_t errlen);

/* Module count of a stage, and the i-th FQN in order: embed_tokens, layers,
 * norm, lm_head, rotary_emb ("model.layers.7"). fqn returns 0, or -1 when i
 * is out of range or buf too small. */
int ap_stage_modules_count(const ap_stage_modules *m);
int ap_stage_modules_fqn(const ap_stage_modules *m, int i, char *buf, size_t len);

#endif
