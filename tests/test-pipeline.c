/* test-pipeline.c - proof that pipeline (x data) parallel training equals
 * one-process training. Run under mpirun -np 4 (tests/test-pipeline.sh).
 *
 * For every schedule at (pp, dp) in {(2,1), (4,1), (2,2)} (2 stages per rank
 * for the multi-stage ones), on a model with tied embeddings and on one
 * without, with 11 layers (divisible by no stage count): 3 optimizer steps
 * (clip_grad_norm + AdamW) on the same seeded data give the same per-step
 * losses and final parameters as one process training a single stage that
 * holds every layer on the whole global batch (dp x batch_size samples), to
 * 1e-5 relative (max |a - b| / max |b| per tensor). Rank 0 prints TAP. */
#include <cjson/cJSON.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/tap.h"
#include "tests/tiny_stage.h"
#include "trainer/llama.h"
#include "trainer/executor.h"
#include "trainer/schedule/schedule.h"

enum { V = 29, C = 12, T = 6, MBS = 2, STEPS = 3, SEED = 7 };
static const double TOL = 1e-5;

static int world_rank, world_size;

/* Sample s of step k: T+1 tokens; every 5th label ignored (-100), so the
 * microbatches hold different numbers of label tokens. */
static void make_batch(int step, int first_sample, int n, int32_t *tok, int32_t *lab) {
    for (int s = 0; s < n; s++) {
        unsigned long long h = 0x12345u + (unsigned long long)step * 1000003u + (unsigned)(first_sample + s) * 7919u;
        int32_t seq[T + 1];
        for (int t = 0; t <= T; t++) {
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
            seq[t] = (int32_t)((h >> 33) % V);
        }
        for (int t = 0; t < T; t++) {
            tok[s * T + t] = seq[t];
            lab[s * T + t] = ((first_sample + s) * T + t) % 5 == 3 ? -100 : seq[t + 1];
        }
    }
}

/* torch.optim.AdamW, one flat loop. */
typedef struct {
    float *m, *v;
    int t;
} adamw;

static void adamw_step(adamw *o, ap_stage *st, float lr) {
    const float b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.01f;
    o->t++;
    float c1 = 1.0f - powf(b1, (float)o->t), c2 = 1.0f - powf(b2, (float)o->t);
    for (int r = 0; r < st->n_refs; r++) {
        ap_param_ref *p = &st->refs[r];
        size_t off = (size_t)(p->param - st->params);
        for (size_t i = 0; i < p->numel; i++) {
            float g = p->grad[i];
            float *m = &o->m[off + i], *v = &o->v[off + i];
            *m = b1 * *m + (1 - b1) * g;
            *v = b2 * *v + (1 - b2) * g * g;
            if (!p->no_decay) p->param[i] -= lr * wd * p->param[i];
            p->param[i] -= lr * (*m / c1) / (sqrtf(*v / c2) + eps);
        }
    }
}

static double clip_local(ap_stage *st, double max_norm) {
    double acc = 0;
    for (size_t i = 0; i < st->n_params; i++) acc += (double)st->grads[i] * st->grads[i];
    double coef = max_norm / (sqrt(acc) + 1e-6);
    if (max_norm > 0 && coef < 1)
        for (size_t i = 0; i < st->n_params; i++) st->grads[i] *= (float)coef;
    return sqrt(acc);
}

typedef struct {
    const char *sched;
    int pp, dp, spr, tie, nlayers, in_schedule;
    double max_norm;
    int trace; /* write and check a Chrome trace per rank */
    int llama; /* the Llama stage (trainer/llama.c) instead of the tiny model */
} tcase;

/* Stage `id` of S holding layers [first, last) of the case's model. */
static int make_stage(const tcase *c, ap_stage **out, int id, int S, int first, int last, int B, int slots) {
    if (!c->llama) return tiny_stage_create(out, id, S, first, last, V, C, B, T, c->tie, slots, SEED);
    ap_model_config mc = {.model_type = AP_MODEL_LLAMA, .vocab_size = V, .hidden_size = 16,
                          .intermediate_size = 24, .num_hidden_layers = c->nlayers, .num_attention_heads = 4,
                          .num_key_value_heads = 2, .head_dim = 4, .max_position_embeddings = 64,
                          .rms_norm_eps = 1e-5, .rope_theta = 10000, .rope_scaling = AP_ROPE_DEFAULT,
                          .hidden_act = AP_ACT_SILU, .tie_word_embeddings = c->tie, .initializer_range = 0.2,
                          .bos_token_id = -1, .eos_token_id = -1, .pad_token_id = -1};
    char err[512];
    if (ap_llama_stage_create(out, &mc, first, last, id == 0, id == S - 1, B, T, slots, 0, err, sizeof err)) {
        fprintf(stderr, "llama stage: %s\n", err);
        return -1;
    }
    (*out)->stage_id = id;
    (*out)->num_stages = S;
    ap_llama_init_params(*out, SEED);
    return 0;
}

