/* pipeline.c - the pipeline step engine: see pipeline.h. */
#include "trainer/pipeline.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launcher/config.h"
#include "launcher/mesh.h"
#include "trainer/generate.h"
#include "trainer/llama.h"
#include "trainer/model_family.h"
#include "trainer/plan.h"
#include "trainer/split.h"

#define AP_PIPE_MAX_LOCAL 16

static int pe_forward_backward(ap_step_engine *e, const ap_step_batch *b, float dloss, double *loss_sum,
                               long *n_tokens, char *err, size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    if (b->n_micro != pe->n_micro || b->mb != pe->B) {
        snprintf(err, errlen, "pipeline: the schedule runs %d microbatches of %d samples, the loop gave %d of %d",
                 pe->n_micro, pe->B, b->n_micro, b->mb);
        return -1;
    }
    if (b->mean_per_micro != ap_executor_scale_in_schedule(pe->ex)) {
        snprintf(err, errlen, "pipeline: the loop %s scale_grads_in_schedule but the executor was created %s it",
                 b->mean_per_micro ? "asks for" : "does not use", b->mean_per_micro ? "without" : "with");
        return -1;
    }
    int last = ++pe->calls >= pe->grad_acc_steps; /* start the dp all-reduce during the last batch */
    return ap_executor_forward_backward(pe->ex, b->tokens, b->labels, b->pos, dloss, last, loss_sum, n_tokens, err,
                                        errlen);
}

static int pe_forward(ap_step_engine *e, const ap_step_batch *b, double *loss_sum, long *n_tokens, char *err,
                      size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    if (b->mb != pe->B) {
        snprintf(err, errlen, "pipeline: stages take microbatches of %d samples, the loop gave %d", pe->B, b->mb);
        return -1;
    }
    return ap_executor_forward(pe->ex, b->tokens, b->labels, b->pos, b->n_micro, loss_sum, n_tokens, err, errlen);
}

static int pe_sync(ap_step_engine *e, char *err, size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    pe->calls = 0;
    if (ap_executor_sync_grads(pe->ex, err, errlen)) return -1;
    ap_executor_last_bubble(pe->ex, &pe->step_s, &pe->wait_s);
    return 0;
}

static double pe_grad_sumsq(ap_step_engine *e, int norm_inf) {
    return ap_executor_grad_sumsq(((ap_pipeline_engine *)e)->ex, norm_inf);
}

static int pe_allreduce(ap_step_engine *e, double *v, int n, int op_max, enum ap_reduce_scope scope, char *err,
                        size_t errlen) {
    ap_pipeline_engine *pe = (ap_pipeline_engine *)e;
    (void)err, (void)errlen;
    MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_DOUBLE, op_max ? MPI_MAX : MPI_SUM,
                  scope == AP_REDUCE_MODEL ? pe->pp : pe->all);
    return 0;
}

static double pe_bubble(ap_step_engine *e) { return ap_pipeline_engine_bubble((ap_pipeline_engine *)e); }

void ap_pipeline_engine_init(ap_pipeline_engine *pe, ap_executor *ex, ap_stage **stages, int n_stages,
                             MPI_Comm pp, MPI_Comm all, int n_micro, int grad_acc_steps) {
    *pe = (ap_pipeline_engine){0};
    pe->e.forward_backward = pe_forward_backward;
    pe->e.forward = pe_forward;
    pe->e.sync_grads = pe_sync;
    pe->e.grad_sumsq = pe_grad_sumsq;
    pe->e.allreduce = pe_allreduce;
    pe->e.bubble = pe_bubble;
    pe->e.stages = stages;
    pe->e.n_stages = n_stages;
    pe->e.impl = pe;
    pe->ex = ex;
    pe->pp = pp;
    pe->all = all;
    pe->n_micro = n_micro;
    pe->B = n_stages ? stages[0]->B : 0;
    pe->grad_acc_steps = grad_acc_steps > 0 ? grad_acc_steps : 1;
}

