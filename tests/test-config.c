/* test-config.c - YAML config, overrides, round trip and one test per error class. */
#include "launcher/config.h"
#include "tests/tap.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];

static const char *write_file(const char *name, const char *text) {
    static char path[4][256];
    static int slot;
    char *p = path[slot++ % 4];
    snprintf(p, 256, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
    return p;
}

/* Loads text (or no file when text is NULL) with overrides; returns rc. */
static int load(ap_config *cfg, const char *text, int argc, char **ov, char *err, size_t len) {
    const char *path = text ? write_file("c.yaml", text) : NULL;
    return ap_config_load(cfg, path, argc, ov, err, len);
}

/* Expects the load to fail with every needle in the message. */
static void expect_error(const char *what, const char *text, int argc, char **ov, const char *n1,
                         const char *n2) {
    ap_config cfg;
    char err[512] = "";
    int rc = load(&cfg, text, argc, ov, err, sizeof err);
    int good = rc == -1 && strstr(err, n1) && (!n2 || strstr(err, n2));
    ok(good, "error: %s", what);
    if (!good) diag("rc %d, message: %s", rc, err);
    if (rc == 0) ap_config_free(&cfg);
}

static void test_defaults(void) {
    ap_config c;
    ap_config_defaults(&c);
    ok(c.distributed.pp_size == 1 && c.distributed.dp_size == 1 && c.distributed.tp_size == 1,
       "defaults: pp/dp/tp 1");
    ok(c.optimizer.lr == 3e-3 && c.optimizer.n_betas == 2 && c.optimizer.betas[0] == 0.9 &&
           c.optimizer.betas[1] == 0.95,
       "defaults: lr 3e-3, betas [0.9, 0.95]");
    ok(!c.autopipeline.has_layers_per_stage && c.autopipeline.layers_per_stage == -1 &&
           c.autopipeline.round_virtual_stages_to_pp_multiple == AP_ROUND_NONE &&
           c.autopipeline.module_fqns_per_model_part.n == 0 && c.autopipeline.pp_schedule_csv == NULL,
       "defaults: nullable keys are null");
    ok(!strcmp(c.autopipeline.pp_schedule, "1f1b") && !strcmp(c.checkpoint.checkpoint_dir, "checkpoints") &&
           c.model.model_type == AP_MODEL_LLAMA && c.model.num_hidden_layers == 4 &&
           c.clip_grad_norm.has_max_norm && c.clip_grad_norm.max_norm == 1.0,
       "defaults: strings, enums, nullable float with a value");
    char err[256];
    ok(ap_config_validate(&c, err, sizeof err) == 0, "defaults validate");
    ap_config_free(&c);
}

static void test_file_and_overrides(void) {
    const char *yaml =
        "# a NeMo-shaped recipe\n"
        "distributed:\n"
        "  _target_: nemo_automodel.components.distributed.fsdp2.FSDP2Manager\n"
        "  pp_size: 4\n"
        "  dp_size: 2\n"
        "autopipeline:\n"
        "  pp_schedule: interleaved_1f1b\n"
        "  layers_per_stage: 2\n"
        "  round_virtual_stages_to_pp_multiple: up\n"
        "  module_fqns_per_model_part:\n"
        "    - [model.embed_tokens, model.layers.0]\n"
        "    - [model.layers.1, model.norm, lm_head]\n"
        "optimizer:\n"
        "  lr: 1e-4\n"
        "  betas: [0.8, 0.99]\n"
        "dataloader: {_target_: torchdata.stateful_dataloader.StatefulDataLoader, batch_size: 16, shuffle: no}\n"
        "rng: {_target_: nemo_automodel.components.training.rng.StatefulRNG, seed: 1111}\n"
        "clip_grad_norm:\n"
        "  max_norm: null\n"
        "  norm_type: .inf\n"
        "model:\n";
    ap_config c;
    char err[512] = "";
    int rc = load(&c, yaml, 0, NULL, err, sizeof err);
    ok(rc == 0, "a NeMo-shaped file loads%s%s", rc ? ": " : "", rc ? err : "");
    if (rc) return;
    ok(c.distributed.pp_size == 4 && c.distributed.dp_size == 2 && c.distributed.tp_size == 1,
       "file: ints, untouched keys keep defaults");
    ok(c.autopipeline.has_layers_per_stage && c.autopipeline.layers_per_stage == 2 &&
           c.autopipeline.round_virtual_stages_to_pp_multiple == AP_ROUND_UP,
       "file: nullable int and enum");
    const ap_strlistlist *m = &c.autopipeline.module_fqns_per_model_part;
    ok(m->n == 2 && m->v[0].n == 2 && m->v[1].n == 3 && !strcmp(m->v[0].v[0], "model.embed_tokens") &&
           !strcmp(m->v[1].v[2], "lm_head"),
       "file: list of lists (block of flow sequences)");
    ok(c.optimizer.lr == 1e-4 && c.optimizer.betas[0] == 0.8 && c.optimizer.betas[1] == 0.99,
       "file: floats and a float list");
    ok(c.dataloader.batch_size == 16 && c.dataloader.shuffle == 0 && c.rng.seed == 1111 && c.dataloader._target_,
       "file: flow mappings, YAML 1.1 'no', NeMo dataloader/rng targets");
    ok(!c.clip_grad_norm.has_max_norm && isinf(c.clip_grad_norm.norm_type), "file: null float, .inf");
    ap_config_free(&c);

    char *ov[] = {"--distributed.pp_size", "2", "--optimizer.lr=0.5", "--autopipeline.layers_per_stage",
                  "null", "--autopipeline.module_fqns_per_model_part", "[[a, b], [c]]",
                  "--checkpoint.resume=false", "--optimizer.betas", "[0.5, 0.6]",
                  "--autopipeline.pp_schedule", "1F1B", "--dataset.path_or_dataset=x=y.txt",
                  "--logging.metrics_file", "runs/a: b #1.jsonl", "--dataset.val_path", "'quoted'"};
    rc = load(&c, yaml, (int)(sizeof ov / sizeof *ov), ov, err, sizeof err);
    ok(rc == 0, "overrides apply%s%s", rc ? ": " : "", rc ? err : "");
    if (rc) return;
    ok(c.distributed.pp_size == 2 && c.distributed.dp_size == 2, "override '--k v' wins over the file");
    ok(c.optimizer.lr == 0.5, "override '--k=v' form");
    ok(!c.autopipeline.has_layers_per_stage && c.autopipeline.layers_per_stage == -1, "override null");
    m = &c.autopipeline.module_fqns_per_model_part;
    ok(m->n == 2 && m->v[0].n == 2 && m->v[1].n == 1 && !strcmp(m->v[1].v[0], "c"),
       "override with a YAML flow list of lists");
    ok(!strcmp(c.checkpoint.resume, "false"), "str key keeps 'false' as text");
    ok(c.optimizer.betas[0] == 0.5 && c.optimizer.betas[1] == 0.6, "override a float list");
    ok(!strcmp(c.autopipeline.pp_schedule, "1F1B"), "str override kept verbatim");
    ok(!strcmp(c.dataset.path_or_dataset, "x=y.txt"), "'--k=v' splits at the first '='");
    ok(!strcmp(c.logging.metrics_file, "runs/a: b #1.jsonl") && !strcmp(c.dataset.val_path, "quoted"),
       "string override taken verbatim (': ' and ' #' kept), quotes removed when quoted");
    ap_config_free(&c);
}

static char *emit(const ap_config *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ap_config_emit_yaml(c, f);
    fclose(f);
    return buf;
}

static void test_round_trip(void) {
    /* Values that YAML would misread unless emitted with care. */
    char *ov[] = {"--checkpoint.checkpoint_dir", "'null'", "--checkpoint.resume", "'123'",
                  "--dataset.path_or_dataset", "'data: with # and : colon.txt'", "--logging.metrics_file",
                  "\"caf\xc3\xa9 yes\"", "--dataset.split", "'yes'", "--optimizer.lr", "0.1",
                  "--model.rms_norm_eps", "1.0000000000000002e-06", "--clip_grad_norm.norm_type", "inf",
                  "--autopipeline.module_fqns_per_model_part", "[[model.embed_tokens, model.layers.0], ['true', lm_head]]",
                  "--autopipeline.round_virtual_stages_to_pp_multiple", "down", "--model.head_dim", "16",
                  "--clip_grad_norm.max_norm", "null"};
    ap_config a, b;
    char err[512] = "";
    int rc = load(&a, NULL, (int)(sizeof ov / sizeof *ov), ov, err, sizeof err);
    ok(rc == 0, "round trip: tricky values load%s%s", rc ? ": " : "", err);
    if (rc) return;
    char *y1 = emit(&a);
    const char *path = write_file("rt.yaml", y1);
    rc = ap_config_load(&b, path, 0, NULL, err, sizeof err);
    ok(rc == 0, "round trip: emitted YAML loads back%s%s", rc ? ": " : "", err);
    if (rc) { diag("%s", y1); free(y1); ap_config_free(&a); return; }
    char *y2 = emit(&b);
    ok(!strcmp(y1, y2), "round trip: emit(load(emit(c))) == emit(c)");
    ok(!strcmp(b.checkpoint.checkpoint_dir, "null") && !strcmp(b.checkpoint.resume, "123") &&
           !strcmp(b.dataset.path_or_dataset, "data: with # and : colon.txt") &&
           !strcmp(b.logging.metrics_file, "caf\xc3\xa9 yes") && !strcmp(b.dataset.split, "yes"),
       "round trip: strings that look like null/numbers/bools/comments survive");
    ok(b.model.rms_norm_eps == a.model.rms_norm_eps && b.optimizer.lr == 0.1 &&
           isinf(b.clip_grad_norm.norm_type) && !b.clip_grad_norm.has_max_norm &&
           b.model.has_head_dim && b.model.head_dim == 16,
       "round trip: floats bit-exact, inf, nullable ints and floats");
    const ap_strlistlist *m = &b.autopipeline.module_fqns_per_model_part;
    ok(m->n == 2 && !strcmp(m->v[1].v[0], "true") &&
           b.autopipeline.round_virtual_stages_to_pp_multiple == AP_ROUND_DOWN,
       "round trip: list of lists and enum");
    ap_config d;
    ap_config_defaults(&d);
    char *yd = emit(&d);
    ap_config e;
    rc = ap_config_load(&e, write_file("d.yaml", yd), 0, NULL, err, sizeof err);
    char *ye = rc ? NULL : emit(&e);
    ok(rc == 0 && !strcmp(yd, ye), "round trip: the built-in defaults");
    char *ys = ap_config_to_yaml(&a);
    ap_config g;
    int rs = ap_config_load_string(&g, ys, "<checkpoint>", err, sizeof err);
    char *yg = rs ? NULL : ap_config_to_yaml(&g);
    ok(ys && !strcmp(ys, y1) && rs == 0 && !strcmp(yg, y1), "round trip through a string (ap_config_to_yaml, ap_config_load_string)");
    if (!rs) ap_config_free(&g);
    free(ys); free(yg);
    rs = ap_config_load_string(&g, "model:\n  hidden_size: -1\n", "<checkpoint>", err, sizeof err);
    ok(rs == -1 && strstr(err, "<checkpoint>:2:16: model.hidden_size: -1 is out of range"), "string load names its label in errors");
    free(y1); free(y2); free(yd); free(ye);
    ap_config_free(&a); ap_config_free(&b); ap_config_free(&d);
    if (!rc) ap_config_free(&e);
}

static void test_errors(void) {
    char missing[300];
    snprintf(missing, sizeof missing, "%s/nope.yaml", dir);
    ap_config c;
    char err[512] = "";
    int rc = ap_config_load(&c, missing, 0, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "nope.yaml") && strstr(err, "No such file"), "error: missing file names it");
    rc = ap_config_load(&c, dir, 0, NULL, err, sizeof err);
    ok(rc == -1 && strstr(err, "not a regular file"), "error: a directory is not a config file");

    expect_error("syntax error with file:line:column", "model:\n  hidden_size: 64\n  vocab_size: [1, 2\n", 0,
                 NULL, "c.yaml:4:1:", "YAML syntax error");
    expect_error("syntax error: bad indentation", "model:\n  hidden_size: 64\n vocab_size: 3\n", 0, NULL,
                 "c.yaml:3:", "syntax");
    expect_error("unknown section with did-you-mean", "distributd:\n  pp_size: 2\n", 0, NULL,
                 "c.yaml:1:1: unknown section 'distributd'", "did you mean distributed?");
    expect_error("top-level key suggests its section", "pp_size: 2\n", 0, NULL, "unknown section 'pp_size'",
                 "distributed.pp_size");
    expect_error("unknown key with did-you-mean", "model:\n  hiden_size: 64\n", 0, NULL,
                 "c.yaml:2:3: unknown key 'model.hiden_size'", "did you mean model.hidden_size?");
    expect_error("key in the wrong section", "distributed:\n  layers_per_stage: 2\n", 0, NULL,
                 "unknown key 'distributed.layers_per_stage'", "did you mean autopipeline.layers_per_stage?");
    expect_error("_target_ where the section has none", "lr_scheduler:\n  _target_: x.Y\n", 0, NULL,
                 "unknown key 'lr_scheduler._target_' (keys of lr_scheduler: lr_warmup_steps", NULL);
    expect_error("wrong type: int", "distributed:\n  pp_size: two\n", 0, NULL,
                 "c.yaml:2:12: distributed.pp_size: 'two' is not an integer", "expected an integer in [1, 16777216]");
    expect_error("wrong type: float", "optimizer:\n  lr: fast\n", 0, NULL, "optimizer.lr: 'fast' is not a number",
                 "expected a number >= 0");
    expect_error("wrong type: bool", "dataloader:\n  shuffle: maybe\n", 0, NULL,
                 "dataloader.shuffle: 'maybe' is not a boolean", "true or false");
    expect_error("wrong type: enum", "autopipeline:\n  round_virtual_stages_to_pp_multiple: sideways\n", 0, NULL,
                 "'sideways' is not a valid choice", "up, down, null");
    expect_error("wrong type: list expected", "optimizer:\n  betas: 0.9\n", 0, NULL, "optimizer.betas",
                 "expected a list of 2 numbers");
    expect_error("wrong type: list length", "optimizer:\n  betas: [0.9]\n", 0, NULL, "optimizer.betas",
                 "got 1");
    expect_error("wrong type: list of lists", "autopipeline:\n  module_fqns_per_model_part: [a, b]\n", 0, NULL,
                 "module_fqns_per_model_part[0]", "expected a list of strings");
    expect_error("wrong type: mapping for a scalar", "model:\n  hidden_size: {a: 1}\n", 0, NULL,
                 "model.hidden_size: a mapping is not an integer", NULL);
    expect_error("out of range: pp_size 0", "distributed:\n  pp_size: 0\n", 0, NULL,
                 "distributed.pp_size: 0 is out of range", "expected an integer in [1, 16777216]");
    expect_error("out of range: cp_size must be 1", "distributed:\n  cp_size: 2\n", 0, NULL,
                 "distributed.cp_size: 2 is out of range", "equal to 1");
    expect_error("out of range: open bound", "dataset:\n  val_fraction: 1.0\n", 0, NULL,
                 "dataset.val_fraction: 1 is out of range", "[0, 1)");
    expect_error("out of range: list element", "optimizer:\n  betas: [0.9, 1.5]\n", 0, NULL,
                 "c.yaml:2:16: optimizer.betas[1]: 1.5 is out of range", NULL);
    expect_error("out of range: beyond int", "rng:\n  seed: 99999999999\n", 0, NULL,
                 "rng.seed: 99999999999 is out of range", NULL);
    expect_error("null for a non-nullable key", "model:\n  hidden_size: null\n", 0, NULL,
                 "model.hidden_size may not be null", "expected an integer in [1, 1048576]");
    expect_error("duplicate key", "model:\n  hidden_size: 8\n  hidden_size: 16\n", 0, NULL,
                 "c.yaml:3:3: duplicate key 'model.hidden_size'", NULL);
    expect_error("duplicate section", "model:\n  hidden_size: 8\nmodel:\n  vocab_size: 16\n", 0, NULL,
                 "duplicate section 'model'", NULL);
    expect_error("root is not a mapping", "- a\n- b\n", 0, NULL, "c.yaml:1:1: expected a mapping of sections", NULL);
    expect_error("section is not a mapping", "model: 3\n", 0, NULL, "section 'model' must be a mapping", NULL);
    expect_error("two YAML documents", "model:\n  hidden_size: 8\n---\nmodel:\n  hidden_size: 16\n", 0, NULL,
                 "expected one YAML document", NULL);
    expect_error("unknown _target_", "model:\n  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_nothing\n",
                 0, NULL, "model._target_: unknown target 'nemo_automodel.NeMoAutoModelForCausalLM.from_nothing'",
                 "from_pretrained");
    expect_error("sequence_parallel true", "distributed:\n  sequence_parallel: true\n", 0, NULL,
                 "distributed.sequence_parallel: true is not supported", NULL);
    expect_error("norm_type other than 2/inf", "clip_grad_norm:\n  norm_type: 3\n", 0, NULL,
                 "clip_grad_norm.norm_type: 3 is not supported", NULL);
    expect_error("batch not divisible by microbatch", "dataloader:\n  batch_size: 6\nautopipeline:\n  pp_microbatch_size: 4\n",
                 0, NULL, "dataloader.batch_size 6 is not divisible by autopipeline.pp_microbatch_size 4", NULL);
    expect_error("heads not divisible", "model:\n  num_attention_heads: 4\n  num_key_value_heads: 3\n", 0, NULL,
                 "model.num_key_value_heads 3 must divide model.num_attention_heads 4", NULL);
    expect_error("from_pretrained without a path",
                 "model:\n  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained\n", 0, NULL,
                 "pretrained_model_name_or_path is null", NULL);

    {
        static char deep[40100], deepv[4010];
        size_t k = (size_t)snprintf(deep, sizeof deep, "model:\n  hidden_size: ");
        for (int i = 0; i < 20000; i++) deep[k++] = '[';
        for (int i = 0; i < 20000; i++) deep[k++] = ']';
        deep[k] = 0;
        expect_error("deep nesting is refused early (libyaml is quadratic in it)", deep, 0, NULL,
                     "c.yaml:2:", "nest deeper than 32 levels");
        for (int i = 0; i < 4000; i++) deepv[i] = '[';
        char *ovd[] = {"--optimizer.betas", deepv};
        expect_error("deep nesting in an override", NULL, 2, ovd, "--optimizer.betas: value nests", NULL);
    }
    char *ov1[] = {"--model.hiden_size", "3"};
    expect_error("override of a nonexistent key", NULL, 2, ov1, "--model.hiden_size: no such config key",
                 "did you mean model.hidden_size?");
    char *ov2[] = {"--modle.hidden_size=3"};
    expect_error("override of a nonexistent section", NULL, 1, ov2, "unknown section 'modle'", "did you mean model?");
    char *ov3[] = {"--distributed.pp_size"};
    expect_error("override without a value", NULL, 1, ov3, "--distributed.pp_size needs a value", NULL);
    char *ov4[] = {"--distributed.pp_size", "-3"};
    expect_error("override out of range names flag and value", NULL, 2, ov4,
                 "--distributed.pp_size: -3 is out of range", NULL);
    char *ov5[] = {"--optimizer.betas", "[0.9, 0.95"};
    expect_error("override with broken YAML", NULL, 2, ov5, "--optimizer.betas: cannot read value '[0.9, 0.95'", NULL);
    char *ov6[] = {"--distributed.pp_size", "2", "--model.num_hidden_layers", "x"};
    expect_error("overrides are checked even when the file is fine", "model: {}\n", 4, ov6,
                 "model.num_hidden_layers: 'x' is not an integer", NULL);
}

