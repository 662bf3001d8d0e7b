/* test-custom-pipeline.c - the guide's CustomModel trained through the
 * pipeline (ap_pipeline_create picks the family from model._target_, builds
 * this rank's stages through the registry, runs the schedule) equals its
 * single-process training: 3 optimizer steps (warmup, AdamW, clipping,
 * validation) give the same first/last loss, grad norm, validation loss and
 * final parameters within 1e-5 relative. Run under mpirun -np 2
 * (tests/test-custom-pipeline.sh): pp 2 with 1f1b (one stage per rank, 3
 * layers: uneven), interleaved_1f1b and zbv (two stages per rank, 5 layers;
 * zbv runs the split I/W backward). */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/config.h"
#include "tests/tap.h"
#include "trainer/data.h"
#include "trainer/model_family.h"
#include "trainer/pipeline.h"
#include "trainer/tokenizer.h"
#include "trainer/train.h"

static const double TOL = 1e-5;
static int world_rank;

static int open_data(const ap_config *cfg, ap_dataset **tr, ap_dataset **va, ap_loader *ld, char *err,
                     size_t errlen) {
    ap_data_opts d = {.path = NULL, .format = AP_DATA_AUTO, .seq_len = cfg->dataloader.seq_len,
                      .vocab_size = AP_BYTE_VOCAB, .pad_id = AP_BYTE_PAD, .packed = 0};
    ap_dataset *all;
    if (ap_dataset_open(&all, &d, err, errlen)) return -1;
    int rc = ap_dataset_split(all, 0.05, tr, va, err, errlen);
    ap_dataset_free(all);
    if (rc) return -1;
    return ap_loader_init(ld, *tr, 1, (uint64_t)cfg->rng.seed, err, errlen);
}

static double rel(double a, double b) { return fabs(a - b) / fmax(fabs(b), 1e-30); }
static double worst(double a, double b) { return (a != a || b != b) ? NAN : fmax(a, b); }

