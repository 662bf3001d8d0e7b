/* executor.h - runs one rank's lowered pipeline schedule over its local stages.
 *
 * Every pp rank holds one or more stages (trainer/stage.h) and an ordered list
 * of actions (stage, F|B|I|W|SEND_F|RECV_F|SEND_B|RECV_B, microbatch) produced
 * by the schedule generators and their lowering pass. The executor:
 *   - posts a receive at its RECV action (buffers sized B*T*C from the
 *     stages, no shape exchange) and waits on it only in the compute that
 *     reads it, as torch.distributed.pipelining does: time blocked there is
 *     the measured bubble;
 *   - sends with MPI_Isend on the pp communicator, one tag per
 *     (stage boundary, microbatch, direction), and waits for the sends at the
 *     end of the step;
 *   - keeps activation buffers in per-stage pools sized by what the schedule
 *     holds in flight, not by the number of microbatches;
 *   - passes activations between neighbouring stages of the same rank in
 *     memory (no message);
 *   - feeds token ids to the first stage only and labels to the last only;
 *   - scales the loss so that gradients equal one-process training on the
 *     whole global batch (sum over label tokens / label tokens of all
 *     microbatches and dp ranks), or per-microbatch means / microbatches
 *     (scale_grads_in_schedule);
 *   - starts bucketed MPI_Iallreduce of a stage's grads over dp as soon as
 *     its last backward (B or W) of the step is done;
 *   - sums the grads of tied embeddings between the first and last stage.
 *
 * Collective calls (steps, clipping, eval) must be made by every rank of the
 * pp x dp mesh in the same order. */
#ifndef AP_EXECUTOR_H
#define AP_EXECUTOR_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "trainer/schedule/schedule.h"
#include "trainer/stage.h"

typedef struct ap_executor ap_executor;


typedef struct {
    MPI_Comm pp_comm;          /* the pipeline group of this rank */
    MPI_Comm dp_comm;          /* data-parallel group; MPI_COMM_NULL = no dp */
    int num_stages;            /* stages of the whole pipeline */
    const int *stage_rank;     /* (num_stages) pp rank holding each stage */
    ap_stage **stages;         /* this rank's stages, any order */
    int n_local;
    int num_microbatches;      /* per step and dp rank */
    const ap_action *actions; /* this rank's lowered action list */
    int n_actions;
    int scale_grads_in_schedule; /* per-microbatch mean loss, grads / microbatches */
    int tie_word_embeddings;   /* sum embed grads of the first and last stage */
    size_t dp_bucket_numel;    /* floats per dp all-reduce bucket; 0 = 4 Mi */
    const char *trace_path;    /* Chrome trace-event JSON written at destroy; NULL = none */
} ap_executor_config;

typedef struct {
    double loss;          /* mean loss of the global batch, same on every rank */
    long n_tokens;        /* label tokens of the global batch */
    double step_s;        /* wall time of the step on this rank */
    double wait_s;        /* time blocked waiting on receives */
    double bubble;        /* wait_s / step_s on this rank */
    double bubble_max;    /* the largest bubble fraction over the pp x dp ranks */
} ap_step_stats;

/* Checks the action list against the stages (every local stage known, every
 * F/B/I/W/SEND/RECV refers to a local stage and a valid microbatch, sends and
 * receives only across ranks, one of each per stage and microbatch, enough
 * activation slots) and allocates the buffers. Collective over pp_comm: when
 * any pp rank fails, every one returns -1 (the others with "another pp rank
 * failed"), so no rank waits on a peer that gave up. Then the last stage's
 * tied embedding takes the first stage's values. */
int ap_executor_create(ap_executor **out, const ap_executor_config *cfg, char *err, size_t errlen);
void ap_executor_destroy(ap_executor *ex);

/* Forward and backward of one batch of this dp rank: tokens and labels are
 * (num_microbatches * B, T) row-major, tokens read only when this rank holds
 * the first stage, labels only when it holds the last (either may be NULL
 * otherwise). Grads accumulate (+=). dloss: the gradient of the loss w.r.t.
 * its sum (1 / label tokens of the whole optimizer step over all dp ranks);
 * with scale_grads_in_schedule the weight of one microbatch's mean loss
 * (1 / microbatches of the whole step over all dp ranks): a microbatch of
 * n_m label tokens runs backward with dloss / n_m (0 when n_m = 0).
 * last_of_step: start each stage's dp
 * all-reduce as soon as its last backward is done. Adds this rank's summed
 * loss and label count (the last stage's; per-microbatch means and
 * microbatches with scale_grads_in_schedule) to *loss_sum, *n_tokens.
 * pos: (microbatches, B, T) position ids of packed rows, given to every
 * stage, or NULL. */
