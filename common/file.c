/* file.c - see file.h. */
#include "common/file.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/error.h"

char *ap_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        ap_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    /* Grow as we read: the size a stat reports can change, and pipes have none. */
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    const char *why = NULL;
    while (buf) {
        if (n == cap) {
            if (cap > max) {
                why = "too large";
                break;
            }
            char *p = realloc(buf, 2 * cap + 1);
            if (!p) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = p;
            cap *= 2;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    int bad = ferror(f), e = errno;
    fclose(f);
    if (buf && n > max) why = "too large";
    if (!buf || bad || why) {
        if (why) ap_errf(err, errlen, "%s: larger than %zu bytes, the most this file may hold", path, max);
        else if (!buf) ap_errf(err, errlen, "%s: out of memory", path);
        else ap_errf(err, errlen, "%s: read error: %s", path, strerror(e));
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}