static void test_guide_recipe(void) {
    /* The complete config.yaml from the AutoPipeline guide. */
    const char *guide =
        "distributed:\n"
        "  _target_: nemo_automodel.components.distributed.fsdp2.FSDP2Manager\n"
        "  dp_size: 1\n  tp_size: 1\n  cp_size: 1\n"
        "  pp_size: 2          # 2-way pipeline parallelism\n"
        "  sequence_parallel: false\n\n"
        "autopipeline:\n"
        "  _target_: nemo_automodel.components.distributed.autopipeline.core.AutoPipeline\n"
        "  pp_schedule: 1f1b\n  pp_microbatch_size: 1\n"
        "  # pp_batch_size is automatically inferred from dataloader.batch_size\n"
        "  layers_per_stage: null  # Auto-compute layer distribution\n"
        "  round_virtual_stages_to_pp_multiple: up\n  scale_grads_in_schedule: false\n\n"
        "model:\n  _target_: nemo_automodel.NeMoAutoModelForCausalLM.from_pretrained\n"
        "  pretrained_model_name_or_path: meta-llama/Llama-3.2-1B\n\n"
        "loss_fn:\n  _target_: nemo_automodel.components.loss.masked_ce.MaskedCrossEntropy\n\n"
        "dataset:\n  _target_: nemo_automodel.components.datasets.llm.squad.SQuAD\n"
        "  path_or_dataset: squad\n  split: train\n\n"
        "dataloader:\n  batch_size: 8\n  shuffle: true\n";
    ap_config c;
    char err[512] = "";
    int rc = load(&c, guide, 0, NULL, err, sizeof err);
    ok(rc == 0 && c.distributed.pp_size == 2 &&
           c.autopipeline.round_virtual_stages_to_pp_multiple == AP_ROUND_UP &&
           !strcmp(c.model.pretrained_model_name_or_path, "meta-llama/Llama-3.2-1B"),
       "the guide's complete recipe loads%s%s", rc ? ": " : "", err);
    if (rc) return;
    ap_model_config mc;
    rc = ap_config_model(&c, &mc, err, sizeof err);
    ok(rc == -1 && strstr(err, "meta-llama/Llama-3.2-1B"), "from_pretrained without a reader: clear error");
    ap_config_free(&c);
}

