/* train.c - the training loop over an ap_step_engine (see train.h). */
#include "trainer/train.h"

#include "kernels/kernels.h"
#include "trainer/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the single-process engine ---- */

static const char *stage_msg(const char *what, int mb) {
    static __thread char buf[96];
    snprintf(buf, sizeof buf, "%s of microbatch %d failed", what, mb);
    return buf;
}

static int single_forward_backward(ap_step_engine *e, const ap_step_batch *b, float dloss, double *loss_sum,
                                   long *n_tokens, char *err, size_t errlen) {
    ap_stage *s = e->stages[0];
    size_t n = (size_t)b->mb * (size_t)b->T;
    for (int m = 0; m < b->n_micro; m++) {
        double ls = 0;
        long nt = 0;
        if (s->ops->forward(s, 0, b->tokens + m * n, b->pos ? b->pos + m * n : NULL, NULL, NULL, b->labels + m * n,
                            &ls, &nt) != 0)
            goto fail;
        float dl = dloss;
        if (b->mean_per_micro) { /* this microbatch's mean, weighted by dloss (as the executor does) */
            dl = nt ? (float)((double)dloss / (double)nt) : 0.0f;
            *loss_sum += nt ? ls / (double)nt : 0.0;
            *n_tokens += 1;
        } else {
            *loss_sum += ls;
            *n_tokens += nt;
        }
        if (s->ops->backward(s, 0, NULL, dl, NULL) != 0) goto fail;
        continue;
    fail:
        snprintf(err, errlen, "%s", stage_msg("forward/backward", m));
        return -1;
    }
    return 0;
}

static int single_forward(ap_step_engine *e, const ap_step_batch *b, double *loss_sum, long *n_tokens, char *err,
                          size_t errlen) {
    ap_stage *s = e->stages[0];
    size_t n = (size_t)b->mb * (size_t)b->T;
    for (int m = 0; m < b->n_micro; m++) {
        if (s->ops->forward(s, -1, b->tokens + m * n, b->pos ? b->pos + m * n : NULL, NULL, NULL, b->labels + m * n,
                            loss_sum, n_tokens) != 0) {
            snprintf(err, errlen, "%s", stage_msg("forward", m));
            return -1;
        }
    }
    return 0;
}

void ap_step_engine_single(ap_step_engine *e, ap_stage **stage) {
    memset(e, 0, sizeof *e);
    e->forward_backward = single_forward_backward;
    e->forward = single_forward;
    e->stages = stage;
    e->n_stages = 1;
}

static int reduce(ap_step_engine *e, double *v, int n, int op_max, enum ap_reduce_scope scope, char *err,
                  size_t errlen) {
    return e->allreduce ? e->allreduce(e, v, n, op_max, scope, err, errlen) : 0;
}

/* Every gradient of the engine's stages: sum of squares, or max |g|. */
static double stages_grad_sumsq(ap_step_engine *e, int norm_inf) {
    double acc = 0;
    for (int i = 0; i < e->n_stages; i++) {
        const ap_stage *s = e->stages[i];
        if (norm_inf) {
            double a = (double)ap_absmax(s->grads, s->n_params);
            acc = isnan(a) || isnan(acc) ? NAN : fmax(acc, a); /* fmax would drop a NaN */
        } else {
            acc += ap_sumsq(s->grads, s->n_params);
        }
    }
    return acc;
}

/* ---- AdamW state (the update is kernels' ap_adamw_update, torch.optim.AdamW semantics) ---- */

typedef struct {
    float *m, *v;        /* (n_params) each */
    uint8_t *decay;      /* (n_params): 1 where weight decay applies */
} adam_state;

static int adam_init(adam_state *a, const ap_stage *s) {
    a->m = calloc(s->n_params, sizeof(float));
    a->v = calloc(s->n_params, sizeof(float));
    a->decay = malloc(s->n_params ? s->n_params : 1);
    if (!a->m || !a->v || !a->decay) return -1;
    /* anything no ref covers (padding in the carve) is left undecayed */
    memset(a->decay, 0, s->n_params);
    for (int r = 0; r < s->n_refs; r++) {
        const ap_param_ref *p = &s->refs[r];
        memset(a->decay + (p->param - s->params), !p->no_decay, p->numel);
    }
    return 0;
}

static void adam_free(adam_state *a) {
    free(a->m);
    free(a->v);
    free(a->decay);
}

/* ---- checkpoint call sites (the checkpoint part installs the hooks) ---- */

static ap_checkpoint_hooks g_ckpt;

void ap_train_set_checkpoint_hooks(const ap_checkpoint_hooks *h) {
    if (h) g_ckpt = *h;
    else memset(&g_ckpt, 0, sizeof g_ckpt);
}

