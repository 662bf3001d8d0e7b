/* schedule.h - the pipeline schedule IR and its readers.
 *
 * A schedule is data: per pp rank an ordered list of actions
 * (stage, type, microbatch), types F B I W SEND_F RECV_F SEND_B RECV_B, in the
 * text form of torch.distributed.pipelining ("0F1", "1SEND_B0", "2I3").
 * An idle cell (AP_ACT_NONE) is a deliberate bubble in the step grid; the
 * executor skips it. Generators make a compute-only schedule (F/B/I/W and
 * idle cells), the lowering pass adds SEND/RECV pairs between stages on
 * different ranks, the validator proves a schedule complete and deadlock-free,
 * the simulator costs it, the renderer draws it.
 *
 * Library functions return 0 / negative and write a message into err. */
#ifndef AP_SCHEDULE_H
#define AP_SCHEDULE_H

#include "launcher/topology.h"
#include <stddef.h>
#include <stdio.h>

typedef enum {
    AP_ACT_NONE = 0, /* idle cell */
    AP_ACT_F,        /* forward */
    AP_ACT_B,        /* full backward */
    AP_ACT_I,        /* backward w.r.t. the input (zero-bubble split) */
    AP_ACT_W,        /* backward w.r.t. the weights (zero-bubble split) */
    AP_ACT_SEND_F,
    AP_ACT_RECV_F,
    AP_ACT_SEND_B,
    AP_ACT_RECV_B,
    AP_ACT_NTYPES
} ap_act_type;

typedef struct {
    int type;  /* ap_act_type */
    int stage; /* global stage index (virtual stage) */
    int mb;    /* microbatch index */
} ap_action;

/* Largest stages x microbatches accepted anywhere (keeps per-(stage, mb)
 * tables of the validator and simulator under ~100 MB). */
#define AP_SCHED_MAX_CELLS 1000000

typedef enum ap_stage_style ap_sched_style; /* launcher/topology.h */

typedef enum {
    AP_SCHED_GPIPE = 0,
    AP_SCHED_1F1B,
    AP_SCHED_INTERLEAVED_1F1B,
    AP_SCHED_LOOPED_BFS,
    AP_SCHED_INTERLEAVED_ZB,
    AP_SCHED_ZBV,
    AP_SCHED_CSV,
    AP_SCHED_NKINDS
} ap_sched_kind;

typedef struct {
    int pp;              /* pipeline ranks */
    int num_stages;      /* global (virtual) stages */
    int stages_per_rank; /* num_stages / pp */
    int microbatches;
    int style;   /* ap_sched_style: stage placement */
    int kind;    /* ap_sched_kind it came from */
    int lowered; /* 1: contains SEND/RECV (compute_comms form) */
    int forward_only; /* 1: F only (validation pass), no backward expected */
    int *stage_to_rank; /* (num_stages) */
    int *len, *cap;     /* (pp) actions per rank */
    ap_action **acts;   /* (pp) -> (len[r]) */
} ap_schedule;

/* ---- IR (ir.c) ---- */
ap_schedule *ap_schedule_new(int pp, int num_stages, int microbatches, int style, int kind);
void ap_schedule_free(ap_schedule *s);
int ap_schedule_push(ap_schedule *s, int rank, ap_action a);
ap_schedule *ap_schedule_clone(const ap_schedule *s);
/* 1 when both have the same shape and the same cells (trailing idle ignored). */
int ap_schedule_equal(const ap_schedule *a, const ap_schedule *b);
/* Rank of a stage under a placement: loop (s % pp) or v (0..pp-1 then back). */
int ap_stage_to_rank(int pp, int num_stages, int style, int stage);
/* Stages held by a rank, ascending; returns the count (<= max written). */
int ap_schedule_rank_stages(const ap_schedule *s, int rank, int *stages, int max);

const char *ap_act_type_name(int type); /* "F", "SEND_B", "" for idle */
int ap_act_is_compute(int type);
/* "2F3"; "" for an idle cell. Returns the length written (snprintf rules). */
int ap_action_format(char *buf, size_t len, ap_action a);
/* Parse one cell ("" or blanks = idle). 0 ok; -1 with what was expected. */
int ap_action_parse(const char *text, ap_action *out, char *err, size_t errlen);

