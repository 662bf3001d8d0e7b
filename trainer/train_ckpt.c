/* train_ckpt.c - checkpoints of a training run, preemption, checkpoint
 * directories as model directories: see train_ckpt.h. */
#include "trainer/train_ckpt.h"

#include "checkpoint/ckpt.h"
#include "launcher/config.h"
#include "trainer/generate.h"
#include "trainer/hf_config.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- preemption ---- */

static volatile sig_atomic_t g_stop;

static void on_signal(int sig) {
    (void)sig;
    g_stop = 1; /* only the flag: the loop acts on it at the next step boundary */
}

void ap_preempt_install(int world_rank) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    const char *dir = getenv("AUTOPIPE_PID_DIR");
    if (world_rank >= 0 && dir && *dir) {
        char p[4096], tmp[4200];
        snprintf(p, sizeof p, "%s/rank_%05d.pid", dir, world_rank);
        snprintf(tmp, sizeof tmp, "%s.tmp", p);
        FILE *f = fopen(tmp, "w");
        if (f) { /* written whole then renamed: a reader never sees half a PID */
            fprintf(f, "%ld\n", (long)getpid());
            if (fclose(f) == 0) rename(tmp, p);
        }
    }
}

int ap_preempt_flag(void) { return g_stop != 0; }

/* ---- the run's checkpoints ---- */

int ap_train_ckpt_wanted(const ap_config *cfg) {
    const char *r = cfg->checkpoint.resume;
    int path = r && *r && strcmp(r, "auto") && strcmp(r, "false") && strcmp(r, "true");
    return cfg->checkpoint.enabled || path;
}

static int dir_nonempty(const char *d) {
    DIR *dd = opendir(d);
    if (!dd) return 0;
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dd)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(dd);
    return n > 0;
}

/* Removes the files of one step directory (checkpoints hold no subdirectories), then it. */
static int remove_step_dir(const char *p) {
    DIR *dd = opendir(p);
    if (!dd) return -1;
    struct dirent *de;
    char f[PATH_MAX];
    int rv = 0;
    /* the commit marker first: a half-removed directory is never loaded */
    if (snprintf(f, sizeof f, "%s/COMMITTED", p) < (int)sizeof f) unlink(f);
    while ((de = readdir(dd))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (snprintf(f, sizeof f, "%s/%s", p, de->d_name) >= (int)sizeof f || unlink(f) != 0) rv = -1;
    }
    closedir(dd);
    return rmdir(p) == 0 ? rv : -1;
}

/* resume: false with overwrite: the old step_* directories and `latest` go
 * (only those: anything else in the directory is the user's). */
static int remove_old_checkpoints(const char *cdir, char *err, size_t errlen) {
    DIR *dd = opendir(cdir);
    if (!dd) return 0;
    char p[PATH_MAX];
    if (snprintf(p, sizeof p, "%s/latest", cdir) < (int)sizeof p) unlink(p);
    struct dirent *de;
    int rv = 0;
    while ((de = readdir(dd))) {
        if (strncmp(de->d_name, "step_", 5) != 0) continue;
        if ((snprintf(p, sizeof p, "%s/%s", cdir, de->d_name) >= (int)sizeof p || remove_step_dir(p) != 0) &&
            rv == 0) {
            snprintf(err, errlen, "checkpoint.overwrite: cannot remove %s: %s", p, strerror(errno));
            rv = -1;
        }
    }
    closedir(dd);
    return rv;
}

/* Every rank learns the first failing rank's verdict. */
static int agree(MPI_Comm comm, int rc, int *usage, char *err, size_t errlen) {
    int rank, who, u = *usage;
    MPI_Comm_rank(comm, &rank);
    who = rc ? rank : INT32_MAX;
    MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MIN, comm);
    if (who == INT32_MAX) return 0;
    MPI_Allreduce(MPI_IN_PLACE, &u, 1, MPI_INT, MPI_MAX, comm);
    *usage = u;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", rc ? err : "");
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, who, comm);
    snprintf(err, errlen, "%s", msg);
    return -1;
}

