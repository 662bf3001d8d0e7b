/* test-pipeline-train.c - the training loop (trainer/train.c) with the
 * pipeline engine equals the loop with the single-process engine. Run under
 * mpirun -np 4 (tests/test-pipeline.sh).
 *
 * Same seed, same built-in text, a Llama with tied embeddings and a layer
 * count no stage count divides: 3 optimizer steps (LR warmup, AdamW, clipping,
 * gradient accumulation in one case) at pp x dp with batch_size per dp rank
 * give the same first/last loss, grad norm, validation loss and final
 * parameters as one process with batch_size x dp, to 1e-5 relative. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/tap.h"
#include "trainer/data.h"
#include "trainer/llama.h"
#include "trainer/pipeline.h"
#include "trainer/tokenizer.h"
#include "trainer/train.h"

enum { T = 16, MBS = 2, SEED = 11 };
static const double TOL = 1e-5;
static int world_rank;

typedef struct {
    const char *sched;
    int pp, dp, spr, batch, grad_acc, nlayers;
    double max_norm;
    int in_sched; /* scale_grads_in_schedule, on SFT data whose samples differ in label count */
} tcase;

static char sft_path[256]; /* written by rank 0 at start */

/* SFT examples of 3..17 tokens (2..16 labels; T = 16 truncates the longest), padded to T. */
static int write_sft(void) {
    char dir[] = "/tmp/test-pipeline-train-XXXXXX";
    if (!mkdtemp(dir)) return -1;
    snprintf(sft_path, sizeof sft_path, "%s/sft.jsonl", dir);
    FILE *f = fopen(sft_path, "w");
    if (!f) return -1;
    for (int i = 0; i < 160; i++) {
        int len = 3 + (i * 7) % 15;
        fprintf(f, "{\"input_ids\": [");
        for (int t = 0; t < len; t++) fprintf(f, "%s%d", t ? ", " : "", 32 + (i * 31 + t * 17) % 90);
        fprintf(f, "]}\n");
    }
    return fclose(f);
}

static ap_model_config model_of(int nlayers) {
    return (ap_model_config){.model_type = AP_MODEL_LLAMA, .vocab_size = AP_BYTE_VOCAB, .hidden_size = 16,
                             .intermediate_size = 32, .num_hidden_layers = nlayers, .num_attention_heads = 4,
                             .num_key_value_heads = 2, .head_dim = 4, .max_position_embeddings = 64,
                             .rms_norm_eps = 1e-5, .rope_theta = 10000, .rope_scaling = AP_ROPE_DEFAULT,
                             .hidden_act = AP_ACT_SILU, .tie_word_embeddings = 1, .initializer_range = 0.1,
                             .bos_token_id = -1, .eos_token_id = -1, .pad_token_id = -1};
}

static ap_train_opts opts_of(const tcase *c, int batch, int dp_rank, int dp_size) {
    ap_train_opts o = {0};
    o.max_steps = 3;
    o.grad_acc_steps = c->grad_acc;
    o.batch_size = batch;
    o.micro_batch_size = MBS;
    o.seq_len = T;
    o.dp_rank = dp_rank;
    o.dp_size = dp_size;
    o.lr = (ap_lr_schedule){3e-4, 3e-3, 3e-4, 2, 3, AP_LR_COSINE};
    o.beta1 = 0.9, o.beta2 = 0.95, o.eps = 1e-8, o.weight_decay = 0.01;
    o.max_norm = c->max_norm;
    o.scale_grads_in_schedule = c->in_sched;
    o.val_every_steps = 3;
    o.log_every_steps = 1;
    o.quiet = 1;
    return o;
}

static int open_data(const tcase *c, ap_dataset **tr, ap_dataset **va, ap_loader *ld, char *err, size_t errlen) {
    ap_data_opts d = {.path = c->in_sched ? sft_path : NULL, .format = AP_DATA_AUTO, .seq_len = T, .vocab_size = AP_BYTE_VOCAB,
                      .pad_id = AP_BYTE_PAD, .packed = 0};
    ap_dataset *all;
    if (ap_dataset_open(&all, &d, err, errlen)) return -1;
    int rc = ap_dataset_split(all, 0.05, tr, va, err, errlen);
    ap_dataset_free(all);
    if (rc) return -1;
    return ap_loader_init(ld, *tr, 1, SEED, err, errlen);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }
static double worst(double a, double b) { return (a != a || b != b) ? NAN : fmax(a, b); }

