/* test-kernels-extra.c - LayerNorm and exact GELU (kernels/cpu/kernels_extra.c):
 * backward against central finite differences of the forward (loss =
 * sum(out * r) for a fixed random r), forward against a double-precision
 * reference, at an aligned and an odd size; accumulate flags add; results
 * equal with 1 and 2 threads. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "tests/fdcheck.h"
#include "tests/tap.h"


#define TOL 1e-2

/* ------------------------------------------------------------- layernorm */
typedef struct {
    size_t N, C;
    float *inp, *w, *b, *out, *mean, *rstd, *r;
} ln_ctx;
static double ln_loss(void *p) {
    ln_ctx *c = p;
    ap_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, 1e-5f);
    return dot_r(c->out, c->r, c->N * c->C);
}
static void test_layernorm(size_t N, size_t C) {
    ln_ctx c = {N, C, rnd(N * C, 2), rnd(C, 1), rnd(C, 1), zeros(N * C), zeros(N), zeros(N), rnd(N * C, 1)};
    for (size_t i = 0; i < N * C; i++) c.inp[i] += 0.5f; /* a non-zero mean */
    ln_loss(&c);
    double err = 0;
    for (size_t n = 0; n < N; n++) {
        double m = 0, v = 0;
        for (size_t i = 0; i < C; i++) m += c.inp[n * C + i];
        m /= (double)C;
        for (size_t i = 0; i < C; i++) v += (c.inp[n * C + i] - m) * (c.inp[n * C + i] - m);
        double r = 1 / sqrt(v / (double)C + 1e-5);
        for (size_t i = 0; i < C; i++)
            err = fmax(err, fabs((c.inp[n * C + i] - m) * r * c.w[i] + c.b[i] - c.out[n * C + i]));
    }
    ok(err < 1e-5, "layernorm forward N=%zu C=%zu vs double (err %.2e)", N, C, err);
    float *dx = zeros(N * C), *dw = zeros(C), *db = zeros(C);
    ap_layernorm_backward(dx, dw, db, c.r, c.inp, c.w, c.mean, c.rstd, N, C, 0);
    ok(fd_check(ln_loss, &c, c.inp, dx, N * C, 1e-2f) < TOL, "layernorm dinp N=%zu C=%zu", N, C);
    ok(fd_check(ln_loss, &c, c.w, dw, C, 1e-2f) < TOL, "layernorm dweight N=%zu C=%zu", N, C);
    ok(fd_check(ln_loss, &c, c.b, db, C, 1e-2f) < TOL, "layernorm dbias N=%zu C=%zu", N, C);
    /* accumulate: dinp adds, dweight/dbias always add (fd_check left mean/rstd of a perturbed input) */
    ln_loss(&c);
    float *dx2 = malloc(N * C * sizeof(float)), *dw2 = malloc(C * sizeof(float)), *db2 = malloc(C * sizeof(float));
    memcpy(dx2, dx, N * C * sizeof(float));
    memcpy(dw2, dw, C * sizeof(float));
    memcpy(db2, db, C * sizeof(float));
    ap_layernorm_backward(dx2, dw2, db2, c.r, c.inp, c.w, c.mean, c.rstd, N, C, 1);
    for (size_t i = 0; i < N * C; i++) dx[i] *= 2;
    for (size_t i = 0; i < C; i++) dw[i] *= 2, db[i] *= 2;
    double e2 = fmax(tap_max_rel_err(dx2, dx, N * C, 1e-3),
                     fmax(tap_max_rel_err(dw2, dw, C, 1e-3), tap_max_rel_err(db2, db, C, 1e-3)));
    for (size_t i = 0; i < N * C; i++) dx[i] *= 0.5f;
    for (size_t i = 0; i < C; i++) dw[i] *= 0.5f, db[i] *= 0.5f;
    ok(e2 < 1e-5, "layernorm backward accumulates (+=) N=%zu C=%zu", N, C);
    /* two threads: the same bits */
    float *dx3 = zeros(N * C), *dw3 = zeros(C), *db3 = zeros(C), *o3 = zeros(N * C);
    ap_kernels_set_threads(2);
    ap_layernorm_forward(o3, c.mean, c.rstd, c.inp, c.w, c.b, N, C, 1e-5f);
    ap_layernorm_backward(dx3, dw3, db3, c.r, c.inp, c.w, c.mean, c.rstd, N, C, 0);
    ap_kernels_set_threads(1);
    ok(!memcmp(o3, c.out, N * C * 4) && !memcmp(dx3, dx, N * C * 4) && !memcmp(dw3, dw, C * 4) &&
           !memcmp(db3, db, C * 4),
       "layernorm N=%zu C=%zu bit-identical with 1 and 2 threads", N, C);
    free(c.inp), free(c.w), free(c.b), free(c.out), free(c.mean), free(c.rstd), free(c.r);
    free(dx), free(dw), free(db), free(dx2), free(dw2), free(db2), free(dx3), free(dw3), free(db3), free(o3);
}

/* ------------------------------------------------------------------ gelu */
typedef struct {
    size_t n;
    float *inp, *out, *r;
} ge_ctx;
static double ge_loss(void *p) {
    ge_ctx *c = p;
    ap_gelu_forward(c->out, c->inp, c->n);
    return dot_r(c->out, c->r, c->n);
}
static void test_gelu(size_t n) {
    ge_ctx c = {n, rnd(n, 4), zeros(n), rnd(n, 1)};
    ge_loss(&c);
    double err = 0;
    for (size_t i = 0; i < n; i++) {
        double x = c.inp[i];
        err = fmax(err, fabs(0.5 * x * (1 + erf(x / sqrt(2.0))) - c.out[i]));
    }
    ok(err < 1e-6, "gelu forward n=%zu vs double erf (err %.2e)", n, err);
    float *dx = zeros(n);
    ap_gelu_backward(dx, c.r, c.inp, n);
    ok(fd_check(ge_loss, &c, c.inp, dx, n, 1e-2f) < TOL, "gelu dinp n=%zu", n);
    /* exact, not the tanh approximation: they differ by ~1e-3 near |x| = 2 */
    float x = 2.0f, y;
    ap_gelu_forward(&y, &x, 1);
    ok(fabs(y - 1.9544997) < 1e-6, "gelu(2) = 1.9544997 (exact erf form; tanh form gives 1.9545977): %.7f", y);
    free(c.inp), free(c.out), free(c.r), free(dx);
}

int main(void) {
    fd_seed(777); /* the inputs this test was tuned on */
    ap_kernels_set_threads(1);
    test_layernorm(8, 64);
    test_layernorm(7, 37);
    test_layernorm(4096, 16); /* over the parallel threshold */
    test_gelu(64);
    test_gelu(1001);
    return tap_done();
}