/* Rank's trace file: one X event per executed action (3 steps + 1 eval),
 * F count = 4 x local stages x microbatches, B+I count = 3 x that, ts/dur >= 0. */
static int check_trace(const char *path, int nloc, int nmb) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    cJSON *ev = j ? cJSON_GetObjectItem(j, "traceEvents") : NULL;
    int nf = 0, nb = 0, good = cJSON_IsArray(ev);
    cJSON *e;
    cJSON_ArrayForEach(e, ev) {
        cJSON *ph = cJSON_GetObjectItem(e, "ph"), *cat = cJSON_GetObjectItem(e, "cat");
        if (!cJSON_IsString(ph) || strcmp(ph->valuestring, "X")) continue;
        cJSON *ts = cJSON_GetObjectItem(e, "ts"), *dur = cJSON_GetObjectItem(e, "dur");
        if (!cJSON_IsNumber(ts) || !cJSON_IsNumber(dur) || ts->valuedouble < 0 || dur->valuedouble < 0) good = 0;
        if (cJSON_IsString(cat) && !strcmp(cat->valuestring, "F")) nf++;
        if (cJSON_IsString(cat) && (!strcmp(cat->valuestring, "B") || !strcmp(cat->valuestring, "I"))) nb++;
    }
    cJSON_Delete(j);
    return good && nf == (STEPS + 1) * nloc * nmb && nb == STEPS * nloc * nmb;
}

static int layers_of(int L, int S, int s, int *first) {
    int base = L / S, extra = L % S;
    *first = s * base + (s < extra ? s : extra);
    return base + (s < extra);
}

/* One process: a single stage with every layer, the whole global batch.
 * Keeps the grads of step 0 (before clipping) in *grad0 and the norms. */
static int reference(const tcase *c, int nmb, double *losses, double *norms, float **grad0, ap_stage **out) {
    int G = c->dp * nmb * MBS; /* samples per step */
    int B = c->in_schedule ? MBS : G;
    ap_stage *st;
    if (make_stage(c, &st, 0, 1, 0, c->nlayers, B, 1)) return -1;
    adamw o = {calloc(st->n_params, 4), calloc(st->n_params, 4), 0};
    int32_t *tok = malloc((size_t)G * T * 4), *lab = malloc((size_t)G * T * 4);
    for (int k = 0; k < STEPS; k++) {
        make_batch(k, 0, G, tok, lab);
        memset(st->grads, 0, st->n_params * 4);
        long N = 0;
        for (int i = 0; i < G * T; i++) N += lab[i] != -100;
        double loss = 0;
        for (int s0 = 0; s0 < G; s0 += B) { /* one chunk, or one chunk per microbatch */
            double ls = 0;
            long n = 0;
            st->ops->forward(st, 0, tok + s0 * T, NULL, NULL, NULL, lab + s0 * T, &ls, &n);
            float dl = c->in_schedule ? (float)(1.0 / ((double)n * nmb * c->dp)) : (float)(1.0 / N);
            st->ops->backward(st, 0, NULL, dl, NULL);
            loss += c->in_schedule ? ls / n / (nmb * c->dp) : ls / N;
        }
        losses[k] = loss;
        if (k == 0) {
            *grad0 = malloc(st->n_params * 4);
            memcpy(*grad0, st->grads, st->n_params * 4);
        }
        norms[k] = clip_local(st, c->max_norm);
        adamw_step(&o, st, 0.01f);
    }
    free(o.m), free(o.v), free(tok), free(lab);
    *out = st;
    return 0;
}

/* max of a and b, NaN wins */
static double worst(double a, double b) { return (a != a || b != b) ? NAN : fmax(a, b); }

