/* plan.c - `autopipe plan`; see plan.h. Output modelled on AutoPipeline's
 * pretty_print_stages(max_modules_per_stage=N) and get_stage_param_counts(). */
#include "trainer/plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"
#include "trainer/hf_config.h"
#include "trainer/model_family.h"
#include "trainer/param_count.h"
#include "trainer/schedule/schedule.h"

/* model.pretrained_model_name_or_path: the directory's config.json. */
static int read_pretrained(const char *dir, ap_model_config *mc, char *err, size_t errlen) {
    return ap_hf_config_read(mc, dir, err, errlen);
}

/* 1234567 -> "1,234,567" */
static const char *commas(long long v, char *buf, size_t len) {
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", v < 0 ? -v : v), k = 0;
    size_t o = 0;
    if (v < 0 && o + 1 < len) buf[o++] = '-';
    for (int i = 0; i < n && o + 1 < len; i++) {
        buf[o++] = tmp[i];
        k = n - 1 - i;
        if (k && k % 3 == 0 && o + 1 < len) buf[o++] = ',';
    }
    buf[o] = 0;
    return buf;
}

/* One line per distinct group of axis a: "[0 2 4]". Long listings are cut. */
static void print_groups(FILE *f, const ap_mesh *m, enum ap_axis a) {
    enum { MAX_GROUPS = 64, MAX_SHOWN = 32 };
    int world = ap_mesh_world(m), shown = 0, ngroups = world / m->size[a];
    int *g = malloc(sizeof *g * (size_t)m->size[a]);
    if (!g) return;
    fprintf(f, "  %s groups (%d x %d rank%s):", ap_axis_name(a), ngroups, m->size[a], m->size[a] == 1 ? "" : "s");
    for (int r = 0; r < world && shown < MAX_GROUPS; r++) {
        ap_coord c;
        ap_mesh_coord(m, r, &c);
        if (c.r[a] != 0) continue; /* each group once, from its member at coordinate 0 */
        ap_mesh_group(m, a, r, g, (size_t)m->size[a]);
        fprintf(f, " [");
        for (int i = 0; i < m->size[a] && i < MAX_SHOWN; i++) fprintf(f, i ? " %d" : "%d", g[i]);
        if (m->size[a] > MAX_SHOWN) fprintf(f, " ... %d", g[m->size[a] - 1]);
        fprintf(f, "]");
        shown++;
    }
    if (ngroups > shown) fprintf(f, " ... (%d more)", ngroups - shown);
    fprintf(f, "\n");
    free(g);
}

/* 1536 -> "1.5 KiB" */
static const char *bytes_str(double b, char *buf, size_t len) {
    static const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024 && i < 4) b /= 1024, i++;
    snprintf(buf, len, i ? "%.1f %s" : "%.0f %s", b, u[i]);
    return buf;
}

/* Peak live microbatches of each stage under the configured schedule (the
 * simulator with default costs). 0, or -1 with the reason in err. */
static int peak_live(const ap_config *cfg, const ap_split *sp, int n_micro, int *live, char *err, size_t errlen) {
    ap_schedule *cs = NULL;
    ap_sched_sim sim = {0};
    ap_sched_costs c;
    ap_sched_costs_default(&c);
    const char *csv = cfg->autopipeline.pp_schedule_csv;
    int rc = ap_schedule_generate(&cs, csv ? NULL : cfg->autopipeline.pp_schedule, csv, sp->pp_size,
                                  sp->stages_per_rank, n_micro, err, errlen);
    if (!rc && cs->num_stages != sp->num_stages) {
        snprintf(err, errlen, "the schedule has %d stages, the split %d", cs->num_stages, sp->num_stages);
        rc = -1;
    }
    if (!rc) rc = ap_schedule_simulate(cs, &c, &sim, err, errlen);
    if (!rc)
        for (int s = 0; s < sp->num_stages; s++) live[s] = sim.peak_live_stage[s];
    if (!rc) ap_sched_sim_free(&sim);
    ap_schedule_free(cs);
    return rc;
}

/* A stage's modules in the family's names, in order. */
static void print_modules(FILE *f, const ap_model_family *fam, const ap_split_stage *st, int max_modules) {
    char name[160];
    int n = 0, shown = 0;
    const char *heads[4] = {0};
    int nh = 0;
    if (st->has_head)
        for (int i = 0; i < 3 && fam->head_modules[i]; i++) heads[nh++] = fam->head_modules[i];
    int total = (st->has_embed ? 1 : 0) + (st->last_layer - st->first_layer) + nh +
                (st->has_rotary && fam->shared_module ? 1 : 0);
    for (int k = 0; k < total; k++) {
        int layers = st->last_layer - st->first_layer;
        int i = k - (st->has_embed ? 1 : 0);
        if (k == 0 && st->has_embed) snprintf(name, sizeof name, "%s", fam->embed_module);
        else if (i < layers) snprintf(name, sizeof name, fam->layer_module, st->first_layer + i);
        else if (i - layers < nh) snprintf(name, sizeof name, "%s", heads[i - layers]);
        else snprintf(name, sizeof name, "%s", fam->shared_module);
        n++;
        if (max_modules > 0 && shown >= max_modules) continue;
        fprintf(f, "  - %s\n", name);
        shown++;
    }
    if (shown < n) fprintf(f, "  ... (%d more)\n", n - shown);
}

