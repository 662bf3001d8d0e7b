/* train_cmd.c - `autopipe train` and `autopipe eval` on one process: the
 * config becomes a model (trainer/llama.h), data (trainer/data.h) and loop
 * options, then trainer/train.c's loop runs with the single-stage engine. */
#include "trainer/train.h"

#include "kernels/kernels.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "launcher/mesh.h"
#include "trainer/generate.h"
#include "trainer/llama.h"
#include "trainer/metrics.h"
#include "trainer/model_family.h"
#include "trainer/pipeline.h"
#include "trainer/plan.h"
#include "trainer/split.h"
#include "trainer/tokenizer.h"
#include "trainer/train_ckpt.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Threads: runtime.num_threads, else OMP_NUM_THREADS, else 1. */
static int pick_threads(int configured) {
    if (configured > 0) return configured;
    const char *e = getenv("OMP_NUM_THREADS");
    int n = e ? atoi(e) : 0;
    return n > 0 ? n : 1;
}

/* The input id used for padding: PAD of the byte tokenizer, else the
 * model's pad, else its EOS, else 0 (its label is -100 anyway). */
static int pad_id_for(const ap_model_config *mc) {
    if (mc->vocab_size == AP_BYTE_VOCAB) return AP_BYTE_PAD;
    if (mc->pad_token_id >= 0 && mc->pad_token_id < mc->vocab_size) return mc->pad_token_id;
    if (mc->eos_token_id >= 0 && mc->eos_token_id < mc->vocab_size) return mc->eos_token_id;
    return 0;
}

void ap_train_opts_from_config(ap_train_opts *o, const ap_config *cfg, const ap_model_config *mc, int threads) {
    memset(o, 0, sizeof *o);
    o->max_steps = cfg->step_scheduler.max_steps;
    o->grad_acc_steps = cfg->step_scheduler.grad_acc_steps;
    o->batch_size = cfg->dataloader.batch_size;
    o->micro_batch_size = cfg->autopipeline.pp_microbatch_size;
    o->seq_len = cfg->dataloader.seq_len;
    o->dp_rank = 0;
    o->dp_size = 1;
    /* NeMo's build_lr_scheduler: warmup starts at 10% of the peak lr and
     * the decay spans the whole run */
    o->lr.max_lr = cfg->optimizer.lr;
    o->lr.init_lr = 0.1 * cfg->optimizer.lr;
    o->lr.min_lr = cfg->lr_scheduler.min_lr;
    o->lr.warmup_steps = cfg->lr_scheduler.lr_warmup_steps;
    o->lr.decay_steps = cfg->step_scheduler.max_steps;
    o->lr.style = cfg->lr_scheduler.lr_decay_style == AP_DECAY_LINEAR     ? AP_LR_LINEAR
                  : cfg->lr_scheduler.lr_decay_style == AP_DECAY_CONSTANT ? AP_LR_CONSTANT
                                                                          : AP_LR_COSINE;
    o->beta1 = cfg->optimizer.betas[0];
    o->beta2 = cfg->optimizer.betas[1];
    o->eps = cfg->optimizer.eps;
    o->weight_decay = cfg->optimizer.weight_decay;
    o->max_norm = cfg->clip_grad_norm.has_max_norm ? cfg->clip_grad_norm.max_norm : 0;
    o->norm_inf = isinf(cfg->clip_grad_norm.norm_type);
    o->scale_grads_in_schedule = cfg->autopipeline.scale_grads_in_schedule;
    o->val_every_steps = cfg->step_scheduler.val_every_steps;
    o->log_every_steps = cfg->logging.log_every_steps;
    o->ckpt_every_steps = cfg->step_scheduler.ckpt_every_steps;
    char ferr[512];
    const ap_model_family *fam = ap_model_family_for_config(cfg, ferr, sizeof ferr);
    o->flops_per_token = fam ? fam->flops_per_token(mc, o->seq_len) : 0;
    o->peak_flops = ap_peak_flops(threads);
    o->metrics_file = cfg->logging.metrics_file;
    o->progress = cfg->logging.progress;
    o->is_log_rank = 1;
}

