/* tokenizer.c - byte-level tokenizer (see tokenizer.h). */
#include "trainer/tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

size_t ap_byte_encode(const char *text, size_t n, int add_bos, int add_eos, int32_t *out) {
    size_t k = 0;
    if (add_bos) out[k++] = AP_BYTE_BOS;
    for (size_t i = 0; i < n; i++) out[k++] = (int32_t)(unsigned char)text[i];
    if (add_eos) out[k++] = AP_BYTE_EOS;
    return k;
}

long ap_byte_decode(const int32_t *tokens, size_t n, char *out) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t t = tokens[i];
        if (t < 0 || t >= AP_BYTE_VOCAB) return -1;
        if (t < 256) out[k++] = (char)(unsigned char)t;
    }
    out[k] = '\0';
    return (long)k;
}

int ap_parse_token_list(const char *s, int32_t **out, size_t *n, char *err, size_t errlen) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            snprintf(err, errlen, "token list '%s': expected a non-negative integer at character %zu", s,
                     (size_t)(p - s) + 1);
            free(v);
            return -1;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) {
                free(v);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == '\0') break;
        if (*p != ',') {
            snprintf(err, errlen, "token list '%s': expected ',' at character %zu", s, (size_t)(p - s) + 1);
            free(v);
            return -1;
        }
        p++;
    }
    *out = v;
    *n = k;
    return 0;
}
