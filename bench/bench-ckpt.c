/* bench-ckpt.c - checkpoint save/load throughput per rank next to a plain
 * sequential write/read of the same bytes, in the same run.
 *
 *   mpirun -np R bench/bench-ckpt [--params N] [--dir D] [--reps K] [--cache]
 *
 * A Llama-like model of ~N parameters (default 100M: hidden 1024, 8 layers
 * with 2816-wide MLPs, embeddings of 8192 tokens) is split into R pipeline
 * stages, one per rank; each rank holds its stage's fp32 parameters and both
 * AdamW moments. Per repetition: plain write (write + fsync + directory
 * fsync, one file per rank) and plain read; ap_ckpt_save (HDF5, fletcher32,
 * crc32, fsync, rename, manifest, marker) and ap_ckpt_load. Page cache is
 * dropped for the files before each read (posix_fadvise after fsync) unless
 * --cache. Prints the best of K repetitions per measure. */
#include "checkpoint/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define CHECK(c, ...)                                                                                                  \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "bench-ckpt %s:%d: ", __FILE__, __LINE__);                                                  \
            fprintf(stderr, __VA_ARGS__);                                                                              \
            fprintf(stderr, "\n");                                                                                     \
            MPI_Abort(MPI_COMM_WORLD, 1);                                                                              \
        }                                                                                                              \
    } while (0)

typedef struct {
    ap_ckpt_tensor *t;
    int n;
    size_t numel;
} tensors;

static void add(tensors *ts, const char *name, size_t d0, size_t d1) {
    ts->t = realloc(ts->t, sizeof *ts->t * (size_t)(ts->n + 1));
    ap_ckpt_tensor *t = &ts->t[ts->n++];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    t->ndim = d1 ? 2 : 1;
    t->shape[0] = d0;
    t->shape[1] = d1;
    size_t n = d1 ? d0 * d1 : d0;
    float *p = malloc(3 * n * sizeof *p); /* param, exp_avg, exp_avg_sq side by side */
    CHECK(p, "out of memory");
    uint32_t x = 2463534242u ^ (uint32_t)ts->n;
    for (size_t i = 0; i < 3 * n; i++) { /* xorshift: incompressible, nonzero */
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        p[i] = (float)(x >> 8) * (1.0f / 16777216.0f) - 0.5f;
    }
    t->param = p, t->exp_avg = p + n, t->exp_avg_sq = p + 2 * n;
    ts->numel += n;
}

/* Stage s of S of a model with L layers of width C, MLP width I, vocab V. */
static tensors stage_tensors(int s, int S, int L, size_t C, size_t I, size_t V) {
    tensors ts = {0};
    char nm[128];
    int first = s * L / S, last = (s + 1) * L / S;
    if (s == 0) add(&ts, "model.embed_tokens.weight", V, C);
    for (int l = first; l < last; l++) {
        static const char *sq[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"};
        snprintf(nm, sizeof nm, "model.layers.%d.input_layernorm.weight", l), add(&ts, nm, C, 0);
        for (int k = 0; k < 4; k++) snprintf(nm, sizeof nm, "model.layers.%d.%s.weight", l, sq[k]), add(&ts, nm, C, C);
        snprintf(nm, sizeof nm, "model.layers.%d.post_attention_layernorm.weight", l), add(&ts, nm, C, 0);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.gate_proj.weight", l), add(&ts, nm, I, C);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.up_proj.weight", l), add(&ts, nm, I, C);
        snprintf(nm, sizeof nm, "model.layers.%d.mlp.down_proj.weight", l), add(&ts, nm, C, I);
    }
    if (s == S - 1) add(&ts, "model.norm.weight", C, 0), add(&ts, "lm_head.weight", V, C);
    return ts;
}

static void fsync_dir(const char *d) {
    int fd = open(d, O_RDONLY);
    if (fd >= 0) fsync(fd), close(fd);
}

static void drop_cache(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
}

static void drop_cache_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char p[4600];
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        drop_cache(p);
    }
    closedir(d);
}

static void plain_write(const char *path, const tensors *ts) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0, "%s: %s", path, strerror(errno));
    for (int i = 0; i < ts->n; i++) {
        const char *p = (const char *)ts->t[i].param;
        size_t left = 3 * 4 * (ts->t[i].shape[0] * (ts->t[i].ndim == 2 ? ts->t[i].shape[1] : 1));
        while (left) {
            ssize_t w = write(fd, p, left > (1u << 30) ? (1u << 30) : left);
            CHECK(w > 0, "%s: write: %s", path, strerror(errno));
            p += w, left -= (size_t)w;
        }
    }
    CHECK(fsync(fd) == 0 && close(fd) == 0, "%s: fsync: %s", path, strerror(errno));
}