static int fake_reader_calls;
static int fake_reader(const char *d, ap_model_config *mc, char *err, size_t len) {
    fake_reader_calls++;
    mc->num_hidden_layers = (int)strlen(d);
    return 0;
}

static void test_model(void) {
    ap_config c;
    ap_model_config mc;
    char err[256] = "";
    ap_config_defaults(&c);
    ok(ap_config_model(&c, &mc, err, sizeof err) == 0 && mc.head_dim == 16 && mc.num_key_value_heads == 2 &&
           mc.hidden_act == AP_ACT_SILU && !mc.attention_bias && !mc.qk_norm && mc.sliding_window == 0,
       "model: the built-in llama (head_dim = hidden/heads)");
    char *q2[] = {"--model.model_type", "qwen2"};
    ap_config_free(&c);
    ap_config_load(&c, NULL, 2, q2, err, sizeof err);
    ok(ap_config_model(&c, &mc, err, sizeof err) == 0 && mc.attention_bias && !mc.qk_norm, "model: qwen2 has q/k/v biases");
    ap_config_free(&c);
    char *q3[] = {"--model.model_type", "QWEN3", "--model.head_dim", "32"};
    ap_config_load(&c, NULL, 4, q3, err, sizeof err);
    ok(ap_config_model(&c, &mc, err, sizeof err) == 0 && mc.qk_norm && mc.head_dim == 32 &&
           mc.model_type == AP_MODEL_QWEN3,
       "model: qwen3 q/k norms, explicit head_dim, enum case-insensitive");
    ap_config_free(&c);
    char *g[] = {"--model.model_type", "gemma", "--model.tie_word_embeddings", "true"};
    ap_config_load(&c, NULL, 4, g, err, sizeof err);
    ok(ap_config_model(&c, &mc, err, sizeof err) == 0 && mc.norm_plus_one && mc.scale_embeddings &&
           mc.hidden_act == AP_ACT_GELU_TANH && mc.tie_word_embeddings,
       "model: gemma traits and tied embeddings");
    ap_config_free(&c);
    char *p[] = {"--model.pretrained_model_name_or_path", "abc"};
    ap_config_load(&c, NULL, 2, p, err, sizeof err);
    ap_config_set_pretrained_reader(fake_reader);
    ok(ap_config_model(&c, &mc, err, sizeof err) == 0 && fake_reader_calls == 1 && mc.num_hidden_layers == 3,
       "model: the pretrained hook is called with the directory");
    ap_config_set_pretrained_reader(NULL);
    ap_config_free(&c);
}

