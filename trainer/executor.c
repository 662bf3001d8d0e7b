/* executor.c - one rank's part of a pipeline step: see executor.h. */
#include "common/error.h"
#include "trainer/executor.h"

#include "kernels/kernels.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TIED_TAG 0 /* pipeline tags start at 1 */

/* Per-(stage, microbatch) progress, to refuse an action whose input a local
 * neighbour has not produced yet instead of reading stale memory. */
enum { MB_NONE = 0, MB_FWD = 1, MB_DIN = 2, MB_DONE = 3 };

/* Activation buffers are pooled per stage and direction. A buffer holds one
 * microbatch from when it is produced (its receive is posted at the RECV
 * action, or a local neighbour computes into it) until the compute that reads
 * it is done; a send buffer until its send completes. A pool grows to what
 * the schedule keeps in flight during the first step and stays there, so
 * memory follows the schedule's window, not the number of microbatches. */
typedef struct {
    float *buf;
    int mb;         /* microbatch held, -1 = free */
    MPI_Request rq; /* receive posted / send in flight, else MPI_REQUEST_NULL */
} abuf;

typedef struct {
    abuf *v;
    int n;
    int sends; /* entries are freed when their send completes */
} apool;

typedef struct {
    ap_stage *st;
    int id;
    int prev_local, next_local; /* local index of stage id-1 / id+1, or -1 */
    int prev_rank, next_rank;   /* pp rank of stage id-1 / id+1, or -1 */
    apool in, dout;             /* inputs of F / output grads of B and I: received or from a local neighbour */
    apool out, din;             /* F outputs / input grads to send to a remote neighbour */
    int *slot_of_mb;            /* (nmb) */
    int *free_slots, n_free;
    unsigned char *state;       /* (nmb) MB_* */
    int last_bwd;               /* index of the last B or W action of the step, -1 if none */
    int dp_started;
    int n_tied_skip;            /* this stage's tied copy: not counted in the grad norm */
    ap_param_ref *tied;         /* the tied embedding tensor on this stage, or NULL */
    double cost_s[AP_ACT_NTYPES]; /* time spent in each compute type (training steps) */
    long cost_n[AP_ACT_NTYPES];
} lstage;

typedef struct {
    double t0, t1;
    int type, stage, mb;
    int wait; /* time blocked on the receive of a RECV, not the action itself */
} trace_ev;

struct ap_executor {
    ap_executor_config cfg;
    int pp_rank, pp_size, dp_size;
    int world_rank;
    size_t act;  /* floats per activation message */
    int nmb;
    lstage *ls;
    int n_local;
    int *local_of; /* (num_stages) local index or -1 */
    int has_first, has_last;
    int first_rank, last_rank; /* pp ranks of stage 0 and the last stage */
    MPI_Request *rq_dp;
    int n_dp, cap_dp;
    size_t bucket;
    float *tied_tmp;
    size_t tied_numel;
    double *mb_loss; /* (nmb) */
    long *mb_tokens; /* (nmb) */
    double t_origin;
    float *dl;       /* (nmb) dloss per microbatch */
    int step_open;   /* a step's forward_backward ran, its sync_grads not yet */
    double step_t0, wait_s, last_step_s, last_wait_s;
    trace_ev *ev;
    size_t n_ev, cap_ev;
};

static const char *type_name(int t) {
    static const char *n[] = {"", "F", "B", "I", "W", "SEND_F", "RECV_F", "SEND_B", "RECV_B"};
    return (t >= 0 && t < AP_ACT_NTYPES) ? n[t] : "?";
}

/* One tag per (boundary between stage b and b+1, microbatch, direction). */
static int pipe_tag(const ap_executor *ex, int boundary, int mb, int dir) {
    return 1 + (mb * (ex->cfg.num_stages - 1) + boundary) * 2 + dir;
}

/* A free buffer of p for microbatch mb: completed sends are reclaimed first,
 * and the pool grows when every buffer is in use. NULL when out of memory. */
static abuf *pool_take(apool *p, size_t numel, int mb) {
    abuf *e = NULL;
    for (int i = 0; i < p->n && !e; i++) {
        abuf *c = &p->v[i];
        if (p->sends && c->mb >= 0 && c->rq != MPI_REQUEST_NULL) {
            int done = 0;
            MPI_Test(&c->rq, &done, MPI_STATUS_IGNORE);
            if (done) c->mb = -1;
        }
        if (c->mb < 0) e = c;
    }
    if (!e) {
        abuf *v = realloc(p->v, (size_t)(p->n + 1) * sizeof *v);
        if (!v) return NULL;
        p->v = v;
        e = &v[p->n];
        if (!(e->buf = malloc((numel ? numel : 1) * sizeof(float)))) return NULL;
        p->n++;
    }
    e->mb = mb;
    e->rq = MPI_REQUEST_NULL;
    return e;
}

/* The buffer holding microbatch mb and not yet sent, or NULL. */
static abuf *pool_find(apool *p, int mb) {
    for (int i = 0; i < p->n; i++)
        if (p->v[i].mb == mb && (!p->sends || p->v[i].rq == MPI_REQUEST_NULL)) return &p->v[i];
    return NULL;
}

/* Waits for every send still in flight and frees its buffer. */
static void pool_drain(apool *p) {
    for (int i = 0; i < p->n; i++) {
        if (p->v[i].rq != MPI_REQUEST_NULL) MPI_Wait(&p->v[i].rq, MPI_STATUS_IGNORE);
        p->v[i].mb = -1;
    }
}

