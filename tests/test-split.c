/* test-split.c - schedule names, automatic and manual splits, stage placement,
 * parameter counts. */
#include "trainer/param_count.h"
#include "trainer/split.h"
#include "tests/tap.h"

/* Splits the key defaults (4 layers) plus the overrides; returns ap_split_plan's rc. */
static int split(ap_split *sp, char *err, size_t len, int argc, char **ov) {
    ap_config c;
    ap_model_config mc;
    if (ap_config_load(&c, NULL, argc, ov, err, len)) return -2;
    int rc = ap_config_model(&c, &mc, err, len) ? -3 : ap_split_plan(&c, &mc, sp, err, len);
    ap_config_free(&c);
    return rc;
}

#define SPLIT(sp, err, ...)                                                                         \
    ({                                                                                              \
        char *ov_[] = {__VA_ARGS__};                                                                \
        split(sp, err, sizeof err, (int)(sizeof ov_ / sizeof *ov_), ov_);                           \
    })

static int layers_are(const ap_split *sp, const int *sizes) {
    int at = 0;
    for (int s = 0; s < sp->num_stages; s++) {
        if (sp->stages[s].first_layer != at || sp->stages[s].last_layer - at != sizes[s]) return 0;
        at = sp->stages[s].last_layer;
    }
    return at == sp->num_layers;
}

static void test_schedule_names(void) {
    struct { const char *name; ap_pp_schedule want; } cases[] = {
        {"gpipe", AP_PP_GPIPE}, {"GPipe", AP_PP_GPIPE}, {"1f1b", AP_PP_1F1B}, {"1F1B", AP_PP_1F1B},
{"interleaved_1f1b", AP_PP_INTERLEAVED_1F1B},
        {"Interleaved1F1B", AP_PP_INTERLEAVED_1F1B}, {"looped_bfs", AP_PP_LOOPED_BFS},
        {"LoopedBFS", AP_PP_LOOPED_BFS}, {"interleaved_zb", AP_PP_INTERLEAVED_ZB},
        {"InterleavedZeroBubble", AP_PP_INTERLEAVED_ZB}, {"zbv", AP_PP_ZBV}, {"ZBVZeroBubble", AP_PP_ZBV},
    };
    int good = 1;
    char err[300];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ap_pp_schedule s;
        if (ap_pp_schedule_parse(cases[i].name, &s, err, sizeof err) || s != cases[i].want) {
            good = 0;
            diag("%s", cases[i].name);
        }
    }
    ok(good, "schedule names: guide and PyTorch spellings, any case");
    ap_pp_schedule s;
    ok(ap_pp_schedule_parse("2f2b", &s, err, sizeof err) == -1 && strstr(err, "unknown schedule '2f2b'") &&
           strstr(err, "interleaved_zb"),
       "unknown schedule lists the known ones");
    ok(ap_pp_schedule_is_single(AP_PP_GPIPE) && ap_pp_schedule_is_single(AP_PP_1F1B) &&
           !ap_pp_schedule_is_single(AP_PP_INTERLEAVED_1F1B) && !ap_pp_schedule_is_single(AP_PP_ZBV) &&
           ap_pp_schedule_style(AP_PP_ZBV) == AP_STYLE_V && ap_pp_schedule_style(AP_PP_LOOPED_BFS) == AP_STYLE_LOOP,
       "single-stage: gpipe, 1f1b; v placement: zbv only");
}