/* Names, case-insensitive, AutoPipeline's and PyTorch's spellings. */
int ap_schedule_parse_name(const char *name, ap_sched_kind *out);
const char *ap_schedule_kind_name(int kind);
/* 1 for gpipe/1f1b (one stage per rank), 0 for the others, -1 unknown name. */
int ap_schedule_is_single_stage(const char *name);
/* AP_STYLE_V for zbv, AP_STYLE_LOOP for the others, -1 unknown name. */
int ap_schedule_style(const char *name);

/* The step grid (steps down, ranks across, as PyTorch's
 * _format_pipeline_order); the cell (bad_rank, bad_step) is marked with
 * >>..<< and its row with "<-- ERROR" (bad_rank < 0: no mark). Returns the
 * length it wanted (snprintf rules). */
size_t ap_schedule_format_grid(const ap_schedule *s, int bad_rank, int bad_step, char *buf,
                               size_t len);

/* ---- CSV (csv.c): PyTorch's _dump_csv / _load_csv format ----
 * One row per rank, one cell per step, empty cell = idle. A file with any
 * SEND/RECV cell is the compute_comms form (loaded as lowered). pp and
 * microbatches <= 0: inferred (rows, largest microbatch + 1); otherwise they
 * must match. Errors name file:row:col and what was expected. */
int ap_schedule_load_csv(ap_schedule **out, const char *path, int pp, int microbatches, char *err,
                         size_t errlen);
int ap_schedule_parse_csv(ap_schedule **out, const char *text, size_t n, const char *name, int pp,
                          int microbatches, char *err, size_t errlen);
int ap_schedule_write_csv(const ap_schedule *s, FILE *f);
int ap_schedule_dump_csv(const ap_schedule *s, const char *path, char *err, size_t errlen);

/* ---- generators (gen.c) ----
 * name: a schedule name, or NULL/"pp_schedule_csv" with csv_path set.
 * stages_per_rank <= 0: 1 for single-stage schedules, 2 for the others.
 * microbatches <= 0 with a CSV: taken from the file. The result is a
 * compute-only schedule, already validated. */
int ap_schedule_generate(ap_schedule **out, const char *name_or_NULL, const char *csv_path_or_NULL,
                         int pp, int stages_per_rank, int microbatches, char *err, size_t errlen);
/* batch_size samples split into microbatches of microbatch_size:
 * *n_microbatches = batch_size / microbatch_size when it divides. */
int ap_schedule_check_batch(int batch_size, int microbatch_size, int *n_microbatches, char *err,
                            size_t errlen);

/* The forward actions of a training schedule, in its order, for a
 * forward-only (validation) pass; sets forward_only. Validated. */
int ap_schedule_forward_only(ap_schedule **out, const ap_schedule *train, char *err, size_t errlen);

/* ---- lowering (lower.c) ----
 * Adds SEND_F/RECV_F after each F and SEND_B/RECV_B after each B/I whose
 * neighbour stage lives on another rank; drops idle cells. A RECV is placed
 * on the receiving rank as soon as the sender's action is placed, so the
 * executor posts receives ahead of the compute that waits on them. */
int ap_schedule_lower(const ap_schedule *in, ap_schedule **out, char *err, size_t errlen);

/* ---- validator (validate.c) ----
 * Compute-only schedules: every F and B (or I then W) exactly once per stage
 * and microbatch, each stage on one rank, W after its I on the same rank, and
 * a dependency-driven run of all ranks finishes (no cycle across ranks).
 * Lowered schedules additionally: every cross-rank F/B/I has its SEND after
 * it, every SEND one matching RECV on the peer, no SEND/RECV between stages
 * on one rank, each RECV posted before the compute that needs it, and a run
 * with the executor's semantics (nonblocking sends and receives, compute
 * waits for its data) finishes. On failure err holds the reason and the grid
 * with the bad cell marked (give a few KiB). */