/* After a failed step a receive may still be posted into a buffer: cancel it
 * before the memory goes (a send left in flight means the run is aborting). */
static void pool_free(apool *p) {
    for (int i = 0; i < p->n; i++) {
        if (!p->sends && p->v[i].rq != MPI_REQUEST_NULL) {
            MPI_Cancel(&p->v[i].rq);
            MPI_Wait(&p->v[i].rq, MPI_STATUS_IGNORE);
        }
        free(p->v[i].buf);
    }
    free(p->v);
}

static ap_param_ref *find_ref(ap_stage *s, const char *name) {
    for (int i = 0; i < s->n_refs; i++)
        if (!strcmp(s->refs[i].name, name)) return &s->refs[i];
    return NULL;
}

static int push_req(MPI_Request **v, int *n, int *cap) {
    if (*n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        MPI_Request *p = realloc(*v, (size_t)nc * sizeof *p);
        if (!p) return -1;
        *v = p;
        *cap = nc;
    }
    (*n)++;
    return 0;
}

int ap_executor_peak_slots(const ap_action *acts, int n, int stage) {
    int live = 0, peak = 0;
    for (int i = 0; i < n; i++) {
        if (acts[i].stage != stage) continue;
        if (acts[i].type == AP_ACT_F) live++;
        if (acts[i].type == AP_ACT_B || acts[i].type == AP_ACT_W) live--;
        if (live > peak) peak = live;
    }
    return peak;
}

/* Per-stage action counts over microbatches, to check the list is complete. */
static int check_actions(ap_executor *ex, char *err, size_t errlen) {
    const ap_executor_config *c = &ex->cfg;
    int nmb = ex->nmb;
    int *cnt = calloc((size_t)ex->n_local * nmb * AP_ACT_NTYPES, sizeof *cnt);
    if (!cnt) return -1;
    int rv = -1;
    for (int i = 0; i < c->n_actions; i++) {
        const ap_action *a = &c->actions[i];
        if (a->type == AP_ACT_NONE) continue; /* idle cell */
        if (a->stage < 0 || a->stage >= c->num_stages || ex->local_of[a->stage] < 0) {
            ap_errf(err, errlen, "pp rank %d: action %d (%d%s%d) names stage %d, which this rank does not hold",
                   ex->pp_rank, i, a->stage, type_name(a->type), a->mb, a->stage);
            goto out;
        }
        if (a->type < AP_ACT_NONE || a->type >= AP_ACT_NTYPES || a->mb < 0 || a->mb >= nmb) {
            ap_errf(err, errlen, "pp rank %d: action %d has type %d microbatch %d (expected 0..%d)", ex->pp_rank,
                   i, a->type, a->mb, nmb - 1);
            goto out;
        }
        lstage *l = &ex->ls[ex->local_of[a->stage]];
        int remote_prev = !l->st->is_first && l->prev_local < 0;
        int remote_next = !l->st->is_last && l->next_local < 0;
        int okc = 1;
        if (a->type == AP_ACT_SEND_F || a->type == AP_ACT_RECV_B) okc = remote_next;
        if (a->type == AP_ACT_RECV_F || a->type == AP_ACT_SEND_B) okc = remote_prev;
        if (!okc) {
            ap_errf(err, errlen,
                   "pp rank %d: action %d (%d%s%d) communicates with a stage that is on this rank or does not exist",
                   ex->pp_rank, i, a->stage, type_name(a->type), a->mb);
            goto out;
        }
        if (a->type == AP_ACT_B || a->type == AP_ACT_W) l->last_bwd = i;
        cnt[((size_t)ex->local_of[a->stage] * nmb + a->mb) * AP_ACT_NTYPES + a->type]++;
    }
    for (int li = 0; li < ex->n_local; li++) {
        lstage *l = &ex->ls[li];
        int remote_prev = !l->st->is_first && l->prev_local < 0;
        int remote_next = !l->st->is_last && l->next_local < 0;
        for (int m = 0; m < nmb; m++) {
            int *k = &cnt[((size_t)li * nmb + m) * AP_ACT_NTYPES];
            int bwd_ok = (k[AP_ACT_B] == 1 && !k[AP_ACT_I] && !k[AP_ACT_W]) ||
                         (!k[AP_ACT_B] && k[AP_ACT_I] == 1 && k[AP_ACT_W] == 1);
            int comm_ok = k[AP_ACT_RECV_F] == remote_prev && k[AP_ACT_SEND_B] == remote_prev &&
                          k[AP_ACT_SEND_F] == remote_next && k[AP_ACT_RECV_B] == remote_next;
            if (k[AP_ACT_F] != 1 || !bwd_ok || !comm_ok) {
                ap_errf(err, errlen,
                       "pp rank %d: stage %d microbatch %d: the action list needs exactly one F, one B (or one I "
                       "and one W), and one SEND/RECV per remote neighbour and direction (found F=%d B=%d I=%d "
                       "W=%d SEND_F=%d RECV_F=%d SEND_B=%d RECV_B=%d); was the schedule lowered?",
                       ex->pp_rank, l->id, m, k[AP_ACT_F], k[AP_ACT_B], k[AP_ACT_I], k[AP_ACT_W], k[AP_ACT_SEND_F],
                       k[AP_ACT_RECV_F], k[AP_ACT_SEND_B], k[AP_ACT_RECV_B]);
                goto out;
            }
        }
    }
    rv = 0;
out:
    free(cnt);
    return rv;
}

