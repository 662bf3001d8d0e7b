/* split.h - which layers and modules each pipeline stage holds, and which
 * stages each pp rank runs. Shared by `autopipe plan`, the trainer and the
 * checkpoints, so they all cut the model the same way.
 *
 * Automatic split: calculate_virtual_stages(num_hidden_layers,
 * layers_per_stage, pp_size, single-stage schedule?, rounding) then
 * generate_hf_model_fqn_per_model_part(..., "model."), as AutoPipeline does.
 * Manual split: autopipeline.module_fqns_per_model_part, validated. */
#ifndef AP_SPLIT_H
#define AP_SPLIT_H

#include <stddef.h>

#include "launcher/config.h"
#include "launcher/topology.h"
#include "trainer/model_config.h"

/* The schedules (autopipeline.pp_schedule). */
typedef enum {
    AP_PP_GPIPE,
    AP_PP_1F1B,
    AP_PP_INTERLEAVED_1F1B,
    AP_PP_LOOPED_BFS,
    AP_PP_INTERLEAVED_ZB,
    AP_PP_ZBV,
    AP_PP_CSV, /* "csv": the order comes from autopipeline.pp_schedule_csv */
} ap_pp_schedule;

/* The schedule module's names (ap_schedule_parse_name: case-insensitive,
 * guide and PyTorch spellings, "1f1b", "Interleaved1F1B", "ZBVZeroBubble").
 * 0, or -1 with the known names in err. */
int ap_pp_schedule_parse(const char *name, ap_pp_schedule *out, char *err, size_t errlen);
const char *ap_pp_schedule_name(ap_pp_schedule s);    /* "1f1b" */
int ap_pp_schedule_is_single(ap_pp_schedule s);       /* gpipe, 1f1b: one stage per rank */
enum ap_stage_style ap_pp_schedule_style(ap_pp_schedule s); /* zbv: v, else loop */

typedef struct {
    int first_layer, last_layer; /* transformer layers [first, last) */
    int has_embed;               /* model.embed_tokens */
    int has_head;                /* model.norm and lm_head */
    int has_rotary;              /* model.rotary_emb listed */
    ap_strlist fqns;             /* the stage's module FQNs, in order */
} ap_split_stage;

typedef struct {
    int pp_size, num_stages, stages_per_rank, num_layers;
    ap_pp_schedule schedule;
    int single_stage;            /* one stage per rank */
    enum ap_stage_style style;   /* which stages a rank holds */
    int manual;                  /* from module_fqns_per_model_part */
    ap_split_stage *stages;      /* num_stages */
} ap_split;

/* The split for a config and its model (num_hidden_layers). With
 * pp_schedule_csv set, the CSV decides the order: stages_per_rank (null: 1)
 * decides how many stages, placed loop-style. Returns 0, or -1 with a message
 * naming the key (exit 2: it is a config error). */
int ap_split_plan(const ap_config *cfg, const ap_model_config *mc, ap_split *out, char *err,
                  size_t errlen);

/* Validates a manual split: every module exactly once (model.embed_tokens,
 * model.layers.N for N < num_layers, model.norm, lm_head), layers contiguous
 * and in order with at least one per stage, embed_tokens on the first stage,
 * norm and lm_head on the last, model.rotary_emb allowed on any stage. Fills
 * out->stages (out->num_stages = parts->n). */
int ap_split_from_fqns(const ap_strlistlist *parts, int num_layers, ap_split *out, char *err,
                       size_t errlen);

/* The stage ids pp_rank runs, in the schedule's order. */
int ap_split_rank_stages(const ap_split *s, int pp_rank, int *ids, size_t cap, char *err,
                         size_t errlen);

void ap_split_free(ap_split *s);

#endif
