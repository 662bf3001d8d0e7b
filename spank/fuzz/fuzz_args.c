/* fuzz_args.c - libFuzzer harness for the SPANK plugin's parsers (spank/args.c).
 * Build and run: spank/fuzz/run-fuzz.sh (or `make fuzz-spank`).
 *
 * The input is split at NUL bytes into up to 8 strings: the first three are
 * the raw --pp/--dp/--tp values (an empty piece = flag not given), the rest
 * plugstack.conf arguments; 4 bytes of the input pick the task count. Every
 * parser must return 0 or -1 with a terminated message, and a resolved mesh
 * must multiply to the task count, with every rank mapping back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spank/args.h"

#define MAXP 8

static void check_msg(const char *err, size_t cap) {
    if (strnlen(err, cap) >= cap) abort(); /* not terminated */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char buf[1024];
    if (size >= sizeof buf) return 0;
    uint32_t ntasks = 0;
    if (size >= 4) {
        memcpy(&ntasks, data, 4);
        data += 4;
        size -= 4;
    }
    memcpy(buf, data, size);
    buf[size] = '\0';

    char *piece[MAXP];
    int np = 0;
    for (char *p = buf; np < MAXP;) {
        piece[np++] = p;
        char *z = memchr(p, '\0', (size_t)(buf + size - p) + 1);
        if (!z || z >= buf + size) break;
        p = z + 1;
    }

    char err[96]; /* small on purpose: messages must truncate safely */
    memset(err, 'X', sizeof err);
    ap_spank_conf conf;
    int rc = ap_spank_conf_parse(&conf, np > 3 ? np - 3 : 0, piece + 3, err, sizeof err);
    if (rc != 0 && rc != -1) abort();
    if (rc) {
        check_msg(err, sizeof err);
        ap_spank_conf_init(&conf);
    }

    const char *raw[AP_NAXES];
    for (int a = 0; a < AP_NAXES; a++) raw[a] = (a < np && piece[a][0]) ? piece[a] : NULL;
    ap_spank_request req;
    memset(err, 'X', sizeof err);
    rc = ap_spank_request_parse(&conf, raw, &req, err, sizeof err);
    if (rc == -1) {
        check_msg(err, sizeof err);
        return 0;
    }
    if (rc != 0) abort();
    for (int a = 0; a < AP_NAXES; a++)
        if (req.size[a] < 0 || req.size[a] > conf.max[a] || (raw[a] && req.size[a] < 1)) abort();

    ap_mesh m;
    long long n = (long long)(ntasks % (1u << 25)); /* around and beyond AP_MESH_MAX_RANKS */
    memset(err, 'X', sizeof err);
    rc = ap_spank_resolve(&conf, &req, n, &m, err, sizeof err);
    if (rc == -1) {
        check_msg(err, sizeof err);
        return 0;
    }
    if (rc != 0 || ap_mesh_check(&m) || ap_mesh_world(&m) != n) abort();
    for (int a = 0; a < AP_NAXES; a++)
        if (req.size[a] && req.size[a] != m.size[a]) abort();
    /* a few ranks round-trip through the topology code the plugin uses */
    int probe[3] = {0, (int)(n / 2), (int)(n - 1)};
    for (int i = 0; i < 3; i++) {
        ap_coord c;
        if (ap_mesh_coord(&m, probe[i], &c) || ap_mesh_rank(&m, c) != probe[i]) abort();
    }
    return 0;
}