static float *alloc_act(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

int ap_executor_create(ap_executor **out, const ap_executor_config *cfg, char *err, size_t errlen) {
    *out = NULL;
    if (!cfg || cfg->num_stages < 1 || cfg->n_local < 1 || !cfg->stages || !cfg->stage_rank ||
        cfg->num_microbatches < 1 || cfg->n_actions < 0 || (cfg->n_actions && !cfg->actions)) {
        ap_errf(err, errlen, "executor: bad configuration (need stages, stage ranks, microbatches >= 1)");
        return -1;
    }
    ap_executor *ex = calloc(1, sizeof *ex);
    if (!ex) goto oom;
    ex->cfg = *cfg;
    ex->nmb = cfg->num_microbatches;
    ex->n_local = cfg->n_local;
    MPI_Comm_rank(MPI_COMM_WORLD, &ex->world_rank);
    MPI_Comm_rank(cfg->pp_comm, &ex->pp_rank);
    MPI_Comm_size(cfg->pp_comm, &ex->pp_size);
    ex->dp_size = 1;
    if (cfg->dp_comm != MPI_COMM_NULL) MPI_Comm_size(cfg->dp_comm, &ex->dp_size);
    ex->bucket = cfg->dp_bucket_numel ? cfg->dp_bucket_numel : ((size_t)4 << 20);
    if (ex->bucket > (size_t)1 << 30) ex->bucket = (size_t)1 << 30; /* counts are int */
    int S = cfg->num_stages;
    for (int s = 0; s < S; s++)
        if (cfg->stage_rank[s] < 0 || cfg->stage_rank[s] >= ex->pp_size) {
            ap_errf(err, errlen, "executor: stage %d is mapped to pp rank %d, outside 0..%d", s, cfg->stage_rank[s],
                   ex->pp_size - 1);
            goto fail;
        }
    int tag_ub_ok = 0, *tag_ub = NULL;
    MPI_Comm_get_attr(cfg->pp_comm, MPI_TAG_UB, &tag_ub, &tag_ub_ok);
    long max_tag = 1 + ((long)ex->nmb * (S > 1 ? S - 1 : 1)) * 2;
    if (tag_ub_ok && tag_ub && max_tag > *tag_ub) {
        ap_errf(err, errlen, "executor: %d microbatches x %d stages need MPI tag %ld, above this MPI's limit %d",
               ex->nmb, S, max_tag, *tag_ub);
        goto fail;
    }
    ex->local_of = malloc((size_t)S * sizeof *ex->local_of);
    ex->ls = calloc((size_t)ex->n_local, sizeof *ex->ls);
    ex->mb_loss = calloc((size_t)ex->nmb, sizeof *ex->mb_loss);
    ex->mb_tokens = calloc((size_t)ex->nmb, sizeof *ex->mb_tokens);
    ex->dl = calloc((size_t)ex->nmb, sizeof *ex->dl);
    if (!ex->local_of || !ex->ls || !ex->mb_loss || !ex->mb_tokens || !ex->dl) goto oom;
    for (int s = 0; s < S; s++) ex->local_of[s] = -1;
    ex->first_rank = cfg->stage_rank[0];
    ex->last_rank = cfg->stage_rank[S - 1];
    for (int li = 0; li < ex->n_local; li++) {
        ap_stage *st = cfg->stages[li];
        if (!st || st->stage_id < 0 || st->stage_id >= S || cfg->stage_rank[st->stage_id] != ex->pp_rank ||
            ex->local_of[st->stage_id] >= 0) {
            ap_errf(err, errlen, "executor: pp rank %d: local stage %d (id %d) is missing, duplicated, or mapped "
                                "to another rank", ex->pp_rank, li, st ? st->stage_id : -1);
            goto fail;
        }
        if (st->is_first != (st->stage_id == 0) || st->is_last != (st->stage_id == S - 1)) {
            ap_errf(err, errlen, "executor: stage %d says first=%d last=%d in a pipeline of %d stages",
                   st->stage_id, st->is_first, st->is_last, S);
            goto fail;
        }
        if (li && st->act_numel != cfg->stages[0]->act_numel) {
            ap_errf(err, errlen, "executor: stages %d and %d have different activation sizes (%zu, %zu)",
                   cfg->stages[0]->stage_id, st->stage_id, cfg->stages[0]->act_numel, st->act_numel);
            goto fail;
        }
        ex->local_of[st->stage_id] = li;
        ex->ls[li].st = st;
        ex->ls[li].id = st->stage_id;
        ex->ls[li].last_bwd = -1;
        if (st->is_first) ex->has_first = 1;
        if (st->is_last) ex->has_last = 1;
    }
    ex->act = cfg->stages[0]->act_numel;
    for (int li = 0; li < ex->n_local; li++) {
        lstage *l = &ex->ls[li];
        int id = l->id;
        l->prev_local = id > 0 ? ex->local_of[id - 1] : -1;
        l->next_local = id < S - 1 ? ex->local_of[id + 1] : -1;
        l->prev_rank = id > 0 ? cfg->stage_rank[id - 1] : -1;
        l->next_rank = id < S - 1 ? cfg->stage_rank[id + 1] : -1;
        l->out.sends = l->din.sends = 1;
        l->slot_of_mb = malloc((size_t)ex->nmb * sizeof *l->slot_of_mb);
        l->state = calloc((size_t)ex->nmb, 1);
        l->free_slots = malloc((size_t)(l->st->max_slots > 0 ? l->st->max_slots : 1) * sizeof(int));
        if (!l->slot_of_mb || !l->state || !l->free_slots) goto oom;
    }
    if (check_actions(ex, err, errlen)) goto fail;
    for (int li = 0; li < ex->n_local; li++) {
        int need = ap_executor_peak_slots(cfg->actions, cfg->n_actions, ex->ls[li].id);
        if (need > ex->ls[li].st->max_slots) {
            ap_errf(err, errlen, "executor: stage %d holds up to %d microbatches in this schedule but was built "
                                "with %d activation slots", ex->ls[li].id, need, ex->ls[li].st->max_slots);
            goto fail;
        }
    }

    /* Tied embeddings: the first and last stage each hold the tensor. */
    if (cfg->tie_word_embeddings && S > 1) {
        ap_param_ref *e0 = NULL, *e1 = NULL;
        if (ex->has_first) {
            lstage *l = &ex->ls[ex->local_of[0]];
            e0 = l->tied = find_ref(l->st, "model.embed_tokens.weight");
        }
        if (ex->has_last) {
            lstage *l = &ex->ls[ex->local_of[S - 1]];
            e1 = find_ref(l->st, "model.embed_tokens.weight");
            if (!e1) e1 = find_ref(l->st, "lm_head.weight");
            l->tied = e1;
            l->n_tied_skip = 1;
        }
        if ((ex->has_first && !e0) || (ex->has_last && !e1)) {
            ap_errf(err, errlen, "executor: tie_word_embeddings is set but stage %d has no model.embed_tokens.weight",
                   ex->has_first && !e0 ? 0 : S - 1);
            goto fail;
        }
        ap_param_ref *mine = e0 ? e0 : e1;
        if (mine) ex->tied_numel = mine->numel;
        if (e0 && e1 && e0->numel != e1->numel) {
            ap_errf(err, errlen, "executor: tied embeddings differ in size (%zu, %zu)", e0->numel, e1->numel);
            goto fail;
        }
        if ((e0 && !e1) || (e1 && !e0))
            if (!(ex->tied_tmp = alloc_act(ex->tied_numel))) goto oom;
    }
    int ok = 1;
    goto agree;
oom:
    ap_errf(err, errlen, "executor: out of memory allocating pipeline buffers");
fail:
    ok = 0;
agree: {
    /* Set-up can fail on one rank alone: all pp ranks learn it before any
     * message, so none waits for a peer that has given up. */
    int all_ok = ok;
    MPI_Allreduce(MPI_IN_PLACE, &all_ok, 1, MPI_INT, MPI_MIN, cfg->pp_comm);
    if (!all_ok) {
        if (ok) ap_errf(err, errlen, "executor: another pp rank failed to set up its stages (see its message)");
        ap_executor_destroy(ex);
        return -1;
    }
}
    /* Tied embeddings start from identical values: the last stage takes the first's. */
    if (cfg->tie_word_embeddings && cfg->num_stages > 1) {
        ap_param_ref *e0 = ex->has_first ? ex->ls[ex->local_of[0]].tied : NULL;
        ap_param_ref *e1 = ex->has_last ? ex->ls[ex->local_of[cfg->num_stages - 1]].tied : NULL;
        if (e0 && e1)
            memcpy(e1->param, e0->param, e0->numel * sizeof(float));
        else if (e0)
            MPI_Send(e0->param, (int)e0->numel, MPI_FLOAT, ex->last_rank, TIED_TAG, cfg->pp_comm);
        else if (e1)
            MPI_Recv(e1->param, (int)e1->numel, MPI_FLOAT, ex->first_rank, TIED_TAG, cfg->pp_comm,
                     MPI_STATUS_IGNORE);
    }
    MPI_Barrier(cfg->pp_comm);
    ex->t_origin = MPI_Wtime();
    *out = ex;
    return 0;
}

static void write_trace(ap_executor *ex) {
    FILE *f = fopen(ex->cfg.trace_path, "w");
    if (!f) {
        fprintf(stderr, "autopipe: rank %d: cannot write trace %s\n", ex->world_rank, ex->cfg.trace_path);
        return;
    }
    fprintf(f, "{\"traceEvents\":[\n");
    fprintf(f, "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"rank %d (pp %d)\"}}",
            ex->world_rank, ex->world_rank, ex->pp_rank);
    for (size_t i = 0; i < ex->n_ev; i++) {
        const trace_ev *e = &ex->ev[i];
        fprintf(f, ",\n{\"name\":\"%s%d%s%d\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,"
                   "\"ts\":%.3f,\"dur\":%.3f,\"args\":{\"stage\":%d,\"microbatch\":%d}}",
                e->wait ? "wait " : "", e->stage, type_name(e->type), e->mb, e->wait ? "wait" : type_name(e->type),
                ex->world_rank, e->stage,
                (e->t0 - ex->t_origin) * 1e6, (e->t1 - e->t0) * 1e6, e->stage, e->mb);
    }
    fprintf(f, "\n],\"displayTimeUnit\":\"ms\"}\n");
    if (fclose(f)) fprintf(stderr, "autopipe: rank %d: error writing trace %s\n", ex->world_rank, ex->cfg.trace_path);
}

void ap_executor_destroy(ap_executor *ex) {
    if (!ex) return;
    if (ex->cfg.trace_path && ex->n_ev) write_trace(ex);
    for (int li = 0; ex->ls && li < ex->n_local; li++) {
        lstage *l = &ex->ls[li];
        pool_free(&l->in);
        pool_free(&l->dout);
        pool_free(&l->out);
        pool_free(&l->din);
        free(l->slot_of_mb);
        free(l->free_slots);
        free(l->state);
    }
    free(ex->ls);
    free(ex->local_of);
    free(ex->rq_dp);
    free(ex->tied_tmp);
    free(ex->mb_loss);
    free(ex->mb_tokens);
    free(ex->dl);
    free(ex->ev);
    free(ex);
}

static void trace(ap_executor *ex, const ap_action *a, double t0, double t1, int wait) {
    if (!ex->cfg.trace_path) return;
    if (ex->n_ev == ex->cap_ev) {
        size_t nc = ex->cap_ev ? ex->cap_ev * 2 : 1024;
        trace_ev *p = realloc(ex->ev, nc * sizeof *p);
        if (!p) return; /* a trace is best effort: drop events rather than fail the step */
        ex->ev = p;
        ex->cap_ev = nc;
    }
    ex->ev[ex->n_ev++] = (trace_ev){t0, t1, a->type, a->stage, a->mb, wait};
}

static long count_labels(const int32_t *labels, size_t n) {
    long c = 0;
    for (size_t i = 0; i < n; i++) c += labels[i] != -100;
    return c;
}

long ap_executor_count_labels(ap_executor *ex, const int32_t *labels) {
    long n = 0;
    if (ex->has_last) {
        if (!labels) return -1;
        const ap_stage *st = ex->ls[ex->local_of[ex->cfg.num_stages - 1]].st;
        n = count_labels(labels, (size_t)ex->nmb * st->B * st->T);
        if (ex->cfg.dp_comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &n, 1, MPI_LONG, MPI_SUM, ex->cfg.dp_comm);
    }
    MPI_Bcast(&n, 1, MPI_LONG, ex->last_rank, ex->cfg.pp_comm);
    return n;
}

/* Start the bucketed dp all-reduce of a stage's grads. */
static int start_dp(ap_executor *ex, lstage *l) {
    l->dp_started = 1;
    if (ex->dp_size <= 1) return 0;
    for (size_t off = 0; off < l->st->n_params; off += ex->bucket) {
        size_t n = l->st->n_params - off < ex->bucket ? l->st->n_params - off : ex->bucket;
        if (push_req(&ex->rq_dp, &ex->n_dp, &ex->cap_dp)) return -1;
        MPI_Iallreduce(MPI_IN_PLACE, l->st->grads + off, (int)n, MPI_FLOAT, MPI_SUM, ex->cfg.dp_comm,
                       &ex->rq_dp[ex->n_dp - 1]);
    }
    return 0;
}

/* Sum the tied embedding grads of the first and last stage. */
static void sum_tied(ap_executor *ex) {
    int S = ex->cfg.num_stages;
    if (!ex->cfg.tie_word_embeddings || S < 2 || (!ex->has_first && !ex->has_last)) return;
    ap_param_ref *e0 = ex->has_first ? ex->ls[ex->local_of[0]].tied : NULL;
    ap_param_ref *e1 = ex->has_last ? ex->ls[ex->local_of[S - 1]].tied : NULL;
    size_t n = ex->tied_numel;
    if (e0 && e1) {
        for (size_t i = 0; i < n; i++) e0->grad[i] += e1->grad[i];
        memcpy(e1->grad, e0->grad, n * sizeof(float));
        return;
    }
    ap_param_ref *mine = e0 ? e0 : e1;
    int peer = e0 ? ex->last_rank : ex->first_rank;
    MPI_Sendrecv(mine->grad, (int)n, MPI_FLOAT, peer, TIED_TAG, ex->tied_tmp, (int)n, MPI_FLOAT, peer, TIED_TAG,
                 ex->cfg.pp_comm, MPI_STATUS_IGNORE);
    /* first + last in the same order on both sides: bit-identical results. */
    if (e0)
        for (size_t i = 0; i < n; i++) mine->grad[i] = mine->grad[i] + ex->tied_tmp[i];
    else
        for (size_t i = 0; i < n; i++) mine->grad[i] = ex->tied_tmp[i] + mine->grad[i];
}

/* Blocks until the receive into e has arrived; the time blocked is the bubble,
 * traced as a "wait" on the RECV it belongs to. */
static void wait_recv(ap_executor *ex, abuf *e, int stage, int recv_type) {
    if (e->rq == MPI_REQUEST_NULL) return;
    double t0 = MPI_Wtime();
    MPI_Wait(&e->rq, MPI_STATUS_IGNORE);
    double t1 = MPI_Wtime();
    ex->wait_s += t1 - t0;
    trace(ex, &(ap_action){.stage = stage, .type = recv_type, .mb = e->mb}, t0, t1, 1);
}

/* Runs the action list once. train: forward and backward of all
 * num_microbatches; else forward-only (no grad) over the F, SEND_F and RECV_F
 * actions of microbatches < n_micro: a sub-order of a deadlock-free order is
 * deadlock-free. dl: dloss per microbatch.
 *
 * As in torch.distributed.pipelining, a RECV posts the receive and the
 * compute that reads it waits for it; sends never block until the end of the
 * step. The validator proves the list deadlock-free under exactly these
 * rules. */
static int run_actions(ap_executor *ex, const int32_t *tokens, const int32_t *labels, const int32_t *pos,
                       int train, int n_micro, int sync, const float *dl, char *err, size_t errlen) {
    const ap_executor_config *c = &ex->cfg;
    MPI_Comm pp = c->pp_comm;
    int A = (int)ex->act;
    for (int m = 0; m < ex->nmb; m++) {
        ex->mb_loss[m] = 0;
        ex->mb_tokens[m] = 0;
    }
    for (int li = 0; li < ex->n_local; li++) {
        lstage *l = &ex->ls[li];
        l->n_free = 0;
        for (int s = l->st->max_slots - 1; s >= 0; s--) l->free_slots[l->n_free++] = s;
        for (int m = 0; m < ex->nmb; m++) {
            l->slot_of_mb[m] = -1;
            l->state[m] = MB_NONE;
        }
    }
    const ap_stage *any = ex->ls[0].st;
    size_t bt = (size_t)any->B * any->T;
    for (int i = 0; i < c->n_actions; i++) {
        const ap_action *a = &c->actions[i];
        int t = a->type, m = a->mb;
        if (t == AP_ACT_NONE || m >= n_micro) continue;
        if (!train && t != AP_ACT_F && t != AP_ACT_SEND_F && t != AP_ACT_RECV_F) continue;
        lstage *l = &ex->ls[ex->local_of[a->stage]];
        ap_stage *st = l->st;
        abuf *src = NULL, *dst = NULL; /* the buffer a compute reads, the one it writes */
        if (t == AP_ACT_F) {
            if (l->state[m] != MB_NONE) goto order;
            if (!st->is_first && !(src = pool_find(&l->in, m))) goto order;
            if (src) wait_recv(ex, src, l->id, AP_ACT_RECV_F);
            apool *to = l->next_local >= 0 ? &ex->ls[l->next_local].in : st->is_last ? NULL : &l->out;
            if (to && !(dst = pool_take(to, ex->act, m))) goto oom;
        } else if (t == AP_ACT_B || t == AP_ACT_I) {
            if (l->state[m] != MB_FWD) goto order;
            if (!st->is_last && !(src = pool_find(&l->dout, m))) goto order;
            if (src) wait_recv(ex, src, l->id, AP_ACT_RECV_B);
            apool *to = l->prev_local >= 0 ? &ex->ls[l->prev_local].dout : st->is_first ? NULL : &l->din;
            if (to && !(dst = pool_take(to, ex->act, m))) goto oom;
        }
        double t0 = MPI_Wtime();
        int rc = 0;
        switch (t) {
        case AP_ACT_F: {
            int slot = -1;
            if (train) {
                if (!l->n_free) {
                    ap_errf(err, errlen, "executor: stage %d ran out of activation slots (%d) at microbatch %d",
                           l->id, st->max_slots, m);
                    return -1;
                }
                slot = l->free_slots[--l->n_free];
                l->slot_of_mb[m] = slot;
            }
            rc = st->ops->forward(st, slot, st->is_first ? tokens + (size_t)m * bt : NULL,
                                  pos ? pos + (size_t)m * bt : NULL, src ? src->buf : NULL, dst ? dst->buf : NULL, st->is_last ? labels + (size_t)m * bt : NULL,
                                  &ex->mb_loss[m], &ex->mb_tokens[m]);
            l->state[m] = MB_FWD;
            break;
        }
        case AP_ACT_B:
        case AP_ACT_I: {
            float dloss = st->is_last ? dl[m] : 0.0f;
            if (t == AP_ACT_B) {
                rc = st->ops->backward(st, l->slot_of_mb[m], src ? src->buf : NULL, dloss, dst ? dst->buf : NULL);
                l->free_slots[l->n_free++] = l->slot_of_mb[m];
                l->state[m] = MB_DONE;
            } else {
                rc = st->ops->backward_input(st, l->slot_of_mb[m], src ? src->buf : NULL, dloss,
                                             dst ? dst->buf : NULL);
                l->state[m] = MB_DIN;
            }
            break;
        }
        case AP_ACT_W:
            if (l->state[m] != MB_DIN) goto order;
            rc = st->ops->backward_weight(st, l->slot_of_mb[m]);
            l->free_slots[l->n_free++] = l->slot_of_mb[m];
            l->state[m] = MB_DONE;
            break;
        case AP_ACT_SEND_F:
        case AP_ACT_SEND_B: {
            int fwd = t == AP_ACT_SEND_F;
            abuf *e = pool_find(fwd ? &l->out : &l->din, m);
            if (!e) goto order;
            MPI_Isend(e->buf, A, MPI_FLOAT, fwd ? l->next_rank : l->prev_rank,
                      pipe_tag(ex, fwd ? a->stage : a->stage - 1, m, !fwd), pp, &e->rq);
            break;
        }
        case AP_ACT_RECV_F:
        case AP_ACT_RECV_B: {
            int fwd = t == AP_ACT_RECV_F;
            apool *p = fwd ? &l->in : &l->dout;
            if (pool_find(p, m)) goto order; /* posted twice */
            abuf *e = pool_take(p, ex->act, m);
            if (!e) goto oom;
            MPI_Irecv(e->buf, A, MPI_FLOAT, fwd ? l->prev_rank : l->next_rank,
                      pipe_tag(ex, fwd ? a->stage - 1 : a->stage, m, !fwd), pp, &e->rq);
            break;
        }
        }
        if (src) src->mb = -1; /* consumed: the stage copied what it keeps */
        if (rc) {
            ap_errf(err, errlen, "executor: stage %d failed in %s of microbatch %d (%d)", l->id, type_name(t), m, rc);
            return -1;
        }
        double t1 = MPI_Wtime();
        if (train && ap_act_is_compute(t)) {
            l->cost_s[t] += t1 - t0;
            l->cost_n[t]++;
        }
        if (train && sync && i == l->last_bwd && !l->dp_started && start_dp(ex, l)) goto oom;
        if (ex->n_dp) {
            int flag;
            MPI_Testall(ex->n_dp, ex->rq_dp, &flag, MPI_STATUSES_IGNORE); /* progress the all-reduces */
        }
        trace(ex, a, t0, t1, 0);
        continue;
    order:
        ap_errf(err, errlen, "executor: pp rank %d: action %d%s%d comes before the work it depends on on this rank",
               ex->pp_rank, a->stage, type_name(t), m);
        return -1;
    }
    for (int li = 0; li < ex->n_local; li++) {
        pool_drain(&ex->ls[li].out);
        pool_drain(&ex->ls[li].din);
    }
    return 0;
oom:
    ap_errf(err, errlen, "executor: out of memory");
    return -1;
}

static int need_data(ap_executor *ex, const int32_t *tokens, const int32_t *labels, char *err, size_t errlen) {
    if ((ex->has_first && !tokens) || (ex->has_last && !labels)) {
        ap_errf(err, errlen, "executor: pp rank %d holds the %s stage but got no %s", ex->pp_rank,
               ex->has_first && !tokens ? "first" : "last", ex->has_first && !tokens ? "token ids" : "labels");
        return -1;
    }
    return 0;
}

int ap_executor_forward_backward(ap_executor *ex, const int32_t *tokens, const int32_t *labels, const int32_t *pos,
                                 float dloss, int last_of_step, double *loss_sum, long *n_tokens, char *err,
                                 size_t errlen) {
    if (need_data(ex, tokens, labels, err, errlen)) return -1;
    if (!ex->step_open) {
        ex->step_open = 1;
        ex->step_t0 = MPI_Wtime();
        ex->wait_s = 0;
        for (int li = 0; li < ex->n_local; li++) ex->ls[li].dp_started = 0;
    }
    float *dl = ex->dl;
    if (ex->has_last) {
        const ap_stage *last = ex->ls[ex->local_of[ex->cfg.num_stages - 1]].st;
        size_t bt = (size_t)last->B * last->T;
        for (int m = 0; m < ex->nmb; m++) {
            if (ex->cfg.scale_grads_in_schedule) { /* the microbatch's mean, weighted by dloss */
                long nm = count_labels(labels + (size_t)m * bt, bt);
                dl[m] = nm ? (float)((double)dloss / (double)nm) : 0.0f;
            } else {
                dl[m] = dloss;
            }
        }
    }
    if (run_actions(ex, tokens, labels, pos, 1, ex->nmb, last_of_step, dl, err, errlen)) return -1;
    if (ex->has_last)
        for (int m = 0; m < ex->nmb; m++) {
            if (ex->cfg.scale_grads_in_schedule) {
                if (ex->mb_tokens[m]) *loss_sum += ex->mb_loss[m] / (double)ex->mb_tokens[m];
                *n_tokens += 1;
            } else {
                *loss_sum += ex->mb_loss[m];
                *n_tokens += ex->mb_tokens[m];
            }
        }
    return 0;
}

int ap_executor_sync_grads(ap_executor *ex, char *err, size_t errlen) {
    for (int li = 0; li < ex->n_local; li++)
        if (!ex->ls[li].dp_started && start_dp(ex, &ex->ls[li])) {
            ap_errf(err, errlen, "executor: out of memory");
            return -1;
        }
    MPI_Waitall(ex->n_dp, ex->rq_dp, MPI_STATUSES_IGNORE);
    ex->n_dp = 0;
    sum_tied(ex);
    ex->step_open = 0;
    ex->last_step_s = MPI_Wtime() - ex->step_t0;
    ex->last_wait_s = ex->wait_s;
    return 0;
}

void ap_executor_last_bubble(const ap_executor *ex, double *step_s, double *wait_s) {
    *step_s = ex->last_step_s;
    *wait_s = ex->last_wait_s;
}

int ap_executor_forward(ap_executor *ex, const int32_t *tokens, const int32_t *labels, const int32_t *pos,
                        int n_micro, double *loss_sum, long *n_tokens, char *err, size_t errlen) {
    if (need_data(ex, tokens, labels, err, errlen)) return -1;
    const ap_stage *any = ex->ls[0].st;
    size_t bt = (size_t)any->B * any->T;
    double keep = ex->wait_s; /* validation waits are not the training step's bubble */
    for (int m0 = 0; m0 < n_micro; m0 += ex->nmb) {
        int n = n_micro - m0 < ex->nmb ? n_micro - m0 : ex->nmb;
        if (run_actions(ex, tokens ? tokens + (size_t)m0 * bt : NULL, labels ? labels + (size_t)m0 * bt : NULL,
                        pos ? pos + (size_t)m0 * bt : NULL, 0, n, 0, NULL, err, errlen))
            return -1;
        if (ex->has_last)
            for (int m = 0; m < n; m++) {
                *loss_sum += ex->mb_loss[m];
                *n_tokens += ex->mb_tokens[m];
            }
    }
    ex->wait_s = keep;
    return 0;
}

/* The mean loss on every rank: summed over dp on the last stage, broadcast over pp. */
static double reduce_loss(ap_executor *ex, double num, double den) {
    double v[2] = {num, den};
    if (ex->has_last && ex->cfg.dp_comm != MPI_COMM_NULL)
        MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, ex->cfg.dp_comm);
    MPI_Bcast(v, 2, MPI_DOUBLE, ex->last_rank, ex->cfg.pp_comm);
    return v[1] > 0 ? v[0] / v[1] : 0.0;
}

