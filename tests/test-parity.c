/* test-parity.c - the C Llama-family stage against transformers.
 *
 * For each tiny model in tests/fixtures/hf (made by gen_fixtures.py with
 * transformers, eager attention, fp32): load config.json + safetensors into
 * stages through ap_load_hf_weights and compare with what transformers
 * computed on the same inputs:
 *   logits within 1e-5 relative (max |a - b| / max |b|),
 *   loss within 1e-5 relative,
 *   every parameter gradient within 1e-4 relative,
 * once for the whole model in one stage and once split into two pipeline
 * stages [0, 1) + [1, L) chained by hand (tied models: the two copies of
 * model.embed_tokens.weight have their gradients summed, as the pipeline
 * does), and once more with activation checkpointing and the split
 * backward (backward_input then backward_weight). Labels are aligned with the inputs; loss = sum of CE / count. */
#include <stdint.h>
#include <stdlib.h>

#include "checkpoint/safetensors.h"
#include "kernels/kernels.h"
#include "tests/tap.h"
#include "trainer/hf_config.h"
#include "trainer/hf_load.h"
#include "trainer/llama.h"

#define TOL_OUT 1e-5
#define TOL_GRAD 1e-4

static char err[1024];

typedef struct {
    ap_model_config mc;
    ap_st_model *ref;
    int B, T;
    int32_t *ids, *labels;
    float *logits, loss;
    int n_tokens;
} fixture;

static float *read_ref(ap_st_model *ref, const char *name, size_t numel) {
    const ap_st_tensor *t = ap_st_find(ref, name);
    float *x = t && t->numel == numel ? malloc(numel * sizeof *x) : NULL;
    size_t shape[AP_ST_MAX_DIMS];
    for (int d = 0; t && d < t->ndim; d++) shape[d] = (size_t)t->shape[d];
    if (x && ap_st_read_f32(ref, name, x, t->ndim, shape, err, sizeof err)) {
        free(x);
        x = NULL;
    }
    return x;
}

static int fixture_open(fixture *f, const char *dir) {
    memset(f, 0, sizeof *f);
    char p[1100];
    snprintf(p, sizeof p, "%.1000s/reference.safetensors", dir);
    if (ap_hf_config_read(&f->mc, dir, err, sizeof err) || ap_st_open(&f->ref, p, err, sizeof err)) return -1;
    const ap_st_tensor *t = ap_st_find(f->ref, "input_ids");
    if (!t || t->ndim != 2) return snprintf(err, sizeof err, "%.900s: no input_ids (B, T)", p), -1;
    f->B = (int)t->shape[0], f->T = (int)t->shape[1];
    size_t N = (size_t)f->B * f->T, V = (size_t)f->mc.vocab_size;
    int32_t n = 0;
    f->ids = malloc(N * sizeof *f->ids);
    f->labels = malloc(N * sizeof *f->labels);
    float *loss = NULL;
    if (!f->ids || !f->labels || ap_st_read_i32(f->ref, "input_ids", f->ids, N, err, sizeof err) ||
        ap_st_read_i32(f->ref, "labels", f->labels, N, err, sizeof err) ||
        ap_st_read_i32(f->ref, "n_tokens", &n, 1, err, sizeof err) || !(f->logits = read_ref(f->ref, "logits", N * V)) ||
        !(loss = read_ref(f->ref, "loss", 1)))
        return -1;
    f->loss = *loss;
    f->n_tokens = n;
    free(loss);
    return 0;
}

static void fixture_close(fixture *f) {
    ap_st_close(f->ref);
    free(f->ids);
    free(f->labels);
    free(f->logits);
}

static ap_param_ref *find(ap_stage *s, const char *name) {
    for (int i = 0; s && i < s->n_refs; i++)
        if (!strcmp(s->refs[i].name, name)) return &s->refs[i];
    return NULL;
}

static int stage(ap_stage **s, const fixture *f, const char *dir, int first, int last, int embed, int head) {
    if (ap_llama_stage_create(s, &f->mc, first, last, embed, head, f->B, f->T, 1, 0, err, sizeof err)) return -1;
    return ap_load_hf_weights(*s, dir, err, sizeof err);
}

/* Logits from the body stage's hidden states through the final norm and
 * lm_head of `head` (the stage computes them only inside its loss). */
