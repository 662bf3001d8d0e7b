/* test-custom-model.c - the guide's CustomModel stage (examples/custom_model.c)
 * on one process: every parameter gradient and the input gradient against
 * central finite differences of the loss, B == I then W bit for bit, a
 * two-stage chain equals the whole model, the PyTorch FQNs and shapes, the
 * parameter count, the registry's lookup by model._target_, and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "examples/custom_model.h"
#include "kernels/kernels.h"
#include "tests/tap.h"
#include "trainer/model_family.h"

enum { B = 2, T = 5, V = 11 };

static ap_model_config model_of(int layers) {
    return (ap_model_config){.vocab_size = V, .hidden_size = 8, .num_hidden_layers = layers,
                             .num_attention_heads = 2, .num_key_value_heads = 2, .head_dim = 4,
                             .rms_norm_eps = 1e-5, .initializer_range = 0.3};
}

static uint64_t rs = 99;
static float frand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static int32_t tok[B * T], lab[B * T], tok2[B * T], lab2[B * T];

/* Non-trivial values everywhere (biases and norms too) so every path counts. */
static void randomize(ap_stage *s) {
    ap_custom_init_params(s, 5);
    for (int r = 0; r < s->n_refs; r++)
        if (s->refs[r].no_decay)
            for (size_t i = 0; i < s->refs[r].numel; i++) s->refs[r].param[i] += 0.2f * frand();
}

/* loss sum of one forward (no-grad slot) */
static double loss_of(ap_stage *s, const float *in) {
    double l = 0;
    long n = 0;
    if (s->ops->forward(s, -1, tok, NULL, in, NULL, lab, &l, &n)) return NAN;
    return l;
}

/* max over sampled elements |fd - an| / max(|an| max over the tensor, 1e-3) */
static double fd_rel(ap_stage *s, float *x, const float *an, size_t n, const float *in) {
    size_t step = n > 40 ? n / 20 : 1;
    double num = 0, den = 1e-3;
    for (size_t i = 0; i < n; i++) den = fmax(den, fabs(an[i]));
    for (size_t i = 0; i < n; i += step) {
        float old = x[i];
        float h = 1e-2f;
        x[i] = old + h;
        double lp = loss_of(s, in);
        x[i] = old - h;
        double lm = loss_of(s, in);
        x[i] = old;
        double e = fabs((lp - lm) / (2.0 * h) - an[i]);
        if (e > num || e != e) num = e != e ? INFINITY : e;
    }
    return num / den;
}

static void test_fd(void) {
    char err[512];
    ap_model_config mc = model_of(2);
    ap_stage *s;
    /* the whole model: embedding, 2 layers, head */
    if (ap_custom_stage_create(&s, &mc, 0, 2, 1, 1, B, T, 2, err, sizeof err)) {
        ok(0, "create: %s", err);
        return;
    }
    randomize(s);
    double l = 0;
    long n = 0;
    int rc = s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &n) || s->ops->backward(s, 0, NULL, 1.0f, NULL);
    ok(!rc && n == B * T - 2 && isfinite(l), "whole model: forward and backward (%ld label tokens, loss %.4f)", n, l);
    double worst = 0;
    const char *wname = "";
    for (int r = 0; r < s->n_refs; r++) {
        double e = fd_rel(s, s->refs[r].param, s->refs[r].grad, s->refs[r].numel, NULL);
        if (!(e <= worst)) worst = e, wname = s->refs[r].name;
    }
    ok(worst < 2e-2, "every parameter gradient (%d tensors) vs finite differences: worst rel %.2g (%s)", s->n_refs,
       worst, wname);
    ap_stage_destroy(s);

    /* a middle-to-last stage: the input gradient */
    ap_model_config mc3 = model_of(3);
    if (ap_custom_stage_create(&s, &mc3, 1, 3, 0, 1, B, T, 1, err, sizeof err)) {
        ok(0, "create: %s", err);
        return;
    }
    randomize(s);
    size_t NC = (size_t)B * T * 8;
    float *in = malloc(NC * sizeof *in), *din = malloc(NC * sizeof *din);
    for (size_t i = 0; i < NC; i++) in[i] = frand();
    rc = s->ops->forward(s, 0, NULL, NULL, in, NULL, lab, &l, &n) || s->ops->backward(s, 0, NULL, 1.0f, din);
    double e = rc ? INFINITY : fd_rel(s, in, din, NC, in);
    ok(e < 2e-2, "stage layers 1-2 + head: input gradient vs finite differences: rel %.2g", e);
    ap_stage_destroy(s);
    free(in);
    free(din);
}

