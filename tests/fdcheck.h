/* fdcheck.h - random inputs and central finite differences for the kernel
 * tests (tests/test-kernels*.c): the op under test recomputes its output from
 * the current inputs and returns sum(out * r) in double; fd_check compares
 * that function's numerical derivative with the analytic gradient. */
#ifndef AP_TESTS_FDCHECK_H
#define AP_TESTS_FDCHECK_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

static uint64_t rng_state = 12345;
static inline void fd_seed(uint64_t s) { rng_state = s; }
static inline float frand(void) { /* uniform in [-1, 1) */
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}
static inline float *rnd(size_t n, float scale) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand() * scale;
    return p;
}
static inline float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

typedef double (*loss_fn)(void *ctx);

/* max |fd - an| / max(max |an|, 1e-3) over (a sample of) the elements of x */
static inline double fd_check(loss_fn f, void *ctx, float *x, const float *an, size_t n, float h) {
    size_t step = n > 300 ? n / 150 : 1;
    double num = 0, den = 1e-3;
    for (size_t i = 0; i < n; i++) den = fmax(den, fabs(an[i]));
    for (size_t i = 0; i < n; i += step) {
        float old = x[i];
        x[i] = old + h;
        double lp = f(ctx);
        x[i] = old - h;
        double lm = f(ctx);
        x[i] = old;
        double e = fabs((lp - lm) / (2.0 * (double)h) - an[i]);
        if (e > num || e != e) num = e != e ? INFINITY : e;
    }
    return num / den;
}

/* sum(out * r) in double: the scalar loss of an op's output */
static inline double dot_r(const float *out, const float *r, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * r[i];
    return s;
}

#endif
