/* test-generate.c - eval and generate on a tiny Llama written as a Hugging
 * Face directory: loading gives the same loss, the greedy pick is the token
 * the model scores best, sampling is seeded, and the CLI agrees. */
#include "checkpoint/safetensors.h"
#include "kernels/kernels.h"
#include "tests/tap.h"
#include "trainer/data.h"
#include "trainer/generate.h"
#include "trainer/hf_config.h"
#include "trainer/hf_load.h"
#include "trainer/llama.h"
#include "trainer/tokenizer.h"
#include "trainer/train.h"

#include <unistd.h>

static ap_model_config tiny_config(void) {
    ap_model_config mc;
    ap_hf_config_defaults(&mc, AP_MODEL_LLAMA);
    mc.vocab_size = AP_BYTE_VOCAB;
    mc.hidden_size = 32;
    mc.intermediate_size = 86;
    mc.num_hidden_layers = 2;
    mc.num_attention_heads = 4;
    mc.num_key_value_heads = 2;
    mc.head_dim = 8;
    mc.max_position_embeddings = 64;
    mc.bos_token_id = AP_BYTE_BOS;
    mc.eos_token_id = AP_BYTE_EOS;
    mc.pad_token_id = AP_BYTE_PAD;
    return mc;
}

/* The KV cache against rerunning the context: for a model of each kind (GQA,
 * a sliding window, q/k norms with bias-free heads of another size, Gemma's
 * norms, embeddings scale and GeGLU), the next-token logits after every
 * prefix of 1..W+3 tokens (W = the window, so the last ones slide it) agree. */
static void test_kv_cache(void) {
    enum { W = 12 };
    for (int kind = 0; kind < 4; kind++) {
        ap_model_config mc = tiny_config();
        const char *name = "llama (GQA)";
        if (kind == 1) mc.model_type = AP_MODEL_MISTRAL, mc.sliding_window = 5, name = "mistral (sliding window 5)";
        if (kind == 2) {
            mc.model_type = AP_MODEL_QWEN3, mc.qk_norm = 1, mc.head_dim = 16, mc.attention_bias = 1;
            name = "qwen3 (q/k norm, head_dim 16, q/k/v bias)";
        }
        if (kind == 3) {
            mc.model_type = AP_MODEL_GEMMA, mc.norm_plus_one = 1, mc.scale_embeddings = 1;
            mc.hidden_act = AP_ACT_GELU_TANH, mc.tie_word_embeddings = 1, mc.num_key_value_heads = 1;
            name = "gemma (1+w norms, MQA, tied)";
        }
        mc.initializer_range = 0.2;
        char err[512];
        ap_stage *full = NULL;
        ap_generator a, b;
        int rc = ap_llama_stage_create(&full, &mc, 0, mc.num_hidden_layers, 1, 1, 1, W, 1, 0, err, sizeof err);
        if (rc == 0) ap_llama_init_params(full, 11);
        rc = rc || ap_generator_init(&a, &mc, W, 1, err, sizeof err) || ap_generator_init(&b, &mc, W, 0, err, sizeof err) ||
             ap_generator_copy_from(&a, full, err, sizeof err) || ap_generator_copy_from(&b, full, err, sizeof err);
        int32_t tok[W + 3];
        for (int t = 0; t < W + 3; t++) tok[t] = (int32_t)((t * 37 + 11) % 256);
        float la[AP_BYTE_VOCAB], lb[AP_BYTE_VOCAB];
        double worst = 0;
        int cached = 1;
        for (size_t n = 1; rc == 0 && n <= W + 3; n++) {
            rc = ap_generator_logits(&a, tok, n, la, err, sizeof err) || ap_generator_logits(&b, tok, n, lb, err, sizeof err);
            worst = fmax(worst, tap_max_rel_err(la, lb, AP_BYTE_VOCAB, 1e-30));
            if (n <= W) cached &= ap_llama_kv_len(a.kv) == (int)n; /* one more position per token, no rerun */
        }
        ok(rc == 0 && worst < 1e-4 && cached, "%s: KV-cache decoding = rerunning the context, prefixes 1..%d "
           "(logits rel %.2g)%s%s", name, W + 3, worst, rc ? ": " : "", rc ? err : "");
        if (full) ap_stage_destroy(full);
        if (rc == 0) ap_generator_free(&a), ap_generator_free(&b);
    }
}

