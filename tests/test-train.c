/* test-train.c - the training loop on a bigram model (tests/bigram_stage.h):
 * loss falls, gradient accumulation and microbatch splits give the same
 * step, NaN stops the run, metrics file, validation, checkpoint call sites. */
#include "tests/tap.h"
#include "tests/train_opts.h"
#include "tests/bigram_stage.h"
#include "trainer/data.h"
#include "trainer/tokenizer.h"
#include "trainer/train.h"

#include <unistd.h>

static ap_dataset *builtin(int T) {
    ap_data_opts o = {.path = NULL, .seq_len = T, .vocab_size = AP_BYTE_VOCAB, .pad_id = AP_BYTE_PAD};
    char err[256];
    ap_dataset *d = NULL;
    if (ap_dataset_open(&d, &o, err, sizeof err) < 0) diag("%s", err);
    return d;
}

/* the shared start (tests/train_opts.h) at this model's learning rate */
static ap_train_opts base_opts(int T) { return test_train_opts(T, 3e-3, 3e-2); }

/* Runs `steps` steps from a fresh seed-7 model; returns the stage (caller destroys). */
static ap_stage *run(const ap_train_opts *o, ap_dataset *d, ap_train_result *res, char *err, size_t errlen,
                     int *rc) {
    ap_stage *s = bigram_stage_create(AP_BYTE_VOCAB, 16, o->micro_batch_size, o->seq_len, 7);
    ap_step_engine e;
    ap_step_engine_single(&e, &s);
    ap_loader l;
    ap_loader_init(&l, d, 1, 1234, err, errlen);
    *rc = ap_train_loop(o, &e, &l, NULL, NULL, res, err, errlen);
    ap_loader_free(&l);
    return s;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static int saves, resumes;
static long saved_step;
static int hook_save(void *ctx, const ap_train_state *st, char *err, size_t errlen) {
    (void)ctx, (void)err, (void)errlen;
    saves++;
    saved_step = st->step;
    return 0;
}
static int hook_resume(void *ctx, ap_train_state *st, int *resumed, char *err, size_t errlen) {
    (void)ctx, (void)err, (void)errlen;
    resumes++;
    st->step = 25; /* pretend a checkpoint of step 25 was found */
    st->data.epoch = 0;
    st->data.index = 16;
    *resumed = 1;
    return 0;
}

/* An engine that counts the forward calls of validation and their microbatches. */
static int fwd_calls, fwd_micro_max;
static int (*inner_forward)(ap_step_engine *, const ap_step_batch *, double *, long *, char *, size_t);
static int counting_forward(ap_step_engine *e, const ap_step_batch *b, double *loss_sum, long *n_tokens, char *err,
                            size_t errlen) {
    fwd_calls++;
    if (b->n_micro > fwd_micro_max) fwd_micro_max = b->n_micro;
    return inner_forward(e, b, loss_sum, n_tokens, err, errlen);
}

int main(void) {
    char err[512];
    const int T = 32;
    ap_dataset *all = builtin(T), *tr, *va;
    ok(all && ap_dataset_split(all, 0.05, &tr, &va, err, sizeof err) == 0, "built-in data split");
    if (!all) return tap_done();

    /* 1. loss falls */
    ap_train_opts o = base_opts(T);
    ap_train_result r;
    int rc;
    ap_stage *s = run(&o, tr, &r, err, sizeof err, &rc);
    ok(rc == 0 && r.steps == 30, "30 steps ran: %s", rc ? err : "");
    diag("loss %.4f -> %.4f", r.first_loss, r.last_loss);
    ok(fabs(r.first_loss - log(259.0)) < 0.2, "first loss ~ ln(259) (%.3f)", r.first_loss);
    ok(r.last_loss < r.first_loss - 1.5, "loss fell by more than 1.5 nats (%.3f -> %.3f)", r.first_loss, r.last_loss);
    ap_stage_destroy(s);

    /* 2. grad accumulation: 2 x batch 4 == batch 8 */
    ap_train_opts a = base_opts(T), b = base_opts(T);
    a.max_steps = b.max_steps = 5;
    a.batch_size = 4;
    a.grad_acc_steps = 2;
    ap_train_result ra, rb;
    int rca, rcb;
    ap_stage *sa = run(&a, tr, &ra, err, sizeof err, &rca), *sb = run(&b, tr, &rb, err, sizeof err, &rcb);
    double dp = max_abs_diff(sa->params, sb->params, sa->n_params);
    ok(rca == 0 && rcb == 0 && fabs(ra.last_loss - rb.last_loss) <= 1e-6 && dp <= 1e-6,
       "grad_acc 2 x batch 4 == batch 8 (loss diff %.2e, param diff %.2e)", fabs(ra.last_loss - rb.last_loss), dp);
    ap_stage_destroy(sa);
    ap_stage_destroy(sb);

    /* 3. microbatch split: batch 8 as 1 x 8, 4 x 2, 8 x 1 */
    ap_train_opts m8 = base_opts(T), m1 = base_opts(T), m2 = base_opts(T);
    m8.max_steps = m1.max_steps = m2.max_steps = 5;
    m8.micro_batch_size = 8;
    m1.micro_batch_size = 1;
    ap_train_result r8, r1, r2;
    int c8, c1, c2;
    ap_stage *s8 = run(&m8, tr, &r8, err, sizeof err, &c8), *s1 = run(&m1, tr, &r1, err, sizeof err, &c1),
             *s2 = run(&m2, tr, &r2, err, sizeof err, &c2);
    double d81 = max_abs_diff(s8->params, s1->params, s8->n_params);
    double d82 = max_abs_diff(s8->params, s2->params, s8->n_params);
    ok(c8 == 0 && c1 == 0 && c2 == 0 && fabs(r8.last_loss - r1.last_loss) <= 1e-6 && d81 <= 1e-6 && d82 <= 1e-6,
       "microbatch 8 == 1 == 2 (param diffs %.2e %.2e)", d81, d82);
    ap_stage_destroy(s8);
    ap_stage_destroy(s1);
    ap_stage_destroy(s2);
    ap_train_opts bad = base_opts(T);
    bad.micro_batch_size = 3;
    s = run(&bad, tr, &r, err, sizeof err, &rc);
    ok(rc < 0 && strstr(err, "pp_microbatch_size"), "batch not a multiple of the microbatch: %s", err);
    ap_stage_destroy(s);

    /* weight decay: one step with wd 0.5 vs 0 differs by exactly lr * wd * p0
     * on decayed tensors and not at all on no_decay ones (the bias) */
    ap_train_opts w1 = base_opts(T), w0 = base_opts(T);
    w1.max_steps = w0.max_steps = 1;
    w1.lr.init_lr = w0.lr.init_lr = 0.1;
    w1.weight_decay = 0.5;
    w0.weight_decay = 0;
    ap_train_result rw1, rw0;
    int cw1, cw0;
    ap_stage *sw1 = run(&w1, tr, &rw1, err, sizeof err, &cw1), *sw0 = run(&w0, tr, &rw0, err, sizeof err, &cw0);
    ap_stage *init = bigram_stage_create(AP_BYTE_VOCAB, 16, 2, T, 7);
    size_t nw = 2 * (size_t)AP_BYTE_VOCAB * 16;
    double worst = 0, bias_diff = 0;
    for (size_t i = 0; i < nw; i++)
        worst = fmax(worst, fabs((double)sw0->params[i] - sw1->params[i] - 0.05 * init->params[i]));
    for (size_t i = nw; i < sw1->n_params; i++) bias_diff = fmax(bias_diff, fabs(sw0->params[i] - sw1->params[i]));
    ok(cw1 == 0 && cw0 == 0 && worst < 1e-7 && bias_diff == 0,
       "weight decay on weights (err %.1e), none on the no_decay bias (diff %.1e)", worst, bias_diff);
    ap_stage_destroy(sw1);
    ap_stage_destroy(sw0);
    ap_stage_destroy(init);

    /* 4. non-finite loss stops the run, naming the step */
    o = base_opts(T);
    s = bigram_stage_create(AP_BYTE_VOCAB, 16, o.micro_batch_size, T, 7);
    ap_step_engine e;
    ap_step_engine_single(&e, &s);
    ap_loader l;
    ap_loader_init(&l, tr, 1, 1234, err, sizeof err);
    o.max_steps = 3;
    ok(ap_train_loop(&o, &e, &l, NULL, NULL, &r, err, sizeof err) == 0, "3 clean steps");
    s->params[s->n_params - 1] = NAN; /* a bias entry: every logit row sees it */
    o.max_steps = 10;
    ap_loader_free(&l);
    ap_loader_init(&l, tr, 1, 1234, err, sizeof err);
    ok(ap_train_loop(&o, &e, &l, NULL, NULL, &r, err, sizeof err) < 0 && r.nonfinite && strstr(err, "step 1:") &&
           strstr(err, "not finite") && r.steps == 0,
       "NaN parameter: stops at step 1 before the update: %s", err);
    ap_loader_free(&l);
    o.norm_inf = 1;
    ap_loader_init(&l, tr, 1, 1234, err, sizeof err);
    ok(ap_train_loop(&o, &e, &l, NULL, NULL, &r, err, sizeof err) < 0 && r.nonfinite && isnan(r.last_grad_norm),
       "NaN survives the inf-norm too");
    ap_loader_free(&l);
    ap_stage_destroy(s);
    o = base_opts(T);
    o.norm_inf = 1;
    o.max_steps = 3;
    s = run(&o, tr, &r, err, sizeof err, &rc);
    float gmax = 0;
    for (size_t i = 0; i < s->n_params; i++) gmax = fmaxf(gmax, fabsf(s->grads[i]));
    ok(rc == 0 && fabs(r.last_grad_norm - gmax) <= 1e-7 * gmax, "inf-norm is the largest |grad| (%g)", gmax);
    ap_stage_destroy(s);
    o = base_opts(T);
    o.lr.max_lr = o.lr.init_lr = o.lr.min_lr = 1e38;
    o.max_norm = 0;
    o.weight_decay = 0;
    o.max_steps = 50;
    s = run(&o, tr, &r, err, sizeof err, &rc);
    ok(rc < 0 && r.nonfinite && strstr(err, "not finite") && r.steps < 50, "absurd lr: stopped at step %ld: %s",
       r.steps + 1, err);
    ap_stage_destroy(s);

    /* 5. metrics file, validation, checkpoint call sites */
    char dir[] = "/tmp/ap-test-train-XXXXXX", path[300];
    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/m.jsonl", dir);
    o = base_opts(T);
    o.max_steps = 30;
    o.val_every_steps = 10;
    o.ckpt_every_steps = 20;
    o.metrics_file = path;
    o.quiet = 0;
    ap_checkpoint_hooks h = {.resume = hook_resume, .save = hook_save};
    ap_train_set_checkpoint_hooks(&h);
    s = bigram_stage_create(AP_BYTE_VOCAB, 16, o.micro_batch_size, T, 7);
    ap_step_engine_single(&e, &s);
    ap_loader_init(&l, tr, 1, 1234, err, sizeof err);
    fflush(stdout);
    rc = ap_train_loop(&o, &e, &l, va, NULL, &r, err, sizeof err);
    ok(rc == 0 && resumes == 1 && r.steps == 30, "resume hook called once; run continues from step 25 to 30");
    ok(saves == 1 && saved_step == 30, "save hook at the end (step %ld, %d saves)", saved_step, saves);
    ok(l.st.index == 16 + 5 * 8, "loader restored to the checkpoint's position (index %lld)", (long long)l.st.index);
    ok(isfinite(r.last_val_loss) && fabs(r.last_val_loss - r.last_loss) < 1.0, "validation loss %.3f near train %.3f",
       r.last_val_loss, r.last_loss);
    ap_train_set_checkpoint_hooks(NULL);
    ap_loader_free(&l);
    ap_stage_destroy(s);
    FILE *f = fopen(path, "r");
    int steps = 0, vals = 0;
    char line[1024];
    while (f && fgets(line, sizeof line, f)) {
        steps += strstr(line, "\"loss\"") && strstr(line, "\"grad_norm\"") && strstr(line, "\"lr\"") &&
                 strstr(line, "\"tokens_per_s\"") && strstr(line, "\"peak_rss_mib\"");
        vals += strstr(line, "\"val_loss\"") != NULL;
    }
    if (f) fclose(f);
    ok(steps == 5 && vals == 1, "metrics JSONL: 5 step lines, 1 validation line (%d, %d)", steps, vals);
    unlink(path);
    rmdir(dir);

    /* 8. validation hands the engine n_micro microbatches per call; same loss as one per call */
    {
        ap_dataset *v13 = NULL;
        int sl = ap_dataset_len(va) >= 13 && ap_dataset_slice(&v13, va, 0, 13, err, sizeof err) == 0;
        ap_stage *sv = bigram_stage_create(AP_BYTE_VOCAB, 16, 2, T, 7);
        ap_step_engine ev;
        ap_step_engine_single(&ev, &sv);
        inner_forward = ev.forward;
        ev.forward = counting_forward;
        double l1 = NAN, l4 = NAN;
        long n1 = -1, n4 = -2;
        int r1 = sl ? ap_eval_loss(&ev, v13, 2, &l1, &n1, err, sizeof err) : -1;
        int calls1 = fwd_calls;
        fwd_calls = fwd_micro_max = 0;
        int r4 = sl ? ap_eval_loss_batched(&ev, v13, 4, 2, &l4, &n4, err, sizeof err) : -1;
        ok(r1 == 0 && calls1 == 7, "13 validation samples, microbatch 2, one per call: 7 forward calls (%d)", calls1);
        ok(r4 == 0 && fwd_calls == 2 && fwd_micro_max == 4,
           "4 microbatches per call: 2 forward calls (%d), the first with 4 microbatches (%d)", fwd_calls,
           fwd_micro_max);
        ok(r1 == 0 && r4 == 0 && n1 == n4 && n1 > 0 && fabs(l1 - l4) <= 1e-12 * fabs(l1),
           "same validation loss either way (%.9f over %ld, %.9f over %ld)", l1, n1, l4, n4);
        ok(ap_eval_loss_batched(&ev, v13, 0, 2, &l4, &n4, err, sizeof err) < 0 && strstr(err, "microbatches"),
           "0 microbatches per call refused: %s", err);
        ap_stage_destroy(sv);
        ap_dataset_free(v13);
    }

    /* 9. scale_grads_in_schedule (per-microbatch means averaged over microbatches): with
     * every microbatch fully labelled it equals the token mean, and accumulation is
     * transparent; the default and it differ once microbatches differ in label count */
    {
        ap_train_opts d0 = base_opts(T), d1 = base_opts(T), d2 = base_opts(T);
        d0.max_steps = d1.max_steps = d2.max_steps = 3;
        d1.scale_grads_in_schedule = d2.scale_grads_in_schedule = 1;
        d2.batch_size = 4;
        d2.grad_acc_steps = 2;
        ap_train_result q0, q1, q2;
        int e0, e1, e2;
        ap_stage *t0 = run(&d0, tr, &q0, err, sizeof err, &e0), *t1 = run(&d1, tr, &q1, err, sizeof err, &e1),
                 *t2 = run(&d2, tr, &q2, err, sizeof err, &e2);
        double p01 = max_abs_diff(t0->params, t1->params, t0->n_params);
        double p12 = max_abs_diff(t1->params, t2->params, t1->n_params);
        ok(e0 == 0 && e1 == 0 && fabs(q0.last_loss - q1.last_loss) <= 1e-6 && p01 <= 1e-6,
           "scale_grads_in_schedule, full labels: same as the token mean (param diff %.2e)", p01);
        ok(e1 == 0 && e2 == 0 && fabs(q1.last_loss - q2.last_loss) <= 1e-6 && p12 <= 1e-6,
           "scale_grads_in_schedule: grad_acc 2 x batch 4 == batch 8 (param diff %.2e)", p12);
        ap_stage_destroy(t0);
        ap_stage_destroy(t1);
        ap_stage_destroy(t2);
        /* two microbatches of one sample: 31 labels and 5 labels */
        ap_stage *u = bigram_stage_create(AP_BYTE_VOCAB, 16, 1, T, 7);
        ap_step_engine eu;
        ap_step_engine_single(&eu, &u);
        int32_t tk[2 * 32], lb[2 * 32];
        for (int i = 0; i < 2 * T; i++) {
            tk[i] = (i * 37 + 11) % 256;
            lb[i] = (i < T - 1) || (i >= T && i < T + 5) ? (i * 53 + 7) % 256 : AP_IGNORE_INDEX;
        }
        double ls0 = 0, ls1 = 0;
        long nt0 = 0, nt1 = 0;
        ap_step_batch b0 = {2, 1, T, tk, lb, 0, NULL}, b1 = {2, 1, T, tk, lb, 1, NULL};
        memset(u->grads, 0, u->n_params * sizeof(float));
        int f0 = eu.forward_backward(&eu, &b0, 1.0f / 36, &ls0, &nt0, err, sizeof err);
        float *g0 = malloc(u->n_params * sizeof(float));
        memcpy(g0, u->grads, u->n_params * sizeof(float));
        memset(u->grads, 0, u->n_params * sizeof(float));
        int f1 = eu.forward_backward(&eu, &b1, 0.5f, &ls1, &nt1, err, sizeof err);
        double gd = max_abs_diff(g0, u->grads, u->n_params);
        ok(f0 == 0 && f1 == 0 && nt0 == 36 && nt1 == 2 && fabs(ls0 / 36 - ls1 / 2) > 1e-4 && gd > 1e-6,
           "microbatches of 31 and 5 labels: token mean %.5f != mean of microbatch means %.5f, grads differ (%.2e)",
           ls0 / 36, ls1 / 2, gd);
        free(g0);
        ap_stage_destroy(u);
    }

    ap_dataset_free(all);
    ap_dataset_free(tr);
    ap_dataset_free(va);
    return tap_done();
}
