/* test-llama.c - the Llama-family stage: gradients against finite
 * differences for every family flag, and the pipeline contracts, exactly:
 * a 2-stage split equals the 1-stage model, several slots in flight,
 * backward == backward_input + backward_weight, checkpointing changes
 * nothing, split-independent seeded init, errors instead of crashes. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/tap.h"
#include "trainer/llama.h"

enum { B = 2, T = 6, N = B * T };

static ap_model_config base_config(void) {
    ap_model_config mc;
    memset(&mc, 0, sizeof mc);
    mc.model_type = AP_MODEL_LLAMA;
    mc.vocab_size = 13;
    mc.hidden_size = 16;
    mc.intermediate_size = 24;
    mc.num_hidden_layers = 3;
    mc.num_attention_heads = 4;
    mc.num_key_value_heads = 2;
    mc.head_dim = 4;
    mc.max_position_embeddings = 64;
    mc.rms_norm_eps = 1e-6;
    mc.rope_theta = 10000;
    mc.rope_scaling = AP_ROPE_DEFAULT;
    mc.hidden_act = AP_ACT_SILU;
    mc.initializer_range = 0.3;
    mc.bos_token_id = mc.eos_token_id = mc.pad_token_id = -1;
    return mc;
}

typedef struct {
    const char *name;
    ap_model_config mc;
} family;

static int make_families(family *f) {
    int n = 0;
    ap_model_config mc = base_config();
    f[n++] = (family){"llama (GQA, untied)", mc};
    mc.tie_word_embeddings = 1;
    f[n++] = (family){"llama (tied)", mc};
    mc = base_config();
    mc.rope_scaling = AP_ROPE_LLAMA3;
    mc.rope_factor = 8;
    mc.rope_low_freq_factor = 1;
    mc.rope_high_freq_factor = 4;
    mc.rope_original_max_position_embeddings = 16;
    mc.rope_theta = 500000;
    f[n++] = (family){"llama3 rope_scaling", mc};
    mc = base_config();
    mc.model_type = AP_MODEL_MISTRAL;
    mc.sliding_window = 3;
    f[n++] = (family){"mistral (sliding window 3)", mc};
    mc = base_config();
    mc.model_type = AP_MODEL_QWEN2;
    mc.attention_bias = 1;
    mc.tie_word_embeddings = 1;
    mc.rope_scaling = AP_ROPE_LINEAR;
    mc.rope_factor = 2;
    f[n++] = (family){"qwen2 (q/k/v bias, tied, linear rope)", mc};
    mc = base_config();
    mc.model_type = AP_MODEL_QWEN3;
    mc.qk_norm = 1;
    mc.head_dim = 8; /* heads * head_dim != hidden */
    f[n++] = (family){"qwen3 (q_norm/k_norm, head_dim 8)", mc};
    mc = base_config();
    mc.model_type = AP_MODEL_GEMMA;
    mc.norm_plus_one = 1;
    mc.scale_embeddings = 1;
    mc.hidden_act = AP_ACT_GELU_TANH;
    mc.tie_word_embeddings = 1;
    mc.num_key_value_heads = 1;
    mc.head_dim = 8;
    f[n++] = (family){"gemma (1+w norms, sqrt(C) embeddings, GeGLU, MQA, tied)", mc};
    return n;
}

static uint64_t rs = 99;
static float frand(void) {
    rs = rs * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rs >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

static void make_batch(int32_t *tok, int32_t *lab, int V, int variant) {
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)((i * 5 + 3 + variant * 7) % V);
        lab[i] = (i + variant) % 4 == 3 ? -100 : (int32_t)((i * 3 + 1 + variant) % V);
    }
}

static ap_stage *create(const ap_model_config *mc, int first, int last, int emb, int head, int slots,
                        int ckpt) {
    char err[256];
    ap_stage *s = NULL;
    if (ap_llama_stage_create(&s, mc, first, last, emb, head, B, T, slots, ckpt, err, sizeof err)) {
        diag("create failed: %s", err);
        return NULL;
    }
    ap_llama_init_params(s, 42);
    return s;
}