static void run_case(const char *sched, const char *layers) {
    char err[4096] = "";
    char *ov[] = {"--model._target_", "examples.custom_model.CustomModel", "--model.num_hidden_layers", (char *)layers,
                  "--model.hidden_size", "16", "--model.num_attention_heads", "2", "--model.initializer_range", "0.1",
                  "--autopipeline.pp_schedule", (char *)sched, "--distributed.pp_size", "2",
                  "--dataloader.batch_size", "4", "--autopipeline.pp_microbatch_size", "1",
                  "--dataloader.seq_len", "16", "--step_scheduler.max_steps", "3", "--step_scheduler.val_every_steps",
                  "3", "--lr_scheduler.lr_warmup_steps", "2", "--optimizer.lr", "3e-3", "--clip_grad_norm.max_norm",
                  "0.5", "--rng.seed", "13"};
    ap_config cfg;
    ap_model_config mc;
    ap_pipeline *pl = NULL;
    ap_stage *ref = NULL;
    ap_dataset *tr = NULL, *va = NULL, *tr2 = NULL, *va2 = NULL;
    ap_loader ld = {0}, ld2 = {0};
    ap_train_result r_pipe, r_ref;
    int fail = 0, usage = 0, nstages = 0;
    double w = 0, wp = 0;
    if (ap_config_load_builtin(&cfg, (int)(sizeof ov / sizeof *ov), ov, err, sizeof err) ||
        ap_config_model(&cfg, &mc, err, sizeof err)) {
        fprintf(stderr, "config: %s\n", err);
        fail = 1;
        goto report;
    }
    const ap_model_family *fam = ap_model_family_for_config(&cfg, err, sizeof err);
    if (!fam || strcmp(fam->name, "custom")) {
        fail = 1;
        goto done;
    }
    /* the reference: one process, the whole model */
    if (open_data(&cfg, &tr2, &va2, &ld2, err, sizeof err) ||
        fam->stage_create(&ref, &mc, 0, mc.num_hidden_layers, 1, 1, 1, cfg.dataloader.seq_len, 1, 0, err,
                          sizeof err)) {
        fail = 1;
        goto done;
    }
    fam->init_params(ref, (uint64_t)cfg.rng.seed);
    ap_step_engine se;
    ap_step_engine_single(&se, &ref);
    ap_train_opts ro;
    ap_train_opts_from_config(&ro, &cfg, &mc, 1);
    ro.quiet = 1, ro.metrics_file = NULL, ro.progress = 2;
    if (ap_train_loop(&ro, &se, &ld2, va2, NULL, &r_ref, err, sizeof err)) {
        fail = 1;
        goto done;
    }
    /* the pipeline, built from the config */
    if (ap_pipeline_create(&pl, &cfg, &mc, NULL, &usage, err, sizeof err)) {
        fail = 1;
        goto done;
    }
    if (open_data(&cfg, &tr, &va, &ld, err, sizeof err)) {
        fail = 1;
        goto done;
    }
    ap_train_opts po = ro;
    ap_pipeline_set_opts(pl, &po);
    po.is_log_rank = 0;
    ap_step_engine *pe = ap_pipeline_get_engine(pl);
    if (ap_train_loop(&po, pe, &ld, va, NULL, &r_pipe, err, sizeof err)) {
        fail = 1;
        goto done;
    }
    w = worst(w, rel(r_pipe.first_loss, r_ref.first_loss));
    w = worst(w, rel(r_pipe.last_loss, r_ref.last_loss));
    w = worst(w, rel(r_pipe.last_grad_norm, r_ref.last_grad_norm));
    w = worst(w, rel(r_pipe.last_val_loss, r_ref.last_val_loss));
    if (r_pipe.steps != 3 || !(r_pipe.last_loss < r_pipe.first_loss)) fail = 1;
    nstages = pe->n_stages;
    for (int i = 0; i < pe->n_stages; i++)
        for (int r = 0; r < pe->stages[i]->n_refs; r++) {
            ap_param_ref *p = &pe->stages[i]->refs[r], *q = NULL;
            for (int j = 0; j < ref->n_refs; j++)
                if (!strcmp(ref->refs[j].name, p->name)) q = &ref->refs[j];
            if (!q || q->numel != p->numel) {
                snprintf(err, sizeof err, "no reference tensor %s", p->name);
                fail = 1;
                break;
            }
            wp = worst(wp, tap_max_rel_err(p->param, q->param, p->numel, 1e-30));
        }
done:
    if (fail) fprintf(stderr, "rank %d: %s\n", world_rank, err);
    ap_pipeline_destroy(pl);
    ap_stage_destroy(ref);
    ap_loader_free(&ld);
    ap_loader_free(&ld2);
    ap_dataset_free(tr);
    ap_dataset_free(va);
    ap_dataset_free(tr2);
    ap_dataset_free(va2);
    ap_config_free(&cfg);
report:;
    double v[3] = {w, wp, (double)fail};
    int ns = nstages;
    MPI_Allreduce(MPI_IN_PLACE, v, 3, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &ns, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (!world_rank)
        ok(!v[2] && v[0] <= TOL && v[1] <= TOL,
           "custom model, %s layers, %s pp=2 (%d stages): losses, grad norm, val loss rel %.2g, params rel %.2g of one "
           "process (loss %.4f -> %.4f)",
           layers, sched, ns, v[0], v[1], r_ref.first_loss, r_ref.last_loss);
}

int main(int argc, char **argv) {
    int size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size != 2) {
        if (!world_rank) printf("1..0 # SKIP needs 2 MPI ranks (run tests/test-custom-pipeline.sh)\n");
        MPI_Finalize();
        return 0;
    }
    run_case("1f1b", "3");
    run_case("interleaved_1f1b", "5");
    run_case("zbv", "5");
    int rc = 0;
    if (!world_rank) rc = tap_done();
    MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
    MPI_Finalize();
    return rc;
}
