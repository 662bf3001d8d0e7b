/* test-common.c - the shared whole-file reader (common/file.h). */
#include <unistd.h>

#include "common/file.h"
#include "tests/tap.h"

int main(void) {
    char dir[] = "/tmp/ap-test-common-XXXXXX", path[300], err[512];
    ok(mkdtemp(dir) != NULL, "temp dir");
    snprintf(path, sizeof path, "%s/f", dir);
    /* larger than the first 64 KiB buffer, so the growth path runs */
    size_t want = 200000;
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < want; i++) fputc('a' + (int)(i % 26), f);
    fclose(f);

    size_t n = 0;
    char *b = ap_read_file(path, want, &n, err, sizeof err);
    ok(b && n == want && b[0] == 'a' && b[want - 1] == 'a' + (int)((want - 1) % 26) && b[want] == '\0',
       "a file of exactly the limit reads whole and NUL-terminated (%zu bytes)", n);
    free(b);

    err[0] = '\0';
    b = ap_read_file(path, want - 1, &n, err, sizeof err);
    ok(!b && strstr(err, path) && strstr(err, "larger than 199999 bytes"), "one byte over the limit: %s", err);

    snprintf(path, sizeof path, "%s/missing", dir);
    b = ap_read_file(path, 100, &n, err, sizeof err);
    ok(!b && strstr(err, path) && strstr(err, "cannot open"), "missing file named: %s", err);

    b = ap_read_file(dir, 100, &n, err, sizeof err);
    ok(!b && strstr(err, dir), "a directory is refused: %s", err);

    snprintf(path, sizeof path, "%s/f", dir);
    unlink(path);
    rmdir(dir);
    return tap_done();
}
