/* test-spank-args.c - the SPANK plugin's parsers on good and junk input. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "spank/args.h"
#include "tests/tap.h"

static int parse(const char *s, int max, int *v, char *err) {
    *v = -7;
    return ap_spank_parse_size(s, max, "--pp-size", v, err, 256);
}

static int resolve(const ap_spank_conf *c, int pp, int dp, int tp, long long n, ap_mesh *m,
                   char *err) {
    ap_spank_request r = {{pp, dp, tp}};
    return ap_spank_resolve(c, &r, n, m, err, 256);
}

int main(void) {
    char err[256];
    int v;

    /* ---- sizes ---- */
    ok(parse("4", 64, &v, err) == 0 && v == 4, "'4' parses");
    ok(parse("0007", 64, &v, err) == 0 && v == 7, "leading zeros are decimal (0007 = 7)");
    ok(parse("64", 64, &v, err) == 0 && v == 64, "the limit itself is accepted");
    static const char *junk[] = {"",   "0",     "-1",   "+2",   " 2",  "2 ",   "2x", "x2",
                                 "0x10", "1e3", "3.0", "4\n", "--",  "2,2", "١", "\t"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        err[0] = '\0';
        int rc = parse(junk[i], 64, &v, err);
        ok(rc == -1 && v == -7 && strstr(err, "--pp-size"), "junk #%zu rejected, flag named: %s", i,
           err);
    }
    ok(parse("65", 64, &v, err) == -1 && strstr(err, "limit 64"), "above the limit: %s", err);
    ok(parse("99999999999999999999999999", INT_MAX, &v, err) == -1, "overflow rejected: %s", err);
    ok(parse("2147483648", INT_MAX, &v, err) == -1, "INT_MAX + 1 rejected");
    ok(parse("2147483647", INT_MAX, &v, err) == 0 && v == INT_MAX, "INT_MAX accepted");
    ok(parse(NULL, 64, &v, err) == -1, "NULL rejected");
    char big[300];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    ok(parse(big, INT_MAX, &v, err) == -1 && strlen(err) < 200 && strstr(err, "too long"),
       "a 299-char value is rejected with a bounded message");
    ok(parse("2\x1b[31m", 64, &v, err) == -1 && !strchr(err, '\x1b'),
       "control characters do not reach the message: %s", err);

    /* ---- plugstack.conf ---- */
    ap_spank_conf c;
    char *good[] = {"max_pp=8", "max_tp=4", "max_dp=16", "default_tp=2", "default_pp=1"};
    ok(ap_spank_conf_parse(&c, 5, good, err, sizeof err) == 0 && c.max[AP_AXIS_PP] == 8 &&
           c.max[AP_AXIS_TP] == 4 && c.max[AP_AXIS_DP] == 16 && c.default_size[AP_AXIS_TP] == 2,
       "plugstack arguments parse");
    ok(ap_spank_conf_parse(&c, 0, NULL, err, sizeof err) == 0 && c.max[0] == AP_MESH_MAX_RANKS &&
           c.default_size[AP_AXIS_PP] == 1 && c.default_size[AP_AXIS_TP] == 1,
       "no arguments: defaults 1, no limits beyond the mesh's");
    static char *bad_conf[][1] = {{"max_pp"},      {"max_pp="},    {"max_pp=0"},  {"max_pp=-3"},
                                  {"max_pp=4x"},   {"maxpp=4"},    {"max_cp=2"},  {"=4"},
                                  {"default_dp=2"}, {"MAX_PP=4"},  {"max_pp =4"}, {"max_pp=4=4"}};
    for (size_t i = 0; i < sizeof bad_conf / sizeof bad_conf[0]; i++) {
        err[0] = '\0';
        ok(ap_spank_conf_parse(&c, 1, bad_conf[i], err, sizeof err) == -1 && err[0],
           "plugstack '%s' refused: %s", bad_conf[i][0], err);
    }
    char *dflt_over[] = {"max_tp=2", "default_tp=4"};
    ok(ap_spank_conf_parse(&c, 2, dflt_over, err, sizeof err) == -1 && strstr(err, "default_tp=4"),
       "a default above its maximum is refused: %s", err);

    /* ---- requests ---- */
    ap_spank_conf_parse(&c, 2, (char *[]){"max_pp=8", "max_tp=2"}, err, sizeof err);
    ap_spank_request r;
    const char *raw1[3] = {"4", NULL, NULL};
    ok(ap_spank_request_parse(&c, raw1, &r, err, sizeof err) == 0 && r.size[0] == 4 &&
           r.size[1] == 0 && r.size[2] == 0 && ap_spank_request_active(&r),
       "request with pp only");
    const char *raw0[3] = {NULL, NULL, NULL};
    ok(ap_spank_request_parse(&c, raw0, &r, err, sizeof err) == 0 && !ap_spank_request_active(&r),
       "no flags: inactive");
    const char *raw_lim[3] = {"16", NULL, NULL};
    ok(ap_spank_request_parse(&c, raw_lim, &r, err, sizeof err) == -1 && strstr(err, "max_pp=8"),
       "site limit named: %s", err);
    const char *raw_tp[3] = {NULL, NULL, "abc"};
    ok(ap_spank_request_parse(&c, raw_tp, &r, err, sizeof err) == -1 && strstr(err, "--tp-size"),
       "junk tp named: %s", err);

    /* ---- resolve ---- */
    ap_spank_conf d;
    ap_spank_conf_init(&d);
    ap_mesh m;
    ok(resolve(&d, 2, 2, 0, 4, &m, err) == 0 && m.size[0] == 2 && m.size[1] == 2 && m.size[2] == 1,
       "2 x 2 x (tp default 1) on 4 tasks");
    ok(resolve(&d, 2, 0, 0, 8, &m, err) == 0 && m.size[1] == 4, "dp derived: 8 / 2 = 4");
    ok(resolve(&d, 0, 0, 2, 8, &m, err) == 0 && m.size[0] == 1 && m.size[1] == 4 && m.size[2] == 2,
       "tp only: pp 1, dp 4");
    ok(resolve(&d, 4, 2, 0, 6, &m, err) == -1 &&
           !strcmp(err, "--pp-size=4 x --dp-size=2 x --tp-size=1 = 8 ranks, but this step has 6 tasks"),
       "mismatch message: %s", err);
    ok(resolve(&d, 4, 0, 0, 6, &m, err) == -1 && strstr(err, "does not divide"),
       "pp not dividing the tasks: %s", err);
    ok(resolve(&d, 1 << 24, 1 << 24, 1 << 24, 8, &m, err) == -1 && strstr(err, "too many"),
       "overflowing product: %s", err);
    ok(resolve(&d, 2, 0, 0, 0, &m, err) == -1, "zero tasks rejected");
    ap_spank_conf_parse(&c, 2, (char *[]){"default_tp=2", "max_dp=2"}, err, sizeof err);
    ok(resolve(&c, 2, 0, 0, 8, &m, err) == 0 && m.size[2] == 2 && m.size[1] == 2,
       "site default_tp=2 applies");
    ok(resolve(&c, 1, 0, 0, 8, &m, err) == -1 && strstr(err, "max_dp=2"),
       "derived dp above max_dp: %s", err);
    return tap_done();
}
