/* ckpt-helper.c - drives the checkpoint library for the shell tests, under
 * mpirun, with a synthetic Llama-like model (tests/ckpt-synth.h).
 *
 *   ckpt-helper save DIR    [layout] --step N [--keep K] [--stop PHASE --stop-rank R --stop-file F]
 *   ckpt-helper load DIR    [layout] [--expect-step N] [--layers L]
 *   ckpt-helper reshard SRC DST [layout]      load SRC into this layout, check, save to DST
 *   ckpt-helper flip FILE DATASET             flip one bit inside the dataset's first chunk
 * layout: --pp P --spr S --dp D --layers L --seed X. World size must be pp * dp;
 * rank r is (pp_rank = r / dp, dp_rank = r % dp) and holds the stages
 * pp_rank + k * pp (k < spr), as interleaved schedules place them.
 * --stop PHASE (tensor|file|files_done|manifest|committed): on rank R, at that
 * point of the save, write the PID to F and wait to be killed.
 * --big-mb N adds an N MiB tensor per stage; --pid-file F writes each rank's
 * PID to F.RANK before saving (for a kill at an unplanned moment). */
#include "checkpoint/ckpt.h"
#include "tests/ckpt-synth.h"

#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <signal.h>
#include <unistd.h>

static int pp = 1, spr = 1, dp = 1, layers = 8, seed = 1, keep = 0, stop_rank = 0, rank, wsize;
static long step = 1, expect_step = -1;
static const char *stop_phase, *stop_file, *pid_file;
static long big_mb;

static void on_progress(void *ctx, enum ap_ckpt_phase ph, const char *detail) {
    static const char *names[] = {"tensor", "file", "files_done", "manifest", "committed", "done"};
    if (!stop_phase || rank != stop_rank || strcmp(names[ph], stop_phase) != 0) return;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", stop_file);
    FILE *f = fopen(tmp, "w"); /* then rename: the test never reads half a PID */
    if (!f) return;
    fprintf(f, "%d\n", (int)getpid());
    fclose(f);
    rename(tmp, stop_file);
    for (;;) pause(); /* the test kills us with SIGKILL */
}