int ap_executor_step(ap_executor *ex, const int32_t *tokens, const int32_t *labels, int zero_grads,
                     int sync_grads, long total_tokens, ap_step_stats *st, char *err, size_t errlen) {
    if (need_data(ex, tokens, labels, err, errlen)) return -1;
    if (zero_grads)
        for (int li = 0; li < ex->n_local; li++)
            memset(ex->ls[li].st->grads, 0, ex->ls[li].st->n_params * sizeof(float));
    long N = total_tokens > 0 ? total_tokens : ap_executor_count_labels(ex, labels);
    double num = 0;
    long den = 0;
    /* scale_grads_in_schedule: each microbatch mean weighs 1 / (microbatches x dp ranks) */
    double w = ex->cfg.scale_grads_in_schedule ? 1.0 / ((double)ex->nmb * ex->dp_size) : N > 0 ? 1.0 / (double)N : 0;
    if (ap_executor_forward_backward(ex, tokens, labels, NULL, (float)w, sync_grads, &num, &den, err, errlen))
        return -1;
    if (sync_grads && ap_executor_sync_grads(ex, err, errlen)) return -1;
    double loss = reduce_loss(ex, num, (double)den);
    if (st) {
        memset(st, 0, sizeof *st);
        st->loss = loss;
        st->n_tokens = N;
        st->step_s = ex->last_step_s;
        st->wait_s = ex->last_wait_s;
        st->bubble = st->step_s > 0 ? st->wait_s / st->step_s : 0;
        double b = st->bubble;
        MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_MAX, ex->cfg.pp_comm);
        if (ex->cfg.dp_comm != MPI_COMM_NULL) MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_MAX, ex->cfg.dp_comm);
        st->bubble_max = b;
    }
    return 0;
}