/* Runs one case on the first pp*dp ranks; returns on every rank. */
static void run_case(const tcase *c) {
    char err[8192] = "";
    int n = c->pp * c->dp, in = world_rank < n;
    int nmb = 4;
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, in ? 0 : MPI_UNDEFINED, world_rank, &comm);
    double worst_loss = 0, worst_param = 0, worst_grad = 0, bubble = 0, eval_err = 0;
    int fail = 0, tied_same = 1, trace_ok = 1;
    char tdir[64] = "", tpath[128] = "";
    if (c->trace) {
        if (world_rank == 0 && !mkdtemp(strcpy(tdir, "/tmp/test-pipeline-XXXXXX"))) tdir[0] = 0;
        MPI_Bcast(tdir, sizeof tdir, MPI_CHAR, 0, MPI_COMM_WORLD);
        snprintf(tpath, sizeof tpath, "%s/trace-rank%d.json", tdir, world_rank);
    }
    char label[160];
    snprintf(label, sizeof label, "%s%s pp=%d dp=%d stages/rank=%d %s %d layers%s", c->llama ? "llama " : "",
             c->sched, c->pp, c->dp, c->spr, c->tie ? "tied" : "untied", c->nlayers,
             c->in_schedule ? " scale_grads_in_schedule" : "");
    if (in) {
        /* rank = pp_rank * dp + dp_rank (pp slowest) */
        int pp_rank = world_rank / c->dp, dp_rank = world_rank % c->dp;
        MPI_Comm pp_comm, dp_comm;
        MPI_Comm_split(comm, dp_rank, pp_rank, &pp_comm);
        MPI_Comm_split(comm, pp_rank, dp_rank, &dp_comm);
        ap_schedule *cs = NULL, *ls = NULL;
        ap_stage *stages[8] = {0};
        ap_executor *ex = NULL;
        int nloc = 0;
        if (ap_schedule_generate(&cs, c->sched, NULL, c->pp, c->spr, nmb, err, sizeof err) ||
            ap_schedule_lower(cs, &ls, err, sizeof err) || ap_schedule_validate(ls, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        int ids[8];
        nloc = ap_schedule_rank_stages(ls, pp_rank, ids, 8);
        for (int i = 0; i < nloc; i++) {
            int first, nl = layers_of(c->nlayers, ls->num_stages, ids[i], &first);
            int slots = ap_executor_peak_slots(ls->acts[pp_rank], ls->len[pp_rank], ids[i]);
            if (make_stage(c, &stages[i], ids[i], ls->num_stages, first, first + nl, MBS, slots)) {
                snprintf(err, sizeof err, "stage create failed");
                fail = 1;
                goto done;
            }
        }
        ap_executor_config ec = {.pp_comm = pp_comm,
                                 .dp_comm = c->dp > 1 ? dp_comm : MPI_COMM_NULL,
                                 .num_stages = ls->num_stages,
                                 .stage_rank = ls->stage_to_rank,
                                 .stages = stages,
                                 .n_local = nloc,
                                 .num_microbatches = nmb,
                                 .actions = ls->acts[pp_rank],
                                 .n_actions = ls->len[pp_rank],
                                 .scale_grads_in_schedule = c->in_schedule,
                                 .tie_word_embeddings = c->tie,
                                 .dp_bucket_numel = 100 /* several buckets per stage */,
                                 .trace_path = c->trace ? tpath : NULL};
        if (ap_executor_create(&ex, &ec, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        double ref_loss[STEPS], ref_norm[STEPS];
        ap_stage *ref = NULL;
        float *ref_g0 = NULL;
        if (reference(c, nmb, ref_loss, ref_norm, &ref_g0, &ref)) {
            fail = 1;
            goto done;
        }
        adamw opt[8];
        for (int i = 0; i < nloc; i++)
            opt[i] = (adamw){calloc(stages[i]->n_params, 4), calloc(stages[i]->n_params, 4), 0};
        int per = nmb * MBS;
        int32_t *tok = malloc((size_t)per * T * 4), *lab = malloc((size_t)per * T * 4);
        for (int k = 0; k < STEPS && !fail; k++) {
            make_batch(k, dp_rank * per, per, tok, lab);
            ap_step_stats st;
            if (ap_executor_step(ex, tok, lab, 1, 1, 0, &st, err, sizeof err)) {
                fail = 1;
                break;
            }
            if (k == 0) /* the grads themselves, before clipping and AdamW hide a scale */
                for (int i = 0; i < nloc; i++)
                    for (int r = 0; r < stages[i]->n_refs; r++) {
                        ap_param_ref *p = &stages[i]->refs[r];
                        for (int j = 0; j < ref->n_refs; j++)
                            if (!strcmp(ref->refs[j].name, p->name) && ref->refs[j].numel == p->numel)
                                worst_grad = worst(worst_grad, tap_max_rel_err(p->grad, ref_g0 + (ref->refs[j].grad - ref->grads), p->numel, 1e-30));
                    }
            double norm = ap_executor_clip_grad_norm(ex, c->max_norm, 2.0);
            worst_loss = worst(worst_loss, fabs(norm - ref_norm[k]) / ref_norm[k]);
            for (int i = 0; i < nloc; i++) adamw_step(&opt[i], stages[i], 0.01f);
            worst_loss = worst(worst_loss, fabs(st.loss - ref_loss[k]) / fabs(ref_loss[k]));
            if (st.bubble < 0 || st.bubble > 1) fail = 1;
            bubble = fmax(bubble, st.bubble_max);
        }
        /* Every local tensor against the reference's tensor of that name. */
        for (int i = 0; i < nloc && !fail; i++)
            for (int r = 0; r < stages[i]->n_refs; r++) {
                ap_param_ref *p = &stages[i]->refs[r], *q = NULL;
                for (int j = 0; j < ref->n_refs; j++)
                    if (!strcmp(ref->refs[j].name, p->name)) q = &ref->refs[j];
                if (!q || q->numel != p->numel) {
                    snprintf(err, sizeof err, "no reference tensor %s", p->name);
                    fail = 1;
                    break;
                }
                worst_param = worst(worst_param, tap_max_rel_err(p->param, q->param, p->numel, 1e-30));
            }
        /* The tied copies are bit-identical (the first stage sends its copy to the last). */
        if (c->tie && !fail) {
            int S = ls->num_stages, r0 = ls->stage_to_rank[0], r1 = ls->stage_to_rank[S - 1];
            ap_param_ref *e0 = NULL, *e1 = NULL;
            for (int i = 0; i < nloc; i++)
                for (int r = 0; r < stages[i]->n_refs; r++)
                    if (!strcmp(stages[i]->refs[r].name, "model.embed_tokens.weight"))
                        *(stages[i]->stage_id == 0 ? &e0 : &e1) = &stages[i]->refs[r];
            if (r0 != r1 && e0) MPI_Send(e0->param, (int)e0->numel, MPI_FLOAT, r1, 99, pp_comm);
            if (r0 != r1 && e1) {
                float *tmp = malloc(e1->numel * 4);
                MPI_Recv(tmp, (int)e1->numel, MPI_FLOAT, r0, 99, pp_comm, MPI_STATUS_IGNORE);
                tied_same = !memcmp(tmp, e1->param, e1->numel * 4);
                free(tmp);
            }
            if (r0 == r1 && e0 && e1) tied_same = !memcmp(e0->param, e1->param, e0->numel * 4);
        }
        /* Forward-only validation loss against the reference model's forward. */
        if (!fail) {
            make_batch(100, dp_rank * per, per, tok, lab);
            double vloss = 0;
            if (ap_executor_eval(ex, tok, lab, &vloss, err, sizeof err)) {
                fail = 1;
            } else {
                int G = c->dp * per;
                int32_t *gt = malloc((size_t)G * T * 4), *gl = malloc((size_t)G * T * 4);
                make_batch(100, 0, G, gt, gl);
                double ls_sum = 0, rl = 0;
                long nn = 0;
                int B = ref->B;
                for (int s0 = 0; s0 < G; s0 += B) ref->ops->forward(ref, -1, gt + s0 * T, NULL, NULL, NULL, gl + s0 * T, &ls_sum, &nn);
                rl = ls_sum / nn;
                eval_err = fabs(vloss - rl) / rl;
                free(gt), free(gl);
            }
        }
        for (int i = 0; i < nloc; i++) free(opt[i].m), free(opt[i].v);
        free(tok), free(lab);
        ap_stage_destroy(ref);
        free(ref_g0);
    done:
        ap_executor_destroy(ex); /* writes the trace */
        if (c->trace && !fail) {
            trace_ok = check_trace(tpath, nloc, nmb);
            remove(tpath);
        }
        for (int i = 0; i < nloc; i++) ap_stage_destroy(stages[i]);
        ap_schedule_free(cs);
        ap_schedule_free(ls);
        MPI_Comm_free(&pp_comm);
        MPI_Comm_free(&dp_comm);
        if (fail && err[0]) fprintf(stderr, "rank %d: %s: %s\n", world_rank, label, err);
        MPI_Comm_free(&comm);
    }
    double v[6] = {worst_loss, worst_param, eval_err, (double)(fail || !tied_same), worst_grad, (double)!trace_ok};
    MPI_Allreduce(MPI_IN_PLACE, v, 6, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (c->trace && world_rank == 0 && tdir[0]) rmdir(tdir);
    MPI_Allreduce(MPI_IN_PLACE, &bubble, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (world_rank == 0) {
        ok(!v[3] && v[0] <= TOL && v[1] <= TOL && v[2] <= TOL && v[4] <= TOL,
           "%s: 3 steps match one process (loss/norm rel %.2g, grads rel %.2g, params rel %.2g, eval rel %.2g, "
           "max bubble %.2f)", label, v[0], v[4], v[1], v[2], bubble);
        if (c->trace) ok(!v[5], "%s: every rank's Chrome trace parses and holds one event per executed action", label);
    }
}

/* Activation buffers follow the schedule's window, not the microbatch count:
 * 1f1b at pp 2 holds a handful of buffers per rank with 4 microbatches and
 * with 16 (how many send buffers are still in flight when the next one is
 * needed depends on timing, so the bound is loose: 6, against 16 x 4 for
 * buffers per microbatch). */
static void buffer_window(void) {
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank < 2 ? 0 : MPI_UNDEFINED, world_rank, &comm);
    int nbuf[2] = {0, 0}, fail = 0;
    if (world_rank < 2) {
        for (int k = 0; k < 2; k++) {
            int nmb = k ? 16 : 4;
            char err[1024] = "";
            ap_schedule *cs = NULL, *ls = NULL;
            ap_stage *st = NULL;
            ap_executor *ex = NULL;
            fail |= ap_schedule_generate(&cs, "1f1b", NULL, 2, 1, nmb, err, sizeof err) ||
                    ap_schedule_lower(cs, &ls, err, sizeof err);
            int slots = fail ? 1 : ap_executor_peak_slots(ls->acts[world_rank], ls->len[world_rank], world_rank);
            fail |= tiny_stage_create(&st, world_rank, 2, world_rank * 2, world_rank * 2 + 2, V, C, MBS, T, 0, slots,
                                      SEED);
            ap_executor_config ec = {.pp_comm = comm, .dp_comm = MPI_COMM_NULL, .num_stages = 2,
                                     .stage_rank = fail ? NULL : ls->stage_to_rank, .stages = &st, .n_local = 1,
                                     .num_microbatches = nmb, .actions = fail ? NULL : ls->acts[world_rank],
                                     .n_actions = fail ? 0 : ls->len[world_rank]};
            int32_t *tok = malloc((size_t)nmb * MBS * T * 4), *lab = malloc((size_t)nmb * MBS * T * 4);
            make_batch(0, 0, nmb * MBS, tok, lab);
            if (!fail && ap_executor_create(&ex, &ec, err, sizeof err) == 0) {
                for (int step = 0; step < 2 && !fail; step++)
                    fail |= ap_executor_step(ex, tok, lab, 1, 1, 0, NULL, err, sizeof err) != 0;
                nbuf[k] = ap_executor_act_buffers(ex);
            } else {
                fail = 1;
            }
            if (fail) fprintf(stderr, "rank %d: buffer window: %s\n", world_rank, err);
            ap_executor_destroy(ex);
            ap_stage_destroy(st);
            ap_schedule_free(cs);
            ap_schedule_free(ls);
            free(tok), free(lab);
        }
        MPI_Comm_free(&comm);
    }
    int v[4] = {fail, 0, 0, 0};
    if (world_rank < 2) v[1] = nbuf[0] > 6 || nbuf[1] > 6 || nbuf[1] < 1, v[2] = nbuf[0], v[3] = nbuf[1];
    MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (!world_rank)
        ok(!v[0] && !v[1], "1f1b pp=2: activation buffers per rank stay within the schedule's window (at most "
                           "%d with 4 microbatches, %d with 16; bound 6)", v[2], v[3]);
}

/* The executor refuses action lists it cannot run, with a message. */
static void bad_lists(void) {
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, world_rank < 2 ? 0 : MPI_UNDEFINED, world_rank, &comm);
    int r_unlowered = 0, r_foreign = 0, r_slots = 0;
    if (world_rank < 2) {
        char err[1024] = "";
        ap_schedule *cs = NULL, *ls = NULL;
        ap_schedule_generate(&cs, "1f1b", NULL, 2, 1, 4, err, sizeof err);
        ap_schedule_lower(cs, &ls, err, sizeof err);
        ap_stage *st;
        tiny_stage_create(&st, world_rank, 2, world_rank * 2, world_rank * 2 + 2, V, C, MBS, T, 0, 4, SEED);
        ap_executor_config ec = {.pp_comm = comm, .dp_comm = MPI_COMM_NULL, .num_stages = 2,
                                 .stage_rank = ls->stage_to_rank, .stages = &st, .n_local = 1,
                                 .num_microbatches = 4, .actions = cs->acts[world_rank],
                                 .n_actions = cs->len[world_rank]};
        ap_executor *ex = NULL;
        /* compute-only (not lowered): no SEND/RECV */
        r_unlowered = ap_executor_create(&ex, &ec, err, sizeof err) < 0 && strstr(err, "lowered");
        /* the other rank's list: stages this rank does not hold */
        ec.actions = ls->acts[1 - world_rank];
        ec.n_actions = ls->len[1 - world_rank];
        r_foreign = ap_executor_create(&ex, &ec, err, sizeof err) < 0 && strstr(err, "does not hold");
        /* fewer activation slots than the schedule keeps in flight (stage 0 holds 2 in 1f1b pp 2) */
        ec.actions = ls->acts[world_rank];
        ec.n_actions = ls->len[world_rank];
        st->max_slots = 1; /* rank 1 (the last stage holds one) learns that rank 0 failed */
        r_slots = ap_executor_create(&ex, &ec, err, sizeof err) < 0 &&
                  strstr(err, world_rank == 0 ? "slots" : "another pp rank failed");
        st->max_slots = 4;
        ap_stage_destroy(st);
        ap_schedule_free(cs);
        ap_schedule_free(ls);
        MPI_Comm_free(&comm);
    }
    int v[3] = {r_unlowered, r_foreign, r_slots};
    if (world_rank >= 2) v[0] = v[1] = v[2] = 1;
    MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!world_rank) {
        ok(v[0], "a compute-only (not lowered) list is refused, asking whether it was lowered");
        ok(v[1], "a list naming stages of another rank is refused");
        ok(v[2], "a stage with fewer activation slots than the schedule keeps in flight is refused, and its peer "
                 "returns too instead of waiting");
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (world_size < 4) {
        if (!world_rank) printf("1..0 # SKIP needs 4 MPI ranks (run tests/test-pipeline.sh)\n");
        MPI_Finalize();
        return 0;
    }
    const char *only = argc > 1 ? argv[1] : NULL;
    static const struct {
        const char *name;
        int spr;
    } scheds[] = {{"gpipe", 1}, {"1f1b", 1}, {"interleaved_1f1b", 2}, {"looped_bfs", 2}, {"interleaved_zb", 2},
                  {"zbv", 2}};
    static const int mesh[][2] = {{2, 1}, {4, 1}, {2, 2}};
    int ncase = 0;
    for (size_t s = 0; s < sizeof scheds / sizeof *scheds; s++) {
        if (only && strcmp(only, scheds[s].name)) continue;
        for (size_t m = 0; m < 3; m++) {
            tcase c = {scheds[s].name, mesh[m][0], mesh[m][1], scheds[s].spr, (int)((s + m) % 2), 11, 0, 1.0, 0, 0};
            run_case(&c);
            ncase++;
        }
    }
    if (!only) { /* the other tying for one schedule per kind, and the guide's alternative scaling */
        tcase extra[] = {{"1f1b", 2, 2, 1, 1, 7, 0, 1.0, 0, 0},  {"zbv", 2, 2, 2, 0, 9, 0, 1.0, 0, 0},
                         {"1f1b", 2, 2, 1, 0, 5, 1, 0.0, 0, 0},  {"interleaved_1f1b", 2, 2, 2, 1, 11, 1, 0.05, 0, 0},
                         {"interleaved_zb", 2, 2, 2, 1, 11, 0, 1.0, 1, 0}};
        for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) run_case(&extra[i]);
        /* The Llama stage: every schedule, tied embeddings, 5 layers (divides no stage count here) */
        for (size_t s = 0; s < sizeof scheds / sizeof *scheds; s++) {
            tcase c = {scheds[s].name, mesh[s % 3][0], mesh[s % 3][1], scheds[s].spr, 1, 5, 0, 1.0, 0, 1};
            run_case(&c);
        }
        tcase untied = {"1f1b", 4, 1, 1, 0, 7, 0, 1.0, 0, 1};
        run_case(&untied);
    }
    bad_lists();
    buffer_window();
    int rc = 0;
    if (!world_rank) rc = tap_done();
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