/* Non-trivial norms and biases: HF's init (1, 0) hides mistakes. */
static void perturb(ap_stage *s) {
    for (int i = 0; i < s->n_refs; i++)
        if (s->refs[i].no_decay)
            for (size_t j = 0; j < s->refs[i].numel; j++) s->refs[i].param[j] += 0.2f * frand();
}

static double loss_nograd(ap_stage *s, const int32_t *tok, const int32_t *lab) {
    double l = 0;
    long n = 0;
    s->ops->forward(s, -1, tok, NULL, NULL, NULL, lab, &l, &n);
    return l;
}

/* Gradient of the summed loss w.r.t. sampled elements of every parameter. */
static void test_fd(const family *f) {
    ap_stage *s = create(&f->mc, 0, f->mc.num_hidden_layers, 1, 1, 1, 0);
    if (!s) return ok(0, "%s: create", f->name), (void)0;
    perturb(s);
    int32_t tok[N], lab[N];
    make_batch(tok, lab, f->mc.vocab_size, 0);
    double loss = 0;
    long cnt = 0;
    int rc = s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &loss, &cnt);
    rc |= s->ops->backward(s, 0, NULL, 1.0f, NULL);
    ok(rc == 0 && cnt == 9 && loss > 0 && isfinite(loss), "%s: forward/backward (loss %.4f over %ld labels)",
       f->name, loss, cnt);
    ok(loss_nograd(s, tok, lab) == loss, "%s: no-grad forward (slot -1) gives the same loss", f->name);
    {
        size_t V = (size_t)f->mc.vocab_size;
        float *lg = malloc(N * V * sizeof(float));
        double ref = 0;
        int lrc = ap_llama_forward_logits(s, tok, NULL, lg);
        for (int n = 0; n < N; n++) {
            if (lab[n] < 0) continue;
            double mx = -INFINITY, z = 0;
            for (size_t v = 0; v < V; v++) mx = fmax(mx, lg[n * V + v]);
            for (size_t v = 0; v < V; v++) z += exp(lg[n * V + v] - mx);
            ref += log(z) + mx - lg[n * V + lab[n]];
        }
        ok(lrc == 0 && fabs(ref - loss) < 1e-5 * loss, "%s: forward_logits agrees with the loss (%.6f vs %.6f)",
           f->name, ref, loss);
        free(lg);
    }
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < s->n_refs; i++) {
        ap_param_ref *r = &s->refs[i];
        double gmax = 1e-3, num = 0;
        for (size_t j = 0; j < r->numel; j++) gmax = fmax(gmax, fabs(r->grad[j]));
        size_t step = r->numel > 8 ? r->numel / 8 : 1;
        for (size_t j = (size_t)i % step; j < r->numel; j += step) {
            float old = r->param[j], h = 1e-2f;
            r->param[j] = old + h;
            double lp = loss_nograd(s, tok, lab);
            r->param[j] = old - h;
            double lm = loss_nograd(s, tok, lab);
            r->param[j] = old;
            double fd = (lp - lm) / (2.0 * h);
            num = fmax(num, fabs(fd - r->grad[j]));
        }
        if (num / gmax > worst) worst = num / gmax, worst_name = r->name;
    }
    ok(worst < 2e-2, "%s: every parameter's gradient vs finite differences (worst %.2e in %s)", f->name, worst,
       worst_name);
    ap_stage_destroy(s);
}

static int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* Stage split [0,1) + [1,L) against the whole model; also checks that the
 * seeded init does not depend on the split. */
