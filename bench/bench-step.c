/* bench-step.c - speed of one full training step (forward, backward, AdamW)
 * of a ~25M-parameter Llama on the CPU, next to the cblas_sgemm rate of the
 * same matrix shapes measured in the same run, and peak RSS with and without
 * activation checkpointing. Not a test: prints numbers for bench/RESULTS.md.
 *
 *   bench-step [--threads 1,2] [--steps 3] [--batch 4] [--seq 256] [--ckpt 0|1]
 *
 * Times are the fastest of `steps` steps after a warm-up step (the machine
 * may be shared); "by CPU time" divides by the process CPU time instead of
 * wall time, which is what a single thread would get on an idle core.
 *
 * Each configuration runs in its own forked process, so peak RSS (ru_maxrss)
 * is that configuration's alone. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>

#include "kernels/kernels.h"
#include "trainer/llama.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static ap_model_config bench_config(void) {
    ap_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.model_type = AP_MODEL_LLAMA;
    mc.vocab_size = 4096;
    mc.hidden_size = 512;
    mc.intermediate_size = 1376;
    mc.num_hidden_layers = 8;
    mc.num_attention_heads = 8;
    mc.num_key_value_heads = 2;
    mc.head_dim = 64;
    mc.max_position_embeddings = 1024;
    mc.rms_norm_eps = 1e-5;
    mc.rope_theta = 10000;
    mc.hidden_act = AP_ACT_SILU;
    mc.tie_word_embeddings = 1;
    mc.initializer_range = 0.02;
    return mc;
}

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* Time every matrix product of one training step as plain sgemm calls on
 * buffers of the same shapes: forward (NT), input grad (NN), weight grad (TN). */
static double sgemm_rate(const ap_model_config *mc, int N, int reps, double *flops_out, double *cpu_rate) {
    int C = mc->hidden_size, S = (mc->num_attention_heads + 2 * mc->num_key_value_heads) * mc->head_dim;
    int Q = mc->num_attention_heads * mc->head_dim, F = mc->intermediate_size, V = mc->vocab_size;
    struct { int in, out, count; } lin[] = {
        {C, S, mc->num_hidden_layers}, {Q, C, mc->num_hidden_layers},
        {C, 2 * F, mc->num_hidden_layers}, {F, C, mc->num_hidden_layers}, {C, V, 1}};
    size_t maxw = 0;
    for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
        size_t w = (size_t)lin[i].in > (size_t)lin[i].out ? (size_t)lin[i].in : (size_t)lin[i].out;
        if (w > maxw) maxw = w;
    }
    float *A = malloc((size_t)N * maxw * sizeof(float)), *Bm = malloc(maxw * maxw * sizeof(float));
    float *Cm = malloc((size_t)N * maxw * sizeof(float)), *W = malloc(maxw * maxw * sizeof(float));
    for (size_t i = 0; i < (size_t)N * maxw; i++) A[i] = 0.01f * (float)(i % 97), Cm[i] = 0;
    for (size_t i = 0; i < maxw * maxw; i++) Bm[i] = 0.01f * (float)(i % 89), W[i] = 0;
    double flops = 0, best = 1e30, best_cpu = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now(), c0 = cpu_now(), f = 0;
        for (size_t i = 0; i < sizeof lin / sizeof *lin; i++)
            for (int c = 0; c < lin[i].count; c++) {
                int in = lin[i].in, out = lin[i].out;
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1, A, in, Bm, in, 0, Cm, out);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, in, out, 1, Cm, out, Bm, in, 0, A, in);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, N, 1, Cm, out, A, in, 1, W, in);
                f += 6.0 * N * (double)in * out;
            }
        double t = now() - t0, c = cpu_now() - c0;
        flops = f;
        if (r > 0 && t < best) best = t; /* first round warms up; the fastest round counts */
        if (r > 0 && c < best_cpu) best_cpu = c;
    }
    free(A), free(Bm), free(Cm), free(W);
    *flops_out = flops;
    *cpu_rate = flops / best_cpu / 1e9;
    return flops / best / 1e9;
}