int ap_train_ckpt_init(ap_train_ckpt *c, const ap_config *cfg, const ap_model_config *mc, MPI_Comm comm, int pp,
                       int dp, int dp_rank, int stages_per_rank, int *usage, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    *usage = 0;
    c->cfg = cfg;
    c->comm = comm;
    MPI_Comm_rank(comm, &c->rank);
    c->pp = pp;
    c->dp = dp;
    c->dp_rank = dp_rank;
    c->stages_per_rank = stages_per_rank;
    snprintf(c->schedule, sizeof c->schedule, "%s",
             pp > 1 ? (cfg->autopipeline.pp_schedule_csv ? "csv" : cfg->autopipeline.pp_schedule) : "none");
    c->rows_per_step = (long)cfg->dataloader.batch_size * dp * cfg->step_scheduler.grad_acc_steps;
    c->seq_len = cfg->dataloader.seq_len;
    c->tied = mc->tie_word_embeddings || mc->model_type == AP_MODEL_GEMMA;
    c->save = cfg->checkpoint.enabled;
    int rc = 0;
    const char *cdir = cfg->checkpoint.checkpoint_dir, *r = cfg->checkpoint.resume;
    if (!r || !*r) r = "auto";
    c->config_json = ap_hf_config_to_json(mc, err, errlen);
    c->config_yaml = ap_config_to_yaml(cfg);
    if (!c->config_json || !c->config_yaml) {
        if (c->config_json) snprintf(err, errlen, "out of memory for the config YAML");
        rc = -1;
    } else if (c->save && (!cdir || !*cdir)) {
        snprintf(err, errlen, "checkpoint.checkpoint_dir is empty (checkpoint.enabled is true)");
        *usage = 1;
        rc = -1;
    } else if (!strcmp(r, "auto") || !strcmp(r, "true")) {
        if (c->save) {
            int f = ap_ckpt_find_latest(cdir, c->resume_from, sizeof c->resume_from, err, errlen);
            if (f < 0) rc = -1;
            if (f <= 0) c->resume_from[0] = 0;
        }
    } else if (!strcmp(r, "false")) {
        if (c->save && dir_nonempty(cdir)) {
            if (!cfg->checkpoint.overwrite) {
                snprintf(err, errlen,
                         "checkpoint.resume is false but checkpoint.checkpoint_dir %s is not empty: resume from it "
                         "(checkpoint.resume: auto), choose another checkpoint_dir, or set checkpoint.overwrite: "
                         "true to delete its checkpoints",
                         cdir);
                *usage = 1;
                rc = -1;
            }
        }
    } else {
        if (!ap_ckpt_is_checkpoint(r)) {
            snprintf(err, errlen, "checkpoint.resume %s: not a committed checkpoint (a step_NNNNNNNN directory "
                     "with COMMITTED, or a checkpoint_dir holding one)", r);
            *usage = 1;
            rc = -1;
        } else {
            snprintf(c->resume_from, sizeof c->resume_from, "%s", r);
        }
    }
    if (agree(comm, rc, usage, err, errlen)) return -1;
    /* overwrite: only after every rank agreed, by rank 0 alone */
    if (!strcmp(r, "false") && c->save && cfg->checkpoint.overwrite) {
        rc = c->rank == 0 ? remove_old_checkpoints(cdir, err, errlen) : 0;
        if (agree(comm, rc, usage, err, errlen)) return -1;
    }
    return 0;
}

void ap_train_ckpt_free(ap_train_ckpt *c) {
    free(c->config_json);
    free(c->config_yaml);
    c->config_json = c->config_yaml = NULL;
}

/* The tied head's copy of the embedding (a stage that is not the first
 * holding model.embed_tokens.weight) is saved once, from stage 0. */
static int skip_on_save(const ap_train_ckpt *c, const ap_stage *s, const ap_param_ref *r) {
    return c->tied && s->stage_id != 0 && !strcmp(r->name, "model.embed_tokens.weight");
}

/* Tensors of stage i of st (moments included); n_out gets the count. */
static ap_ckpt_tensor *stage_tensors(const ap_train_ckpt *c, const ap_train_state *st, int i, int for_save,
                                     int *n_out) {
    const ap_stage *s = st->stages[i];
    ap_ckpt_tensor *t = calloc((size_t)s->n_refs + 1, sizeof *t);
    int n = 0;
    if (!t) return NULL;
    for (int k = 0; k < s->n_refs; k++) {
        const ap_param_ref *r = &s->refs[k];
        if (for_save && skip_on_save(c, s, r)) continue;
        size_t off = (size_t)(r->param - s->params);
        t[n] = (ap_ckpt_tensor){r->name, r->ndim, {r->shape[0], r->shape[1], r->shape[2], r->shape[3]}, r->param,
                                st->adam_m[i] + off, st->adam_v[i] + off};
        n++;
    }
    *n_out = n;
    return t;
}