static void test_split(const family *f) {
    const ap_model_config *mc = &f->mc;
    int L = mc->num_hidden_layers;
    ap_stage *whole = create(mc, 0, L, 1, 1, 1, 0);
    ap_stage *s0 = create(mc, 0, 1, 1, 0, 1, 0), *s1 = create(mc, 1, L, 0, 1, 1, 0);
    if (!whole || !s0 || !s1) return ok(0, "%s: create split", f->name), (void)0;
    int init_same = 1, found = 1;
    ap_stage *parts[2] = {s0, s1};
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < parts[p]->n_refs; i++) {
            ap_param_ref *r = &parts[p]->refs[i], *w = ap_llama_find_param(whole, r->name);
            if (!w) {
                found = 0;
                diag("%s not in the whole model", r->name);
                continue;
            }
            init_same &= w->numel == r->numel && same(w->param, r->param, r->numel);
        }
    ok(found && init_same, "%s: seeded init of each stage equals the whole model's tensors", f->name);
    size_t total = s0->n_params + s1->n_params;
    int tied = mc->tie_word_embeddings || mc->model_type == AP_MODEL_GEMMA;
    size_t emb = (size_t)mc->vocab_size * mc->hidden_size;
    ok(total == whole->n_params + (tied ? emb : 0) &&
           whole->n_params == ap_llama_param_count(mc, 0, L, 1, 1) &&
           s1->n_params == ap_llama_param_count(mc, 1, L, 0, 1),
       "%s: parameter counts add up (tied head-only stage holds a copy)", f->name);

    int32_t tok[N], lab[N];
    make_batch(tok, lab, mc->vocab_size, 1);
    float *h = malloc(N * (size_t)mc->hidden_size * sizeof(float)), *dh = malloc(N * (size_t)mc->hidden_size * sizeof(float));
    double lw = 0, ls = 0;
    long nw = 0, ns = 0;
    int rc = whole->ops->forward(whole, 0, tok, NULL, NULL, NULL, lab, &lw, &nw);
    rc |= whole->ops->backward(whole, 0, NULL, 0.25f, NULL);
    rc |= s0->ops->forward(s0, 0, tok, NULL, NULL, h, NULL, NULL, NULL);
    rc |= s1->ops->forward(s1, 0, NULL, NULL, h, NULL, lab, &ls, &ns);
    rc |= s1->ops->backward(s1, 0, NULL, 0.25f, dh);
    rc |= s0->ops->backward(s0, 0, dh, 0, NULL);
    ok(rc == 0 && lw == ls && nw == ns, "%s: 2-stage loss equals the 1-stage loss exactly (%.6f)", f->name, ls);
    int grads_same = 1;
    double tied_err = 0;
    ap_param_ref *e0 = ap_llama_find_param(s0, "model.embed_tokens.weight");
    ap_param_ref *e1 = ap_llama_find_param(s1, "model.embed_tokens.weight");
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < parts[p]->n_refs; i++) {
            ap_param_ref *r = &parts[p]->refs[i], *w = ap_llama_find_param(whole, r->name);
            if (tied && (r == e0 || r == e1)) continue;
            if (!same(w->grad, r->grad, r->numel)) {
                grads_same = 0;
                diag("grad of %s differs", r->name);
            }
        }
    if (tied) {
        /* the pipeline sums the two copies' grads; float sums differ in order only */
        ap_param_ref *w = ap_llama_find_param(whole, "model.embed_tokens.weight");
        float *sum = malloc(emb * sizeof(float));
        for (size_t j = 0; j < emb; j++) sum[j] = e0->grad[j] + e1->grad[j];
        tied_err = tap_max_rel_err(sum, w->grad, emb, 1e-6);
        free(sum);
    }
    ok(grads_same && tied_err < 1e-6, "%s: 2-stage grads equal the 1-stage grads exactly%s", f->name,
       tied ? " (tied embedding: sum of both copies within 1e-6)" : "");
    free(h), free(dh);
    ap_stage_destroy(whole), ap_stage_destroy(s0), ap_stage_destroy(s1);
}

static int grads_equal(ap_stage *a, ap_stage *b) {
    return a->n_params == b->n_params && same(a->grads, b->grads, a->n_params);
}

/* Middle stage (no embedding, no head) and end stages: B vs I+W, several
 * slots in flight, checkpointing on/off; all bit for bit. */
