/* error.h - how library code reports an error: one message, naming the file,
 * key, tensor or rank and what was expected, in the caller's buffer.
 *     if (n > max) return ap_errf(err, errlen, "%s: %zu tensors, at most %zu", path, n, max);
 * Returns -1 so a failing function can return it directly. Depends on nothing
 * of ours, so every part (kernels excepted, which do not fail) may use it. */
#ifndef AP_COMMON_ERROR_H
#define AP_COMMON_ERROR_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline int ap_errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline int ap_errf(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

#endif