static void fill_state(const ap_train_ckpt *c, const ap_train_state *st, ap_ckpt_state *cs, unsigned char *rng) {
    memset(cs, 0, sizeof *cs);
    cs->step = st->step;
    int64_t rows = (int64_t)(st->step - c->base_step) * c->rows_per_step;
    cs->samples_consumed = c->base_samples + rows;
    cs->tokens_consumed = c->base_tokens + rows * c->seq_len;
    cs->data_pos[0] = st->data.seed;
    cs->data_pos[1] = (uint64_t)st->data.epoch;
    cs->data_pos[2] = (uint64_t)st->data.index;
    cs->n_data_pos = 3;
    /* the run's only randomness: rng.seed (initialisation, shuffling); the
     * shuffle position is data_pos */
    uint64_t seed = (uint64_t)c->cfg->rng.seed;
    for (int b = 0; b < 8; b++) rng[b] = (unsigned char)(seed >> (8 * b));
    cs->rng_state = rng;
    cs->rng_len = 8;
    cs->lr_step = st->step;
    cs->pp = c->pp;
    cs->dp = c->dp;
    cs->tp = 1;
    cs->stages_per_rank = c->stages_per_rank;
    snprintf(cs->schedule, sizeof cs->schedule, "%s", c->schedule);
    cs->config_yaml = c->config_yaml;
    cs->model_config_json = c->config_json;
}

/* Test knob AUTOPIPE_TEST_KILL_IN_SAVE=STEP: the chosen rank (as for
 * AUTOPIPE_PREEMPT_RANK) kills itself with SIGKILL after writing the first
 * tensor of its stage file in the save of STEP: a real kill -9 mid-save. */
static void kill_in_save(void *ctx, enum ap_ckpt_phase phase, const char *detail) {
    (void)ctx, (void)detail;
    if (phase == AP_CKPT_PHASE_TENSOR) raise(SIGKILL);
}

static int chosen_rank(const ap_train_ckpt *c) {
    int size = 1;
    if (c->comm != MPI_COMM_NULL) MPI_Comm_size(c->comm, &size);
    const char *pr = getenv("AUTOPIPE_PREEMPT_RANK");
    return pr && *pr ? atoi(pr) : size - 1;
}

static int hook_save(void *ctx, const ap_train_state *st, char *err, size_t errlen) {
    ap_train_ckpt *c = ctx;
    if (!c->save) return 0;
    const char *kill_at = getenv("AUTOPIPE_TEST_KILL_IN_SAVE");
    int kill_me = kill_at && *kill_at && atol(kill_at) == st->step && chosen_rank(c) == c->rank;
    ap_ckpt_state cs;
    unsigned char rng[8];
    fill_state(c, st, &cs, rng);
    int writer = c->dp_rank == 0, n = writer ? st->n_stages : 0, rv = 0;
    ap_ckpt_stage *sg = calloc((size_t)n + 1, sizeof *sg);
    if (!sg) rv = -1;
    for (int i = 0; i < n && rv == 0; i++) {
        const ap_stage *s = st->stages[i];
        ap_ckpt_tensor *t = stage_tensors(c, st, i, 1, &sg[i].n_tensors);
        if (!t) rv = -1;
        sg[i] = (ap_ckpt_stage){s->stage_id, 0, s->first_layer, s->last_layer, t, sg[i].n_tensors};
    }
    if (rv) snprintf(err, errlen, "out of memory for the checkpoint's tensor table");
    /* collective even after a local failure: the library's verdict is shared,
     * but a rank that cannot build its table passes nothing and the manifest
     * check fails the save everywhere */
    ap_ckpt_save_opts so = {c->cfg->checkpoint.keep_last, kill_me ? kill_in_save : NULL, NULL};
    char e2[1024];
    int sv = ap_ckpt_save(c->cfg->checkpoint.checkpoint_dir, &cs, sg, rv ? 0 : n, &so, c->comm, e2, sizeof e2);
    if (sv < 0 && rv == 0) {
        snprintf(err, errlen, "checkpoint of step %ld: %s", st->step, e2);
        rv = -1;
    }
    for (int i = 0; i < n; i++) free((void *)sg[i].tensors);
    free(sg);
    return rv < 0 || sv < 0 ? -1 : 0;
}