static int run_config(int threads, int ckpt, int steps, int B, int T) {
    ap_kernels_set_threads(threads);
    ap_model_config mc = bench_config();
    char err[256];
    ap_stage *s;
    if (ap_llama_stage_create(&s, &mc, 0, mc.num_hidden_layers, 1, 1, B, T, 1, ckpt, err, sizeof err)) {
        fprintf(stderr, "bench-step: %s\n", err);
        return 1;
    }
    ap_llama_init_params(s, 1);
    size_t n = s->n_params;
    float *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    uint8_t *mask = malloc(n);
    for (int i = 0; i < s->n_refs; i++)
        memset(mask + (s->refs[i].param - s->params), !s->refs[i].no_decay, s->refs[i].numel);
    int32_t *tok = malloc((size_t)B * T * sizeof(int32_t)), *lab = malloc((size_t)B * T * sizeof(int32_t));
    uint64_t x = 7;
    for (int i = 0; i < B * T; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = (int32_t)((x >> 33) % (uint64_t)mc.vocab_size);
    }
    for (int i = 0; i < B * T; i++) lab[i] = i + 1 < B * T ? tok[i + 1] : -100;
    ap_adamw_hparams h = {3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f};
    double tf = 1e30, tb = 1e30, to = 1e30, best = 1e30, best_cpu = 1e30, loss = 0;
    for (int step = 0; step <= steps; step++) { /* step 0 warms up */
        double t0 = now(), c0 = cpu_now();
        memset(s->grads, 0, n * sizeof(float));
        double ls = 0;
        long cnt = 0;
        if (s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &ls, &cnt)) return 1;
        double t1 = now();
        if (s->ops->backward(s, 0, NULL, 1.0f / (float)cnt, NULL)) return 1;
        double t2 = now();
        double norm = sqrt(ap_sumsq(s->grads, n));
        float clip = norm > 1.0 ? (float)(1.0 / norm) : 1.0f;
        ap_adamw_update(s->params, m, v, s->grads, n, mask, clip, step + 1, &h);
        double t3 = now(), c3 = cpu_now();
        if (step > 0) { /* the fastest step counts: the machine is shared */
            tf = fmin(tf, t1 - t0), tb = fmin(tb, t2 - t1), to = fmin(to, t3 - t2);
            best = fmin(best, t3 - t0), best_cpu = fmin(best_cpu, c3 - c0);
        }
        loss = ls / (double)cnt;
    }
    double step_s = best;
    double fpt = ap_model_flops_per_token(&mc, T);
    double achieved = fpt * B * T / step_s / 1e9, achieved_cpu = fpt * B * T / best_cpu / 1e9;
    openblas_set_num_threads(threads); /* the reference: OpenBLAS's own threading */
    double gemm_flops = 0, cpu_rate = 0, rate = sgemm_rate(&mc, B * T, steps, &gemm_flops, &cpu_rate);
    printf("threads=%d ckpt=%d params=%.2fM B=%d T=%d: step %.3f s (fwd %.3f, bwd %.3f, adamw %.3f), "
           "%.0f tokens/s, %.1f GFLOP/s model (%.1f GFLOP/step); sgemm same shapes %.1f GFLOP/s; "
           "ratio %.0f%% (by CPU time: %.1f vs %.1f GFLOP/s, %.0f%%); loss %.3f; peak RSS %.0f MiB\n",
           threads, ckpt, (double)n / 1e6, B, T, step_s, tf, tb, to, B * T / step_s, achieved,
           fpt * B * T / 1e9, rate, 100.0 * achieved / rate, achieved_cpu, cpu_rate,
           100.0 * achieved_cpu / cpu_rate, loss, peak_rss_mib());
    fflush(stdout);
    ap_stage_destroy(s);
    free(m), free(v), free(mask), free(tok), free(lab);
    return 0;
}

static void loadavg(const char *when) {
    FILE *f = fopen("/proc/loadavg", "r");
    char buf[128] = "?";
    if (f) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
    printf("load average %s: %s\n", when, buf);
}

int main(int argc, char **argv) {
    /* Idle OpenMP threads sleep instead of spinning: on a shared machine a
     * spinning thread takes the core its partner needs (measured: 2-thread
     * step 1.5-2x slower with the default policy). libgomp reads this at
     * start-up, hence the re-exec (before strtok edits argv). */
    if (!getenv("OMP_WAIT_POLICY")) {
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
        execv("/proc/self/exe", argv);
    }
    int threads[8] = {1, 2}, nt = 2, steps = 3, B = 4, T = 256, ck_lo = 0, ck_hi = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--threads")) {
            nt = 0;
            for (char *p = strtok(argv[i + 1], ","); p && nt < 8; p = strtok(NULL, ",")) threads[nt++] = atoi(p);
        } else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--ckpt")) ck_lo = ck_hi = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: bench-step [--threads 1,2] [--steps 3] [--batch 4] [--seq 256] [--ckpt 0|1]\n");
            return 2;
        }
    }
    if (steps < 1 || B < 1 || T < 1) return 2;
    printf("OMP_WAIT_POLICY=%s\n", getenv("OMP_WAIT_POLICY"));
    loadavg("before");
    for (int ck = ck_lo; ck <= ck_hi; ck++)
        for (int i = 0; i < nt; i++) {
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0) _exit(run_config(threads[i], ck, steps, B, T));
            int st = 0;
            if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
                fprintf(stderr, "bench-step: configuration threads=%d ckpt=%d failed\n", threads[i], ck);
                return 1;
            }
        }
    loadavg("after");
    return 0;
}
