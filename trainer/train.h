/* train.h - the training loop: data -> forward/backward of every microbatch
 * -> gradient clipping -> AdamW with the LR schedule, validation, logging.
 *
 * The loop does not know how the model is split. Everything it needs from
 * the model goes through an ap_step_engine: the single-process engine here
 * runs one stage's microbatches one after the other; the pipeline executor
 * provides another engine (running its schedule over the same microbatches)
 * and the loop stays as it is.
 *
 * Loss of a step = sum of the token losses / number of label tokens of the
 * WHOLE step (every microbatch of every accumulated batch, every dp rank).
 * The count is taken from the labels before any backward, and backward runs
 * with dloss = 1/N, so the gradients are those of the mean loss whatever the
 * microbatch split or the accumulation. */
#ifndef AP_TRAIN_H
#define AP_TRAIN_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "trainer/data.h"
#include "trainer/lr.h"
#include "trainer/model_config.h"
#include "trainer/stage.h"

struct ap_config;

/* One batch of one dp rank, split into microbatches. */
typedef struct {
    int n_micro, mb, T;
    const int32_t *tokens; /* (n_micro, mb, T) */
    const int32_t *labels; /* (n_micro, mb, T), -100 ignored */
    /* 0: the loss is summed over label tokens, backward with dloss for
     * every microbatch. 1 (scale_grads_in_schedule): each microbatch's loss
     * is its mean over its n_m label tokens, backward with dloss / n_m (0
     * when n_m = 0): dloss is then the weight of one microbatch mean. */
    int mean_per_micro;
    /* (n_micro, mb, T) position ids restarting at each example of a packed
     * row (every stage reads them), or NULL: 0..T-1 in every row */
    const int32_t *pos;
} ap_step_batch;

enum ap_reduce_scope {
    AP_REDUCE_MODEL, /* the ranks holding the parts of one model replica (pipeline stages) */
    AP_REDUCE_ALL    /* every rank (all replicas) */
};

typedef struct ap_step_engine ap_step_engine;
struct ap_step_engine {
    /* Forward and backward of every microbatch of b, accumulating (+=) the
     * parameter gradients of the local stages with dloss (1/N); adds the
     * summed loss and label count of what it computed (the last stage's) to
     * *loss_sum / *n_tokens. With b->mean_per_micro: adds each microbatch's
     * mean loss (0 without labels) and 1 per microbatch instead. */
    int (*forward_backward)(ap_step_engine *e, const ap_step_batch *b, float dloss, double *loss_sum,
                            long *n_tokens, char *err, size_t errlen);
    /* No-grad forward of every microbatch (validation, eval). */
    int (*forward)(ap_step_engine *e, const ap_step_batch *b, double *loss_sum, long *n_tokens, char *err,
                   size_t errlen);
    /* Once per step after the last forward_backward, before the grad norm:
     * data-parallel averaging, summing tied-embedding copies. NULL: nothing. */
    int (*sync_grads)(ap_step_engine *e, char *err, size_t errlen);
    /* This process's share of the squared global gradient 2-norm (norm_inf:
     * of the inf-norm, max |g|), counting every model tensor once: an engine
     * whose stages hold a copy of another tensor (tied embeddings on the
     * first and last pipeline stage) leaves the copy out. The loop reduces
     * it over AP_REDUCE_MODEL after sync_grads. NULL: every gradient of
     * `stages`. */
    double (*grad_sumsq)(ap_step_engine *e, int norm_inf);
    /* Sum (or max when op_max) of n doubles over `scope`. NULL: one process. */
    int (*allreduce)(ap_step_engine *e, double *v, int n, int op_max, enum ap_reduce_scope scope, char *err,
                     size_t errlen);
    ap_stage **stages; /* the stages this process updates */
    int n_stages;
    /* The measured pipeline bubble of the last step (time blocked on
     * receives / step time, the largest over the ranks); called on every rank
     * once per step after sync_grads. NULL: not measured (one process). */
    double (*bubble)(ap_step_engine *e);
    void *impl;
};

/* The engine of one process holding the whole model in one stage: runs each
 * microbatch's forward then backward in slot 0. */
void ap_step_engine_single(ap_step_engine *e, ap_stage **stage);

