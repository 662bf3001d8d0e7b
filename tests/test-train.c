/* test-train.c - the training loop on a tiny model (tests/tiny-stage.h):
 * loss falls, gradient accumulation and microbatch splits give the same
 * step, NaN stops the run, metrics file, validation, checkpoint call sites. */
#include "tests/tap.h"
#include "tests/tiny-stage.h"
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

static ap_train_opts base_opts(int T) {
    ap_train_opts o = {0};
    o.max_steps = 30;
    o.grad_acc_steps = 1;
    o.batch_size = 8;
    o.micro_batch_size = 2;
    o.seq_len = T;
    o.dp_size = 1;
    o.lr = (ap_lr_schedule){.init_lr = 3e-3, .max_lr = 3e-2, .min_lr = 3e-3, .warmup_steps = 3, .decay_steps = 30,
                            .style = AP_LR_COSINE};
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.01;
    o.max_norm = 1.0;
    o.log_every_steps = 1;
    o.progress = 2;
    o.quiet = 1;
    o.is_log_rank = 1;
    return o;
}

/* Runs `steps` steps from a fresh seed-7 model; returns the stage (caller destroys). */
static ap_stage *run(const ap_train_opts *o, ap_dataset *d, ap_train_result *res, char *err, size_t errlen,
                     int *rc) {
    ap_stage *s = tiny_stage_create(AP_BYTE_VOCAB, 16, o->micro_batch_size, o->seq_len, 7);
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
    ap_stage *init = tiny_stage_create(AP_BYTE_VOCAB, 16, 2, T, 7);
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
    s = tiny_stage_create(AP_BYTE_VOCAB, 16, o.micro_batch_size, T, 7);
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
    s = tiny_stage_create(AP_BYTE_VOCAB, 16, o.micro_batch_size, T, 7);
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

    ap_dataset_free(all);
    ap_dataset_free(tr);
    ap_dataset_free(va);
    return tap_done();
}