static double logits_err(const fixture *f, ap_stage *body, ap_stage *head) {
    size_t N = (size_t)f->B * f->T, C = (size_t)f->mc.hidden_size, V = (size_t)f->mc.vocab_size;
    float *h = malloc(N * C * sizeof *h), *rstd = malloc(N * sizeof *rstd), *lg = malloc(N * V * sizeof *lg);
    ap_param_ref *nw = find(head, "model.norm.weight"), *lw = find(head, "lm_head.weight");
    if (!lw) lw = find(head, "model.embed_tokens.weight");
    double e = INFINITY;
    if (h && rstd && lg && nw && lw &&
        body->ops->forward(body, -1, f->ids, NULL, NULL, h, NULL, NULL, NULL) == 0) {
        ap_rmsnorm_forward(h, rstd, h, nw->param, N, C, (float)f->mc.rms_norm_eps, f->mc.norm_plus_one);
        ap_matmul_forward(lg, h, lw->param, NULL, N, C, V, 0);
        e = tap_max_rel_err(lg, f->logits, N * V, 1e-30);
    }
    free(h);
    free(rstd);
    free(lg);
    return e;
}

/* Max relative error of every gradient of stages[0..n-1] (copies of one name summed). */
static double grads_err(const fixture *f, ap_stage **st, int n, int per_param, const char *fx, int *n_checked) {
    double worst = 0;
    *n_checked = 0;
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < st[k]->n_refs; i++) {
            ap_param_ref *r = &st[k]->refs[i];
            int seen = 0;
            for (int j = 0; j < k && !seen; j++) seen = find(st[j], r->name) != NULL;
            if (seen) continue;
            float *g = malloc(r->numel * sizeof *g);
            memcpy(g, r->grad, r->numel * sizeof *g);
            for (int j = k + 1; j < n; j++) {
                ap_param_ref *o = find(st[j], r->name);
                for (size_t q = 0; o && q < r->numel; q++) g[q] += o->grad[q];
            }
            char gname[160];
            snprintf(gname, sizeof gname, "grad.%s", r->name);
            float *want = read_ref(f->ref, gname, r->numel);
            double e = want ? tap_max_rel_err(g, want, r->numel, 1e-30) : INFINITY;
            if (per_param && !ok(e <= TOL_GRAD, "%s: grad %s rel err %.2e", fx, r->name, e) && want) {
                size_t worst_i = 0, cols = r->ndim == 2 ? r->shape[1] : 1;
                for (size_t q = 1; q < r->numel; q++)
                    if (fabsf(g[q] - want[q]) > fabsf(g[worst_i] - want[worst_i])) worst_i = q;
                diag("worst at [%zu][%zu]: %g here, %g in transformers", worst_i / cols, worst_i % cols,
                     g[worst_i], want[worst_i]);
            }
            if (e > worst || e != e) worst = e != e ? INFINITY : e;
            (*n_checked)++;
            free(g);
            free(want);
        }
    }
    return worst;
}

static int count_ref_grads(const fixture *f) {
    int n = 0;
    for (int i = 0; i < ap_st_count(f->ref); i++) n += !strncmp(ap_st_at(f->ref, i)->name, "grad.", 5);
    return n;
}

