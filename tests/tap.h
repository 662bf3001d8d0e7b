/* tap.h - a tiny TAP producer for autopipe's C tests.
 *
 * Every check is one TAP case ("ok 3 - name"), so the suite's closing line
 * counts cases, not programs. Usage:
 *     int main(void) { ok(1 + 1 == 2, "arith"); return tap_done(); }
 * The plan is printed at the end ("1..N"), so tests need not count ahead. */
#ifndef AP_TESTS_TAP_H
#define AP_TESTS_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_n_ = 0, tap_failed_ = 0;

static inline int ok_(int cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int ok_(int cond, const char *file, int line, const char *fmt, ...) {
    va_list ap;
    printf("%s %d - ", cond ? "ok" : "not ok", ++tap_n_);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    if (!cond) {
        tap_failed_++;
        printf("#   failed at %s:%d\n", file, line);
    }
    fflush(stdout);
    return cond;
}
#define ok(cond, ...) ok_(!!(cond), __FILE__, __LINE__, __VA_ARGS__)

/* Skip one case with a reason (counted as a pass by TAP, shown as SKIP). */
static inline void tap_skip(const char *why) {
    printf("ok %d # SKIP %s\n", ++tap_n_, why);
    fflush(stdout);
}

/* Diagnostic line, shown in the test's log. */
#define diag(...) (printf("# "), printf(__VA_ARGS__), printf("\n"), fflush(stdout))

/* Largest relative error max|a-b| / max(max|b|, floor) over n floats. */
static inline double tap_max_rel_err(const float *a, const float *b, size_t n, double floor_) {
    double num = 0, den = floor_;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / den;
}

static inline int tap_done(void) {
    printf("1..%d\n", tap_n_);
    fflush(stdout);
    return tap_failed_ ? 1 : 0;
}

#endif