int ap_schedule_validate(const ap_schedule *s, char *err, size_t errlen);
/* Stricter runtimes (use one flag at a time):
 * AP_VALIDATE_BLOCKING_SENDS: a SEND blocks until the peer has posted the
 *   matching RECV (MPI_Ssend / rendezvous);
 * AP_VALIDATE_BLOCKING_RECVS: a RECV blocks until the peer has sent
 *   (blocking MPI_Recv at the RECV cell; PyTorch's _simulate_comms_compute). */
enum { AP_VALIDATE_BLOCKING_SENDS = 1, AP_VALIDATE_BLOCKING_RECVS = 2 };
int ap_schedule_validate_ex(const ap_schedule *s, int flags, char *err, size_t errlen);

/* ---- simulator (sim.c) ---- */
#define AP_SCHED_COST_STAGES 256 /* stages that "F@3=2" style overrides can name */

typedef struct {
    double cost[AP_ACT_NTYPES]; /* per type (F, B, I, W used) */
    double comm;                /* added to every cross-rank dependency */
    const double *stage_cost[AP_ACT_NTYPES]; /* optional (num_stages) arrays, e.g. measured */
    /* single-stage overrides from ap_sched_costs_parse ("F@3=2"); stage_cost wins */
    double over[AP_ACT_NTYPES][AP_SCHED_COST_STAGES];
    unsigned char has_over[AP_ACT_NTYPES][AP_SCHED_COST_STAGES];
} ap_sched_costs;

/* Defaults F=1, B=2, I=1, W=1, comm=0, no overrides. */
void ap_sched_costs_default(ap_sched_costs *c);
/* "F=1,B=2,I=1,W=1,comm=0.5,F@3=2" (any subset; TYPE@STAGE for one stage). */
int ap_sched_costs_parse(ap_sched_costs *c, const char *text, char *err, size_t errlen);

/* Costs measured in a run: averages the durations of the F/B/I/W events of
 * Chrome trace files (the executor's trace, or ap_schedule_write_trace) per
 * type and stage, in milliseconds, into c (per-stage overrides, and the
 * type's mean as its cost; a missing I/W is half the B, a missing B is I+W).
 * Returns the number of events used, or -1. */
int ap_sched_costs_from_traces(ap_sched_costs *c, const char *const *paths, int n_paths, char *err,
                               size_t errlen);

typedef struct {
    int rank, index; /* position in s->acts[rank] */
    ap_action a;
    double start, end;
} ap_sched_event;

typedef struct {
    int pp, num_stages;
    double makespan;
    double *busy;       /* (pp) compute time per rank */
    double *bubble;     /* (pp) 1 - busy/makespan */
    double bubble_mean; /* mean over ranks */
    int *peak_live;     /* (pp) most activations held at once per rank */
    int *peak_live_stage; /* (num_stages) per stage: slots the executor needs */
    ap_sched_event *ev; /* compute events in time order per rank */
    int n_ev;
} ap_sched_sim;

/* Runs every rank's compute actions as early as its order and the data
 * dependencies allow. An activation is live from its F until its B or W. */
int ap_schedule_simulate(const ap_schedule *s, const ap_sched_costs *c, ap_sched_sim *out, char *err,
                         size_t errlen);
void ap_sched_sim_free(ap_sched_sim *r);

/* ---- renderer (render.c) ---- */
/* Text timeline: one line per rank, a column per time unit, F/B/I/W cells
 * with microbatch numbers, '.' idle; then bubble and memory figures. */
void ap_schedule_render_text(const ap_schedule *s, const ap_sched_sim *r, FILE *f);
/* Chrome trace-event JSON of the simulated timeline (one time unit = 1 ms),
 * one track per rank, to open in Perfetto next to a measured trace. */
int ap_schedule_write_trace(const ap_schedule *s, const ap_sched_sim *r, FILE *f);
/* PNG or SVG (by the path's extension) through cairo. */
int ap_schedule_render_image(const ap_schedule *s, const ap_sched_sim *r, const char *path,
                             char *err, size_t errlen);

/* ---- `autopipe schedule` (cmd.c) ---- */
int ap_cmd_schedule(int argc, char **argv);

#endif