static void run(const char *top, const char *name) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/hf/%s", top, name);
    fixture f;
    if (fixture_open(&f, dir)) {
        ok(0, "%s: fixture loads (%s)", name, err);
        fixture_close(&f);
        return;
    }
    int L = f.mc.num_hidden_layers;
    float dloss = 1.0f / (float)f.n_tokens;

    /* The whole model in one stage. */
    ap_stage *full = NULL, *body = NULL;
    int okf = stage(&full, &f, dir, 0, L, 1, 1) == 0;
    ok(okf, "%s: load %s weights into a full stage %s", name, ap_model_type_name(f.mc.model_type), okf ? "" : err);
    if (!okf) goto out;
    int okb = stage(&body, &f, dir, 0, L, 1, 0) == 0;
    double le = okb ? logits_err(&f, body, full) : INFINITY;
    ok(le <= TOL_OUT, "%s: logits (%d x %d x %d) rel err %.2e", name, f.B, f.T, f.mc.vocab_size, le);
    double loss_sum = 0;
    long cnt = 0;
    int rc = full->ops->forward(full, 0, f.ids, NULL, NULL, NULL, f.labels, &loss_sum, &cnt);
    double loss = cnt ? loss_sum / (double)cnt : NAN, lerr = fabs(loss - f.loss) / fabs((double)f.loss);
    ok(rc == 0 && cnt == f.n_tokens && lerr <= TOL_OUT, "%s: loss %.7f vs transformers %.7f (rel %.2e, %ld tokens)",
       name, loss, (double)f.loss, lerr, cnt);
    rc = full->ops->backward(full, 0, NULL, dloss, NULL);
    ok(rc == 0, "%s: backward %s", name, rc ? ap_llama_stage_error(full) : "");
    int nchk;
    ap_stage *one[1] = {full};
    double ge = grads_err(&f, one, 1, 1, name, &nchk);
    ok(nchk == count_ref_grads(&f), "%s: every transformers parameter (%d) has a gradient here (%d)", name,
       count_ref_grads(&f), nchk);
    (void)ge;

    /* Two pipeline stages [0, 1) and [1, L), each loaded from the same directory. */
    ap_stage *s0 = NULL, *s1 = NULL;
    int ok2 = stage(&s0, &f, dir, 0, 1, 1, 0) == 0 && stage(&s1, &f, dir, 1, L, 0, 1) == 0;
    ok(ok2, "%s: load layer slices [0,1) and [1,%d) %s", name, L, ok2 ? "" : err);
    if (ok2) {
        size_t NC = (size_t)f.B * f.T * f.mc.hidden_size;
        float *h = malloc(NC * sizeof *h), *dh = malloc(NC * sizeof *dh);
        double ls = 0;
        long c2 = 0;
        int r = s0->ops->forward(s0, 0, f.ids, NULL, NULL, h, NULL, NULL, NULL) ||
                s1->ops->forward(s1, 0, NULL, NULL, h, NULL, f.labels, &ls, &c2) ||
                s1->ops->backward(s1, 0, NULL, dloss, dh) || s0->ops->backward(s0, 0, dh, 0, NULL);
        double l2 = c2 ? ls / (double)c2 : NAN;
        ok(!r && fabs(l2 - f.loss) / fabs((double)f.loss) <= TOL_OUT, "%s: two-stage loss %.7f", name, l2);
        ap_stage *two[2] = {s0, s1};
        double g2 = r ? INFINITY : grads_err(&f, two, 2, 0, name, &nchk);
        ok(g2 <= TOL_GRAD && nchk == count_ref_grads(&f), "%s: two-stage gradients (%d) max rel err %.2e", name,
           nchk, g2);
        free(h);
        free(dh);
    }
    ap_stage_destroy(s0);
    ap_stage_destroy(s1);

    /* Activation checkpointing with the zero-bubble split (backward_input then backward_weight). */
    ap_stage *ck = NULL;
    int okc = ap_llama_stage_create(&ck, &f.mc, 0, L, 1, 1, f.B, f.T, 1, 1, err, sizeof err) == 0 &&
              ap_load_hf_weights(ck, dir, err, sizeof err) == 0;
    if (okc) {
        double ls = 0;
        long c3 = 0;
        okc = ck->ops->forward(ck, 0, f.ids, NULL, NULL, NULL, f.labels, &ls, &c3) == 0 &&
              ck->ops->backward_input(ck, 0, NULL, dloss, NULL) == 0 && ck->ops->backward_weight(ck, 0) == 0 &&
              fabs(ls / (double)c3 - f.loss) / fabs((double)f.loss) <= TOL_OUT;
    }
    ap_stage *ck1[1] = {ck};
    double g3 = okc ? grads_err(&f, ck1, 1, 0, name, &nchk) : INFINITY;
    ok(okc && g3 <= TOL_GRAD, "%s: activation checkpointing + I/W split: loss and gradients (max rel err %.2e)", name,
       g3);
    ap_stage_destroy(ck);
out:
    ap_stage_destroy(full);
    ap_stage_destroy(body);
    fixture_close(&f);
}

int main(void) {
    const char *top = getenv("top_srcdir");
    if (!top) top = "..";
    ap_kernels_set_threads(1);
    static const char *names[] = {"llama", "llama_tied", "llama_rope3", "llama_bf16",
                                  "mistral", "qwen2", "qwen3", "gemma"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) run(top, names[i]);
    return tap_done();
}
