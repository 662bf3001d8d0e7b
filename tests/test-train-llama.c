/* test-train-llama.c - the training loop on a tiny Llama (trainer/llama.h):
 * loss falls on the built-in text, gradient accumulation and microbatch
 * splits give the same parameters, a NaN stops the run. */
#include "kernels/kernels.h"
#include "tests/tap.h"
#include "tests/train_opts.h"
#include "trainer/data.h"
#include "trainer/llama.h"
#include "trainer/tokenizer.h"
#include "trainer/train.h"

static ap_model_config tiny_config(void) {
    ap_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.model_type = AP_MODEL_LLAMA;
    mc.vocab_size = AP_BYTE_VOCAB;
    mc.hidden_size = 32;
    mc.intermediate_size = 86;
    mc.num_hidden_layers = 2;
    mc.num_attention_heads = 4;
    mc.num_key_value_heads = 2;
    mc.head_dim = 8;
    mc.max_position_embeddings = 64;
    mc.rms_norm_eps = 1e-5;
    mc.rope_theta = 10000;
    mc.initializer_range = 0.02;
    mc.bos_token_id = AP_BYTE_BOS;
    mc.eos_token_id = AP_BYTE_EOS;
    mc.pad_token_id = AP_BYTE_PAD;
    return mc;
}

/* the shared start (tests/train_opts.h) at this model's learning rate */
static ap_train_opts base_opts(int T) { return test_train_opts(T, 1e-3, 1e-2); }

static ap_stage *run(const ap_train_opts *o, ap_dataset *d, ap_train_result *res, char *err, size_t errlen, int *rc) {
    ap_model_config mc = tiny_config();
    ap_stage *s = NULL;
    if (ap_llama_stage_create(&s, &mc, 0, mc.num_hidden_layers, 1, 1, o->micro_batch_size, o->seq_len, 1, 0, err,
                              errlen) < 0) {
        *rc = -1;
        return NULL;
    }
    ap_llama_init_params(s, 7);
    ap_step_engine e;
    ap_step_engine_single(&e, &s);
    ap_loader l;
    ap_loader_init(&l, d, 1, 1234, err, errlen);
    *rc = ap_train_loop(o, &e, &l, NULL, NULL, res, err, errlen);
    ap_loader_free(&l);
    return s;
}

static double max_rel_diff(const ap_stage *a, const ap_stage *b) {
    return tap_max_rel_err(a->params, b->params, a->n_params, 1e-3);
}

int main(void) {
    char err[512];
    const int T = 32;
    ap_kernels_set_threads(1);
    ap_data_opts dopt = {.path = NULL, .seq_len = T, .vocab_size = AP_BYTE_VOCAB, .pad_id = AP_BYTE_PAD};
    ap_dataset *d = NULL;
    ok(ap_dataset_open(&d, &dopt, err, sizeof err) == 0, "built-in text");
    if (!d) return tap_done();

    ap_train_opts o = base_opts(T);
    ap_train_result r;
    int rc;
    ap_stage *s = run(&o, d, &r, err, sizeof err, &rc);
    ok(rc == 0 && r.steps == 30, "30 steps of a tiny Llama: %s", rc ? err : "ok");
    ok(fabs(r.first_loss - log(259.0)) < 0.1, "first loss ~ ln(259) (%.4f)", r.first_loss);
    ok(r.last_loss < r.first_loss - 2.0, "loss fell by more than 2 nats (%.3f -> %.3f)", r.first_loss, r.last_loss);
    ap_stage_destroy(s);

    ap_train_opts a = base_opts(T), b = base_opts(T);
    a.max_steps = b.max_steps = 5;
    a.batch_size = 4;
    a.grad_acc_steps = 2;
    ap_train_result ra, rb;
    int ca, cb;
    ap_stage *sa = run(&a, d, &ra, err, sizeof err, &ca), *sb = run(&b, d, &rb, err, sizeof err, &cb);
    ok(ca == 0 && cb == 0 && fabs(ra.last_loss - rb.last_loss) <= 1e-6 && max_rel_diff(sa, sb) <= 1e-6,
       "grad_acc 2 x batch 4 == batch 8 (loss %.2e, params %.2e)", fabs(ra.last_loss - rb.last_loss),
       max_rel_diff(sa, sb));
    ap_stage_destroy(sa);
    ap_stage_destroy(sb);

    ap_train_opts m1 = base_opts(T), m8 = base_opts(T);
    m1.max_steps = m8.max_steps = 5;
    m1.micro_batch_size = 1;
    m8.micro_batch_size = 8;
    ap_train_result r1, r8;
    int c1, c8;
    ap_stage *s1 = run(&m1, d, &r1, err, sizeof err, &c1), *s8 = run(&m8, d, &r8, err, sizeof err, &c8);
    ok(c1 == 0 && c8 == 0 && fabs(r1.last_loss - r8.last_loss) <= 1e-5 && max_rel_diff(s1, s8) <= 1e-5,
       "microbatch 1 x 8 == 8 x 1 (loss %.2e, params %.2e)", fabs(r1.last_loss - r8.last_loss), max_rel_diff(s1, s8));
    ap_stage_destroy(s1);
    ap_stage_destroy(s8);

    /* an absurd learning rate blows the model up: the run stops, naming the step */
    o = base_opts(T);
    o.lr.init_lr = o.lr.max_lr = o.lr.min_lr = 1e30;
    o.max_norm = 0;
    o.max_steps = 20;
    s = run(&o, d, &r, err, sizeof err, &rc);
    ok(rc < 0 && strstr(err, "step ") && r.steps < 20, "absurd lr stops the run: %s%s%s", err,
       s ? " / " : "", s ? ap_llama_stage_error(s) : "");
    ok(r.nonfinite, "... as a non-finite loss or grad norm");
    ap_stage_destroy(s);

    /* a NaN weight reaches the loss as a NaN value (for the loop's non-finite
     * check), not as a forward error */
    {
        ap_model_config mc = tiny_config();
        ap_stage *sn = NULL;
        int32_t tok[2 * 16], lab[2 * 16];
        for (int i = 0; i < 2 * 16; i++) tok[i] = lab[i] = 65 + i % 7;
        double loss = 0;
        long cnt = 0;
        int frc = ap_llama_stage_create(&sn, &mc, 0, mc.num_hidden_layers, 1, 1, 2, 16, 1, 0, err, sizeof err);
        if (frc == 0) {
            ap_llama_init_params(sn, 7);
            for (size_t i = 0; i < sn->n_params; i++) sn->params[i] = NAN;
            frc = sn->ops->forward(sn, 0, tok, NULL, NULL, NULL, lab, &loss, &cnt);
        }
        ok(frc == 0 && loss != loss && cnt == 32, "NaN weights: forward succeeds with a NaN loss (rc %d, count %ld)",
           frc, cnt);
        ap_stage_destroy(sn);
    }
    ap_dataset_free(d);
    return tap_done();
}
