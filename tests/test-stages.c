/* test-stages.c - calculate_virtual_stages and generate_hf_model_fqn_per_model_part,
 * table-driven, with the AutoPipeline guide's examples and every error. */
#include "launcher/topology.h"
#include "tests/tap.h"

static void test_virtual_stages(void) {
    struct {
        int layers, lps, pp, single;
        enum ap_round_mode round;
        int want_stages, want_per; /* want_stages -1: error containing `msg` */
        const char *msg;
    } cases[] = {
        /* the guide: 32 layers, 4 per stage, pp 4, multi-stage, round up -> 8 stages, 2 per rank */
        {32, 4, 4, 0, AP_ROUND_UP, 8, 2, NULL},
        /* the guide's custom model: 24 layers, 3 per stage, pp 4 -> 8 virtual stages */
        {24, 3, 4, 0, AP_ROUND_NONE, 8, 2, NULL},
        /* the guide's reference: pp 4, 32 layers, 8 per stage -> 4 stages, 1 per rank */
        {32, 8, 4, 1, AP_ROUND_NONE, 4, 1, NULL},
        {32, 32, 1, 1, AP_ROUND_NONE, 1, 1, NULL},
        {30, 4, 4, 0, AP_ROUND_UP, 8, 2, NULL},          /* ceil(30/4) = 8 */
        {10, 3, 2, 0, AP_ROUND_NONE, 4, 2, NULL},         /* ceil(10/3) = 4 */
        {12, 2, 4, 0, AP_ROUND_UP, 8, 2, NULL},           /* 6 -> 8 */
        {12, 2, 4, 0, AP_ROUND_DOWN, 4, 1, "multi-stage schedule requires at least 2"}, /* 6 -> 4 */
        {20, 2, 4, 0, AP_ROUND_DOWN, 8, 2, NULL},         /* 10 -> 8 */
        {8, 1, 3, 0, AP_ROUND_DOWN, 6, 2, NULL},          /* 8 -> 6 */
        /* None: 1 per rank for single-stage schedules, 2 for multi-stage */
        {32, -1, 4, 1, AP_ROUND_NONE, 4, 1, NULL},
        {32, -1, 4, 0, AP_ROUND_NONE, 8, 2, NULL},
        {1, -1, 3, 0, AP_ROUND_UP, 6, 2, NULL},           /* no layer check here: generate does it */
        /* errors */
        {10, 4, 2, 0, AP_ROUND_NONE, -1, 0, "number of virtual stages (3) must be divisible by pipeline parallel size (2)"},
        {32, 4, 4, 1, AP_ROUND_NONE, -1, 0, "single-stage schedule requires exactly 1 stage per rank, but got 2"},
        {32, 8, 4, 0, AP_ROUND_NONE, -1, 0, "multi-stage schedule requires at least 2 stages per rank, but got 1"},
        {4, 4, 2, 1, AP_ROUND_DOWN, -1, 0, "leaves none"},
        {4, 0, 2, 1, AP_ROUND_NONE, -1, 0, "layers_per_stage must be positive"},
        {4, 2, 0, 1, AP_ROUND_NONE, -1, 0, "pp_size must be at least 1"},
        {0, 2, 1, 1, AP_ROUND_NONE, -1, 0, "at least one layer"},
        {12, 5, 2, 0, (enum ap_round_mode)7, -1, 0, "invalid round_virtual_stages_to_pp_multiple"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int n = -7, per = -7;
        char err[400] = "";
        int rc = calculate_virtual_stages(cases[i].layers, cases[i].lps, cases[i].pp, cases[i].single,
                                          cases[i].round, &n, &per, err, sizeof err);
        int good = cases[i].want_stages < 0
                       ? rc == -1 && strstr(err, cases[i].msg)
                       : rc == 0 && n == cases[i].want_stages && per == cases[i].want_per;
        if (cases[i].want_stages >= 0 && cases[i].msg) /* expected to fail after rounding */
            good = rc == -1 && strstr(err, cases[i].msg);
        ok(good, "calculate_virtual_stages(%d, %d, %d, %s, %s) -> %s", cases[i].layers, cases[i].lps,
           cases[i].pp, cases[i].single ? "single" : "multi",
           cases[i].round == AP_ROUND_UP ? "up" : cases[i].round == AP_ROUND_DOWN ? "down" : "none",
           rc ? err : "ok");
    }
}

/* All FQNs of a split, joined: "a b | c d". */
static void join(const ap_stage_modules *m, int n, char *out, size_t len) {
    size_t k = 0;
    out[0] = 0;
    for (int s = 0; s < n; s++) {
        if (s) k += (size_t)snprintf(out + k, len - k, " |");
        for (int i = 0; i < ap_stage_modules_count(&m[s]); i++) {
            char name[64];
            if (ap_stage_modules_fqn(&m[s], i, name, sizeof name)) name[0] = '?', name[1] = 0;
            k += (size_t)snprintf(out + k, len - k, " %s", name);
        }
    }
}

static void test_generate(void) {
    ap_stage_modules m[64];
    char err[200], got[4096];
    /* the guide: 4 stages of a 32-layer model with rotary_emb and the "model." prefix */
    int n = generate_hf_model_fqn_per_model_part(4, 32, 1, 1, 1, "model.", m, 64, err, sizeof err);
    ok(n == 4 && m[0].first_layer == 0 && m[0].last_layer == 8 && m[3].first_layer == 24 &&
           m[3].last_layer == 32 && m[0].has_embed && !m[1].has_embed && m[3].has_norm &&
           m[3].has_lm_head && !m[2].has_norm && m[1].has_rotary,
       "guide: 4 stages x 8 layers, embed first, norm/lm_head last, rotary everywhere");
    join(m, 1, got, sizeof got);
    ok(!strcmp(got, " model.embed_tokens model.layers.0 model.layers.1 model.layers.2 model.layers.3 "
                    "model.layers.4 model.layers.5 model.layers.6 model.layers.7 model.rotary_emb"),
       "guide: stage 0 FQNs in NeMo's order");
    join(&m[3], 1, got, sizeof got);
    ok(!strcmp(got, " model.layers.24 model.layers.25 model.layers.26 model.layers.27 model.layers.28 "
                    "model.layers.29 model.layers.30 model.layers.31 model.norm lm_head model.rotary_emb"),
       "guide: stage 3 ends with model.norm, lm_head (unprefixed), model.rotary_emb");
    /* the guide's functional example: no rotary, empty prefix */
    n = generate_hf_model_fqn_per_model_part(4, 32, 1, 1, 0, "", m, 64, err, sizeof err);
    join(m, n, got, sizeof got);
    ok(n == 4 && !strncmp(got, " embed_tokens layers.0 ", 23) && strstr(got, "layers.31 norm lm_head") &&
           !strstr(got, "rotary"),
       "guide: fqn_prefix \"\" and include_rotary_emb False");
    /* the guide's 2-stage picture: layers 0-15 and 16-31 */
    n = generate_hf_model_fqn_per_model_part(2, 32, 1, 1, 1, "model.", m, 64, err, sizeof err);
    ok(n == 2 && m[0].last_layer == 16 && m[1].first_layer == 16 && m[1].last_layer == 32,
       "guide: 32 layers over 2 stages is 0-15 and 16-31");
    struct { int stages, layers; int sizes[8]; } uneven[] = {
        {3, 10, {4, 3, 3}}, {4, 10, {3, 3, 2, 2}}, {5, 5, {1, 1, 1, 1, 1}}, {1, 7, {7}}, {4, 7, {2, 2, 2, 1}},
    };
    for (size_t i = 0; i < sizeof uneven / sizeof *uneven; i++) {
        n = generate_hf_model_fqn_per_model_part(uneven[i].stages, uneven[i].layers, 1, 1, 0, "model.", m,
                                                 64, err, sizeof err);
        int good = n == uneven[i].stages, at = 0;
        for (int s = 0; good && s < n; s++) {
            good = m[s].first_layer == at && m[s].last_layer - m[s].first_layer == uneven[i].sizes[s];
            at = m[s].last_layer;
        }
        ok(good && at == uneven[i].layers, "%d layers over %d stages: first %d stages get one more",
           uneven[i].layers, uneven[i].stages, uneven[i].layers % uneven[i].stages);
    }
    n = generate_hf_model_fqn_per_model_part(2, 4, 0, 0, 0, "model.", m, 64, err, sizeof err);
    join(m, n, got, sizeof got);
    ok(n == 2 && !strcmp(got, " model.layers.0 model.layers.1 | model.layers.2 model.layers.3 model.norm"),
       "no embeddings, no lm_head: norm still closes the last stage");
    n = generate_hf_model_fqn_per_model_part(1, 2, 1, 1, 1, "model.", m, 64, err, sizeof err);
    join(m, n, got, sizeof got);
    ok(n == 1 && !strcmp(got, " model.embed_tokens model.layers.0 model.layers.1 model.norm lm_head model.rotary_emb"),
       "one stage holds everything");
    char small[8];
    ok(ap_stage_modules_fqn(&m[0], 1, small, sizeof small) == -1 && ap_stage_modules_fqn(&m[0], 6, got, 64) == -1 &&
           ap_stage_modules_fqn(&m[0], -1, got, 64) == -1,
       "fqn: short buffer and out-of-range index rejected");
    ok(generate_hf_model_fqn_per_model_part(0, 4, 1, 1, 1, "", m, 64, err, sizeof err) == -1 &&
           strstr(err, "at least 1"),
       "error: 0 stages");
    ok(generate_hf_model_fqn_per_model_part(5, 4, 1, 1, 1, "", m, 64, err, sizeof err) == -1 &&
           strstr(err, "number of stages (5) cannot exceed number of layers (4)"),
       "error: more stages than layers");
    ok(generate_hf_model_fqn_per_model_part(8, 16, 1, 1, 1, "", m, 4, err, sizeof err) == -1 && strstr(err, "room"),
       "error: output too small");
}

int main(void) {
    test_virtual_stages();
    test_generate();
    return tap_done();
}