static void test_auto(void) {
    ap_split sp;
    char err[512] = "";
    int ids[8];
    int rc = SPLIT(&sp, err, "--distributed.pp_size", "2");
    ok(rc == 0 && sp.num_stages == 2 && sp.stages_per_rank == 1 && layers_are(&sp, (int[]){2, 2}) &&
           sp.stages[0].has_embed && !sp.stages[0].has_head && sp.stages[1].has_head && !sp.manual,
       "1f1b pp 2, 4 layers: 2 stages of 2 layers");
    ok(rc == 0 && sp.stages[1].fqns.n == 5 && !strcmp(sp.stages[1].fqns.v[0], "model.layers.2") &&
           !strcmp(sp.stages[1].fqns.v[3], "lm_head") && !strcmp(sp.stages[1].fqns.v[4], "model.rotary_emb"),
       "stage FQNs as generate_hf_model_fqn_per_model_part spells them");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--model.num_hidden_layers", "8",
               "--autopipeline.pp_schedule", "interleaved_1f1b");
    int n0 = rc ? -1 : ap_split_rank_stages(&sp, 0, ids, 8, err, sizeof err);
    ok(rc == 0 && sp.num_stages == 4 && n0 == 2 && ids[0] == 0 && ids[1] == 2 && layers_are(&sp, (int[]){2, 2, 2, 2}),
       "interleaved_1f1b: 2 stages per rank by default, loop placement (0, 2)");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--model.num_hidden_layers", "8",
               "--autopipeline.pp_schedule", "ZBVZeroBubble");
    n0 = rc ? -1 : ap_split_rank_stages(&sp, 0, ids, 8, err, sizeof err);
    ok(rc == 0 && sp.style == AP_STYLE_V && n0 == 2 && ids[0] == 0 && ids[1] == 3, "zbv: V placement (0, 3)");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--model.num_hidden_layers", "10",
               "--autopipeline.pp_schedule", "looped_bfs", "--autopipeline.layers_per_stage", "3");
    ok(rc == 0 && sp.num_stages == 4 && layers_are(&sp, (int[]){3, 3, 2, 2}),
       "layers_per_stage 3 of 10 layers: ceil -> 4 stages (3, 3, 2, 2)");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "4", "--model.num_hidden_layers", "12",
               "--autopipeline.pp_schedule", "interleaved_1f1b", "--autopipeline.layers_per_stage", "2",
               "--autopipeline.round_virtual_stages_to_pp_multiple", "up");
    ok(rc == 0 && sp.num_stages == 8 && layers_are(&sp, (int[]){2, 2, 2, 2, 1, 1, 1, 1}),
       "round up: 6 -> 8 stages of 12 layers");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--model.num_hidden_layers", "12",
               "--autopipeline.pp_schedule", "looped_bfs", "--autopipeline.stages_per_rank", "3");
    ok(rc == 0 && sp.num_stages == 6 && sp.stages_per_rank == 3 && layers_are(&sp, (int[]){2, 2, 2, 2, 2, 2}),
       "stages_per_rank 3 with looped_bfs: 6 stages");
    if (!rc) ap_split_free(&sp);

    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--autopipeline.pp_schedule_csv", "x.csv",
               "--autopipeline.stages_per_rank", "2");
    ok(rc == 0 && sp.num_stages == 4 && !sp.single_stage && sp.style == AP_STYLE_LOOP,
       "pp_schedule_csv: stages_per_rank decides the stage count");
    if (!rc) ap_split_free(&sp);

    struct { const char *what, *needle; char *ov[10]; int n; } errs[] = {
        {"layers_per_stage not giving a multiple of pp", "number of virtual stages (3) must be divisible",
         {"--distributed.pp_size", "2", "--autopipeline.layers_per_stage", "3", "--model.num_hidden_layers", "9",
          "--autopipeline.pp_schedule", "interleaved_1f1b"}, 8},
        {"single-stage schedule with 2 stages per rank", "single-stage schedule requires exactly 1 stage per rank",
         {"--distributed.pp_size", "2", "--autopipeline.layers_per_stage", "1"}, 4},
        {"gpipe with stages_per_rank 2", "runs exactly 1 stage per rank",
         {"--distributed.pp_size", "2", "--autopipeline.pp_schedule", "gpipe", "--autopipeline.stages_per_rank", "2"}, 6},
        {"zbv with 3 stages per rank", "needs exactly 2 stages per rank",
         {"--distributed.pp_size", "2", "--model.num_hidden_layers", "12", "--autopipeline.pp_schedule", "zbv",
          "--autopipeline.stages_per_rank", "3"}, 8},
        {"multi-stage schedule with 1 stage per rank", "needs at least 2 stages per rank",
         {"--distributed.pp_size", "2", "--autopipeline.pp_schedule", "interleaved_zb", "--autopipeline.stages_per_rank", "1"}, 6},
        {"more stages than layers", "number of stages (8) cannot exceed number of layers (4)",
         {"--distributed.pp_size", "4", "--autopipeline.pp_schedule", "interleaved_1f1b"}, 4},
        {"a huge pp_size fails before allocating", "number of stages (16000000) cannot exceed number of layers (4)",
         {"--distributed.pp_size", "8000000", "--autopipeline.pp_schedule", "zbv"}, 4},
        {"stage count beyond the rank limit", "pp_size 16000000 is too large",
         {"--distributed.pp_size", "16000000", "--autopipeline.pp_schedule", "zbv"}, 4},
        {"unknown schedule name", "unknown schedule 'onef1b'", {"--autopipeline.pp_schedule", "onef1b"}, 2},
        {"csv schedule without a file", "needs autopipeline.pp_schedule_csv", {"--autopipeline.pp_schedule", "csv"}, 2},
        {"layers_per_stage and stages_per_rank together", "both set",
         {"--autopipeline.layers_per_stage", "2", "--autopipeline.stages_per_rank", "2"}, 4},
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        err[0] = 0;
        rc = split(&sp, err, sizeof err, errs[i].n, errs[i].ov);
        ok(rc == -1 && strstr(err, errs[i].needle), "error: %s", errs[i].what);
        if (rc != -1 || !strstr(err, errs[i].needle)) diag("rc %d: %s", rc, err);
        if (!rc) ap_split_free(&sp);
    }
}

