/* test-hf-load.c - HF weights into stages and back: layer slices, tied
 * embeddings, base-model names, save/reload (F32, BF16, sharded), and the
 * errors for weights that do not fit the config. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"
#include "tests/tap.h"
#include "trainer/hf_config.h"
#include "trainer/hf_load.h"
#include "trainer/llama.h"

static char err[1024], tmp[64];
static const char *top;

static void fixture(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/tests/fixtures/hf/%s", top, name); }

static ap_stage *make(const ap_model_config *mc, int first, int last, int embed, int head) {
    ap_stage *s = NULL;
    if (ap_llama_stage_create(&s, mc, first, last, embed, head, 1, 4, 1, 0, err, sizeof err)) return NULL;
    return s;
}

static ap_param_ref *find(ap_stage *s, const char *name) {
    for (int i = 0; s && i < s->n_refs; i++)
        if (!strcmp(s->refs[i].name, name)) return &s->refs[i];
    return NULL;
}

/* Every parameter of `part` equals the same-named one of `full` (f: transform of full's values). */
static int same_params(ap_stage *part, ap_stage *full, int bf16) {
    for (int i = 0; i < part->n_refs; i++) {
        ap_param_ref *a = &part->refs[i], *b = find(full, a->name);
        if (!b || a->numel != b->numel) return 0;
        for (size_t q = 0; q < a->numel; q++) {
            float want = bf16 ? ap_bf16_to_f32(ap_f32_to_bf16(b->param[q])) : b->param[q];
            if (memcmp(&a->param[q], &want, sizeof want)) return 0;
        }
    }
    return 1;
}

static int load(ap_stage *s, const char *dir) { err[0] = 0; return s ? ap_load_hf_weights(s, dir, err, sizeof err) : -1; }

static void test_slices_and_save(void) {
    char dir[1024], out[256];
    fixture(dir, sizeof dir, "llama");
    ap_model_config mc;
    ok(ap_hf_config_read(&mc, dir, err, sizeof err) == 0, "read llama fixture config %s", err);
    ap_stage *full = make(&mc, 0, 2, 1, 1), *mid = make(&mc, 1, 2, 0, 0), *head = make(&mc, 2, 2, 0, 1);
    ok(load(full, dir) == 0 && load(mid, dir) == 0 && load(head, dir) == 0, "full, layer-1 and head-only stages load %s",
       err);
    ok(mid && head && full && same_params(mid, full, 0) && same_params(head, full, 0) && mid->n_refs == 9 &&
       head->n_refs == 2, "slices hold exactly their layers' tensors, equal to the full model's");

    snprintf(out, sizeof out, "%s/f32", tmp);
    ap_stage *parts[2] = {mid, full};
    ok(ap_save_hf_model(parts, 2, &mc, out, AP_ST_F32, 0, err, sizeof err) == 0, "save an HF directory (F32) %s", err);
    ap_model_config mc2;
    ap_stage *back = make(&mc, 0, 2, 1, 1);
    ok(ap_hf_config_read(&mc2, out, err, sizeof err) == 0 && mc2.hidden_size == mc.hidden_size &&
       mc2.tie_word_embeddings == 0 && load(back, out) == 0 && same_params(back, full, 0),
       "saved directory reloads bit for bit %s", err);
    ap_stage_destroy(back);

    snprintf(out, sizeof out, "%s/bf16", tmp);
    back = make(&mc, 0, 2, 1, 1);
    ok(ap_save_hf_model(&full, 1, &mc, out, AP_ST_BF16, 0, err, sizeof err) == 0 && load(back, out) == 0 &&
       same_params(back, full, 1), "BF16 save reloads as the bf16-rounded values %s", err);
    ap_stage_destroy(back);

    snprintf(out, sizeof out, "%s/sharded", tmp);
    back = make(&mc, 0, 2, 1, 1);
    char idx[300];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", out);
    ok(ap_save_hf_model(&full, 1, &mc, out, AP_ST_F32, 16384, err, sizeof err) == 0 && access(idx, F_OK) == 0 &&
       load(back, out) == 0 && same_params(back, full, 0), "sharded save (16 KiB shards + index) reloads %s", err);
    ap_stage_destroy(back);
    ap_stage_destroy(full);
    ap_stage_destroy(mid);
    ap_stage_destroy(head);
}