/* Decoding refuses what it cannot do, with a message. */
static void test_decode_errors(void) {
    enum { W = 4 };
    ap_model_config mc = tiny_config();
    char err[512];
    ap_stage *s = NULL, *rest = NULL;
    if (ap_llama_stage_create(&s, &mc, 0, 2, 1, 0, 1, W, 1, 0, err, sizeof err) ||
        ap_llama_stage_create(&rest, &mc, 1, 2, 0, 0, 1, W, 1, 0, err, sizeof err)) {
        ok(0, "decode stages: %s", err);
        return;
    }
    ap_llama_kv *kv = ap_llama_kv_create(s), *kr = ap_llama_kv_create(rest);
    float out[32];
    int bad_tok = ap_llama_decode(s, kv, AP_BYTE_VOCAB, out) < 0 && strstr(ap_llama_stage_error(s), "token 259");
    int filled = 1;
    for (int t = 0; t < W; t++) filled &= ap_llama_decode(s, kv, 65, out) == 0;
    int full = ap_llama_decode(s, kv, 65, out) < 0 && strstr(ap_llama_stage_error(s), "holds its 4 positions");
    int no_embed = ap_llama_decode(rest, kr, 65, out) < 0 && strstr(ap_llama_stage_error(rest), "embedding");
    ok(kv && kr && bad_tok && filled && full && no_embed,
       "decode refuses a token outside the vocabulary, a full cache and a stage without the embedding: %s",
       ap_llama_stage_error(s));
    ap_llama_kv_free(kv), ap_llama_kv_free(kr);
    ap_stage_destroy(s), ap_stage_destroy(rest);
}

/* Runs a command, returns its first output line in buf. */
static int run_cmd(const char *cmd, char *buf, size_t n) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    buf[0] = 0;
    if (!fgets(buf, (int)n, p)) buf[0] = 0;
    buf[strcspn(buf, "\n")] = 0;
    char sink[256];
    while (fgets(sink, sizeof sink, p)) {
    }
    return pclose(p);
}