static void test_pipeline_contracts(const family *f) {
    const ap_model_config *mc = &f->mc;
    int L = mc->num_hidden_layers;
    size_t C = (size_t)mc->hidden_size;
    struct { int first, last, emb, head; const char *what; } kinds[3] = {
        {0, 1, 1, 0, "first"}, {1, 2, 0, 0, "middle"}, {2, L, 0, 1, "last"}};
    for (int k = 0; k < 3; k++) {
        /* a: B, one slot at a time, order 1,0,2; b: 3 slots in flight, I+W;
         * c: 3 slots, checkpointing, B; d: checkpointing, I+W */
        ap_stage *st[4];
        for (int i = 0; i < 4; i++)
            st[i] = create(mc, kinds[k].first, kinds[k].last, kinds[k].emb, kinds[k].head, i ? 3 : 1, i >= 2);
        if (!st[0] || !st[1] || !st[2] || !st[3]) return ok(0, "create"), (void)0;
        for (int i = 0; i < 4; i++) rs = 99, perturb(st[i]);
        int32_t tok[3][N], lab[3][N];
        float *in[3], *dout[3], *outs[4][3], *dins[4][3];
        for (int m = 0; m < 3; m++) {
            make_batch(tok[m], lab[m], mc->vocab_size, m + 2);
            in[m] = malloc(N * C * sizeof(float));
            dout[m] = malloc(N * C * sizeof(float));
            for (size_t j = 0; j < N * C; j++) in[m][j] = frand(), dout[m][j] = 0.1f * frand();
            for (int i = 0; i < 4; i++) {
                outs[i][m] = calloc(N * C, sizeof(float));
                dins[i][m] = calloc(N * C, sizeof(float));
            }
        }
        double loss[4] = {0};
        long cnt[4] = {0};
        int rc = 0;
        const int order[3] = {1, 0, 2};
#define FWD(i, slot, m) \
    rc |= st[i]->ops->forward(st[i], slot, tok[m], NULL, in[m], outs[i][m], lab[m], &loss[i], &cnt[i])
        /* reference: one slot, backward order 1, 0, 2 */
        for (int o = 0; o < 3; o++) {
            int m = order[o];
            FWD(0, 0, m);
            rc |= st[0]->ops->backward(st[0], 0, dout[m], 0.5f, dins[0][m]);
        }
        for (int i = 1; i < 4; i++)
            for (int m = 0; m < 3; m++) FWD(i, m, m);
        for (int o = 0; o < 3; o++) {
            int m = order[o];
            rc |= st[2]->ops->backward(st[2], m, dout[m], 0.5f, dins[2][m]);
        }
        /* I+W interleaved as a zero-bubble schedule would: I1 I0 W1 I2 W0 W2 */
        for (int i = 1; i < 4; i += 2) {
            rc |= st[i]->ops->backward_input(st[i], 1, dout[1], 0.5f, dins[i][1]);
            rc |= st[i]->ops->backward_input(st[i], 0, dout[0], 0.5f, dins[i][0]);
            rc |= st[i]->ops->backward_weight(st[i], 1);
            rc |= st[i]->ops->backward_input(st[i], 2, dout[2], 0.5f, dins[i][2]);
            rc |= st[i]->ops->backward_weight(st[i], 0);
            rc |= st[i]->ops->backward_weight(st[i], 2);
        }
        int outs_same = 1, dins_same = 1;
        for (int i = 1; i < 4; i++)
            for (int m = 0; m < 3; m++) {
                outs_same &= same(outs[0][m], outs[i][m], N * C);
                dins_same &= same(dins[0][m], dins[i][m], N * C);
            }
        ok(rc == 0, "%s, %s stage: 3 slots in flight, I/W interleaved, checkpointing: all calls succeed", f->name,
           kinds[k].what);
        ok(outs_same && loss[0] == loss[1] && loss[0] == loss[2] && loss[0] == loss[3],
           "%s, %s stage: outputs/loss identical across slots and checkpointing", f->name, kinds[k].what);
        ok(dins_same, "%s, %s stage: input grads identical (B, I+W, checkpointing)", f->name, kinds[k].what);
        ok(grads_equal(st[0], st[1]), "%s, %s stage: I then W equals B bit for bit (3 slots in flight)", f->name,
           kinds[k].what);
        ok(grads_equal(st[0], st[2]) && grads_equal(st[0], st[3]),
           "%s, %s stage: checkpointing gives the same grads bit for bit (B and I+W)", f->name, kinds[k].what);
        for (int m = 0; m < 3; m++) {
            free(in[m]), free(dout[m]);
            for (int i = 0; i < 4; i++) free(outs[i][m]), free(dins[i][m]);
        }
        for (int i = 0; i < 4; i++) ap_stage_destroy(st[i]);
    }
}