static void test_from_args(void) {
    const char *path = write_file("a.yaml", "distributed:\n  pp_size: 4\nmodel:\n  num_hidden_layers: 8\n");
    char cfgarg[300];
    snprintf(cfgarg, sizeof cfgarg, "--config=%s", path);
    ap_cli_flag flags[] = {{"max-modules", 1}, {"verbose", 0}, {"help", 0}, {"h", 0}, {NULL, 0}};
    char *argv[] = {"plan", "--distributed.pp_size", "2", "--max-modules", "3", cfgarg, "pos",
                    "--verbose", "--model.hidden_size=32", NULL};
    char *rest[11];
    int nrest = 0;
    ap_config c;
    char err[512] = "";
    int rc = ap_config_from_args(&c, 9, argv, flags, rest, &nrest, err, sizeof err);
    ok(rc == 0 && c.distributed.pp_size == 2 && c.model.num_hidden_layers == 8 && c.model.hidden_size == 32,
       "from_args: --config=FILE with overrides before and after it (overrides win)");
    ok(nrest == 5 && !strcmp(rest[0], "plan") && !strcmp(rest[1], "--max-modules") && !strcmp(rest[2], "3") &&
           !strcmp(rest[3], "pos") && !strcmp(rest[4], "--verbose") && rest[5] == NULL,
       "from_args: declared flags and positionals passed on in order");
    if (!rc) ap_config_free(&c);
    char *bad[] = {"plan", "--max-module", "3", NULL};
    rc = ap_config_from_args(&c, 3, bad, flags, rest, &nrest, err, sizeof err);
    ok(rc == -1 && strstr(err, "unknown option '--max-module' for 'plan'"), "from_args: undeclared flag is an error");
    char *noval[] = {"plan", "--config", NULL};
    rc = ap_config_from_args(&c, 2, noval, flags, rest, &nrest, err, sizeof err);
    ok(rc == -1 && strstr(err, "--config needs a file name"), "from_args: --config without a file");
    char *help[] = {"plan", "--config", "/nonexistent.yaml", "-h", NULL};
    rc = ap_config_from_args(&c, 4, help, flags, rest, &nrest, err, sizeof err);
    ok(rc == 0 && nrest == 2 && !strcmp(rest[1], "-h"), "from_args: -h works even with a bad --config");
    if (!rc) ap_config_free(&c);
    char *miss[] = {"plan", "--config", "/nonexistent.yaml", NULL};
    rc = ap_config_from_args(&c, 3, miss, flags, rest, &nrest, err, sizeof err);
    ok(rc == -1 && strstr(err, "/nonexistent.yaml"), "from_args: missing --config file is an error");
    char *noflags[] = {"config", "--verbose", NULL};
    rc = ap_config_from_args(&c, 2, noflags, NULL, rest, &nrest, err, sizeof err);
    ok(rc == -1 && strstr(err, "'--verbose'"), "from_args: no flags declared");
}