int main(void) {
    char err[1024];
    const int T = 32;
    ap_kernels_set_threads(1);
    test_kv_cache();
    test_decode_errors();
    ap_model_config mc = tiny_config();
    char dir[] = "/tmp/ap-test-generate-XXXXXX";
    if (!mkdtemp(dir)) return 1;

    /* a model that learned something: 60 steps on the built-in text */
    ap_stage *s;
    ok(ap_llama_stage_create(&s, &mc, 0, 2, 1, 1, 4, T, 1, 0, err, sizeof err) == 0, "tiny Llama");
    ap_llama_init_params(s, 3);
    ap_data_opts dopt = {.path = NULL, .seq_len = T, .vocab_size = AP_BYTE_VOCAB, .pad_id = AP_BYTE_PAD};
    ap_dataset *d;
    ap_dataset_open(&d, &dopt, err, sizeof err);
    ap_train_opts o = {.max_steps = 60, .grad_acc_steps = 1, .batch_size = 8, .micro_batch_size = 4, .seq_len = T,
                       .dp_size = 1, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .max_norm = 1, .progress = 2,
                       .quiet = 1, .is_log_rank = 1};
    o.lr = (ap_lr_schedule){1e-2, 1e-2, 1e-3, 0, 60, AP_LR_COSINE};
    ap_step_engine e;
    ap_step_engine_single(&e, &s);
    ap_loader l;
    ap_loader_init(&l, d, 1, 1, err, sizeof err);
    ap_train_result r;
    int rc = ap_train_loop(&o, &e, &l, NULL, NULL, &r, err, sizeof err);
    ok(rc == 0 && r.last_loss < 3.0, "trained: loss %.3f", r.last_loss);
    ap_loader_free(&l);
    rc = ap_save_hf_model(&s, 1, &mc, dir, AP_ST_F32, 0, err, sizeof err);
    ok(rc == 0, "written as an HF directory: %s", rc ? err : dir);

    /* eval: the reloaded model scores the data exactly as the original */
    char data[300];
    snprintf(data, sizeof data, "%s/eval.txt", dir);
    FILE *f = fopen(data, "w");
    fputs("Once upon a time, there was a cat named Anna. Anna lived near the river and liked to sing.\n", f);
    fclose(f);
    ap_data_opts eo = {.path = data, .seq_len = T, .vocab_size = AP_BYTE_VOCAB, .pad_id = AP_BYTE_PAD};
    ap_dataset *ed;
    ok(ap_dataset_open(&ed, &eo, err, sizeof err) == 0, "eval data");
    double l1, l2;
    long n1, n2;
    rc = ap_eval_loss(&e, ed, 4, &l1, &n1, err, sizeof err);
    ok(rc == 0 && n1 == 92, "in-memory eval: %.5f over %ld label tokens (BOS + 91 bytes + EOS)", l1, n1);
    ap_stage *s2;
    ap_llama_stage_create(&s2, &mc, 0, 2, 1, 1, 4, T, 1, 0, err, sizeof err);
    ap_model_config mc2;
    ok(ap_model_dir_config(dir, &mc2, err, sizeof err) == 0 && mc2.hidden_size == 32 && mc2.vocab_size == 259,
       "config.json read back");
    rc = ap_model_dir_load(s2, dir, err, sizeof err);
    ok(rc == 0, "weights read back: %s", rc ? err : "ok");
    ap_step_engine e2;
    ap_step_engine_single(&e2, &s2);
    rc = ap_eval_loss(&e2, ed, 4, &l2, &n2, err, sizeof err);
    ok(rc == 0 && l1 == l2 && n1 == n2,
       "reloaded model: same loss (%.6f vs %.6f)", l2, l1);
    char cmd[1024], out[512];
    const char *ap = getenv("AUTOPIPE");
    if (ap) {
        snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --data '%s' --seq-len %d --batch-size 4", ap, dir, data, T);
        double cl = NAN;
        long cn = 0;
        int st = run_cmd(cmd, out, sizeof out);
        ok(st == 0 && sscanf(out, "loss %lf over %ld tokens", &cl, &cn) == 2 && fabs(cl - l1) < 1e-5 && cn == n1,
           "autopipe eval prints the same loss: %s", out);
        /* training from the directory starts where the model is, not at ln(259) */
        snprintf(cmd, sizeof cmd,
                 "'%s' train --distributed.pp_size 1 --model.pretrained_model_name_or_path '%s' "
                 "--dataloader.seq_len %d --step_scheduler.max_steps 2 --checkpoint.enabled false 2>&1 | "
                 "grep '^step 1/2'", ap, dir, T);
        double first = NAN;
        st = run_cmd(cmd, out, sizeof out);
        ok(st == 0 && sscanf(out, "step 1/2 | loss %lf", &first) == 1 && first < 3.0,
           "train from model.pretrained_model_name_or_path starts at the trained loss: %s", out);
        snprintf(cmd, sizeof cmd, "'%s' eval --model '%s' --data '%s/nope.bin' 2>&1", ap, dir, dir);
        st = run_cmd(cmd, out, sizeof out);
        ok(WEXITSTATUS(st) == 1 && strstr(out, "nope.bin"), "autopipe eval on a missing file: %s", out);
    } else {
        for (int i = 0; i < 4; i++) tap_skip("AUTOPIPE not set");
    }

    /* generate: the greedy token is the one the full model gives the lowest loss */
    ap_generator g;
    rc = ap_generator_init(&g, &mc, 16, 1, err, sizeof err);
    if (rc == 0) rc = ap_generator_load(&g, dir, err, sizeof err);
    ok(rc == 0, "generator from the directory: %s", rc ? err : "ok");
    const char *prompt = "Once upon a ti";
    int32_t buf[64];
    size_t n = ap_byte_encode(prompt, strlen(prompt), 1, 0, buf);
    float logits[AP_BYTE_VOCAB];
    ok(ap_generator_logits(&g, buf, n, logits, err, sizeof err) == 0, "next-token logits");
    int best = 0;
    for (int v = 1; v < AP_BYTE_VOCAB; v++)
        if (logits[v] > logits[best]) best = v;
    ap_stage *full;
    ap_llama_stage_create(&full, &mc, 0, 2, 1, 1, 1, (int)n, 1, 0, err, sizeof err);
    ap_model_dir_load(full, dir, err, sizeof err);
    int32_t lab[64];
    int argmin = -1;
    double lmin = INFINITY, lbest = 0;
    for (int v = 0; v < AP_BYTE_VOCAB; v++) {
        for (size_t t = 0; t < n; t++) lab[t] = -100;
        lab[n - 1] = v;
        double ls = 0;
        long cnt = 0;
        full->ops->forward(full, -1, buf, NULL, NULL, NULL, lab, &ls, &cnt);
        if (ls < lmin) lmin = ls, argmin = v;
        if (v == best) lbest = ls;
    }
    ok(best == argmin, "greedy pick %d ('%c') == lowest-loss token %d", best, best < 256 ? best : '?', argmin);
    double lse = 0, mx = logits[best];
    for (int v = 0; v < AP_BYTE_VOCAB; v++) lse += exp((double)logits[v] - mx);
    /* -log softmax(logits)[best] = log(sum exp(logits - logits[best])) */
    ok(fabs(log(lse) - lbest) < 1e-4, "head logits give the model's own loss (%.6f vs %.6f)", log(lse), lbest);
    ap_stage_destroy(full);

    size_t n_out, n_out2;
    int32_t g1[64], g2[64];
    memcpy(g1, buf, n * sizeof *buf);
    memcpy(g2, buf, n * sizeof *buf);
    ok(ap_generate(&g, g1, n, 20, 0, 1, &n_out, err, sizeof err) == 0 && n_out > n && g1[n] == best,
       "greedy generation starts with the greedy pick");
    ap_generate(&g, g2, n, 20, 0, 99, &n_out2, err, sizeof err);
    ok(n_out == n_out2 && !memcmp(g1, g2, n_out * sizeof *g1), "greedy ignores the seed");
    int32_t s1[64], s2b[64], s3[64];
    size_t m1, m2, m3;
    memcpy(s1, buf, n * sizeof *buf);
    memcpy(s2b, buf, n * sizeof *buf);
    memcpy(s3, buf, n * sizeof *buf);
    ap_generate(&g, s1, n, 30, 1.5, 5, &m1, err, sizeof err);
    ap_generate(&g, s2b, n, 30, 1.5, 5, &m2, err, sizeof err);
    ap_generate(&g, s3, n, 30, 1.5, 6, &m3, err, sizeof err);
    ok(m1 == m2 && !memcmp(s1, s2b, m1 * sizeof *s1), "same seed, same sample");
    ok(m1 != m3 || memcmp(s1, s3, m1 * sizeof *s1), "another seed, another sample");
    ap_generator_free(&g);

    if (ap) {
        snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --prompt 'Once upon a ti' --temperature 0 --max-new-tokens 20 --context 16",
                 ap, dir);
        int st = run_cmd(cmd, out, sizeof out);
        char want[128];
        long dn = ap_byte_decode(g1 + 1, n_out - 1, want);
        ok(st == 0 && dn > 0 && !strncmp(out, want, strlen(want)), "autopipe generate prints the greedy text: %s", out);
        strcat(cmd, " --no-kv-cache");
        char out2[sizeof out];
        st = run_cmd(cmd, out2, sizeof out2);
        ok(st == 0 && !strcmp(out, out2), "--no-kv-cache (rerun the window per token) prints the same text");
        snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --tokens 256,79,110 --temperature 0 --max-new-tokens 3", ap,
                 dir);
        st = run_cmd(cmd, out, sizeof out);
        ok(st == 0 && !strncmp(out, "On", 2) && strlen(out) == 5, "--tokens on a byte model prints text: %s", out);
        snprintf(cmd, sizeof cmd, "'%s' generate --model '%s' --tokens 1,300 2>&1", ap, dir);
        st = run_cmd(cmd, out, sizeof out);
        ok(WEXITSTATUS(st) == 2 && strstr(out, "300"), "token over vocab is a usage error: %s", out);
    } else {
        for (int i = 0; i < 4; i++) tap_skip("AUTOPIPE not set");
    }

    ap_stage_destroy(s);
    ap_stage_destroy(s2);
    ap_dataset_free(d);
    ap_dataset_free(ed);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) diag("could not remove %s", dir);
    return tap_done();
}