static int train_checkpoint_resume(ap_train_state *st, int *resumed, char *err, size_t errlen) {
    *resumed = 0;
    return g_ckpt.resume ? g_ckpt.resume(g_ckpt.ctx, st, resumed, err, errlen) : 0;
}

static int train_checkpoint_save(const ap_train_state *st, char *err, size_t errlen) {
    return g_ckpt.save ? g_ckpt.save(g_ckpt.ctx, st, err, errlen) : 0;
}

static int train_checkpoint_stop(long steps_done, char *err, size_t errlen) {
    return g_ckpt.stop ? g_ckpt.stop(g_ckpt.ctx, steps_done, err, errlen) : 0;
}

/* ---- the loop ---- */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int check_opts(const ap_train_opts *o, const ap_step_engine *e, char *err, size_t errlen) {
    if (o->micro_batch_size < 1 || o->batch_size % o->micro_batch_size != 0) {
        snprintf(err, errlen, "dataloader.batch_size (%d) must be a multiple of autopipeline.pp_microbatch_size (%d)",
                 o->batch_size, o->micro_batch_size);
        return -1;
    }
    if (o->grad_acc_steps < 1 || o->seq_len < 1 || o->dp_size < 1 || o->dp_rank < 0 || o->dp_rank >= o->dp_size) {
        snprintf(err, errlen, "grad_acc_steps (%d), seq_len (%d) must be >= 1 and dp_rank (%d) < dp_size (%d)",
                 o->grad_acc_steps, o->seq_len, o->dp_rank, o->dp_size);
        return -1;
    }
    for (int i = 0; i < e->n_stages; i++) {
        const ap_stage *s = e->stages[i];
        if (s->B != o->micro_batch_size || s->T != o->seq_len) {
            snprintf(err, errlen, "stage %d was built for microbatch %d x %d, the loop runs %d x %d", s->stage_id,
                     s->B, s->T, o->micro_batch_size, o->seq_len);
            return -1;
        }
    }
    return ap_lr_check(&o->lr, err, errlen);
}

int ap_eval_loss(ap_step_engine *e, const ap_dataset *d, int mb, double *mean_loss, long *n_tokens, char *err,
                 size_t errlen) {
    return ap_eval_loss_batched(e, d, 1, mb, mean_loss, n_tokens, err, errlen);
}