/* Opens the training data and its validation part. */
static int open_data(const ap_config *cfg, const ap_model_config *mc, ap_dataset **tr, ap_dataset **va, char *err,
                     size_t errlen) {
    ap_data_opts d = {.path = cfg->dataset.path_or_dataset,
                      .format = (enum ap_data_format)cfg->dataset.format,
                      .seq_len = cfg->dataloader.seq_len,
                      .vocab_size = mc->vocab_size,
                      .pad_id = pad_id_for(mc),
                      .packed = cfg->dataset.packed};
    ap_dataset *all;
    if (ap_dataset_open(&all, &d, err, errlen) < 0) return -1;
    if (!cfg->dataset.val_path) {
        int rv = ap_dataset_split(all, cfg->dataset.val_fraction, tr, va, err, errlen);
        ap_dataset_free(all);
        return rv;
    }
    *tr = all;
    d.path = cfg->dataset.val_path;
    if (ap_dataset_open(va, &d, err, errlen) < 0) {
        ap_dataset_free(all);
        return -1;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* "llama", "qwen2", ... or the family of model._target_ ("custom"). */
static const char *model_name(const ap_config *cfg, const ap_model_config *mc) {
    char e[512];
    const ap_model_family *f = ap_model_family_for_config(cfg, e, sizeof e);
    return f ? ap_model_family_model_name(f, mc) : "?";
}

int ap_train_print_summary(FILE *f, const ap_config *cfg, const ap_model_config *mc, char *err, size_t errlen) {
    ap_split sp;
    memset(&sp, 0, sizeof sp);
    if (ap_split_plan(cfg, mc, &sp, err, errlen) < 0) return -1;
    int rc = ap_plan_print(f, cfg, mc, &sp, 8);
    ap_split_free(&sp);
    fflush(f);
    if (rc < 0) snprintf(err, errlen, "cannot print the debug summary");
    return rc;
}

/* `autopipe train --dry-run`: the debug summary, printed once (by the
 * launcher's rank 0 under mpirun/srun, by this process otherwise), no MPI. */
static int train_dry_run(const ap_config *cfg) {
    static const char *rank_vars[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"};
    char err[1024];
    ap_model_config mc;
    if (ap_config_model(cfg, &mc, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe train: %s\n", err);
        return AP_EXIT_USAGE;
    }
    for (size_t i = 0; i < sizeof rank_vars / sizeof *rank_vars; i++) {
        const char *v = getenv(rank_vars[i]);
        if (v && atoi(v) != 0) return AP_EXIT_OK;
    }
    if (ap_train_print_summary(stdout, cfg, &mc, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe train: %s\n", err);
        return AP_EXIT_USAGE;
    }
    printf("dry run: stopping before building the model\n");
    return AP_EXIT_OK;
}

int ap_train_main(const ap_config *cfg) {
    char err[1024];
    if (!ap_pipeline_wanted(cfg) &&
        cfg->distributed.pp_size * cfg->distributed.dp_size * cfg->distributed.tp_size != 1) {
        fprintf(stderr, "autopipe train: distributed.pp_size %d x dp_size %d x tp_size %d needs that many processes "
                        "(mpirun/srun); to train on this one process add --distributed.pp_size 1 "
                        "--distributed.dp_size 1 --distributed.tp_size 1\n",
                cfg->distributed.pp_size, cfg->distributed.dp_size, cfg->distributed.tp_size);
        return AP_EXIT_USAGE;
    }
    ap_preempt_install(-1); /* a SIGTERM/SIGUSR1 from here on stops the run at a step boundary */
    int threads = pick_threads(cfg->runtime.num_threads);
    ap_kernels_set_threads(threads);
    ap_model_config mc;
    if (ap_config_model(cfg, &mc, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe train: %s\n", err);
        return AP_EXIT_USAGE;
    }
    int T = cfg->dataloader.seq_len, mb = cfg->autopipeline.pp_microbatch_size;
    if (T > mc.max_position_embeddings) {
        fprintf(stderr, "autopipe train: dataloader.seq_len %d is longer than the model's max_position_embeddings %d\n",
                T, mc.max_position_embeddings);
        return AP_EXIT_USAGE;
    }
    if (cfg->dataloader.batch_size % mb) {
        fprintf(stderr, "autopipe train: dataloader.batch_size (%d) must be a multiple of "
                        "autopipeline.pp_microbatch_size (%d)\n", cfg->dataloader.batch_size, mb);
        return AP_EXIT_USAGE;
    }
    ap_dataset *tr = NULL, *va = NULL;
    if (open_data(cfg, &mc, &tr, &va, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe train: %s\n", err);
        return AP_EXIT_FAIL;
    }
    int rv = AP_EXIT_FAIL;
    ap_stage *s = NULL;
    ap_pipeline *pl = NULL; /* several processes: this rank's stages run the pipeline schedule */
    FILE *out = stdout;     /* under the pipeline only the log rank reports */
    ap_train_result res = {0};
    ap_loader loader = {0};
    ap_train_ckpt ck;
    memset(&ck, 0, sizeof ck);
    ck.comm = MPI_COMM_NULL;
    int own_mpi = 0, agreed = 0, world_rank = 0;
    int L = mc.num_hidden_layers;
    const char *pre = cfg->model.pretrained_model_name_or_path;
    size_t n_params;
    if (ap_pipeline_wanted(cfg)) {
        int usage;
        if (ap_pipeline_create(&pl, cfg, &mc, pre, &usage, err, sizeof err) < 0) {
            fprintf(stderr, "autopipe train: %s\n", err);
            ap_dataset_free(tr);
            ap_dataset_free(va);
            return usage ? AP_EXIT_USAGE : AP_EXIT_FAIL;
        }
        n_params = ap_pipeline_param_count(pl);
    } else {
        /* the debug summary (the pipeline's rank 0 prints it in ap_pipeline_create) */
        const ap_model_family *fam = ap_model_family_for_config(cfg, err, sizeof err);
        if (!fam || ap_train_print_summary(stdout, cfg, &mc, err, sizeof err) < 0) goto fail;
        if (fam->stage_create(&s, &mc, 0, L, 1, 1, mb, T, 1, cfg->model.activation_checkpointing, err, sizeof err) < 0)
            goto fail;
        if (pre && !fam->load_dir) {
            snprintf(err, sizeof err, "model.pretrained_model_name_or_path: the %s model family loads no weights",
                     fam->name);
            goto fail;
        }
        if (pre) {
            if (fam->load_dir(s, pre, err, sizeof err) < 0) goto fail;
        } else {
            fam->init_params(s, (uint64_t)cfg->rng.seed);
        }
        n_params = s->n_params;
    }
    if (ap_loader_init(&loader, tr, cfg->dataloader.shuffle, (uint64_t)cfg->rng.seed, err, sizeof err) < 0) goto fail;
    ap_train_opts o;
    ap_train_opts_from_config(&o, cfg, &mc, threads);
    if (pl) ap_pipeline_set_opts(pl, &o);
    if (!o.is_log_rank && !(out = fopen("/dev/null", "w"))) out = stdout;
    fprintf(out, "model: %s, %d layers, hidden %d, vocab %d, %.2fM parameters (%s)\n",
            model_name(cfg, &mc), L, mc.hidden_size, mc.vocab_size,
            (double)n_params / 1e6, pre ? pre : "random init");
    fprintf(out, "data: %s: %zu train samples, %zu validation samples of %d tokens\n", ap_dataset_path(tr),
            ap_dataset_len(tr), va ? ap_dataset_len(va) : (size_t)0, T);
    fprintf(out, "steps: %ld x (%d accumulated x batch %d x dp %d = %d microbatches of %d), %d thread%s\n",
            o.max_steps, o.grad_acc_steps, o.batch_size, o.dp_size, o.batch_size / mb, mb, threads,
            threads == 1 ? "" : "s");
    fflush(out);
    ap_step_engine e1, *e = &e1;
    if (pl) e = ap_pipeline_get_engine(pl);
    else ap_step_engine_single(&e1, &s);
    /* checkpoints go through the MPI library: one process initialises MPI itself */
    if (!pl && ap_train_ckpt_wanted(cfg)) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            if (ap_mpi_init(NULL, NULL, err, sizeof err) < 0) goto fail;
            own_mpi = 1;
        }
    }
    if (pl || own_mpi) {
        int pp = 1, dp = 1, spr = 1, usage = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
        if (pl) ap_pipeline_topology(pl, &pp, &dp, &spr);
        if (ap_train_ckpt_init(&ck, cfg, &mc, MPI_COMM_WORLD, pp, dp, o.dp_rank, spr, &usage, err, sizeof err) < 0) {
            agreed = 1;
            rv = usage ? AP_EXIT_USAGE : AP_EXIT_FAIL;
            goto fail;
        }
    }
    ap_preempt_install(world_rank);
    ap_train_ckpt_install(&ck);
    double t0 = now_s();
    if (ap_train_loop(&o, e, &loader, va, cfg, &res, err, sizeof err) < 0) {
        agreed = res.agreed_failure; /* then rank 0 alone reports it, and nobody aborts */
        goto fail;
    }
    fprintf(out, "done: %ld steps in %.1f s, loss %.4f -> %.4f", res.steps, now_s() - t0, res.first_loss,
            res.last_loss);
    if (!isnan(res.last_val_loss)) fprintf(out, ", val_loss %.4f", res.last_val_loss);
    fprintf(out, ", peak RSS %.0f MiB\n", ap_peak_rss_mib());
    if (res.preempted)
        fprintf(out, "stopped by a signal after step %ld with a checkpoint: exit status %d (requeue and resume)\n",
                res.steps, AP_EXIT_REQUEUE);
    fflush(out);
    rv = res.preempted ? AP_EXIT_REQUEUE : AP_EXIT_OK;
fail:
    if (rv != AP_EXIT_OK && rv != AP_EXIT_REQUEUE && (!agreed || world_rank == 0)) {
        const char *why = s ? ap_llama_stage_error(s) : pl ? ap_pipeline_stage_error(pl) : "";
        fprintf(stderr, "autopipe train: %s%s%s\n", err, why && *why ? ": " : "", why ? why : "");
    }
    ap_train_set_checkpoint_hooks(NULL);
    ap_train_ckpt_free(&ck);
    if (out && out != stdout) fclose(out);
    ap_loader_free(&loader);
    ap_stage_destroy(s);
    /* a failure on one rank leaves its peers waiting in the schedule; a
     * non-finite loss or norm, or a failure all ranks agreed on, is seen by every rank alike */
    if (rv != AP_EXIT_OK && rv != AP_EXIT_REQUEUE && pl && !res.nonfinite && !agreed) MPI_Abort(MPI_COMM_WORLD, rv);
    if (own_mpi) MPI_Finalize();
    ap_pipeline_destroy(pl);
    ap_dataset_free(tr);
    ap_dataset_free(va);
    return rv;
}

static void train_usage(FILE *f) {
    fprintf(f, "usage: autopipe train [--config FILE] [--section.key VALUE]... [--dry-run]\n\n"
               "Trains a model on one process (pp_size = dp_size = 1). Without --config: the built-in tiny\n"
               "Llama on the built-in text. One log line per step; metrics to logging.metrics_file.\n"
               "Exit status: 0 ok, 1 failure (including a NaN/Inf loss or gradient norm), 2 bad config,\n"
               "75 stopped by SIGTERM/SIGUSR1 after saving a checkpoint (requeue: checkpoint.resume auto goes on).\n\n"
               "Configuration keys:\n");
    ap_config_emit_help(f);
}

/* model.pretrained_model_name_or_path: an HF directory (or a checkpoint
 * when the checkpoint part installed its reader). */
static int read_pretrained(const char *dir, ap_model_config *mc, char *err, size_t errlen) {
    return ap_model_dir_config(dir, mc, err, errlen);
}

int ap_cmd_train(int argc, char **argv) {
    static const ap_cli_flag flags[] = {{"help", 0}, {"h", 0}, {"dry-run", 0}, {NULL, 0}};
    ap_config_set_pretrained_reader(read_pretrained);
    char err[1024];
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    ap_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (!rest) return AP_EXIT_FAIL;
    if (ap_config_from_args(&cfg, argc, argv, flags, rest, &nrest, err, sizeof err) < 0) {
        for (int i = 1; i < argc; i++)
            if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
                free(rest);
                train_usage(stdout);
                return AP_EXIT_OK;
            }
        fprintf(stderr, "autopipe train: %s\n", err);
        free(rest);
        return AP_EXIT_USAGE;
    }
    int rv, dry = 0;
    for (int i = 1; i < nrest; i++) /* --dry-run: print the debug summary and stop */
        if (!strcmp(rest[i], "--dry-run")) {
            dry = 1;
            memmove(rest + i, rest + i + 1, sizeof *rest * (size_t)(nrest - i));
            nrest--, i--;
        }
    if (dry && nrest <= 1) {
        rv = train_dry_run(&cfg);
    } else if (nrest > 1) {
        int help = !strcmp(rest[1], "--help") || !strcmp(rest[1], "-h");
        if (help) train_usage(stdout);
        else fprintf(stderr, "autopipe train: unexpected argument '%s' (see `autopipe train --help`)\n", rest[1]);
        rv = help ? AP_EXIT_OK : AP_EXIT_USAGE;
    } else {
        rv = ap_train_main(&cfg);
    }
    ap_config_free(&cfg);
    free(rest);
    return rv;
}

/* ---- autopipe eval ---- */

static void eval_usage(FILE *f) {
    fprintf(f, "usage: autopipe eval --model DIR --data FILE [--seq-len N] [--batch-size N]\n"
               "                     [--format auto|text|tokens|sft_jsonl] [--packed] [--threads N]\n\n"
               "Prints the mean loss (and perplexity) of a model over every label token of a data file, cut\n"
               "into samples of --seq-len tokens (default min(max_position_embeddings, 128)).\n");
}

int ap_cmd_eval(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"data", required_argument, NULL, 'd'},
                                         {"seq-len", required_argument, NULL, 'T'},
                                         {"batch-size", required_argument, NULL, 'B'},
                                         {"format", required_argument, NULL, 'f'},
                                         {"packed", no_argument, NULL, 'p'},
                                         {"threads", required_argument, NULL, 'j'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static const char *formats[] = {"auto", "text", "tokens", "sft_jsonl"};
    const char *model = NULL, *data = NULL;
    long T = 0, B = 1, threads = 0;
    int format = AP_DATA_AUTO, packed = 0, c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'd': data = optarg; break;
        case 'T': T = strtol(optarg, &end, 10); if (*end || T < 1 || T > 1 << 20) goto bad; break;
        case 'B': B = strtol(optarg, &end, 10); if (*end || B < 1 || B > 1 << 16) goto bad; break;
        case 'j': threads = strtol(optarg, &end, 10); if (*end || threads < 0) goto bad; break;
        case 'p': packed = 1; break;
        case 'f':
            format = -1;
            for (int i = 0; i < 4; i++)
                if (!strcmp(optarg, formats[i])) format = i;
            if (format < 0) goto bad;
            break;
        case 'h': eval_usage(stdout); return AP_EXIT_OK;
        default: eval_usage(stderr); return AP_EXIT_USAGE;
        }
    }
    if (optind != argc || !model || !data) {
        fprintf(stderr, "autopipe eval: needs --model DIR and --data FILE\n");
        eval_usage(stderr);
        return AP_EXIT_USAGE;
    }
    char err[1024];
    ap_model_config mc;
    if (ap_model_dir_config(model, &mc, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe eval: %s\n", err);
        return AP_EXIT_USAGE;
    }
    if (!T) T = mc.max_position_embeddings < 128 ? mc.max_position_embeddings : 128;
    ap_kernels_set_threads(pick_threads((int)threads));
    ap_data_opts d = {.path = data, .format = (enum ap_data_format)format, .seq_len = (int)T,
                      .vocab_size = mc.vocab_size, .pad_id = pad_id_for(&mc), .packed = packed};
    ap_dataset *ds = NULL;
    ap_stage *s = NULL;
    int rv = AP_EXIT_FAIL;
    if (ap_dataset_open(&ds, &d, err, sizeof err) < 0) goto fail;
    if (ap_llama_stage_create(&s, &mc, 0, mc.num_hidden_layers, 1, 1, (int)B, (int)T, 1, 0, err, sizeof err) < 0 ||
        ap_model_dir_load(s, model, err, sizeof err) < 0)
        goto fail;
    ap_step_engine e;
    ap_step_engine_single(&e, &s);
    double loss;
    long n;
    if (ap_eval_loss(&e, ds, (int)B, &loss, &n, err, sizeof err) < 0) goto fail;
    printf("loss %.6f over %ld tokens (perplexity %.4g)\n", loss, n, exp(loss));
    rv = AP_EXIT_OK;
fail:
    if (rv != AP_EXIT_OK) fprintf(stderr, "autopipe eval: %s\n", err);
    ap_stage_destroy(s);
    ap_dataset_free(ds);
    return rv;
bad:
    fprintf(stderr, "autopipe eval: bad value '%s' (see `autopipe eval --help`)\n", optarg);
    return AP_EXIT_USAGE;
}
