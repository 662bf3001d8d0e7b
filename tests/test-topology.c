/* test-topology.c - rank <-> coordinates and the stage helpers. */
#include "launcher/topology.h"
#include "tests/tap.h"

static void test_rank_order(void) {
    ap_mesh m = {{2, 3, 2}};
    int bad = 0;
    for (int r = 0; r < 12; r++) {
        ap_coord c;
        if (ap_mesh_coord(&m, r, &c) || ap_mesh_rank(&m, c) != r) bad++;
        if (r != (c.r[0] * 3 + c.r[1]) * 2 + c.r[2]) bad++;
    }
    ok(bad == 0, "rank = (pp*dp + dp_rank)*tp + tp_rank round-trips for 2x3x2");
    ap_coord c;
    ok(ap_mesh_coord(&m, 7, &c) == 0 && c.r[0] == 1 && c.r[1] == 0 && c.r[2] == 1,
       "rank 7 of 2x3x2 is pp1 dp0 tp1");
    ok(ap_mesh_coord(&m, 12, &c) == -1 && ap_mesh_coord(&m, -1, &c) == -1, "out-of-range rank");
    ap_mesh z = {{0, 1, 1}};
    ok(ap_mesh_check(&z) == -1 && ap_mesh_world(&z) == -1, "zero axis size rejected");
    ap_mesh big = {{1 << 12, 1 << 12, 2}};
    ok(ap_mesh_check(&big) == -1, "world above AP_MESH_MAX_RANKS rejected");
}

static void test_groups(void) {
    ap_mesh m = {{2, 2, 2}};
    int g[8];
    ok(ap_mesh_group(&m, AP_AXIS_PP, 3, g, 8) == 2 && g[0] == 3 && g[1] == 7, "pp group of rank 3 is {3,7}");
    ok(ap_mesh_group(&m, AP_AXIS_DP, 5, g, 8) == 2 && g[0] == 5 && g[1] == 7, "dp group of rank 5 is {5,7}");
    ok(ap_mesh_group(&m, AP_AXIS_TP, 6, g, 8) == 2 && g[0] == 6 && g[1] == 7, "tp group of rank 6 is {6,7}");
    ok(ap_mesh_group(&m, AP_AXIS_TP, 6, g, 1) == -1, "group larger than the buffer rejected");
}

static void test_stage_ids(void) {
    struct { int r, p, n, style, want_n, want[4]; } cases[] = {
        {0, 4, 8, AP_STYLE_LOOP, 2, {0, 4}},     /* the guide's examples */
        {0, 4, 8, AP_STYLE_V, 2, {0, 7}},
        {3, 4, 8, AP_STYLE_V, 2, {3, 4}},
        {1, 2, 2, AP_STYLE_LOOP, 1, {1}},
        {1, 2, 6, AP_STYLE_LOOP, 3, {1, 3, 5}},
        {0, 2, 6, AP_STYLE_V, -1, {0}},          /* v needs exactly 2 per rank */
        {0, 4, 6, AP_STYLE_LOOP, -1, {0}},       /* not a multiple */
        {4, 4, 8, AP_STYLE_LOOP, -1, {0}},       /* rank out of range */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        int out[4] = {0};
        char err[128] = "";
        int n = stage_ids_this_rank(cases[i].r, cases[i].p, cases[i].n, cases[i].style, out, 4, err,
                                    sizeof err);
        int good = n == cases[i].want_n;
        for (int k = 0; good && k < n; k++) good = out[k] == cases[i].want[k];
        if (n < 0) good = good && err[0];
        ok(good, "stage_ids_this_rank(%d, %d, %d, %s) -> %d", cases[i].r, cases[i].p, cases[i].n,
           cases[i].style ? "v" : "loop", n);
    }
}

int main(void) {
    test_rank_order();
    test_groups();
    test_stage_ids();
    return tap_done();
}