int ap_executor_eval(ap_executor *ex, const int32_t *tokens, const int32_t *labels, double *loss, char *err,
                     size_t errlen) {
    double num = 0;
    long den = 0;
    if (ap_executor_forward(ex, tokens, labels, NULL, ex->nmb, &num, &den, err, errlen)) return -1;
    *loss = reduce_loss(ex, num, (double)den);
    return 0;
}

/* acc combined with the sum of squares (or max |g|) of g[0..n): a NaN stays. */
static double norm_part(double acc, const float *g, size_t n, int inf) {
    if (!n) return acc;
    if (!inf) return acc + ap_sumsq(g, n);
    double a = (double)ap_absmax(g, n);
    return isnan(a) || isnan(acc) ? NAN : fmax(acc, a);
}

double ap_executor_grad_sumsq(const ap_executor *ex, int inf) {
    double acc = 0;
    for (int li = 0; li < ex->n_local; li++) {
        const lstage *l = &ex->ls[li];
        const float *g = l->st->grads;
        size_t n = l->st->n_params;
        const ap_param_ref *t = l->n_tied_skip ? l->tied : NULL;
        if (t && t->grad >= g && t->grad + t->numel <= g + n) {
            /* the last stage's copy of a tied tensor: the first stage counts it */
            size_t a = (size_t)(t->grad - g), b = a + t->numel;
            acc = norm_part(acc, g, a, inf);
            acc = norm_part(acc, g + b, n - b, inf);
        } else {
            acc = norm_part(acc, g, n, inf);
        }
    }
    return acc;
}