double ap_pipeline_engine_bubble(ap_pipeline_engine *pe) {
    /* collective over every rank of the mesh */
    double b = pe->step_s > 0 ? pe->wait_s / pe->step_s : 0;
    MPI_Allreduce(MPI_IN_PLACE, &b, 1, MPI_DOUBLE, MPI_MAX, pe->all);
    return b;
}

/* ---- `autopipe train` on several processes ---- */

struct ap_pipeline {
    ap_mesh_comm mesh;
    int mesh_ok, mpi_inited;
    ap_split split;
    int split_ok;
    ap_schedule *sched;
    ap_stage *stages[AP_PIPE_MAX_LOCAL];
    int n_local;
    ap_executor *ex;
    ap_pipeline_engine pe;
    const ap_model_family *family; /* builds the stages (model._target_) */
    MPI_Comm all; /* pp x dp ranks of tp rank 0 (tp must be 1) */
    size_t total_params;
    char trace_path[4096];
};

int ap_pipeline_wanted(const ap_config *cfg) {
    (void)cfg;
    /* SLURM_STEP_NUM_TASKS: an srun step without the plugin's flags (Slurm's
     * PMIx sets no size variable before MPI_Init; a batch script has none). */
    static const char *vars[] = {"AUTOPIPE_PP_SIZE", "AUTOPIPE_DP_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
                                 "PMIX_SIZE",        "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return 1;
    }
    return 0;
}

/* Every rank learns whether any failed, and the first failing rank's message. */
static int agree(int failed, char *err, size_t errlen) {
    int rank, who = failed ? 0 : INT32_MAX;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (failed) who = rank;
    MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (who == INT32_MAX) return 0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", failed && err ? err : "");
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, who, MPI_COMM_WORLD);
    if (err && errlen && rank != who) snprintf(err, errlen, "rank %d: %s", who, msg);
    return -1;
}