static void plain_read(const char *path, const tensors *ts) {
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0, "%s: %s", path, strerror(errno));
    for (int i = 0; i < ts->n; i++) {
        char *p = (char *)ts->t[i].param;
        size_t left = 3 * 4 * (ts->t[i].shape[0] * (ts->t[i].ndim == 2 ? ts->t[i].shape[1] : 1));
        while (left) {
            ssize_t r = read(fd, p, left > (1u << 30) ? (1u << 30) : left);
            CHECK(r > 0, "%s: read: %s", path, strerror(errno));
            p += r, left -= (size_t)r;
        }
    }
    close(fd);
}

/* Time of the slowest rank (everyone waits for it in a real save). */
static double timed_max(double t0) {
    double t = now() - t0, mx;
    MPI_Allreduce(&t, &mx, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    return mx;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    double params = 100e6;
    int reps = 3, cache = 0;
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    static const struct option opts[] = {{"params", 1, 0, 'p'}, {"dir", 1, 0, 'd'}, {"reps", 1, 0, 'r'},
                                         {"cache", 0, 0, 'c'},  {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == 'p') params = atof(optarg);
        else if (c == 'd') base = optarg;
        else if (c == 'r') reps = atoi(optarg);
        else if (c == 'c') cache = 1;
        else MPI_Abort(MPI_COMM_WORLD, 2);
    }
    /* 8 layers of ~12.6M at C=1024 + 2 x 8M embeddings: scale C's layers count to reach `params` */
    size_t C = 1024, I = 2816, V = 8192;
    double per_layer = 4.0 * C * C + 3.0 * C * I + 2.0 * C;
    int L = (int)((params - 2.0 * V * C) / per_layer + 0.5);
    if (L < size) L = size;
    tensors ts = stage_tensors(rank, size, L, C, I, V);

    char dir[4096], plain[4200], cdir[4200];
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/bench-ckpt-XXXXXX", base);
        CHECK(mkdtemp(dir), "mkdtemp under %s: %s", base, strerror(errno));
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    snprintf(plain, sizeof plain, "%s/plain_%03d.bin", dir, rank);
    snprintf(cdir, sizeof cdir, "%s/ckpt", dir);

    ap_ckpt_state st = {0};
    st.pp = size, st.dp = 1, st.tp = 1, st.stages_per_rank = 1;
    snprintf(st.schedule, sizeof st.schedule, "1f1b");
    st.model_config_json = "{\"model_type\": \"llama\"}";
    ap_ckpt_stage sg = {rank, 0, rank * L / size, (rank + 1) * L / size, ts.t, ts.n};
    ap_ckpt_save_opts o = {1, NULL, NULL};
    double bytes = 12.0 * (double)ts.numel, total_params;
    double np = (double)ts.numel;
    MPI_Allreduce(&np, &total_params, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    double best[4] = {1e30, 1e30, 1e30, 1e30}; /* plain write, plain read, save, load */
    char err[1024];
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = now();
        plain_write(plain, &ts);
        if (rank == 0) fsync_dir(dir);
        double t = timed_max(t0);
        best[0] = t < best[0] ? t : best[0];
        if (!cache) drop_cache(plain);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = now();
        plain_read(plain, &ts);
        t = timed_max(t0);
        best[1] = t < best[1] ? t : best[1];
        unlink(plain);

        st.step = r + 1;
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = now();
        CHECK(ap_ckpt_save(cdir, &st, &sg, 1, &o, MPI_COMM_WORLD, err, sizeof err) == 0, "save: %s", err);
        t = timed_max(t0);
        best[2] = t < best[2] ? t : best[2];
        char sd[4300];
        snprintf(sd, sizeof sd, "%s/step_%08d", cdir, r + 1);
        if (!cache) drop_cache_dir(sd);
        MPI_Barrier(MPI_COMM_WORLD);
        t0 = now();
        CHECK(ap_ckpt_load(cdir, NULL, NULL, ts.t, ts.n, MPI_COMM_WORLD, err, sizeof err) == 0, "load: %s", err);
        t = timed_max(t0);
        best[3] = t < best[3] ? t : best[3];
    }
    if (rank == 0) {
        char cmd[4400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0) fprintf(stderr, "bench-ckpt: could not remove %s\n", dir);
        double g = bytes / 1e9;
        printf("bench-ckpt: %d ranks, %.1fM params total (%d layers), %.2f GB per rank (params + 2 moments), best of %d, %s\n",
               size, total_params / 1e6, L, g, reps, cache ? "page cache kept" : "page cache dropped before reads");
        printf("  plain write+fsync  %6.3f s  %6.2f GB/s per rank\n", best[0], g / best[0]);
        printf("  ckpt save          %6.3f s  %6.2f GB/s per rank  (%.0f%% of plain write)\n", best[2], g / best[2],
               100.0 * best[0] / best[2]);
        printf("  plain read         %6.3f s  %6.2f GB/s per rank\n", best[1], g / best[1]);
        printf("  ckpt load          %6.3f s  %6.2f GB/s per rank  (%.0f%% of plain read)\n", best[3], g / best[3],
               100.0 * best[1] / best[3]);
    }
    MPI_Finalize();
    return 0;
}