double ap_executor_clip_grad_norm(ap_executor *ex, double max_norm, double norm_type) {
    int inf = isinf(norm_type);
    double acc = ap_executor_grad_sumsq(ex, inf);
    MPI_Allreduce(MPI_IN_PLACE, &acc, 1, MPI_DOUBLE, inf ? MPI_MAX : MPI_SUM, ex->cfg.pp_comm);
    double norm = inf ? acc : sqrt(acc);
    if (max_norm > 0) {
        double coef = max_norm / (norm + 1e-6);
        if (coef < 1.0) {
            float cf = (float)coef;
            for (int li = 0; li < ex->n_local; li++) {
                float *g = ex->ls[li].st->grads;
                for (size_t i = 0; i < ex->ls[li].st->n_params; i++) g[i] *= cf;
            }
        }
    }
    return norm;
}

void ap_executor_scale_grads_by_divisor(ap_executor *ex, double divisor) {
    if (divisor == 0) return;
    float f = (float)(1.0 / divisor);
    for (int li = 0; li < ex->n_local; li++) {
        float *g = ex->ls[li].st->grads;
        for (size_t i = 0; i < ex->ls[li].st->n_params; i++) g[i] *= f;
    }
}

int ap_executor_scale_in_schedule(const ap_executor *ex) { return ex->cfg.scale_grads_in_schedule; }

int ap_executor_act_buffers(const ap_executor *ex) {
    int n = 0;
    for (int li = 0; li < ex->n_local; li++)
        n += ex->ls[li].in.n + ex->ls[li].dout.n + ex->ls[li].out.n + ex->ls[li].din.n;
    return n;
}

int ap_executor_action_cost(const ap_executor *ex, int stage, int type, double *mean_s) {
    if (stage < 0 || stage >= ex->cfg.num_stages || ex->local_of[stage] < 0 || type <= AP_ACT_NONE ||
        type >= AP_ACT_NTYPES)
        return -1;
    const lstage *l = &ex->ls[ex->local_of[stage]];
    if (!l->cost_n[type]) return -1;
    *mean_s = l->cost_s[type] / (double)l->cost_n[type];
    return 0;
}

void ap_executor_reset_costs(ap_executor *ex) {
    for (int li = 0; li < ex->n_local; li++) {
        memset(ex->ls[li].cost_s, 0, sizeof ex->ls[li].cost_s);
        memset(ex->ls[li].cost_n, 0, sizeof ex->ls[li].cost_n);
    }
}