static int hook_resume(void *ctx, ap_train_state *st, int *resumed, char *err, size_t errlen) {
    ap_train_ckpt *c = ctx;
    *resumed = 0;
    if (!c->resume_from[0]) return 0;
    int total = 0, rv = 0;
    for (int i = 0; i < st->n_stages; i++) total += st->stages[i]->n_refs;
    ap_ckpt_tensor *all = calloc((size_t)total + 1, sizeof *all);
    int n = 0;
    for (int i = 0; all && i < st->n_stages; i++) {
        int k;
        ap_ckpt_tensor *t = stage_tensors(c, st, i, 0, &k);
        if (!t) break;
        memcpy(all + n, t, (size_t)k * sizeof *t);
        n += k;
        free(t);
    }
    int local_fail = !all || n != total;
    if (local_fail) snprintf(err, errlen, "out of memory for the checkpoint's tensor table");
    ap_ckpt_state cs;
    memset(&cs, 0, sizeof cs);
    char e2[1024];
    /* collective; every dp replica loads the tensors of its stages */
    rv = ap_ckpt_load(c->resume_from, c->config_json, &cs, all, local_fail ? 0 : n, c->comm, e2, sizeof e2);
    free(all);
    /* ap_ckpt_load agrees on its verdict; a local out-of-memory must be agreed too */
    int any_local = local_fail;
    MPI_Allreduce(MPI_IN_PLACE, &any_local, 1, MPI_INT, MPI_MAX, c->comm);
    if (rv == 0 && any_local && !local_fail) snprintf(err, errlen, "resume: another rank ran out of memory");
    if (rv < 0 || any_local) {
        if (rv < 0) snprintf(err, errlen, "resume from %s: %s", c->resume_from, e2);
        ap_ckpt_state_free(&cs);
        return -1;
    }
    if (cs.n_data_pos != 3 || cs.step < 0) {
        snprintf(err, errlen, "resume from %s: data_position has %d values (3 expected: seed, epoch, index) or "
                 "step %lld is negative", c->resume_from, cs.n_data_pos, (long long)cs.step);
        ap_ckpt_state_free(&cs);
        return -1;
    }
    st->step = (long)cs.step;
    c->base_step = st->step;
    c->base_samples = cs.samples_consumed;
    c->base_tokens = cs.tokens_consumed;
    st->data.seed = cs.data_pos[0];
    st->data.epoch = (int64_t)cs.data_pos[1];
    st->data.index = (int64_t)cs.data_pos[2];
    /* a checkpoint of a run with another batch shape consumed other samples
     * per step: the position stays exact (it counts samples), and so do the
     * counters (base_*) */
    ap_ckpt_state_free(&cs);
    *resumed = 1;
    return 0;
}

/* After each step: 1 when any rank was signalled (or the test knob fired). */
static int hook_stop(void *ctx, long steps_done, char *err, size_t errlen) {
    ap_train_ckpt *c = ctx;
    (void)err, (void)errlen;
    const char *at = getenv("AUTOPIPE_PREEMPT_AT_STEP");
    /* as if the signal reached one rank only: AUTOPIPE_PREEMPT_RANK, else the last */
    if (at && *at && atol(at) == steps_done && chosen_rank(c) == c->rank) g_stop = 1;
    int flag = g_stop != 0;
    if (c->comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &flag, 1, MPI_INT, MPI_MAX, c->comm);
    return flag;
}

void ap_train_ckpt_install(ap_train_ckpt *c) {
    ap_checkpoint_hooks h = {hook_resume, hook_save, c, hook_stop};
    ap_train_set_checkpoint_hooks(&h);
}

/* ---- checkpoint directories as model directories ---- */

static int reader_config(const char *dir, ap_model_config *mc, char *err, size_t errlen) {
    char *js = ap_ckpt_read_config_json(dir, err, errlen);
    if (!js) return -1;
    char name[4200];
    snprintf(name, sizeof name, "%s (checkpoint's config.json)", dir);
    int rv = ap_hf_config_parse(mc, js, strlen(js), name, err, errlen);
    free(js);
    return rv;
}

static int reader_weights(ap_stage *s, const char *dir, char *err, size_t errlen) {
    ap_ckpt *ck = NULL;
    if (ap_ckpt_open(dir, &ck, err, errlen) < 0) return -1;
    ap_ckpt_tensor *t = calloc((size_t)s->n_refs + 1, sizeof *t);
    int rv = -1;
    if (!t) {
        snprintf(err, errlen, "out of memory");
    } else {
        for (int k = 0; k < s->n_refs; k++) {
            const ap_param_ref *r = &s->refs[k];
            t[k] = (ap_ckpt_tensor){r->name, r->ndim, {r->shape[0], r->shape[1], r->shape[2], r->shape[3]},
                                    r->param, NULL, NULL};
        }
        rv = ap_ckpt_load_tensors(ck, t, s->n_refs, err, errlen);
    }
    free(t);
    ap_ckpt_close(ck);
    return rv < 0 ? -1 : 0;
}

void ap_train_ckpt_install_model_reader(void) {
    ap_model_dir_reader r = {ap_ckpt_is_checkpoint, reader_config, reader_weights};
    ap_set_checkpoint_model_reader(&r);
}

__attribute__((constructor)) static void install_reader_at_start(void) { ap_train_ckpt_install_model_reader(); }