int ap_executor_forward_backward(ap_executor *ex, const int32_t *tokens, const int32_t *labels, const int32_t *pos,
                                 float dloss, int last_of_step, double *loss_sum, long *n_tokens, char *err,
                                 size_t errlen);

/* Once per optimizer step, after the last forward_backward: finishes the dp
 * all-reduce (sum) and sums the tied embedding grads of the first and last
 * stage, so every copy is equal. */
int ap_executor_sync_grads(ap_executor *ex, char *err, size_t errlen);

/* Of the last synced step on this rank: wall time from its first
 * forward_backward to the end of sync_grads, and the time blocked on receives. */
void ap_executor_last_bubble(const ap_executor *ex, double *step_s, double *wait_s);

/* No-grad forward of n_micro microbatches (any count) in the schedule's
 * forward order; adds this rank's loss sum and label count. pos as above. */
int ap_executor_forward(ap_executor *ex, const int32_t *tokens, const int32_t *labels, const int32_t *pos,
                        int n_micro, double *loss_sum, long *n_tokens, char *err, size_t errlen);

/* A whole step on top of the above: zero grads (zero_grads), count labels
 * over dp (total_tokens <= 0) or take total_tokens, forward_backward with
 * dloss = 1/N (scale_grads_in_schedule: 1 / (microbatches x dp)), sync (sync_grads), and the global mean loss and bubble
 * figures in *st on every rank. */
int ap_executor_step(ap_executor *ex, const int32_t *tokens, const int32_t *labels, int zero_grads,
                     int sync_grads, long total_tokens, ap_step_stats *st, char *err, size_t errlen);

/* Label tokens (!= -100) of this per-dp-rank batch summed over dp, on every
 * rank; labels may be NULL on ranks without the last stage. */
long ap_executor_count_labels(ap_executor *ex, const int32_t *labels);

/* Forward-only validation over num_microbatches: the mean loss over label
 * tokens of the batch across dp, on every rank. */
int ap_executor_eval(ap_executor *ex, const int32_t *tokens, const int32_t *labels, double *loss,
                     char *err, size_t errlen);

/* Gradient norm over every stage and dp rank (2-norm, or the max for
 * norm_type = inf), counting a tied tensor once; when max_norm > 0 scales the
 * grads by max_norm / (norm + 1e-6) if that is < 1 (torch's clip_grad_norm_).
 * Identical on every rank. Returns the norm before clipping. */
double ap_executor_clip_grad_norm(ap_executor *ex, double max_norm, double norm_type);

/* This rank's share of the global gradient norm: the sum of squares (inf:
 * the max |g|) of every local gradient, leaving out the last stage's copy of
 * a tied embedding (the first stage counts the tensor). NaN propagates. Sum
 * (max) it over pp for the norm: dp replicas hold equal grads after
 * sync_grads. What clip_grad_norm and the loop's pipeline engine use. */
double ap_executor_grad_sumsq(const ap_executor *ex, int inf);

/* 1 when created with scale_grads_in_schedule. */
int ap_executor_scale_in_schedule(const ap_executor *ex);

/* Activation buffers this rank holds in its pools (inputs, output grads and
 * send buffers of every local stage): what the schedule keeps in flight. */
int ap_executor_act_buffers(const ap_executor *ex);

/* Mean measured time (s) of the compute actions of `type` (F, B, I, W) of a
 * local stage over the training steps so far (timing includes waits for a
 * local neighbour, never for messages: those are RECV actions). -1 when this
 * rank does not hold the stage or ran no such action. For the simulator's
 * prediction from measured costs (bench). */
int ap_executor_action_cost(const ap_executor *ex, int stage, int type, double *mean_s);
void ap_executor_reset_costs(ap_executor *ex);

/* Multiplies every local gradient by 1/divisor (AutoPipeline's scale_grads_by_divisor). */
void ap_executor_scale_grads_by_divisor(ap_executor *ex, double divisor);

/* Peak number of microbatches in flight (F done, B or W not yet) for `stage`
 * in an action list: the activation slots that stage needs. */
int ap_executor_peak_slots(const ap_action *acts, int n, int stage);

#endif