static void test_names_and_init(void) {
    ap_model_config mc = base_config();
    mc.model_type = AP_MODEL_QWEN3;
    mc.qk_norm = 1;
    mc.attention_bias = 1;
    ap_stage *s = create(&mc, 1, 3, 0, 1, 1, 0);
    const char *want[] = {"model.layers.1.input_layernorm.weight", "model.layers.2.self_attn.q_proj.weight",
                          "model.layers.2.self_attn.k_proj.bias", "model.layers.1.self_attn.q_norm.weight",
                          "model.layers.1.self_attn.k_norm.weight", "model.layers.2.self_attn.o_proj.weight",
                          "model.layers.2.post_attention_layernorm.weight", "model.layers.1.mlp.gate_proj.weight",
                          "model.layers.1.mlp.up_proj.weight", "model.layers.2.mlp.down_proj.weight",
                          "model.norm.weight", "lm_head.weight"};
    int all = 1;
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!ap_llama_find_param(s, want[i])) all = 0, diag("missing %s", want[i]);
    ok(all && !ap_llama_find_param(s, "model.layers.0.input_layernorm.weight") &&
           !ap_llama_find_param(s, "model.embed_tokens.weight"),
       "HF FQNs with global layer indices; only this stage's layers");
    ap_param_ref *q = ap_llama_find_param(s, "model.layers.2.self_attn.q_proj.weight");
    ok(q->ndim == 2 && q->shape[0] == 16 && q->shape[1] == 16 && !q->no_decay, "q_proj shape (out, in), decayed");
    ap_param_ref *n = ap_llama_find_param(s, "model.layers.1.self_attn.q_norm.weight");
    ap_param_ref *b = ap_llama_find_param(s, "model.layers.2.self_attn.v_proj.bias");
    int ones = 1, zero = 1;
    for (size_t i = 0; i < n->numel; i++) ones &= n->param[i] == 1.0f;
    for (size_t i = 0; i < b->numel; i++) zero &= b->param[i] == 0.0f;
    ok(ones && zero && n->no_decay && b->no_decay, "init: norm weights 1, biases 0, both excluded from decay");
    ap_stage_destroy(s);

    mc = base_config();
    mc.vocab_size = 4000;
    mc.hidden_size = 64;
    mc.initializer_range = 0.02;
    s = create(&mc, 0, 0, 1, 0, 1, 0);
    ap_param_ref *e = ap_llama_find_param(s, "model.embed_tokens.weight");
    double sum = 0, sq = 0;
    for (size_t i = 0; i < e->numel; i++) sum += e->param[i], sq += (double)e->param[i] * e->param[i];
    double mean = sum / e->numel, sd = sqrt(sq / e->numel - mean * mean);
    ok(fabs(mean) < 2e-4 && fabs(sd - 0.02) < 4e-4, "init: embedding ~ normal(0, 0.02) (mean %.2e, std %.5f)", mean, sd);
    ap_stage_destroy(s);
    mc.pad_token_id = 7;
    mc.tie_word_embeddings = 1;
    ap_stage *head = create(&mc, 0, 0, 0, 1, 1, 0);
    s = create(&mc, 0, 0, 1, 0, 1, 0);
    e = ap_llama_find_param(s, "model.embed_tokens.weight");
    ap_param_ref *e2 = ap_llama_find_param(head, "model.embed_tokens.weight");
    int padzero = 1;
    for (size_t i = 0; i < 64; i++) padzero &= e->param[7 * 64 + i] == 0.0f && e2->param[7 * 64 + i] == 0.0f;
    ok(padzero && e->param[6 * 64] != 0.0f && same(e->param, e2->param, e->numel),
       "init: pad_token_id row of embed_tokens is 0, in the tied head-only copy too");
    ap_stage_destroy(head);
    float first42[4];
    memcpy(first42, e->param, sizeof first42);
    ap_llama_init_params(s, 43);
    ok(memcmp(first42, e->param, sizeof first42) != 0, "init: another seed, other values");
    ap_llama_init_params(s, 42);
    ok(memcmp(first42, e->param, sizeof first42) == 0, "init: the same seed, the same values");
    ap_stage_destroy(s);

    /* pad_token_id lookups add no gradient to that row (nn.Embedding padding_idx) */
    mc = base_config();
    mc.pad_token_id = 3;
    s = create(&mc, 0, 1, 1, 1, 1, 0);
    int32_t tok[N], lab[N];
    make_batch(tok, lab, mc.vocab_size, 0);
    int has_pad = 0;
    for (int i = 0; i < N; i++) has_pad |= tok[i] == 3;
    double l = 0;
    long c = 0;
    s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &c);
    s->ops->backward(s, 0, NULL, 1.0f, NULL);
    e = ap_llama_find_param(s, "model.embed_tokens.weight");
    int zero_row = 1, other = 0;
    for (int i = 0; i < 16; i++) zero_row &= e->grad[3 * 16 + i] == 0.0f, other |= e->grad[tok[1] * 16 + i] != 0.0f;
    ok(has_pad && zero_row && other, "embedding: no gradient into the pad_token_id row");
    ap_stage_destroy(s);

    mc = base_config();
    mc.model_type = AP_MODEL_GEMMA;
    mc.norm_plus_one = 1;
    s = create(&mc, 0, 1, 1, 1, 1, 0);
    ap_param_ref *g = ap_llama_find_param(s, "model.norm.weight");
    ok(g->param[0] == 0.0f && !ap_llama_find_param(s, "lm_head.weight"),
       "gemma: (1+w) norm weights start at 0; no lm_head (tied)");
    ap_stage_destroy(s);

    /* flops: 6 N + 12 L H D T */
    mc = base_config();
    double nm = 3.0 * (16 * (16 + 2 * 8) + 16 * 16 + 3 * 16 * 24) + 13 * 16;
    ok(ap_model_flops_per_token(&mc, 6) == 6 * nm + 12.0 * 3 * 4 * 4 * 6, "flops per token = 6N + 12 L H D T");
}