int ap_pipeline_create(ap_pipeline **out, const ap_config *cfg, const ap_model_config *mc,
                       const char *pretrained_dir, int *usage, char *err, size_t errlen) {
    *out = NULL;
    *usage = 0;
    ap_pipeline *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    p->all = MPI_COMM_NULL;
    int inited = 0;
    MPI_Initialized(&inited);
    if (!inited) {
        if (ap_mpi_init(NULL, NULL, err, errlen)) goto fail_local;
        p->mpi_inited = 1;
    }
    int world_rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    int failed = 0;
    /* Configuration errors every rank sees alike: checked before any communicator. */
    if (cfg->distributed.tp_size != 1) {
        snprintf(err, errlen, "distributed.tp_size is %d: tensor parallelism is not implemented (set it to 1)",
                 cfg->distributed.tp_size);
        *usage = 1;
        goto fail_local;
    }
    const int sizes[AP_NAXES] = {cfg->distributed.pp_size, cfg->distributed.dp_size, 1};
    if (ap_mesh_comm_init(&p->mesh, MPI_COMM_WORLD, sizes, "config", world_rank == 0 ? stdout : NULL, err,
                          errlen)) {
        *usage = 1;
        goto fail_local;
    }
    p->mesh_ok = 1;
    MPI_Comm_dup(MPI_COMM_WORLD, &p->all);
    int pp_size = p->mesh.mesh.size[AP_AXIS_PP], pp_rank = p->mesh.coord.r[AP_AXIS_PP];
    int dp_size = p->mesh.mesh.size[AP_AXIS_DP];
    ap_config c2 = *cfg; /* the split reads pp_size: the mesh's (the plugin's topology wins) */
    c2.distributed.pp_size = pp_size;
    c2.distributed.dp_size = dp_size;
    if (ap_split_plan(&c2, mc, &p->split, err, errlen)) {
        *usage = 1;
        goto fail_local;
    }
    p->split_ok = 1;
    int n_micro;
    if (ap_schedule_check_batch(cfg->dataloader.batch_size, cfg->autopipeline.pp_microbatch_size, &n_micro, err,
                                errlen)) {
        *usage = 1;
        goto fail_local;
    }
    char serr[8192];
    ap_schedule *cs = NULL;
    const char *csv = cfg->autopipeline.pp_schedule_csv;
    if (ap_schedule_generate(&cs, csv ? NULL : cfg->autopipeline.pp_schedule, csv, pp_size,
                             p->split.stages_per_rank, n_micro, serr, sizeof serr) ||
        ap_schedule_lower(cs, &p->sched, serr, sizeof serr) || ap_schedule_validate(p->sched, serr, sizeof serr)) {
        snprintf(err, errlen, "schedule %s (pp %d, %d stages per rank, %d microbatches): %s",
                 csv ? csv : cfg->autopipeline.pp_schedule, pp_size, p->split.stages_per_rank, n_micro, serr);
        ap_schedule_free(cs);
        *usage = 1;
        goto fail_local;
    }
    ap_schedule_free(cs);
    if (p->sched->num_stages != p->split.num_stages || p->sched->microbatches != n_micro) {
        snprintf(err, errlen, "the schedule has %d stages and %d microbatches, the split %d stages and the batch %d",
                 p->sched->num_stages, p->sched->microbatches, p->split.num_stages, n_micro);
        *usage = 1;
        goto fail_local;
    }
    if (world_rank == 0) {
        ap_plan_print(stdout, &c2, mc, &p->split, 8);
        fflush(stdout);
    }
    int ids[AP_PIPE_MAX_LOCAL];
    p->n_local = ap_schedule_rank_stages(p->sched, pp_rank, ids, AP_PIPE_MAX_LOCAL);
    if (p->n_local < 1 || p->n_local > AP_PIPE_MAX_LOCAL) {
        snprintf(err, errlen, "pp rank %d holds %d stages (1..%d supported)", pp_rank, p->n_local, AP_PIPE_MAX_LOCAL);
        p->n_local = 0;
        goto fail_local;
    }
    int S = p->sched->num_stages, T = cfg->dataloader.seq_len, mbs = cfg->autopipeline.pp_microbatch_size;
    if (!(p->family = ap_model_family_for_config(cfg, err, errlen))) {
        *usage = 1;
        goto fail_local;
    }
    for (int i = 0; i < p->n_local; i++) {
        const ap_split_stage *ss = &p->split.stages[ids[i]];
        int slots = ap_executor_peak_slots(p->sched->acts[pp_rank], p->sched->len[pp_rank], ids[i]);
        if (p->family->stage_create(&p->stages[i], mc, ss->first_layer, ss->last_layer, ss->has_embed, ss->has_head,
                                    mbs, T, slots > 0 ? slots : 1, cfg->model.activation_checkpointing, err,
                                    errlen))
            goto fail_local;
        p->stages[i]->stage_id = ids[i];
        p->stages[i]->num_stages = S;
        p->stages[i]->is_first = ids[i] == 0;
        p->stages[i]->is_last = ids[i] == S - 1;
        if (pretrained_dir) {
            if (!p->family->load_dir) {
                snprintf(err, errlen, "model.pretrained_model_name_or_path: the %s model family loads no weights",
                         p->family->name);
                *usage = 1;
                goto fail_local;
            }
            if (p->family->load_dir(p->stages[i], pretrained_dir, err, errlen)) goto fail_local;
        } else {
            p->family->init_params(p->stages[i], (uint64_t)cfg->rng.seed);
        }
    }
    if (cfg->logging.trace_dir) {
        if (mkdir(cfg->logging.trace_dir, 0755) && errno != EEXIST) {
            snprintf(err, errlen, "logging.trace_dir %s: %s", cfg->logging.trace_dir, strerror(errno));
            goto fail_local;
        }
        snprintf(p->trace_path, sizeof p->trace_path, "%s/trace_rank%05d.json", cfg->logging.trace_dir, world_rank);
    }
    failed = 0;
    goto built;
fail_local:
    failed = 1;
built:
    /* Everything above may fail on one rank alone; the executor below is collective. */
    if (p->mpi_inited || inited) {
        int u = *usage;
        if (agree(failed, err, errlen)) {
            MPI_Allreduce(MPI_IN_PLACE, &u, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
            *usage = u;
            ap_pipeline_destroy(p);
            return -1;
        }
    } else {
        free(p);
        return -1;
    }
    int pp_rank2 = p->mesh.coord.r[AP_AXIS_PP];
    ap_executor_config ec = {.pp_comm = p->mesh.pp,
                             .dp_comm = p->mesh.mesh.size[AP_AXIS_DP] > 1 ? p->mesh.dp : MPI_COMM_NULL,
                             .num_stages = p->sched->num_stages,
                             .stage_rank = p->sched->stage_to_rank,
                             .stages = p->stages,
                             .n_local = p->n_local,
                             .num_microbatches = p->sched->microbatches,
                             .actions = p->sched->acts[pp_rank2],
                             .n_actions = p->sched->len[pp_rank2],
                             .scale_grads_in_schedule = cfg->autopipeline.scale_grads_in_schedule,
                             .tie_word_embeddings = mc->tie_word_embeddings && p->family->can_tie,
                             .trace_path = p->trace_path[0] ? p->trace_path : NULL};
    failed = ap_executor_create(&p->ex, &ec, err, errlen) != 0;
    if (agree(failed, err, errlen)) {
        ap_pipeline_destroy(p);
        return -1;
    }
    ap_pipeline_engine_init(&p->pe, p->ex, p->stages, p->n_local, p->mesh.pp, p->all, p->sched->microbatches,
                            cfg->step_scheduler.grad_acc_steps);
    /* The parameter count of the model: every stage once on the first dp replica. */
    unsigned long long np = 0;
    if (p->mesh.coord.r[AP_AXIS_DP] == 0)
        for (int i = 0; i < p->n_local; i++) np += p->stages[i]->n_params;
    if (ec.tie_word_embeddings && p->sched->num_stages > 1 && p->mesh.coord.r[AP_AXIS_DP] == 0)
        for (int i = 0; i < p->n_local; i++)
            if (p->stages[i]->is_last && !p->stages[i]->is_first) {
                ap_param_ref *r = ap_llama_find_param(p->stages[i], "model.embed_tokens.weight");
                if (r) np -= r->numel;
            }
    MPI_Allreduce(MPI_IN_PLACE, &np, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, p->all);
    p->total_params = (size_t)np;
    *out = p;
    return 0;
}

ap_step_engine *ap_pipeline_get_engine(ap_pipeline *p) { return &p->pe.e; }

void ap_pipeline_set_opts(const ap_pipeline *p, ap_train_opts *o) {
    o->dp_rank = p->mesh.coord.r[AP_AXIS_DP];
    o->dp_size = p->mesh.mesh.size[AP_AXIS_DP];
    o->is_log_rank = p->mesh.rank == 0;
    /* mpirun gives ranks a pseudo-terminal whatever its own stdout is, so "auto"
     * cannot tell a terminal from a log file there: no bar unless asked for. */
    if (o->progress == 0) o->progress = 2;
}

void ap_pipeline_topology(const ap_pipeline *p, int *pp, int *dp, int *stages_per_rank) {
    *pp = p->mesh.mesh.size[AP_AXIS_PP];
    *dp = p->mesh.mesh.size[AP_AXIS_DP];
    *stages_per_rank = p->split.stages_per_rank;
}

size_t ap_pipeline_param_count(const ap_pipeline *p) { return p->total_params; }

const char *ap_pipeline_stage_error(const ap_pipeline *p) {
    for (int i = 0; i < p->n_local; i++) {
        const char *e = p->family->stage_error(p->stages[i]);
        if (e && *e) return e;
    }
    return "";
}

void ap_pipeline_destroy(ap_pipeline *p) {
    if (!p) return;
    ap_executor_destroy(p->ex);
    for (int i = 0; i < p->n_local; i++) ap_stage_destroy(p->stages[i]);
    ap_schedule_free(p->sched);
    if (p->split_ok) ap_split_free(&p->split);
    if (p->all != MPI_COMM_NULL) MPI_Comm_free(&p->all);
    if (p->mesh_ok) ap_mesh_comm_free(&p->mesh);
    int mpi_inited = p->mpi_inited;
    free(p);
    if (mpi_inited) MPI_Finalize();
}