int ap_plan_print(FILE *f, const ap_config *cfg, const ap_model_config *mc, const ap_split *sp,
                  int max_modules) {
    char b1[32], b2[32], b3[32];
    char ferr[512];
    const ap_model_family *fam = ap_model_family_for_config(cfg, ferr, sizeof ferr);
    if (!fam) {
        fprintf(f, "%s\n", ferr);
        return -1;
    }
    int tied = mc->tie_word_embeddings && fam->can_tie;
    ap_mesh m = {{cfg->distributed.pp_size, cfg->distributed.dp_size, cfg->distributed.tp_size}};
    long long total = fam->param_count(mc, 0, mc->num_hidden_layers, 1, 1);
    fprintf(f, "model: %s, %d layers, hidden %d, heads %d (kv %d, head_dim %d), vocab %d: %s parameters%s\n",
            ap_model_family_model_name(fam, mc), mc->num_hidden_layers, mc->hidden_size, mc->num_attention_heads,
            mc->num_key_value_heads, mc->head_dim, mc->vocab_size, commas(total, b1, sizeof b1),
            tied ? " (tied embeddings)" : "");
    fprintf(f, "mesh: pp %d x dp %d x tp %d = %d rank%s (rank = (pp_rank * %d + dp_rank) * %d + tp_rank)\n",
            m.size[0], m.size[1], m.size[2], ap_mesh_world(&m), ap_mesh_world(&m) == 1 ? "" : "s", m.size[1],
            m.size[2]);
    for (int a = 0; a < AP_NAXES; a++) print_groups(f, &m, (enum ap_axis)a);
    fprintf(f, "schedule: %s%s (%s, %s placement): %d stage%s, %d per pp rank, %s split\n",
            ap_pp_schedule_name(sp->schedule), cfg->autopipeline.pp_schedule_csv ? " + CSV" : "",
            sp->single_stage ? "single-stage" : "multi-stage", sp->style == AP_STYLE_V ? "v" : "loop",
            sp->num_stages, sp->num_stages == 1 ? "" : "s", sp->stages_per_rank, sp->manual ? "manual" : "automatic");
    int mbs = cfg->autopipeline.pp_microbatch_size, T = cfg->dataloader.seq_len;
    int mb = cfg->dataloader.batch_size / mbs;
    fprintf(f, "microbatches: dataloader.batch_size %d / pp_microbatch_size %d = %d per step per dp rank%s\n",
            cfg->dataloader.batch_size, mbs, mb,
            mb < sp->num_stages ? " (fewer than the stages: expect a large pipeline bubble)" : "");
    /* activation memory: peak live microbatches of each stage x its bytes per microbatch */
    int *live = calloc((size_t)sp->num_stages, sizeof *live);
    int *ids = malloc(sizeof *ids * (size_t)sp->stages_per_rank);
    if (!ids || !live) {
        free(ids);
        free(live);
        return -1;
    }
    char serr[4096];
    int have_live = peak_live(cfg, sp, mb, live, serr, sizeof serr) == 0;
    if (have_live)
        fprintf(f, "activations: estimated per rank = peak live microbatches of each stage (simulated %s) x its "
                   "bytes per microbatch of %d x %d%s\n",
                ap_pp_schedule_name(sp->schedule), mbs, T,
                cfg->model.activation_checkpointing ? " (activation checkpointing)" : "");
    else
        fprintf(f, "activations: not estimated: %.*s\n", (int)strcspn(serr, "\n"), serr);
    int stride = m.size[1] * m.size[2];
    for (int r = 0; r < sp->pp_size; r++) {
        char err[256];
        int n = ap_split_rank_stages(sp, r, ids, (size_t)sp->stages_per_rank, err, sizeof err);
        if (stride == 1)
            fprintf(f, "pp rank %d (global rank %d): stage%s", r, r, n == 1 ? "" : "s");
        else
            fprintf(f, "pp rank %d (global ranks %d-%d): stage%s", r, r * stride, (r + 1) * stride - 1,
                    n == 1 ? "" : "s");
        for (int i = 0; i < n; i++) fprintf(f, " %d", ids[i]);
        if (have_live) {
            double sum = 0;
            for (int i = 0; i < n; i++) {
                const ap_split_stage *st = &sp->stages[ids[i]];
                sum += (double)live[ids[i]] * (double)fam->act_bytes(mc, st->first_layer, st->last_layer,
                                                                     st->has_embed, st->has_head, mbs, T,
                                                                     cfg->model.activation_checkpointing);
            }
            fprintf(f, "; activations ~%s (", bytes_str(sum, b3, sizeof b3));
            for (int i = 0; i < n; i++) {
                const ap_split_stage *st = &sp->stages[ids[i]];
                size_t per = fam->act_bytes(mc, st->first_layer, st->last_layer, st->has_embed, st->has_head, mbs, T,
                                            cfg->model.activation_checkpointing);
                fprintf(f, "%sstage %d: %d live x %s", i ? ", " : "", ids[i], live[ids[i]],
                        bytes_str((double)per, b3, sizeof b3));
            }
            fprintf(f, ")");
        }
        fprintf(f, "\n");
    }
    free(ids);
    free(live);
    long long sum = 0;
    for (int s = 0; s < sp->num_stages; s++) {
        const ap_split_stage *st = &sp->stages[s];
        long long p = fam->param_count(mc, st->first_layer, st->last_layer, st->has_embed, st->has_head);
        sum += p;
        const char *tag = sp->num_stages == 1 ? " (first,last)" : s == 0 ? " (first)"
                          : s == sp->num_stages - 1 ? " (last)" : "";
        char layers[48];
        if (st->last_layer - st->first_layer == 1)
            snprintf(layers, sizeof layers, "layer %d", st->first_layer);
        else
            snprintf(layers, sizeof layers, "layers %d-%d", st->first_layer, st->last_layer - 1);
        fprintf(f, "Stage %d%s: %s, params=%s (%.1f%%)\n", s, tag, layers, commas(p, b1, sizeof b1),
                total > 0 ? 100.0 * (double)p / (double)total : 0.0);
        print_modules(f, fam, st, max_modules);
    }
    if (sum != total)
        fprintf(f, "note: stages hold %s parameters in all: with tied embeddings the last stage keeps its own "
                   "copy of embed_tokens' weight as lm_head\n", commas(sum, b2, sizeof b2));
    return ferror(f) ? -1 : 0;
}