static void test_errors(void) {
    ap_model_config mc = base_config();
    char err[256] = "";
    ap_stage *s = NULL;
    mc.num_key_value_heads = 3;
    ok(ap_llama_stage_create(&s, &mc, 0, 1, 1, 1, B, T, 1, 0, err, sizeof err) < 0 && !s &&
           strstr(err, "num_key_value_heads"),
       "create rejects heads not a multiple of kv heads: %s", err);
    mc = base_config();
    ok(ap_llama_stage_create(&s, &mc, 2, 5, 1, 1, B, T, 1, 0, err, sizeof err) < 0 && strstr(err, "layer range"),
       "create rejects a layer range past the model: %s", err);
    mc.head_dim = 5;
    ok(ap_llama_stage_create(&s, &mc, 0, 1, 1, 1, B, T, 1, 0, err, sizeof err) < 0 && strstr(err, "head_dim"),
       "create rejects an odd head_dim: %s", err);
    mc = base_config();
    s = create(&mc, 0, 3, 1, 1, 2, 0);
    int32_t tok[N], lab[N];
    make_batch(tok, lab, mc.vocab_size, 0);
    double l = 0;
    long c = 0;
    tok[5] = 13;
    ok(s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &c) < 0 && strstr(ap_llama_stage_error(s), "tokens[0][5]"),
       "token id >= vocab is an error: %s", ap_llama_stage_error(s));
    tok[5] = 1;
    lab[3] = -5;
    ok(s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &c) < 0 && strstr(ap_llama_stage_error(s), "labels"),
       "label -5 is an error: %s", ap_llama_stage_error(s));
    lab[3] = -100;
    ok(s->ops->backward(s, 1, NULL, 1, NULL) < 0 && strstr(ap_llama_stage_error(s), "empty"),
       "backward of an empty slot is an error: %s", ap_llama_stage_error(s));
    ok(s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &c) == 0 &&
           s->ops->forward(s, 0, tok, NULL, NULL, NULL, lab, &l, &c) < 0,
       "forward into a busy slot is an error: %s", ap_llama_stage_error(s));
    ok(s->ops->backward_weight(s, 0) < 0 && strstr(ap_llama_stage_error(s), "backward_input"),
       "backward_weight before backward_input is an error: %s", ap_llama_stage_error(s));
    ok(s->ops->forward(s, 7, tok, NULL, NULL, NULL, lab, &l, &c) < 0, "slot out of range is an error");
    ok(s->ops->backward(s, 0, NULL, 1, NULL) == 0, "the slot's backward still works after the errors");
    ap_stage_destroy(s);
}

/* Packed rows: two rows holding examples of 2+4 and 3+3 tokens, with position
 * ids restarting at each example, give the loss and gradients of the four
 * examples trained as rows of their own (padded, pads labelled -100); with
 * activation checkpointing too. Malformed position ids are refused. */
