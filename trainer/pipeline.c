/* pipeline.c - the pipeline step engine: see pipeline.h. */
#include "trainer/pipeline.h"

#include <stdio.h>

static int pe_forward_backward(ap_step_engine *e, const ap_step_batch *b, float dloss, double *loss_sum,
                               long *n_tokens, char *err, size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    if (b->n_micro != pe->n_micro || b->mb != pe->B) {
        snprintf(err, errlen, "pipeline: the schedule runs %d microbatches of %d samples, the loop gave %d of %d",
                 pe->n_micro, pe->B, b->n_micro, b->mb);
        return -1;
    }
    int last = ++pe->calls >= pe->grad_acc_steps; /* start the dp all-reduce during the last batch */
    return ap_executor_forward_backward(pe->ex, b->tokens, b->labels, dloss, last, loss_sum, n_tokens, err, errlen);
}

static int pe_forward(ap_step_engine *e, const ap_step_batch *b, double *loss_sum, long *n_tokens, char *err,
                      size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    if (b->mb != pe->B) {
        snprintf(err, errlen, "pipeline: stages take microbatches of %d samples, the loop gave %d", pe->B, b->mb);
        return -1;
    }
    return ap_executor_forward(pe->ex, b->tokens, b->labels, b->n_micro, loss_sum, n_tokens, err, errlen);
}

static int pe_sync(ap_step_engine *e, char *err, size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    pe->calls = 0;
    if (ap_executor_sync_grads(pe->ex, err, errlen)) return -1;
    ap_executor_last_bubble(pe->ex, &pe->step_s, &pe->wait_s);
    pe->norm_pending = 1;
    return 0;
}

static int pe_allreduce(ap_step_engine *e, double *v, int n, int op_max, enum ap_reduce_scope scope, char *err,
                        size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    (void)err, (void)errlen;
    if (scope == AP_REDUCE_MODEL && pe->norm_pending && n == 1) {
        /* the grad norm: a tied copy counts once (the max needs nothing: the copies are equal) */
        if (!op_max) v[0] -= ap_executor_tied_copy_sumsq(pe->ex);
        pe->norm_pending = 0;
    }
    MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, op_max ? MPI_MAX : MPI_SUM,
                  scope == AP_REDUCE_MODEL ? pe->pp : pe->all);
    return 0;
}

void ap_pipeline_engine_init(ap_pipeline_engine *pe, ap_executor *ex, ap_stage **stages, int n_stages,
                             MPI_Comm pp, MPI_Comm all, int n_micro, int grad_acc_steps) {
    *pe = (ap_pipeline_engine){0};
    pe->e.forward_backward = pe_forward_backward;
    pe->e.forward = pe_forward;
    pe->e.sync_grads = pe_sync;
    pe->e.allreduce = pe_allreduce;
    pe->e.stages = stages;
    pe->e.n_stages = n_stages;
    pe->e.impl = pe;
    pe->ex = ex;
    pe->pp = pp;
    pe->all = all;
    pe->n_micro = n_micro;
    pe->B = n_stages ? stages[0]->B : 0;
    pe->grad_acc_steps = grad_acc_steps > 0 ? grad_acc_steps : 1;
}

double ap_pipeline_engine_bubble(ap_pipeline_engine *pe) {
    double b = pe->step_s > 0 ? pe->wait_s / pe->step_s : 0;
    MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_MAX, pe->all);
    return b;
}