static void plan_usage(FILE *f) {
    fprintf(f,
            "usage: autopipe plan [--config FILE] [--section.key VALUE]... [--max-modules N]\n\n"
            "Prints, without MPI, how a run of this config is laid out: the pp x dp x tp mesh and the\n"
            "global ranks of every pp/dp/tp group, which stages each pp rank runs, and each stage's\n"
            "layers, module FQNs and parameter count. Without --config it plans the built-in default\n"
            "(a tiny Llama-shaped model); e.g. `autopipe plan --distributed.pp_size 4\n"
            "--model.num_hidden_layers 32 --autopipeline.pp_schedule interleaved_1f1b`.\n\n"
            "Options:\n"
            "  --config FILE          YAML recipe (NeMo AutoModel shape)\n"
            "  --section.key VALUE    override one key (also --section.key=VALUE)\n"
            "  --max-modules N        module names listed per stage (default 16, 0 = all)\n"
            "  -h, --help             this help\n\n");
    ap_config_emit_help(f);
    fprintf(f, "\nExit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n");
}

int ap_cmd_plan(int argc, char **argv) {
    static const ap_cli_flag flags[] = {{"max-modules", 1}, {"help", 0}, {"h", 0}, {NULL, 0}};
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    char err[1024];
    int nrest = 0, rc = AP_EXIT_USAGE, max_modules = 16;
    ap_config cfg;
    ap_split sp = {0};
    if (!rest) return AP_EXIT_FAIL;
    if (ap_config_from_args(&cfg, argc, argv, flags, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "autopipe plan: %s\n", err);
        free(rest);
        return AP_EXIT_USAGE;
    }
    for (int i = 1; i < nrest; i++) {
        const char *a = rest[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            plan_usage(stdout);
            rc = AP_EXIT_OK;
            goto out;
        }
        if (!strncmp(a, "--max-modules", 13)) {
            const char *v = a[13] == '=' ? a + 14 : rest[++i];
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (!*v || *end || errno || n < 0 || n > 1000000) {
                fprintf(stderr, "autopipe plan: --max-modules: '%s' is not a count (expected an integer >= 0)\n", v);
                goto out;
            }
            max_modules = (int)n;
            continue;
        }
        fprintf(stderr, "autopipe plan: unexpected argument '%s' (see `autopipe plan --help`)\n", a);
        goto out;
    }
    ap_model_config mc;
    ap_config_set_pretrained_reader(read_pretrained);
    if (ap_config_model(&cfg, &mc, err, sizeof err) || ap_split_plan(&cfg, &mc, &sp, err, sizeof err)) {
        fprintf(stderr, "autopipe plan: %s\n", err);
        goto out;
    }
    rc = ap_plan_print(stdout, &cfg, &mc, &sp, max_modules) || fflush(stdout) ? AP_EXIT_FAIL : AP_EXIT_OK;
out:
    ap_split_free(&sp);
    ap_config_free(&cfg);
    free(rest);
    return rc;
}