/* B equals I then W bit for bit; a 2-stage chain equals the whole model. */
static void test_split(void) {
    char err[512];
    ap_model_config mc = model_of(3);
    ap_stage *w = NULL, *w2 = NULL, *a = NULL, *b = NULL;
    int rc = ap_custom_stage_create(&w, &mc, 0, 3, 1, 1, B, T, 2, err, sizeof err) ||
             ap_custom_stage_create(&w2, &mc, 0, 3, 1, 1, B, T, 2, err, sizeof err) ||
             ap_custom_stage_create(&a, &mc, 0, 1, 1, 0, B, T, 2, err, sizeof err) ||
             ap_custom_stage_create(&b, &mc, 1, 3, 0, 1, B, T, 2, err, sizeof err);
    if (rc) {
        ok(0, "create: %s", err);
        goto out;
    }
    ap_custom_init_params(w, 7), ap_custom_init_params(w2, 7), ap_custom_init_params(a, 7), ap_custom_init_params(b, 7);
    double l1 = 0, l2 = 0, l3 = 0;
    long n = 0;
    /* two microbatches in flight, backwards in reverse order */
    rc |= w->ops->forward(w, 0, tok, NULL, NULL, NULL, lab, &l1, &n) | w->ops->forward(w, 1, tok2, NULL, NULL, NULL, lab2, &l1, &n);
    rc |= w->ops->backward(w, 1, NULL, 0.1f, NULL) | w->ops->backward(w, 0, NULL, 0.1f, NULL);
    rc |= w2->ops->forward(w2, 0, tok, NULL, NULL, NULL, lab, &l2, &n) | w2->ops->forward(w2, 1, tok2, NULL, NULL, NULL, lab2, &l2, &n);
    rc |= w2->ops->backward_input(w2, 1, NULL, 0.1f, NULL) | w2->ops->backward_input(w2, 0, NULL, 0.1f, NULL);
    rc |= w2->ops->backward_weight(w2, 1) | w2->ops->backward_weight(w2, 0);
    ok(!rc && l1 == l2 && !memcmp(w->grads, w2->grads, w->n_params * sizeof(float)),
       "backward == backward_input then backward_weight, bit for bit (2 slots in flight)");
    size_t NC = (size_t)B * T * 8;
    float *x = malloc(NC * sizeof *x), *dx = malloc(NC * sizeof *dx);
    rc |= a->ops->forward(a, 0, tok, NULL, NULL, x, NULL, NULL, NULL) | b->ops->forward(b, 0, NULL, NULL, x, NULL, lab, &l3, &n);
    rc |= b->ops->backward(b, 0, NULL, 0.1f, dx) | a->ops->backward(a, 0, dx, 0.f, NULL);
    l1 = 0;
    memset(w->grads, 0, w->n_params * sizeof(float));
    rc |= w->ops->forward(w, 0, tok, NULL, NULL, NULL, lab, &l1, &n) | w->ops->backward(w, 0, NULL, 0.1f, NULL);
    double worst = 0;
    for (int k = 0; k < 2; k++) {
        ap_stage *p = k ? b : a;
        for (int r = 0; r < p->n_refs; r++) {
            const ap_param_ref *q = NULL;
            for (int j = 0; j < w->n_refs; j++)
                if (!strcmp(w->refs[j].name, p->refs[r].name)) q = &w->refs[j];
            if (!q || q->numel != p->refs[r].numel) {
                worst = INFINITY;
                continue;
            }
            worst = fmax(worst, tap_max_rel_err(p->refs[r].param, q->param, q->numel, 1e-30));
            worst = fmax(worst, tap_max_rel_err(p->refs[r].grad, q->grad, q->numel, 1e-6));
        }
    }
    ok(!rc && fabs(l3 - l1) <= 1e-6 * fabs(l1) && worst <= 1e-5 && a->n_refs + b->n_refs == w->n_refs,
       "stages [embedding, layer 0] + [layers 1-2, head] equal the whole model: same init, loss, grads (rel %.2g)",
       worst);
    free(x);
    free(dx);
out:
    ap_stage_destroy(w), ap_stage_destroy(w2), ap_stage_destroy(a), ap_stage_destroy(b);
}