static void run_case(const tcase *c) {
    char err[4096] = "";
    int n = c->pp * c->dp, in = world_rank < n, fail = 0;
    double w = 0, wp = 0, bubble = 0, vs_default = INFINITY;
    int guard = 1;
    MPI_Comm comm;
    MPI_Comm_split(MPI_COMM_WORLD, in ? 0 : MPI_UNDEFINED, world_rank, &comm);
    if (in) {
        int pp_rank = world_rank / c->dp, dp_rank = world_rank % c->dp;
        MPI_Comm pp, dp;
        MPI_Comm_split(comm, dp_rank, pp_rank, &pp);
        MPI_Comm_split(comm, pp_rank, dp_rank, &dp);
        ap_model_config mc = model_of(c->nlayers);
        ap_dataset *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL;
        ap_loader ld = {0}, ld2 = {0};
        ap_schedule *cs = NULL, *ls = NULL;
        ap_stage *stages[4] = {0}, *ref = NULL;
        ap_executor *ex = NULL;
        int nloc = 0, nmb = c->batch / MBS;
        ap_train_result r_pipe, r_ref;
        /* the reference: one process, the whole model, batch x dp */
        if (open_data(c, &tr2, &va2, &ld2, err, sizeof err) ||
            ap_llama_stage_create(&ref, &mc, 0, c->nlayers, 1, 1, MBS, T, 1, 0, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        ap_llama_init_params(ref, SEED);
        ap_step_engine se;
        ap_step_engine_single(&se, &ref);
        ap_train_opts ro = opts_of(c, c->batch * c->dp, 0, 1);
        if (ap_train_loop(&ro, &se, &ld2, va2, NULL, &r_ref, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        if (c->in_sched) { /* the default scaling on the same data: a different step */
            ap_dataset *tr3 = NULL, *va3 = NULL;
            ap_loader ld3 = {0};
            ap_stage *r3 = NULL;
            ap_step_engine e3;
            ap_train_result r_def;
            tcase d = *c;
            d.in_sched = 0;
            ap_train_opts o3 = opts_of(&d, c->batch * c->dp, 0, 1);
            int rc3 = open_data(c, &tr3, &va3, &ld3, err, sizeof err) ||
                      ap_llama_stage_create(&r3, &mc, 0, c->nlayers, 1, 1, MBS, T, 1, 0, err, sizeof err);
            if (!rc3) {
                ap_llama_init_params(r3, SEED);
                ap_step_engine_single(&e3, &r3);
                rc3 = ap_train_loop(&o3, &e3, &ld3, va3, NULL, &r_def, err, sizeof err);
            }
            if (!rc3) /* the largest of: first loss, last grad norm, final parameters */
                vs_default = fmax(fmax(rel(r_def.first_loss, r_ref.first_loss),
                                       rel(r_def.last_grad_norm, r_ref.last_grad_norm)),
                                  tap_max_rel_err(r3->params, ref->params, ref->n_params, 1e-30));
            if (!rc3 && !world_rank)
                printf("# rank %d: default vs scale_grads_in_schedule: first loss %.3g, grad norm %.3g, "
                        "params %.3g rel\n", world_rank, rel(r_def.first_loss, r_ref.first_loss),
                        rel(r_def.last_grad_norm, r_ref.last_grad_norm),
                        tap_max_rel_err(r3->params, ref->params, ref->n_params, 1e-30));
            ap_stage_destroy(r3);
            ap_loader_free(&ld3);
            ap_dataset_free(tr3);
            ap_dataset_free(va3);
            if (rc3) {
                fail = 1;
                goto done;
            }
        }
        /* the pipeline */
        if (open_data(c, &tr, &va, &ld, err, sizeof err) ||
            ap_schedule_generate(&cs, c->sched, NULL, c->pp, c->spr, nmb, err, sizeof err) ||
            ap_schedule_lower(cs, &ls, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        int ids[4];
        nloc = ap_schedule_rank_stages(ls, pp_rank, ids, 4);
        int S = ls->num_stages;
        for (int i = 0; i < nloc; i++) {
            int base = c->nlayers / S, extra = c->nlayers % S, s = ids[i];
            int first = s * base + (s < extra ? s : extra), nl = base + (s < extra);
            int slots = ap_executor_peak_slots(ls->acts[pp_rank], ls->len[pp_rank], s);
            if (ap_llama_stage_create(&stages[i], &mc, first, first + nl, s == 0, s == S - 1, MBS, T, slots, 0, err,
                                      sizeof err)) {
                fail = 1;
                goto done;
            }
            stages[i]->stage_id = s;
            stages[i]->num_stages = S;
            ap_llama_init_params(stages[i], SEED);
        }
        ap_executor_config ec = {.pp_comm = pp,
                                 .dp_comm = c->dp > 1 ? dp : MPI_COMM_NULL,
                                 .num_stages = S,
                                 .stage_rank = ls->stage_to_rank,
                                 .stages = stages,
                                 .n_local = nloc,
                                 .num_microbatches = nmb,
                                 .actions = ls->acts[pp_rank],
                                 .n_actions = ls->len[pp_rank],
                                 .scale_grads_in_schedule = c->in_sched,
                                 .tie_word_embeddings = 1};
        if (ap_executor_create(&ex, &ec, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        ap_pipeline_engine pe;
        ap_pipeline_engine_init(&pe, ex, stages, nloc, pp, comm, nmb, c->grad_acc);
        ap_train_opts po = opts_of(c, c->batch, dp_rank, c->dp);
        if (ap_train_loop(&po, &pe.e, &ld, va, NULL, &r_pipe, err, sizeof err)) {
            fail = 1;
            goto done;
        }
        bubble = ap_pipeline_engine_bubble(&pe);
        { /* a loop asking for the other scaling than the executor's is refused (before any message) */
            ap_step_batch bad = {nmb, MBS, T, NULL, NULL, !c->in_sched, NULL};
            double ls = 0;
            long nt = 0;
            char e2[256] = "";
            guard = pe.e.forward_backward(&pe.e, &bad, 1.0f, &ls, &nt, e2, sizeof e2) < 0 &&
                    strstr(e2, "scale_grads_in_schedule") != NULL;
        }
        w = worst(w, rel(r_pipe.first_loss, r_ref.first_loss));
        w = worst(w, rel(r_pipe.last_loss, r_ref.last_loss));
        w = worst(w, rel(r_pipe.last_grad_norm, r_ref.last_grad_norm));
        w = worst(w, rel(r_pipe.last_val_loss, r_ref.last_val_loss));
        if (r_pipe.steps != 3) fail = 1;
        for (int i = 0; i < nloc; i++)
            for (int r = 0; r < stages[i]->n_refs; r++) {
                ap_param_ref *p = &stages[i]->refs[r], *q = ap_llama_find_param(ref, p->name);
                if (!q || q->numel != p->numel) {
                    snprintf(err, sizeof err, "no reference tensor %s", p->name);
                    fail = 1;
                    break;
                }
                wp = worst(wp, tap_max_rel_err(p->param, q->param, p->numel, 1e-30));
            }
    done:
        if (fail) fprintf(stderr, "rank %d: %s\n", world_rank, err);
        ap_executor_destroy(ex);
        for (int i = 0; i < nloc; i++) ap_stage_destroy(stages[i]);
        ap_stage_destroy(ref);
        ap_schedule_free(cs);
        ap_schedule_free(ls);
        ap_loader_free(&ld);
        ap_loader_free(&ld2);
        ap_dataset_free(tr);
        ap_dataset_free(va);
        ap_dataset_free(tr2);
        ap_dataset_free(va2);
        MPI_Comm_free(&pp);
        MPI_Comm_free(&dp);
        MPI_Comm_free(&comm);
    }
    double v[4] = {w, wp, (double)fail, bubble}, vd = in ? vs_default : INFINITY;
    MPI_Allreduce(MPI_IN_PLACE, v, 4, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &vd, 1, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &guard, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (!world_rank)
        ok(!v[2] && guard && v[0] <= TOL && v[1] <= TOL,
           "train loop, llama tied %d layers, %s pp=%d dp=%d batch %d x grad_acc %d, max_norm %g%s: losses, grad "
           "norm, val loss rel %.2g, params rel %.2g of one process (max bubble %.2f); a loop asking for the "
           "other scaling is refused",
           c->nlayers, c->sched, c->pp, c->dp, c->batch, c->grad_acc, c->max_norm,
           c->in_sched ? ", scale_grads_in_schedule, SFT data" : "", v[0], v[1], v[3]);
    if (!world_rank && c->in_sched)
        ok(!v[2] && vd > 1e-3,
           "%s pp=%d dp=%d scale_grads_in_schedule differs from the default token-count scaling when microbatches "
           "differ in label count (first loss, grad norm, params: largest rel %.2g)",
           c->sched, c->pp, c->dp, vd);
}

int main(int argc, char **argv) {
    int size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size < 4) {
        if (!world_rank) printf("1..0 # SKIP needs 4 MPI ranks (run tests/test-pipeline.sh)\n");
        MPI_Finalize();
        return 0;
    }
    const tcase cases[] = {
        {"1f1b", 2, 1, 1, 4, 1, 5, 1.0, 0},
        {"zbv", 2, 2, 2, 4, 2, 5, 0.05, 0},
        {"interleaved_1f1b", 4, 1, 2, 8, 1, 7, 1.0, 0},
        {"gpipe", 2, 2, 1, 6, 1, 3, 0.05, 0},
        {"1f1b", 2, 1, 1, 4, 1, 5, 1.0, 1},
        {"zbv", 2, 2, 2, 4, 2, 5, 0.05, 1},
    };
    int wrote = 0;
    if (!world_rank) wrote = write_sft() == 0;
    MPI_Bcast(&wrote, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Bcast(sft_path, sizeof sft_path, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!wrote) {
        if (!world_rank) printf("Bail out! cannot write the SFT data file\n");
        MPI_Finalize();
        return 1;
    }
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i]);
    MPI_Barrier(MPI_COMM_WORLD);
    if (!world_rank) { /* the data file and its directory */
        unlink(sft_path);
        *strrchr(sft_path, '/') = 0;
        rmdir(sft_path);
    }
    int rc = 0;
    if (!world_rank) rc = tap_done();
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