static int flip(const char *file, const char *dset) {
    hid_t f = H5Fopen(file, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f < 0 ? -1 : H5Dopen2(f, dset, H5P_DEFAULT);
    haddr_t addr = HADDR_UNDEF;
    hsize_t size = 0;
    unsigned mask;
    hsize_t off[4];
    if (d >= 0) {
        hid_t sp = H5Dget_space(d);
        H5Dget_chunk_info(d, sp, 0, off, &mask, &addr, &size);
        H5Sclose(sp);
        H5Dclose(d);
    }
    if (f >= 0) H5Fclose(f);
    if (addr == HADDR_UNDEF || size < 8) {
        fprintf(stderr, "flip: no chunk for %s in %s\n", dset, file);
        return 1;
    }
    FILE *fp = fopen(file, "r+b");
    long pos = (long)(addr + size / 2);
    fseek(fp, pos, SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, pos, SEEK_SET);
    fputc(c ^ 0x10, fp);
    fclose(fp);
    printf("flipped bit 4 of byte %ld (%s first chunk)\n", pos, dset);
    return 0;
}

/* This rank's stages (all of them; only dp rank 0 writes). */
static synth_stage *my_stages(const synth_model *m) {
    synth_stage *s = calloc((size_t)spr, sizeof *s);
    int pr = rank / dp;
    for (int k = 0; k < spr; k++) s[k] = synth_stage_tensors(m, pr + k * pp, pp * spr);
    return s;
}

static char *big_yaml(void) {
    size_t n = 70 * 1024; /* above the 64 KiB attribute limit on purpose */
    char *y = malloc(n + 64);
    size_t o = (size_t)sprintf(y, "model:\n  pretrained_model_name_or_path: synthetic\ncomment: |\n");
    while (o < n) o += (size_t)sprintf(y + o, "  padding line %zu to make the config bigger than an attribute\n", o);
    return y;
}

static int do_save(const char *dir, synth_stage *st, const synth_model *m) {
    unsigned char rng[64];
    for (int i = 0; i < 64; i++) rng[i] = (unsigned char)(i * 7 + step);
    ap_ckpt_state s = {0};
    s.step = step;
    s.tokens_consumed = step * 4096;
    s.samples_consumed = step * 8;
    s.lr_step = step;
    s.data_pos[0] = (uint64_t)step * 8;
    s.data_pos[1] = 0xFFFFFFFFFFFFFFF0ull; /* beyond a double's integers */
    s.n_data_pos = 2;
    s.rng_state = rng;
    s.rng_len = sizeof rng;
    s.pp = pp, s.dp = dp, s.tp = 1, s.stages_per_rank = spr;
    snprintf(s.schedule, sizeof s.schedule, "%s", spr > 1 ? "interleaved_1f1b" : "1f1b");
    s.config_yaml = big_yaml();
    s.model_config_json = synth_config_json(m);
    ap_ckpt_stage sg[16];
    int n = 0;
    if (rank % dp == 0)
        for (int k = 0; k < spr; k++)
            sg[n++] = (ap_ckpt_stage){rank / dp + k * pp, 0, st[k].first_layer, st[k].last_layer, st[k].t, st[k].n};
    ap_ckpt_save_opts o = {keep, on_progress, NULL};
    char err[1024];
    int rc = ap_ckpt_save(dir, &s, sg, n, &o, MPI_COMM_WORLD, err, sizeof err);
    free(s.config_yaml);
    free(s.model_config_json);
    if (rc) fprintf(stderr, "rank %d: save failed: %s\n", rank, err);
    return rc ? 1 : 0;
}

static int do_load(const char *dir, synth_stage *st, int cfg_layers) {
    synth_model cm = synth_default(cfg_layers);
    char *cfg = synth_config_json(&cm);
    int n = 0;
    for (int k = 0; k < spr; k++) n += st[k].n;
    ap_ckpt_tensor *all = malloc(sizeof *all * (size_t)n);
    n = 0;
    for (int k = 0; k < spr; k++)
        for (int i = 0; i < st[k].n; i++) all[n++] = st[k].t[i];
    ap_ckpt_state s;
    char err[1024];
    int rc = ap_ckpt_load(dir, cfg, &s, all, n, MPI_COMM_WORLD, err, sizeof err);
    free(all);
    free(cfg);
    if (rc) {
        if (rank == 0) fprintf(stderr, "load failed: %s\n", err);
        return 1;
    }
    int bad = 0;
    if (expect_step >= 0 && s.step != expect_step) {
        fprintf(stderr, "rank %d: loaded step %" PRId64 ", expected %ld\n", rank, s.step, expect_step);
        bad = 1;
    }
    if (s.rng_len != 64 || s.rng_state[5] != (unsigned char)(35 + s.step) || s.n_data_pos != 2 ||
        s.data_pos[1] != 0xFFFFFFFFFFFFFFF0ull || s.tokens_consumed != s.step * 4096) {
        fprintf(stderr, "rank %d: state (rng, data position, tokens) not restored\n", rank);
        bad = 1;
    }
    step = s.step;
    ap_ckpt_state_free(&s);
    for (int k = 0; k < spr; k++) {
        const char *first = NULL;
        size_t nb = synth_check(&st[k], seed, &first);
        if (nb) {
            fprintf(stderr, "rank %d: %zu values differ (first in %s)\n", rank, nb, first);
            bad = 1;
        }
    }
    int any;
    MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return any;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "flip")) {
        H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
        return flip(argv[2], argv[3]);
    }
    static const struct option opts[] = {
        {"pp", 1, 0, 'p'},          {"spr", 1, 0, 's'},  {"dp", 1, 0, 'd'},        {"layers", 1, 0, 'l'},
        {"seed", 1, 0, 'x'},        {"step", 1, 0, 'n'}, {"keep", 1, 0, 'k'},      {"stop", 1, 0, 'S'},
        {"stop-rank", 1, 0, 'R'},   {"stop-file", 1, 0, 'F'}, {"expect-step", 1, 0, 'e'}, {"cfg-layers", 1, 0, 'c'},
        {"pid-file", 1, 0, 'P'},    {"big-mb", 1, 0, 'B'},
        {0, 0, 0, 0}};
    int c, cfg_layers = -1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': pp = atoi(optarg); break;
        case 's': spr = atoi(optarg); break;
        case 'd': dp = atoi(optarg); break;
        case 'l': layers = atoi(optarg); break;
        case 'x': seed = atoi(optarg); break;
        case 'n': step = atol(optarg); break;
        case 'k': keep = atoi(optarg); break;
        case 'S': stop_phase = optarg; break;
        case 'R': stop_rank = atoi(optarg); break;
        case 'F': stop_file = optarg; break;
        case 'e': expect_step = atol(optarg); break;
        case 'c': cfg_layers = atoi(optarg); break;
        case 'P': pid_file = optarg; break;
        case 'B': big_mb = atol(optarg); break;
        default: return 2;
        }
    }
    if (cfg_layers < 0) cfg_layers = layers;
    if (optind + 2 > argc || spr > 16) {
        fprintf(stderr, "usage: ckpt-helper save|load|reshard DIR [DST] [options]\n");
        return 2;
    }
    const char *cmd = argv[optind], *dir = argv[optind + 1];
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &wsize);
    int rc = 2;
    if (wsize != pp * dp) {
        if (rank == 0) fprintf(stderr, "world size %d != pp %d * dp %d\n", wsize, pp, dp);
    } else {
        synth_model m = synth_default(layers);
        synth_stage *st = my_stages(&m);
        if (!strcmp(cmd, "save")) {
            /* --big-mb N: an extra N MiB tensor per stage, so the save takes a while */
            for (int k = 0; big_mb > 0 && k < spr; k++) {
                char nm[64];
                snprintf(nm, sizeof nm, "model.extra.%d.weight", rank / dp + k * pp);
                synth_add(&st[k], nm, 2, (size_t)big_mb * 256, 1024);
            }
            for (int k = 0; k < spr; k++) synth_fill(&st[k], seed);
            if (pid_file) { /* PID of each rank, for tests that kill one at any moment */
                char p[4096], tmp[4200];
                snprintf(p, sizeof p, "%s.%d", pid_file, rank);
                snprintf(tmp, sizeof tmp, "%s.tmp", p);
                FILE *f = fopen(tmp, "w");
                if (f) fprintf(f, "%d\n", (int)getpid()), fclose(f), rename(tmp, p);
            }
            rc = do_save(dir, st, &m);
        } else if (!strcmp(cmd, "load")) {
            rc = do_load(dir, st, cfg_layers);
        } else if (!strcmp(cmd, "reshard") && optind + 3 <= argc) {
            rc = do_load(dir, st, cfg_layers);
            if (!rc) rc = do_save(argv[optind + 2], st, &m);
        }
        for (int k = 0; k < spr; k++) synth_free(&st[k]);
        free(st);
    }
    if (rank == 0 && rc == 0) printf("%s ok\n", cmd);
    MPI_Finalize();
    return rc;
}