static void test_names(void) {
    char err[512];
    ap_model_config mc = model_of(2);
    ap_stage *s;
    if (ap_custom_stage_create(&s, &mc, 0, 2, 1, 1, B, T, 1, err, sizeof err)) {
        ok(0, "create: %s", err);
        return;
    }
    static const char *want[] = {"embedding.weight", "layers.0.attention.in_proj_weight",
                                 "layers.0.attention.in_proj_bias", "layers.0.attention.out_proj.weight",
                                 "layers.0.attention.out_proj.bias", "layers.0.mlp.0.weight", "layers.0.mlp.0.bias",
                                 "layers.0.mlp.2.weight", "layers.0.mlp.2.bias", "layers.0.norm1.weight",
                                 "layers.0.norm1.bias", "layers.0.norm2.weight", "layers.0.norm2.bias"};
    int good = s->n_refs == 1 + 2 * 12 + 2;
    for (size_t i = 0; good && i < sizeof want / sizeof *want; i++) good = !strcmp(s->refs[i].name, want[i]);
    ok(good && !strcmp(s->refs[s->n_refs - 2].name, "output_proj.weight") &&
           !strcmp(s->refs[s->n_refs - 1].name, "output_proj.bias") &&
           !strcmp(s->refs[13].name, "layers.1.attention.in_proj_weight"),
       "FQNs are the PyTorch module names (embedding, layers.N.attention.in_proj_weight, mlp.0/2, norm1/2, output_proj)");
    ok(s->refs[1].shape[0] == 24 && s->refs[1].shape[1] == 8 && s->refs[5].shape[0] == 32 &&
           s->refs[7].shape[1] == 32 && s->refs[s->n_refs - 1].shape[0] == V,
       "shapes: in_proj_weight (3C, C), mlp.0.weight (4C, C), mlp.2.weight (C, 4C), output_proj.bias (V)");
    ok(!s->refs[0].no_decay && s->refs[2].no_decay && s->refs[9].no_decay && !s->refs[1].no_decay,
       "weight decay: matrices and embedding yes; biases and LayerNorms no");
    long long pc = ap_custom_param_count(&mc, 0, 2, 1, 1);
    ok(pc == (long long)s->n_params && pc == 2 * 11 * 8 + 11 + 2 * (4 * 8 * 8 + 4 * 8 + 2 * 4 * 8 * 8 + 5 * 8 + 4 * 8),
       "parameter count %lld = stage's %zu = 2VC + V + L (12C^2 + 13C)", pc, s->n_params);
    ap_stage_destroy(s);
    const ap_model_family *f = ap_model_family_for_target("examples.custom_model.CustomModel", err, sizeof err);
    const ap_model_family *l = ap_model_family_for_target(NULL, err, sizeof err);
    ok(f && !strcmp(f->name, "custom") && f == ap_model_family_find("custom") && l && !strcmp(l->name, "llama"),
       "registry: model._target_ examples.custom_model.CustomModel -> custom, default -> llama");
    ok(!ap_model_family_for_target("my.Model", err, sizeof err) && strstr(err, "my.Model") &&
           strstr(err, "examples.custom_model.CustomModel"),
       "registry: an unknown target names itself and the known ones: %s", err);
}

