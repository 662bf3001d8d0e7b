/* carve.h - one allocation cut into many arrays by a table: a first pass with
 * base NULL counts the floats, the second hands out pointers into the block.
 *     size_t n = 0; carve(NULL, &n);  base = alloc(n);  n = 0; carve(base, &n);
 * Each array starts 64-byte aligned (16 floats) from an aligned base. */
#ifndef AP_COMMON_CARVE_H
#define AP_COMMON_CARVE_H

#include <stddef.h>

/* n floats at *off of base (NULL: only count), *off moves past them. */
static inline float *ap_carve(float *base, size_t *off, size_t n) {
    float *p = base ? base + *off : NULL;
    *off += (n + 15) & ~(size_t)15;
    return p;
}

#endif