/* Mutated and truncated recipes: every load ends in 0 or -1 with a message, never a crash. */
static void test_fuzz(void) {
    const char *base =
        "distributed: {pp_size: 2, dp_size: 1}\nautopipeline:\n  pp_schedule: zbv\n"
        "  module_fqns_per_model_part: [[model.embed_tokens, model.layers.0], [model.layers.1, lm_head]]\n"
        "optimizer:\n  betas: [0.9, 0.95]\n  lr: 1e-3\ncheckpoint: {checkpoint_dir: 'a b', resume: auto}\n";
    size_t n = strlen(base);
    char buf[512];
    unsigned long long x = 88172645463325252ULL;
    int bad = 0, errors = 0;
    for (int it = 0; it < 400; it++) {
        memcpy(buf, base, n + 1);
        int muts = 1 + it % 4;
        for (int m = 0; m < muts; m++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            static const char alphabet[] = "[]{}:,-'\"#&*!|>%@ \t\n0aZ.\\\x01\xff";
            buf[x % n] = alphabet[(x >> 32) % (sizeof alphabet - 1)];
        }
        if (it % 7 == 0) buf[(x >> 16) % n] = 0; /* truncated */
        ap_config c;
        char err[512] = "";
        int rc = load(&c, buf, 0, NULL, err, sizeof err);
        if (rc == 0) ap_config_free(&c);
        else if (rc != -1 || !err[0]) bad++;
        else errors++;
    }
    ok(bad == 0 && errors > 100, "400 mutated recipes: each loads or fails with a message (%d failed cleanly)", errors);
}

