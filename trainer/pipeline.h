/* pipeline.h - the training loop's step engine (trainer/train.h) over the
 * pipeline executor: `autopipe train` under mpirun runs the same loop as one
 * process, with this engine instead of the single-stage one.
 *
 *   forward_backward -> ap_executor_forward_backward (the rank's schedule)
 *   forward          -> ap_executor_forward (the schedule's forward order)
 *   sync_grads       -> dp all-reduce (started per stage during the schedule)
 *                       and the tied-embedding sum
 *   grad_sumsq       -> ap_executor_grad_sumsq (the rank's share of the
 *                       grad norm; a tied embedding's copy on the last
 *                       stage left out, so the tensor counts once)
 *   allreduce        -> MODEL: the pp group; ALL: every rank of pp x dp
 *
 * The loop's scale_grads_in_schedule (ap_step_batch.mean_per_micro) must
 * match the executor's (ap_executor_config.scale_grads_in_schedule). */
#ifndef AP_PIPELINE_H
#define AP_PIPELINE_H

#include <mpi.h>

#include "trainer/executor.h"
#include "trainer/model_config.h"
#include "trainer/train.h"

typedef struct {
    ap_step_engine e; /* first: the loop sees this */
    ap_executor *ex;
    MPI_Comm pp, all;      /* pp group; every rank of the pp x dp mesh */
    int n_micro, B;        /* what every forward_backward batch must be */
    int grad_acc_steps, calls;
    double step_s, wait_s; /* of the last step on this rank */
} ap_pipeline_engine;

/* stages/n_stages: this rank's stages (those the executor runs). */
void ap_pipeline_engine_init(ap_pipeline_engine *pe, ap_executor *ex, ap_stage **stages, int n_stages,
                             MPI_Comm pp, MPI_Comm all, int n_micro, int grad_acc_steps);

/* Largest bubble fraction (time blocked on receives / step time) of the
 * last step over all ranks; collective over `all`. */
double ap_pipeline_engine_bubble(ap_pipeline_engine *pe);

/* ---- `autopipe train` on several processes ---- */
struct ap_config;
typedef struct ap_pipeline ap_pipeline;

/* 1 when this process is one of several: the Slurm plugin's AUTOPIPE_*
 * topology or an MPI launcher (mpirun, srun --mpi=pmix) started more than
 * one. (One process with pp/dp sizes above 1 is the caller's usage error.) */
int ap_pipeline_wanted(const struct ap_config *cfg);

/* Collective over MPI_COMM_WORLD (initialises MPI): the mesh with one
 * communicator per axis, the split, the schedule (generated, lowered and
 * validated, or read from autopipeline.pp_schedule_csv), this rank's Llama
 * stages with parameters from rng.seed (or from pretrained_dir when not
 * NULL), the executor and its step engine. Rank 0 prints the plan. Returns 0,
 * or -1 with the message in err; *usage is set for configuration errors. */
int ap_pipeline_create(ap_pipeline **out, const struct ap_config *cfg, const ap_model_config *mc,
                       const char *pretrained_dir, int *usage, char *err, size_t errlen);

/* The engine for ap_train_loop, and the loop options this rank needs:
 * dp_rank, dp_size, is_log_rank (world rank 0). */
ap_step_engine *ap_pipeline_get_engine(ap_pipeline *p);
void ap_pipeline_set_opts(const ap_pipeline *p, ap_train_opts *o);
/* The run's layout: pp size, dp size, stages per pp rank (for checkpoints). */
void ap_pipeline_topology(const ap_pipeline *p, int *pp, int *dp, int *stages_per_rank);
/* Parameters of the whole model (a tied copy counted once). */
size_t ap_pipeline_param_count(const ap_pipeline *p);
/* The message of the last failed stage call on this rank ("" if none). */
const char *ap_pipeline_stage_error(const ap_pipeline *p);

/* Writes the trace (logging.trace_dir), frees everything, MPI_Finalize. */
void ap_pipeline_destroy(ap_pipeline *p);

#endif