int ap_eval_loss_batched(ap_step_engine *e, const ap_dataset *d, int n_micro, int mb, double *mean_loss,
                         long *n_tokens, char *err, size_t errlen) {
    if (n_micro < 1 || mb < 1) {
        snprintf(err, errlen, "validation: %d microbatches of %d samples per call (need >= 1 each)", n_micro, mb);
        return -1;
    }
    size_t T = (size_t)ap_dataset_seq_len(d), n = ap_dataset_len(d), rows = (size_t)n_micro * (size_t)mb;
    int32_t *tok = malloc(rows * T * sizeof *tok), *lab = malloc(rows * T * sizeof *lab);
    const int with_pos = ap_dataset_has_positions(d); /* packed SFT */
    int32_t *pos = with_pos ? malloc(rows * T * sizeof *pos) : NULL;
    if (!tok || !lab || (with_pos && !pos)) {
        free(tok);
        free(lab);
        free(pos);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    double loss = 0;
    long count = 0;
    int rv = 0;
    for (size_t i = 0; i < n && rv == 0; i += rows) {
        /* whole microbatches of what is left (a pipeline runs them in one round trip) */
        size_t left = n - i, nm = left >= rows ? (size_t)n_micro : (left + (size_t)mb - 1) / (size_t)mb;
        for (size_t b = 0; b < nm * (size_t)mb; b++) {
            if (i + b < n) {
                ap_dataset_get(d, i + b, tok + b * T, lab + b * T, pos ? pos + b * T : NULL);
            } else { /* the stage takes whole microbatches: pad rows carry no labels */
                for (size_t t = 0; t < T; t++) {
                    tok[b * T + t] = tok[t];
                    lab[b * T + t] = AP_IGNORE_INDEX;
                    if (pos) pos[b * T + t] = (int32_t)t;
                }
            }
        }
        ap_step_batch batch = {(int)nm, mb, (int)T, tok, lab, 0, pos};
        rv = e->forward(e, &batch, &loss, &count, err, errlen);
    }
    free(tok);
    free(lab);
    free(pos);
    if (rv) return -1;
    double v[2] = {loss, (double)count};
    if (reduce(e, v, 2, 0, AP_REDUCE_MODEL, err, errlen) < 0) return -1;
    *n_tokens = (long)v[1];
    *mean_loss = v[1] > 0 ? v[0] / v[1] : NAN;
    return 0;
}

int ap_train_loop(const ap_train_opts *o, ap_step_engine *e, ap_loader *train, const ap_dataset *val,
                  const struct ap_config *cfg, ap_train_result *res, char *err, size_t errlen) {
    memset(res, 0, sizeof *res);
    res->first_loss = res->last_loss = res->last_val_loss = NAN;
    if (check_opts(o, e, err, errlen) < 0) return -1;
    const size_t T = (size_t)o->seq_len;
    const int n_micro = o->batch_size / o->micro_batch_size;
    /* each rank loads the batch of every dp rank: it keeps its share and
     * counts the label tokens of all of them without communicating */
    const size_t batch_all = (size_t)o->batch_size * (size_t)o->dp_size;
    const size_t step_rows = batch_all * (size_t)o->grad_acc_steps;
    int32_t *tok = malloc(step_rows * T * sizeof *tok), *lab = malloc(step_rows * T * sizeof *lab);
    /* packed SFT: position ids that keep attention within each example */
    const int with_pos = ap_dataset_has_positions(train->ds);
    int32_t *pos = with_pos ? malloc(step_rows * T * sizeof *pos) : NULL;
    adam_state *adam = calloc((size_t)e->n_stages, sizeof *adam);
    float **am = calloc((size_t)e->n_stages, sizeof *am), **av = calloc((size_t)e->n_stages, sizeof *av);
    ap_metrics met;
    int met_open = 0, rv = -1;
    if (!tok || !lab || (with_pos && !pos) || !adam || !am || !av) {
        snprintf(err, errlen, "out of memory for %zu samples of %zu tokens", step_rows, T);
        goto done;
    }
    for (int i = 0; i < e->n_stages; i++) {
        if (adam_init(&adam[i], e->stages[i]) < 0) {
            snprintf(err, errlen, "out of memory for the optimizer state of stage %d", e->stages[i]->stage_id);
            goto done;
        }
        am[i] = adam[i].m;
        av[i] = adam[i].v;
    }
    ap_train_state st = {0, train->st, e->stages, e->n_stages, am, av, cfg};
    int resumed;
    if (train_checkpoint_resume(&st, &resumed, err, errlen) < 0) {
        res->agreed_failure = 1;
        goto done;
    }
    if (resumed && ap_loader_set_state(train, &st.data, err, errlen) < 0) goto done;
    long step = st.step;

    /* a resumed run appends to the metrics file of the run it continues */
    const char *mpath = o->is_log_rank && !o->quiet ? o->metrics_file : NULL;
    if (ap_metrics_open(&met, stdout, resumed ? NULL : mpath, o->quiet || !o->is_log_rank ? 2 : o->progress,
                        o->log_every_steps, err, errlen) < 0)
        goto done;
    met_open = 1;
    if (resumed && mpath && !(met.jsonl = fopen(mpath, "a"))) {
        snprintf(err, errlen, "logging.metrics_file %s: cannot append: %s", mpath, strerror(errno));
        goto done;
    }
    if (resumed && o->is_log_rank && !o->quiet) ap_metrics_note(&met, "resumed at step %ld", step);

    for (; step < o->max_steps; step++) {
        double t0 = now_s();
        /* 1. the step's data, and its label-token count N before any backward */
        if (ap_loader_next(train, (int)step_rows, tok, lab, pos, err, errlen) < 0) goto done;
        long n_label = 0;
        for (size_t i = 0; i < step_rows * T; i++) n_label += lab[i] != AP_IGNORE_INDEX;
        if (n_label == 0) {
            snprintf(err, errlen, "step %ld: no label tokens in the step's %zu samples", step + 1, step_rows);
            goto done;
        }
        /* scale_grads_in_schedule: every microbatch mean weighs 1/M */
        const long n_units = o->scale_grads_in_schedule ? (long)n_micro * o->grad_acc_steps * o->dp_size : n_label;
        float dloss = (float)(1.0 / (double)n_units);

        /* 2. forward + backward of every microbatch of every accumulated batch */
        for (int i = 0; i < e->n_stages; i++) memset(e->stages[i]->grads, 0, e->stages[i]->n_params * sizeof(float));
        double loss_sum = 0;
        long counted = 0;
        for (int a = 0; a < o->grad_acc_steps; a++) {
            size_t row = (size_t)a * batch_all + (size_t)o->dp_rank * (size_t)o->batch_size;
            ap_step_batch b = {n_micro, o->micro_batch_size, (int)T, tok + row * T, lab + row * T,
                               o->scale_grads_in_schedule, pos ? pos + row * T : NULL};
            if (e->forward_backward(e, &b, dloss, &loss_sum, &counted, err, errlen) < 0) goto done;
        }
        if (e->sync_grads && e->sync_grads(e, err, errlen) < 0) goto done;

        /* 3. loss and global grad norm */
        double lv[1] = {loss_sum};
        if (reduce(e, lv, 1, 0, AP_REDUCE_ALL, err, errlen) < 0) goto done;
        double loss = lv[0] / (double)n_units;
        double gn[1] = {e->grad_sumsq ? e->grad_sumsq(e, o->norm_inf) : stages_grad_sumsq(e, o->norm_inf)};
        if (reduce(e, gn, 1, o->norm_inf, AP_REDUCE_MODEL, err, errlen) < 0) goto done;
        double norm = o->norm_inf ? gn[0] : sqrt(gn[0]);
        if (step == st.step) res->first_loss = loss;
        res->last_loss = loss;
        res->last_grad_norm = norm;
        if (!isfinite(loss) || !isfinite(norm)) {
            res->nonfinite = 1;
            const char *what = !isfinite(loss) && !isfinite(norm) ? "the loss and the gradient norm are"
                               : !isfinite(loss)                    ? "the loss is"
                                                                    : "the gradient norm is";
            snprintf(err, errlen, "step %ld: %s not finite (loss %g, grad norm %g); stopped before the update",
                     step + 1, what, fabs(loss), fabs(norm));
            goto done;
        }

        /* 4. clip (torch.nn.utils.clip_grad_norm_) and update */
        float scale = 1.0f;
        if (o->max_norm > 0) {
            double c = o->max_norm / (norm + 1e-6);
            if (c < 1) scale = (float)c;
        }
        double lr = ap_lr_at(&o->lr, step);
        ap_adamw_hparams hp = {(float)lr, (float)o->beta1, (float)o->beta2, (float)o->eps, (float)o->weight_decay};
        for (int i = 0; i < e->n_stages; i++) {
            ap_stage *s = e->stages[i];
            ap_adamw_update(s->params, adam[i].m, adam[i].v, s->grads, s->n_params, adam[i].decay, scale, step + 1,
                            &hp);
        }
        res->steps = step + 1;

        /* 5. report */
        double dt = now_s() - t0;
        double tps = (double)(step_rows * T) / (dt > 0 ? dt : 1e-9);
        ap_step_metrics sm = {step + 1, o->max_steps, loss, norm, lr, tps,
                              o->flops_per_token > 0 && o->peak_flops > 0 ? o->flops_per_token * tps / o->peak_flops
                                                                         : -1,
                              dt, ap_peak_rss_mib(), n_label, e->bubble ? e->bubble(e) : -1};
        if (o->is_log_rank && !o->quiet) ap_metrics_step(&met, &sm);

        /* 6. validation and checkpoints */
        if (val && o->val_every_steps > 0 && ((step + 1) % o->val_every_steps == 0 || step + 1 == o->max_steps)) {
            double vl;
            long vn;
            if (ap_eval_loss_batched(e, val, n_micro, o->micro_batch_size, &vl, &vn, err, errlen) < 0) goto done;
            res->last_val_loss = vl;
            if (o->is_log_rank && !o->quiet) ap_metrics_val(&met, step + 1, vl, vn);
        }
        int saved = 0;
        if ((o->ckpt_every_steps > 0 && (step + 1) % o->ckpt_every_steps == 0) || step + 1 == o->max_steps) {
            st.step = step + 1;
            st.data = train->st;
            if (train_checkpoint_save(&st, err, errlen) < 0) goto done;
            saved = 1;
        }
        /* 7. preemption: every rank agrees at this step boundary */
        if (step + 1 < o->max_steps) {
            int stop = train_checkpoint_stop(step + 1, err, errlen);
            if (stop < 0) goto done;
            if (stop) {
                if (!saved) {
                    st.step = step + 1;
                    st.data = train->st;
                    if (train_checkpoint_save(&st, err, errlen) < 0) goto done;
                }
                res->preempted = 1;
                if (o->is_log_rank && !o->quiet)
                    ap_metrics_note(&met, "stop requested (signal): checkpoint of step %ld saved, exiting", step + 1);
                break;
            }
        }
    }
    rv = 0;
done:
    if (met_open) ap_metrics_close(&met);
    for (int i = 0; adam && i < e->n_stages; i++) adam_free(&adam[i]);
    free(adam);
    free(am);
    free(av);
    free(tok);
    free(lab);
    free(pos);
    return rv;
}