static void test_tied(void) {
    char dir[1024], out[256];
    fixture(dir, sizeof dir, "llama_tied");
    ap_model_config mc;
    ap_hf_config_read(&mc, dir, err, sizeof err);
    ap_st_model *st = NULL;
    ok(ap_st_open(&st, dir, err, sizeof err) == 0 && !ap_st_find(st, "lm_head.weight") &&
       ap_st_find(st, "model.embed_tokens.weight"), "tied fixture stores no lm_head.weight (as save_pretrained does)");
    ap_st_close(st);
    ap_stage *full = make(&mc, 0, 2, 1, 1), *head = make(&mc, 1, 2, 0, 1);
    ok(load(full, dir) == 0 && load(head, dir) == 0 && find(head, "model.embed_tokens.weight") &&
       !find(head, "lm_head.weight") && same_params(head, full, 0),
       "a tied head-only stage gets its copy of model.embed_tokens.weight %s", err);

    /* A tied file that stores only lm_head.weight, and a base-model file without "model.". */
    int n = full->n_refs;
    ap_st_out *t = calloc((size_t)n, sizeof *t);
    char (*names)[160] = calloc((size_t)n, sizeof *names);
    for (int i = 0; i < n; i++) {
        ap_param_ref *r = &full->refs[i];
        snprintf(names[i], sizeof names[i], "%s", !strcmp(r->name, "model.embed_tokens.weight") ? "lm_head.weight"
                                                  : r->name);
        t[i] = (ap_st_out){names[i], r->ndim, {r->shape[0], r->shape[1]}, r->param};
    }
    snprintf(out, sizeof out, "%s/tied_lm", tmp);
    mkdir(out, 0755);
    ap_stage *s = make(&mc, 0, 2, 1, 1);
    ok(ap_st_write(out, NULL, t, n, AP_ST_F32, 0, err, sizeof err) == 0 &&
       ap_hf_config_write(&mc, out, err, sizeof err) == 0 && load(s, out) == 0 && same_params(s, full, 0),
       "tied file with only lm_head.weight fills model.embed_tokens.weight %s", err);
    ap_stage_destroy(s);
    mc.tie_word_embeddings = 0;
    ap_hf_config_write(&mc, out, err, sizeof err);
    mc.tie_word_embeddings = 1;
    s = make(&mc, 0, 2, 1, 1);
    ok(load(s, out) == -1 && strstr(err, "model.embed_tokens.weight") && strstr(err, "tie_word_embeddings"),
       "... but not when config.json says untied (%s)", err);
    ap_stage_destroy(s);

    for (int i = 0; i < n; i++) {
        const char *nm = full->refs[i].name;
        snprintf(names[i], sizeof names[i], "%s", strncmp(nm, "model.", 6) ? nm : nm + 6);
        t[i].name = names[i];
    }
    snprintf(out, sizeof out, "%s/base", tmp);
    mkdir(out, 0755);
    s = make(&mc, 0, 2, 1, 1);
    ok(ap_st_write(out, NULL, t, n, AP_ST_F32, 0, err, sizeof err) == 0 && load(s, out) == 0 && same_params(s, full, 0),
       "base-model names (layers.0..., embed_tokens.weight) load %s", err);
    ap_stage_destroy(s);
    free(t);
    free(names);
    ap_stage_destroy(full);
    ap_stage_destroy(head);
}

static void test_mismatch(void) {
    char dir[1024];
    ap_model_config mc;
    fixture(dir, sizeof dir, "qwen2");
    ap_hf_config_read(&mc, dir, err, sizeof err);
    mc.model_type = AP_MODEL_LLAMA, mc.attention_bias = 0; /* a llama that the qwen2 weights do not fit */
    ap_stage *s = make(&mc, 0, 2, 1, 1);
    ok(load(s, dir) == -1 && strstr(err, "model.layers.0.self_attn.") && strstr(err, "_proj.bias") && strstr(err, "not a parameter"),
       "weights with biases the config lacks: error names the tensor (%s)", err);
    ap_stage_destroy(s);

    fixture(dir, sizeof dir, "llama");
    ap_hf_config_read(&mc, dir, err, sizeof err);
    mc.num_hidden_layers = 3;
    s = make(&mc, 0, 3, 1, 1);
    ok(load(s, dir) == -1 && strstr(err, "model.layers.2.") && strstr(err, "not found") &&
       strstr(err, "model.safetensors"), "config with more layers than the file: missing tensor named (%s)", err);
    ap_stage_destroy(s);

    ap_hf_config_read(&mc, dir, err, sizeof err);
    mc.intermediate_size = 50;
    s = make(&mc, 1, 2, 0, 0);
    ok(load(s, dir) == -1 && strstr(err, "mlp.gate_proj.weight") && strstr(err, "[48, 32]") &&
       strstr(err, "expected [50, 32]"), "wrong intermediate_size: tensor and both shapes named (%s)", err);
    ap_stage_destroy(s);

    ap_hf_config_read(&mc, dir, err, sizeof err);
    s = make(&mc, 0, 2, 1, 1);
    ok(load(s, "/nonexistent/model") == -1 && strstr(err, "/nonexistent/model"), "missing directory named (%s)", err);
    ap_stage_destroy(s);
}

int main(void) {
    top = getenv("top_srcdir");
    if (!top) top = "..";
    snprintf(tmp, sizeof tmp, "/tmp/test-hf-load.XXXXXX");
    if (!mkdtemp(tmp)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    test_slices_and_save();
    test_tied();
    test_mismatch();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd)) diag("could not remove %s", tmp);
    return tap_done();
}