/* Everything the loop reads (from ap_config by ap_train_opts_from_config). */
typedef struct {
    long max_steps;
    int grad_acc_steps, batch_size, micro_batch_size, seq_len;
    int dp_rank, dp_size;               /* this rank's share of each batch */
    ap_lr_schedule lr;
    double beta1, beta2, eps, weight_decay;
    double max_norm;                    /* <= 0: no clipping */
    int norm_inf;                       /* clip by the inf-norm instead of the 2-norm */
    int scale_grads_in_schedule;        /* per-microbatch mean loss, averaged over microbatches */
    long val_every_steps, log_every_steps, ckpt_every_steps;
    double flops_per_token;             /* 0: MFU not reported */
    double peak_flops;
    const char *metrics_file;
    int progress;                       /* 0 auto, 1 on, 2 off */
    int quiet;                          /* no log lines (tests) */
    int is_log_rank;                    /* this rank prints */
} ap_train_opts;

/* What a run did (for the caller and the tests). */
typedef struct {
    long steps;                 /* optimizer steps done */
    double first_loss, last_loss;
    double last_grad_norm;
    double last_val_loss;       /* NaN when never validated */
    int nonfinite;              /* stopped on a NaN/Inf loss or grad norm */
    int preempted;              /* stopped early by the stop hook (a signal), checkpoint saved */
    int agreed_failure;         /* failed on every rank alike (resume): nobody waits, no abort needed */
} ap_train_result;

/* What a checkpoint saves and restores (the checkpoint part implements the hooks). */
typedef struct {
    long step;                  /* optimizer steps done */
    ap_loader_state data;       /* data order position */
    ap_stage **stages;
    int n_stages;
    float **adam_m, **adam_v;   /* per stage, n_params each */
    const struct ap_config *cfg; /* NULL when run without a config */
} ap_train_state;

typedef struct {
    /* Called before the first step: restore *st if there is something to
     * resume from (set *resumed). Collective: every rank returns the same
     * status, so a failure ends the run on every rank alike. */
    int (*resume)(void *ctx, ap_train_state *st, int *resumed, char *err, size_t errlen);
    /* Called every ckpt_every_steps and after the last step. */
    int (*save)(void *ctx, const ap_train_state *st, char *err, size_t errlen);
    void *ctx;
    /* Called after every step but the last (collective: every rank gets the
     * same answer): 1 = save now and stop (preemption), 0 = go on, < 0 error.
     * May be NULL. */
    int (*stop)(void *ctx, long steps_done, char *err, size_t errlen);
} ap_checkpoint_hooks;

/* Installs the checkpoint implementation (NULL: none; the loop then saves nothing). */
void ap_train_set_checkpoint_hooks(const ap_checkpoint_hooks *h);

/* The loop. val may be NULL. cfg (may be NULL) is passed to the checkpoint
 * hooks. Returns 0, or -1 with the message in err (a non-finite loss or grad
 * norm sets res->nonfinite and names the step and the value). */
int ap_train_loop(const ap_train_opts *o, ap_step_engine *e, ap_loader *train, const ap_dataset *val,
                  const struct ap_config *cfg, ap_train_result *res, char *err, size_t errlen);

/* Mean loss of the engine's model over a dataset (the sum over label tokens /
 * their count, whatever the training scaling), handing the engine n_micro
 * microbatches of mb samples per forward call (the last call may carry fewer
 * microbatches; a last partial microbatch is padded with label-free rows).
 * *n_tokens gets the label count. The loop validates with the training
 * step's n_micro, so a pipeline runs n_micro microbatches per round trip. */
int ap_eval_loss_batched(ap_step_engine *e, const ap_dataset *d, int n_micro, int mb, double *mean_loss,
                         long *n_tokens, char *err, size_t errlen);
/* ap_eval_loss_batched with one microbatch per call (`autopipe eval`). */
int ap_eval_loss(ap_step_engine *e, const ap_dataset *d, int mb, double *mean_loss, long *n_tokens, char *err,
                 size_t errlen);

/* ---- commands (trainer/train_cmd.c) ---- */
/* Loop options from the config (single process: dp 1). */
void ap_train_opts_from_config(ap_train_opts *o, const struct ap_config *cfg, const ap_model_config *mc, int threads);
/* `autopipe train` after its config is loaded: builds the model and data,
 * runs the loop; returns the exit status (0, 1 failure or NaN, 2 config). */
int ap_train_main(const struct ap_config *cfg);
/* The debug summary (trainer/plan.c's ap_plan_print: pp degree, every rank's
 * stages, schedule, microbatches, per-stage parameters and %, estimated
 * activation memory per rank, modules): what `autopipe plan` prints and
 * `autopipe train` prints first (`--dry-run`: and stops). 0 or -1. */
int ap_train_print_summary(FILE *f, const struct ap_config *cfg, const ap_model_config *mc, char *err,
                           size_t errlen);
int ap_cmd_train(int argc, char **argv);
int ap_cmd_eval(int argc, char **argv);

#endif
