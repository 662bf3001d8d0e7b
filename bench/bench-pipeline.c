/* bench-pipeline.c - pipeline step time: measured, predicted, and one process.
 *
 *   mpirun -np 2 bench/bench-pipeline [--hidden N] [--layers N] [--seq N] [--mbs N]
 *                                     [--microbatches N] [--steps N] [--schedules a,b]
 *                                     [--out FILE] [--trace DIR]
 *
 * For each schedule (default 1f1b and zbv) at pp = 2 (one rank per core, one
 * thread each): the measured time of a training step's forward and backward
 * (no optimizer), the simulator's makespan for the same schedule fed with the
 * per-action costs measured in that run (F, B, I, W per stage; comm from a
 * ping-pong of one activation), and one process with every layer on one
 * thread running the same global batch. Appends a table to --out (machine,
 * date, command). A benchmark, not a test: nothing is asserted. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "trainer/executor.h"
#include "trainer/llama.h"
#include "trainer/schedule/schedule.h"

static int rank;

#define DIE(...)                                                                                   \
    do {                                                                                           \
        fprintf(stderr, "bench-pipeline: rank %d: ", rank);                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        MPI_Abort(MPI_COMM_WORLD, 1);                                                              \
    } while (0)

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void fill_batch(int32_t *tok, int32_t *lab, size_t n, int V, unsigned seed) {
    unsigned long long h = seed * 2654435761ull + 1;
    for (size_t i = 0; i < n; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        tok[i] = (int32_t)((h >> 33) % (unsigned)V);
        lab[i] = (int32_t)((h >> 17) % (unsigned)V);
    }
}

static ap_stage *make_stage(const ap_model_config *mc, int first, int last, int embed, int head, int B, int T,
                            int slots, int id, int S) {
    char err[512];
    ap_stage *s;
    if (ap_llama_stage_create(&s, mc, first, last, embed, head, B, T, slots, 0, err, sizeof err)) DIE("%s", err);
    s->stage_id = id;
    s->num_stages = S;
    s->is_first = id == 0;
    s->is_last = id == S - 1;
    ap_llama_init_params(s, 1);
    return s;
}

int main(int argc, char **argv) {
    int hidden = 256, layers = 8, T = 128, mbs = 2, nmb = 8, steps = 5;
    const char *scheds = "1f1b,zbv", *outpath = "bench/RESULTS.md", *tracedir = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--hidden")) hidden = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--layers")) layers = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seq")) T = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mbs")) mbs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--microbatches")) nmb = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--schedules")) scheds = argv[i + 1];
        else if (!strcmp(argv[i], "--out")) outpath = argv[i + 1];
        else if (!strcmp(argv[i], "--trace")) tracedir = argv[i + 1];
        else {
            fprintf(stderr, "bench-pipeline: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    MPI_Init(&argc, &argv);
    int world;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    if (world != 2 || hidden % 64 || layers < 2 || steps < 2) {
        if (!rank) fprintf(stderr, "bench-pipeline: run on 2 ranks; hidden a multiple of 64, layers >= 2, steps >= 2\n");
        MPI_Finalize();
        return 2;
    }
    ap_kernels_set_threads(1);
    ap_model_config mc = {.model_type = AP_MODEL_LLAMA, .vocab_size = 259, .hidden_size = hidden,
                          .intermediate_size = hidden * 8 / 3, .num_hidden_layers = layers,
                          .num_attention_heads = hidden / 32, .num_key_value_heads = hidden / 64, .head_dim = 32,
                          .max_position_embeddings = T, .rms_norm_eps = 1e-5, .rope_theta = 10000,
                          .rope_scaling = AP_ROPE_DEFAULT, .hidden_act = AP_ACT_SILU, .tie_word_embeddings = 0,
                          .initializer_range = 0.02, .bos_token_id = -1, .eos_token_id = -1, .pad_token_id = -1};
    size_t n = (size_t)nmb * mbs * T;
    int32_t *tok = malloc(n * sizeof *tok), *lab = malloc(n * sizeof *lab);
    fill_batch(tok, lab, n, mc.vocab_size, 7);
    char table[8192];
    size_t tl = 0;

    /* One process, one thread: the whole model, the same microbatches (rank 1 idles). */
    double t1 = 0;
    if (rank == 0) {
        ap_stage *s = make_stage(&mc, 0, layers, 1, 1, mbs, T, 1, 0, 1);
        double *ts = malloc((size_t)steps * sizeof *ts);
        for (int k = 0; k <= steps; k++) {
            double t0 = MPI_Wtime(), ls = 0;
            long nt = 0;
            for (int m = 0; m < nmb; m++) {
                size_t off = (size_t)m * mbs * T;
                if (s->ops->forward(s, 0, tok + off, NULL, NULL, NULL, lab + off, &ls, &nt) ||
                    s->ops->backward(s, 0, NULL, 1.0f / (float)n, NULL))
                    DIE("one-process step failed");
            }
            if (k) ts[k - 1] = MPI_Wtime() - t0; /* step 0 warms up */
        }
        t1 = median(ts, steps);
        free(ts);
        ap_stage_destroy(s);
    }
    MPI_Bcast(&t1, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);

    /* Activation message time: half a ping-pong of B*T*C floats. */
    size_t act = (size_t)mbs * T * hidden;
    float *buf = calloc(act, sizeof *buf);
    double tc = MPI_Wtime();
    for (int k = 0; k < 20; k++) {
        if (rank == 0) {
            MPI_Send(buf, (int)act, MPI_FLOAT, 1, 0, MPI_COMM_WORLD);
            MPI_Recv(buf, (int)act, MPI_FLOAT, 1, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else {
            MPI_Recv(buf, (int)act, MPI_FLOAT, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, (int)act, MPI_FLOAT, 0, 0, MPI_COMM_WORLD);
        }
    }
    double comm = (MPI_Wtime() - tc) / 40;
    MPI_Bcast(&comm, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    free(buf);

    tl += (size_t)snprintf(table + tl, sizeof table - tl,
                           "| schedule | stages | measured step (ms) | predicted (ms) | measured / predicted | "
                           "bubble measured (max rank) | bubble predicted (mean) | pp=1, 1 thread (ms) | speedup |\n"
                           "|---|---|---|---|---|---|---|---|---|\n");
    char list[256];
    snprintf(list, sizeof list, "%s", scheds);
    for (char *name = strtok(list, ","); name; name = strtok(NULL, ",")) {
        char err[8192];
        ap_schedule *cs = NULL, *ls = NULL;
        if (ap_schedule_generate(&cs, name, NULL, 2, 0, nmb, err, sizeof err) ||
            ap_schedule_lower(cs, &ls, err, sizeof err) || ap_schedule_validate(ls, err, sizeof err))
            DIE("schedule %s: %s", name, err);
        int S = ls->num_stages, ids[8];
        int nloc = ap_schedule_rank_stages(ls, rank, ids, 8);
        ap_stage *st[8];
        for (int i = 0; i < nloc; i++) {
            int s = ids[i], base = layers / S, extra = layers % S;
            int first = s * base + (s < extra ? s : extra), nl = base + (s < extra);
            int slots = ap_executor_peak_slots(ls->acts[rank], ls->len[rank], s);
            st[i] = make_stage(&mc, first, first + nl, s == 0, s == S - 1, mbs, T, slots, s, S);
        }
        char tpath[4096];
        if (tracedir) snprintf(tpath, sizeof tpath, "%s/%s_rank%d.json", tracedir, name, rank);
        ap_executor_config ec = {.trace_path = tracedir ? tpath : NULL, .pp_comm = MPI_COMM_WORLD, .dp_comm = MPI_COMM_NULL, .num_stages = S,
                                 .stage_rank = ls->stage_to_rank, .stages = st, .n_local = nloc,
                                 .num_microbatches = nmb, .actions = ls->acts[rank], .n_actions = ls->len[rank]};
        ap_executor *ex;
        if (ap_executor_create(&ex, &ec, err, sizeof err)) DIE("%s", err);
        double *ts = malloc((size_t)steps * sizeof *ts), bub = 0;
        for (int k = 0; k <= steps; k++) {
            MPI_Barrier(MPI_COMM_WORLD);
            if (k == 1) ap_executor_reset_costs(ex); /* step 0 warms up */
            double t0 = MPI_Wtime();
            ap_step_stats ss;
            if (ap_executor_step(ex, tok, lab, 1, 1, 0, &ss, err, sizeof err)) DIE("%s", err);
            double dt = MPI_Wtime() - t0;
            MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            if (k) {
                ts[k - 1] = dt;
                bub += ss.bubble_max / steps;
            }
        }
        double tm = median(ts, steps);
        /* The simulator on the measured per-stage costs. */
        double *cost[AP_ACT_NTYPES] = {0};
        ap_sched_costs c;
        ap_sched_costs_default(&c);
        for (int ty = AP_ACT_F; ty <= AP_ACT_W; ty++) {
            cost[ty] = calloc((size_t)S, sizeof(double));
            for (int s = 0; s < S; s++) {
                double v = -1;
                ap_executor_action_cost(ex, s, ty, &v);
                MPI_Allreduce(MPI_IN_PLACE, &v, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
                cost[ty][s] = v < 0 ? 0 : v;
            }
            c.stage_cost[ty] = cost[ty];
        }
        c.comm = comm;
        ap_sched_sim sim;
        if (ap_schedule_simulate(ls, &c, &sim, err, sizeof err)) DIE("simulate %s: %s", name, err);
        if (rank == 0)
            tl += (size_t)snprintf(table + tl, sizeof table - tl,
                                   "| %s | %d (%d per rank) | %.1f | %.1f | %.3f | %.1f%% | %.1f%% | %.1f | %.2fx |\n",
                                   name, S, S / 2, 1e3 * tm, 1e3 * sim.makespan, tm / sim.makespan, 100 * bub,
                                   100 * sim.bubble_mean, 1e3 * t1, t1 / tm);
        ap_sched_sim_free(&sim);
        for (int ty = AP_ACT_F; ty <= AP_ACT_W; ty++) free(cost[ty]);
        free(ts);
        ap_executor_destroy(ex);
        for (int i = 0; i < nloc; i++) ap_stage_destroy(st[i]);
        ap_schedule_free(cs);
        ap_schedule_free(ls);
    }
    if (rank == 0) {
        struct utsname u;
        uname(&u);
        char cpu[256] = "unknown CPU", line[512];
        FILE *f = fopen("/proc/cpuinfo", "r");
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
                snprintf(cpu, sizeof cpu, "%s", strchr(line, ':') + 2);
                cpu[strcspn(cpu, "\n")] = 0;
                break;
            }
        if (f) fclose(f);
        char load[64] = "?";
        FILE *la = fopen("/proc/loadavg", "r");
        if (la && fgets(load, sizeof load, la)) load[strcspn(load, " ")] = 0; /* 1-minute load average */
        if (la) fclose(la);
        char date[64];
        time_t now = time(NULL);
        strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", gmtime(&now));
        char cmd[1024] = "mpirun -np 2";
        for (int i = 0; i < argc; i++)
            snprintf(cmd + strlen(cmd), sizeof cmd - strlen(cmd), " %s", argv[i]);
        char head[2048];
        snprintf(head, sizeof head,
                 "\n## Pipeline step time, pp=2 (bench-pipeline), %s\n\n"
                 "- machine: %s (%s, %s %s), %ld online CPUs, load average %s at the end (shared with other jobs: expect noise)\n"
                 "- command: `OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 %s`\n"
                 "- model: Llama, hidden %d, %d layers, vocab %d; %d microbatches of %d x %d tokens per step; "
                 "one thread per rank; median of %d steps after one warm-up; a step is forward + backward of "
                 "every microbatch (no optimizer)\n"
                 "- predicted: the schedule simulator's makespan with the F/B/I/W costs measured per stage in "
                 "the same run and comm = %.3f ms (half a ping-pong of one activation)\n\n",
                 date, u.nodename, cpu, u.sysname, u.machine, sysconf(_SC_NPROCESSORS_ONLN), load, cmd, hidden, layers,
                 mc.vocab_size, nmb, mbs, T, steps, 1e3 * comm);
        printf("%s%s", head, table);
        FILE *o = fopen(outpath, "a");
        if (!o) {
            fprintf(stderr, "bench-pipeline: cannot append to %s\n", outpath);
        } else {
            fprintf(o, "%s%s", head, table);
            fclose(o);
        }
    }
    free(tok);
    free(lab);
    MPI_Finalize();
    return 0;
}