static void test_packed(const family *f) {
    static const int len[4] = {2, 4, 3, 3};
    int32_t ptok[N], plab[N], ppos[N], stok[2 * N], slab[2 * N];
    for (int i = 0, e = 0, k = 0; e < 4; e++) /* example e: tokens k .. k+len-1 of the packed stream */
        for (int t = 0; t < len[e]; t++, i++, k++) {
            int32_t tok = (int32_t)((k * 5 + 3) % (int)f->mc.vocab_size);
            int32_t lab = k % 4 == 3 ? -100 : (int32_t)((k * 3 + 1) % (int)f->mc.vocab_size);
            ptok[i] = tok, plab[i] = lab, ppos[i] = t;
            stok[e * T + t] = tok, slab[e * T + t] = lab;
        }
    for (int e = 0; e < 4; e++)
        for (int t = len[e]; t < T; t++) stok[e * T + t] = 0, slab[e * T + t] = -100;
    for (int ckpt = 0; ckpt < 2; ckpt++) {
        ap_stage *a = create(&f->mc, 0, f->mc.num_hidden_layers, 1, 1, 1, ckpt);
        ap_stage *b = create(&f->mc, 0, f->mc.num_hidden_layers, 1, 1, 1, ckpt);
        if (!a || !b) {
            ok(0, "%s: packed stages created", f->name);
            ap_stage_destroy(a), ap_stage_destroy(b);
            return;
        }
        perturb(a);
        memcpy(b->params, a->params, a->n_params * sizeof(float));
        double la = 0, lb = 0;
        long na = 0, nb = 0;
        int rc = a->ops->forward(a, 0, ptok, ppos, NULL, NULL, plab, &la, &na);
        rc |= a->ops->backward(a, 0, NULL, 1.0f, NULL);
        for (int h = 0; h < 2; h++) { /* the four examples, two rows at a time */
            rc |= b->ops->forward(b, 0, stok + h * N, NULL, NULL, NULL, slab + h * N, &lb, &nb);
            rc |= b->ops->backward(b, 0, NULL, 1.0f, NULL);
        }
        double g = tap_max_rel_err(a->grads, b->grads, a->n_params, 1e-30);
        ok(!rc && na == nb && fabs(la - lb) <= 1e-5 * fabs(lb) && g < 1e-4,
           "%s%s: packed rows with position ids = each example alone (loss %.6g vs %.6g, grads rel %.2g)",
           f->name, ckpt ? ", checkpointing" : "", la, lb, g);
        if (!ckpt) {
            double l0 = 0;
            long n0 = 0;
            a->ops->forward(a, -1, ptok, ppos, NULL, NULL, plab, &l0, &n0);
            ok(fabs(l0 - la) <= 1e-6 * fabs(la) && loss_nograd(a, ptok, plab) != l0,
               "%s: no-grad forward honours the position ids too", f->name);
            int32_t bad[N];
            memcpy(bad, ppos, sizeof bad);
            bad[3] = 5; /* neither 0 nor one more than the previous */
            ok(a->ops->forward(a, -1, ptok, bad, NULL, NULL, plab, &l0, &n0) < 0 &&
                   strstr(ap_llama_stage_error(a), "position_ids[0][3] = 5"),
               "%s: malformed position ids are refused: %s", f->name, ap_llama_stage_error(a));
        }
        ap_stage_destroy(a);
        ap_stage_destroy(b);
    }
}

int main(void) {
    ap_kernels_set_threads(1);
    family f[16];
    int nf = make_families(f);
    for (int i = 0; i < nf; i++) test_fd(&f[i]);
    for (int i = 0; i < nf; i++) test_split(&f[i]);
    for (int i = 0; i < nf; i++) test_pipeline_contracts(&f[i]);
    for (int i = 0; i < nf; i++) test_packed(&f[i]);
    /* the same contracts with 2 threads (attention tasks split over threads) */
    ap_kernels_set_threads(2);
    test_pipeline_contracts(&f[5]);
    test_pipeline_contracts(&f[6]);
    ap_kernels_set_threads(1);
    test_names_and_init();
    test_errors();
    return tap_done();
}