static void test_manual(void) {
    ap_split sp;
    char err[512] = "";
    int rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--autopipeline.module_fqns_per_model_part",
                   "[[model.embed_tokens, model.rotary_emb, model.layers.0], "
                   "[model.rotary_emb, model.layers.1, model.layers.2, model.layers.3, model.norm, lm_head]]");
    ok(rc == 0 && sp.manual && sp.num_stages == 2 && layers_are(&sp, (int[]){1, 3}) && sp.stages[0].has_embed &&
           sp.stages[1].has_head && sp.stages[0].has_rotary && !strcmp(sp.stages[0].fqns.v[1], "model.rotary_emb"),
       "manual split (guide style, rotary on every stage): uneven 1 + 3 layers, names kept in order");
    if (!rc) ap_split_free(&sp);
    rc = SPLIT(&sp, err, "--distributed.pp_size", "2", "--autopipeline.pp_schedule", "interleaved_1f1b",
               "--autopipeline.module_fqns_per_model_part",
               "[[model.embed_tokens, model.layers.0], [model.layers.1], [model.layers.2], [model.layers.3, model.norm, lm_head]]");
    ok(rc == 0 && sp.num_stages == 4 && sp.stages_per_rank == 2, "manual split with 2 stages per rank");
    if (!rc) ap_split_free(&sp);

    const char *P = "--autopipeline.module_fqns_per_model_part";
    struct { const char *what, *value, *needle; } errs[] = {
        {"unknown module", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.final_norm, lm_head]]",
         "stage 1: unknown module 'model.final_norm'"},
        {"layer beyond the model", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.layers.4, model.norm, lm_head]]",
         "model.layers.4 does not exist (the model has 4 layers"},
        {"layer on two stages", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.1, model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.layers.1 is already on an earlier stage"},
        {"layers out of order", "[[model.embed_tokens, model.layers.1, model.layers.0], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.layers.1 comes before model.layers.0"},
        {"a gap between stages", "[[model.embed_tokens, model.layers.0], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.layers.2 comes before model.layers.1"},
        {"embed_tokens not on the first stage", "[[model.layers.0, model.layers.1], [model.embed_tokens, model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.embed_tokens must be on the first stage, found on stage 1"},
        {"norm not on the last stage", "[[model.embed_tokens, model.layers.0, model.layers.1, model.norm], [model.layers.2, model.layers.3, lm_head]]",
         "model.norm must be on the last stage (1), found on stage 0"},
        {"lm_head missing", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.norm]]",
         "lm_head is on no stage"},
        {"embed_tokens missing", "[[model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.embed_tokens is on no stage"},
        {"last layers missing", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.2, model.norm, lm_head]]",
         "model.layers.3..3 are on no stage"},
        {"a stage without layers", "[[model.embed_tokens], [model.layers.0, model.layers.1, model.layers.2, model.layers.3, model.norm, lm_head]]",
         "stage 0 holds no transformer layer"},
        {"module listed twice", "[[model.embed_tokens, model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.norm, lm_head, lm_head]]",
         "lm_head is already on stage 1"},
        {"rotary_emb twice on a stage", "[[model.embed_tokens, model.rotary_emb, model.rotary_emb, model.layers.0, model.layers.1], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "model.rotary_emb listed twice"},
        {"stage count not a multiple of pp_size", "[[model.embed_tokens, model.layers.0], [model.layers.1], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "3 stages is not a multiple of distributed.pp_size 2"},
        {"layer index with a leading zero", "[[model.embed_tokens, model.layers.00, model.layers.1], [model.layers.2, model.layers.3, model.norm, lm_head]]",
         "unknown module 'model.layers.00'"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        char *ov[] = {"--distributed.pp_size", "2", (char *)P, (char *)errs[i].value};
        err[0] = 0;
        rc = split(&sp, err, sizeof err, 4, ov);
        ok(rc == -1 && strstr(err, errs[i].needle) && strstr(err, "module_fqns_per_model_part"), "manual error: %s",
           errs[i].what);
        if (rc != -1 || !strstr(err, errs[i].needle)) diag("rc %d: %s", rc, err);
        if (!rc) ap_split_free(&sp);
    }
    rc = SPLIT(&sp, err, "--autopipeline.layers_per_stage", "2", "--autopipeline.module_fqns_per_model_part",
               "[[model.embed_tokens, model.layers.0, model.layers.1, model.layers.2, model.layers.3, model.norm, lm_head]]");
    ok(rc == -1 && strstr(err, "give either the manual split or the automatic one"),
       "manual error: manual split together with layers_per_stage");
}

static ap_model_config hf(int V, int H, int I, int L, int nh, int nkv, int hd, int tie) {
    ap_model_config m = {0};
    m.vocab_size = V, m.hidden_size = H, m.intermediate_size = I, m.num_hidden_layers = L;
    m.num_attention_heads = nh, m.num_key_value_heads = nkv, m.head_dim = hd, m.tie_word_embeddings = tie;
    return m;
}

static void test_param_count(void) {
    /* totals published for these checkpoints (safetensors parameter counts) */
    ap_model_config llama32 = hf(128256, 2048, 8192, 16, 32, 8, 64, 1);
    ok(ap_model_param_count(&llama32, 0, 16, 1, 1) == 1235814400LL, "Llama-3.2-1B (GQA, tied): 1,235,814,400");
    ap_model_config llama2 = hf(32000, 4096, 11008, 32, 32, 32, 128, 0);
    ok(ap_model_param_count(&llama2, 0, 32, 1, 1) == 6738415616LL, "Llama-2-7B (untied): 6,738,415,616");
    ap_model_config qwen2 = hf(151936, 896, 4864, 24, 14, 2, 64, 1);
    qwen2.attention_bias = 1;
    ok(ap_model_param_count(&qwen2, 0, 24, 1, 1) == 494032768LL, "Qwen2-0.5B (q/k/v biases): 494,032,768");
    ap_model_config qwen3 = hf(151936, 1024, 3072, 28, 16, 8, 128, 1);
    qwen3.qk_norm = 1;
    ok(ap_model_param_count(&qwen3, 0, 28, 1, 1) == 596049920LL, "Qwen3-0.6B (q/k norms, head_dim 128): 596,049,920");
    long long a = ap_model_param_count(&llama2, 0, 10, 1, 0), b = ap_model_param_count(&llama2, 10, 32, 0, 1);
    ok(a + b == 6738415616LL, "untied: stage counts add up to the total");
    a = ap_model_param_count(&llama32, 0, 8, 1, 0), b = ap_model_param_count(&llama32, 8, 16, 0, 1);
    ok(a + b == 1235814400LL + 128256LL * 2048, "tied: the last stage holds its own lm_head copy");
    ok(ap_model_param_count(&llama32, 3, 2, 0, 0) == -1 && ap_model_param_count(&llama32, 0, 17, 0, 0) == -1,
       "bad layer range rejected");
}

int main(void) {
    test_schedule_names();
    test_auto();
    test_manual();
    test_param_count();
    return tap_done();
}