static void test_errors(void) {
    char err[512];
    ap_model_config mc = model_of(2);
    ap_stage *s;
    mc.num_attention_heads = 3;
    ok(ap_custom_stage_create(&s, &mc, 0, 2, 1, 1, B, T, 1, err, sizeof err) && strstr(err, "num_attention_heads"),
       "heads not dividing hidden_size: %s", err);
    mc = model_of(2);
    ok(ap_custom_stage_create(&s, &mc, 1, 3, 0, 1, B, T, 1, err, sizeof err) && strstr(err, "layers [1, 3)"),
       "layers past the model: %s", err);
    if (ap_custom_stage_create(&s, &mc, 0, 2, 1, 1, B, T, 1, err, sizeof err)) return;
    int32_t bad[B * T];
    memcpy(bad, tok, sizeof bad);
    bad[3] = V;
    double l = 0;
    long n = 0;
    ok(s->ops->forward(s, 0, bad, NULL, NULL, NULL, lab, &l, &n) && strstr(ap_custom_stage_error(s), "token id 11"),
       "token outside the vocabulary: %s", ap_custom_stage_error(s));
    ok(s->ops->backward(s, 0, NULL, 1.0f, NULL) && strstr(ap_custom_stage_error(s), "without its forward"),
       "backward without forward: %s", ap_custom_stage_error(s));
    ok(s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &n) == 0 && s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &n) &&
           strstr(ap_custom_stage_error(s), "in use"),
       "forward into a busy slot: %s", ap_custom_stage_error(s));
    ap_stage_destroy(s);
}

/* Packed rows: the custom model has no positional encoding, so position ids
 * only keep attention within each example: the second example of a packed
 * row scores as if it stood alone at the row's start. Ids past the token's
 * own index are refused. */
static void test_positions(void) {
    char err[512];
    ap_model_config mc = model_of(2);
    ap_stage *s;
    if (ap_custom_stage_create(&s, &mc, 0, 2, 1, 1, B, T, 1, err, sizeof err)) {
        ok(0, "create: %s", err);
        return;
    }
    randomize(s);
    /* each row: an example of 2 tokens, then one of 3; alone: the 3 at the row start, labels only there */
    int32_t ptok[B * T], plab[B * T], pos[B * T], atok[B * T], alab[B * T];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            ptok[i] = tok[i], pos[i] = t < 2 ? t : t - 2, plab[i] = t < 2 ? -100 : lab[i];
            atok[i] = t < 3 ? tok[b * T + t + 2] : 0, alab[i] = t < 3 ? lab[b * T + t + 2] : -100;
        }
    double lp = 0, la = 0, ln = 0;
    long np = 0, na = 0, nn = 0;
    int rc = s->ops->forward(s, -1, ptok, pos, NULL, NULL, plab, &lp, &np) ||
             s->ops->forward(s, -1, atok, NULL, NULL, NULL, alab, &la, &na) ||
             s->ops->forward(s, -1, ptok, NULL, NULL, NULL, plab, &ln, &nn);
    ok(!rc && np == na && fabs(lp - la) <= 1e-5 * fabs(la) && fabs(ln - la) > 1e-4 * fabs(la),
       "packed rows: with position ids the second example scores as alone (%.6f vs %.6f; without: %.6f)", lp, la,
       ln);
    pos[1] = 2; /* token 1 cannot start 2 positions back */
    ok(s->ops->forward(s, -1, ptok, pos, NULL, NULL, plab, &lp, &np) < 0 &&
           strstr(ap_custom_stage_error(s), "position id 2 at 1 outside [0, 1]"),
       "a position id past the token's own index is refused: %s", ap_custom_stage_error(s));
    ap_stage_destroy(s);
}

int main(void) {
    ap_kernels_set_threads(1);
    for (int i = 0; i < B * T; i++) {
        tok[i] = (int32_t)((i * 7 + 3) % V);
        lab[i] = (int32_t)((i * 5 + 1) % V);
        tok2[i] = (int32_t)((i * 3 + 2) % V);
        lab2[i] = (int32_t)((i * 2 + 5) % V);
    }
    lab[2] = lab[7] = -100;
    test_fd();
    test_split();
    test_names();
    test_positions();
    test_errors();
    return tap_done();
}