static void test_reference(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ap_config_emit_reference(f);
    fclose(f);
    int all = 1;
    for (int i = 0; i < ap_cfg_nkeys; i++) {
        char row[200];
        snprintf(row, sizeof row, "| `%s.%s` |", ap_cfg_keys[i].section, ap_cfg_keys[i].key);
        if (!strstr(buf, row)) all = 0;
    }
    ok(all && strstr(buf, "| `optimizer.betas` | list of 2 float [0,1) | `[0.9, 0.95]` |"),
       "reference: a row per key with type and default");
    free(buf);
    buf = NULL;
    f = open_memstream(&buf, &len);
    ap_config_emit_help(f);
    fclose(f);
    ok(strstr(buf, "pp_size=1") && strstr(buf, "  optimizer:"), "help lists keys with defaults");
    free(buf);
    ok(ap_cfg_find("optimizer", "lr") && !ap_cfg_find("optimizer", "lr2") &&
           !strcmp(ap_config_enum_name("logging", "progress", AP_PROGRESS_OFF), "off"),
       "schema lookup and enum names");
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/ap-test-config-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    test_defaults();
    test_file_and_overrides();
    test_round_trip();
    test_errors();
    test_guide_recipe();
    test_model();
    test_from_args();
    test_fuzz();
    test_reference();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) diag("could not remove %s", dir);
    return tap_done();
}
