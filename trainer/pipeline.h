/* pipeline.h - the training loop's step engine (trainer/train.h) over the
 * pipeline executor: `autopipe train` under mpirun runs the same loop as one
 * process, with this engine instead of the single-stage one.
 *
 *   forward_backward -> ap_executor_forward_backward (the rank's schedule)
 *   forward          -> ap_executor_forward (the schedule's forward order)
 *   sync_grads       -> dp all-reduce (started per stage during the schedule)
 *                       and the tied-embedding sum
 *   allreduce        -> MODEL: the pp group; ALL: every rank of pp x dp
 *
 * The loop sums the squares of every local gradient for the norm; a tied
 * embedding's copy on the last stage would count twice, so the engine takes
 * the copy's share out of the first MODEL sum after sync_grads (the norm). */
#ifndef AP_PIPELINE_H
#define AP_PIPELINE_H

#include <mpi.h>

#include "trainer/executor.h"
#include "trainer/train.h"

typedef struct {
    ap_step_engine e; /* first: the loop sees this */
    ap_executor *ex;
    MPI_Comm pp, all;      /* pp group; every rank of the pp x dp mesh */
    int n_micro, B;        /* what every forward_backward batch must be */
    int grad_acc_steps, calls;
    int norm_pending;      /* the next MODEL sum of one value is the grad norm */
    double step_s, wait_s; /* of the last step on this rank */
} ap_pipeline_engine;

/* stages/n_stages: this rank's stages (those the executor runs). */
void ap_pipeline_engine_init(ap_pipeline_engine *pe, ap_executor *ex, ap_stage **stages, int n_stages,
                             MPI_Comm pp, MPI_Comm all, int n_micro, int grad_acc_steps);

/* Largest bubble fraction (time blocked on receives / step time) of the
 * last step over all ranks; collective over `all`. */
double ap_pipeline_engine_bubble(ap_pipeline_engine *pe);

#endif
