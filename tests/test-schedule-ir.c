/* test-schedule-ir.c - action text form, names, CSV load/dump round trips,
 * PyTorch-format CSV fixtures, bounded parsing errors. */
#include "tests/tap.h"
#include "trainer/schedule/schedule.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char err[65536];

static void test_actions(void) {
    const char *good[] = {"0F1", "1SEND_B0", "2I3", "2W3", "1RECV_F0", "12B345", "0SEND_F0", "3RECV_B2"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        ap_action a;
        char back[64] = "?";
        int rc = ap_action_parse(good[i], &a, err, sizeof err);
        ap_action_format(back, sizeof back, a);
        ok(rc == 0 && !strcmp(back, good[i]), "action %s parses and formats back (%s)", good[i], back);
    }
    ap_action a;
    ok(ap_action_parse("1SEND_B0", &a, err, sizeof err) == 0 && a.type == AP_ACT_SEND_B && a.stage == 1 &&
           a.mb == 0,
       "1SEND_B0 is stage 1, SEND_B, microbatch 0");
    ok(ap_action_parse("  2W3 ", &a, err, sizeof err) == 0 && a.type == AP_ACT_W && a.stage == 2 && a.mb == 3,
       "blanks around a cell are ignored");
    ok(ap_action_parse("", &a, err, sizeof err) == 0 && a.type == AP_ACT_NONE, "empty cell is idle");
    ok(ap_action_parse("0UNSHARD", &a, err, sizeof err) == 0 && a.type == AP_ACT_NONE &&
           ap_action_parse("3RESHARD", &a, err, sizeof err) == 0 && a.type == AP_ACT_NONE &&
           ap_action_parse("1REDUCE_GRAD", &a, err, sizeof err) == 0 && a.type == AP_ACT_NONE,
       "PyTorch's UNSHARD, RESHARD, REDUCE_GRAD cells read as idle");
    struct {
        const char *text, *want;
    } bad[] = {
        {"F1", "stage number"},     {"0X1", "action type"},        {"0F", "microbatch number"},
        {"0F1x", "unexpected"},     {"(0F1;1B0)OVERLAP_F_B", "stage number"}, {"99999999999F1", "stage number"},
        {"0OVERLAP_F_B", "not supported"}, {"0RESHARDx", "unexpected"},
        {"0F99999999999", "microbatch number"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = ap_action_parse(bad[i].text, &a, err, sizeof err);
        ok(rc < 0 && strstr(err, bad[i].want), "'%s' rejected: %s", bad[i].text, err);
    }
}

static void test_names(void) {
    struct {
        const char *name;
        int kind, single, style;
    } t[] = {
        {"gpipe", AP_SCHED_GPIPE, 1, AP_STYLE_LOOP},
        {"GPipe", AP_SCHED_GPIPE, 1, AP_STYLE_LOOP},
        {"1f1b", AP_SCHED_1F1B, 1, AP_STYLE_LOOP},
        {"1F1B", AP_SCHED_1F1B, 1, AP_STYLE_LOOP},
        {"interleaved_1f1b", AP_SCHED_INTERLEAVED_1F1B, 0, AP_STYLE_LOOP},
        {"Interleaved1F1B", AP_SCHED_INTERLEAVED_1F1B, 0, AP_STYLE_LOOP},
        {"looped_bfs", AP_SCHED_LOOPED_BFS, 0, AP_STYLE_LOOP},
        {"LoopedBFS", AP_SCHED_LOOPED_BFS, 0, AP_STYLE_LOOP},
        {"interleaved_zb", AP_SCHED_INTERLEAVED_ZB, 0, AP_STYLE_LOOP},
        {"InterleavedZeroBubble", AP_SCHED_INTERLEAVED_ZB, 0, AP_STYLE_LOOP},
        {"zbv", AP_SCHED_ZBV, 0, AP_STYLE_V},
        {"ZBVZeroBubble", AP_SCHED_ZBV, 0, AP_STYLE_V},
        {"ZBV", AP_SCHED_ZBV, 0, AP_STYLE_V},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        ap_sched_kind k = AP_SCHED_NKINDS;
        ok(ap_schedule_parse_name(t[i].name, &k) == 0 && (int)k == t[i].kind &&
               ap_schedule_is_single_stage(t[i].name) == t[i].single &&
               ap_schedule_style(t[i].name) == t[i].style,
           "name %s -> %s, single=%d, style=%s", t[i].name, ap_schedule_kind_name((int)k), t[i].single,
           t[i].style == AP_STYLE_V ? "v" : "loop");
    }
    ap_sched_kind k;
    ok(ap_schedule_parse_name("2f2b", &k) < 0 && ap_schedule_is_single_stage("2f2b") < 0 &&
           ap_schedule_style("2f2b") < 0,
       "unknown name rejected");
}

static void test_placement(void) {
    /* loop: 0 1 2 3 0 1 2 3; v: 0 1 2 3 3 2 1 0 */
    int loop_ok = 1, v_ok = 1;
    int want_v[8] = {0, 1, 2, 3, 3, 2, 1, 0};
    for (int st = 0; st < 8; st++) {
        loop_ok &= ap_stage_to_rank(4, 8, AP_STYLE_LOOP, st) == st % 4;
        v_ok &= ap_stage_to_rank(4, 8, AP_STYLE_V, st) == want_v[st];
    }
    ok(loop_ok, "loop placement: stage s on rank s %% pp");
    ok(v_ok, "v placement: 0 1 2 3 3 2 1 0");
    ok(ap_stage_to_rank(2, 6, AP_STYLE_V, 4) == 0 && ap_stage_to_rank(2, 6, AP_STYLE_V, 5) == 1,
       "v placement turns again on the third round");
    /* the same placement as the launcher's stage_ids_this_rank (topology.h) */
    int same = 1;
    for (int pp = 1; pp <= 8; pp++)
        for (int v = 1; v <= 4; v++)
            for (int sty = AP_STYLE_LOOP; sty <= AP_STYLE_V; sty++) {
                if (sty == AP_STYLE_V && v != 2) continue;
                for (int r = 0; r < pp; r++) {
                    int ids[8];
                    char e[256];
                    int n = stage_ids_this_rank(r, pp, pp * v, (enum ap_stage_style)sty, ids, 8, e, sizeof e);
                    same &= n == v;
                    for (int k = 0; k < n; k++) same &= ap_stage_to_rank(pp, pp * v, sty, ids[k]) == r;
                }
            }
    ok(same, "placement agrees with topology.h's stage_ids_this_rank (loop, v)");
}

static char *path_in(const char *dir, const char *name) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s/%s", dir, name);
    return buf;
}

static void test_roundtrip(const char *tmp) {
    const char *names[] = {"gpipe", "1f1b", "interleaved_1f1b", "looped_bfs", "interleaved_zb", "zbv"};
    for (size_t i = 0; i < 6; i++) {
        ap_schedule *s = NULL, *back = NULL, *low = NULL, *lback = NULL;
        int rc = ap_schedule_generate(&s, names[i], NULL, 3, 0, 6, err, sizeof err);
        char *p = path_in(tmp, "rt.csv");
        rc = rc || ap_schedule_dump_csv(s, p, err, sizeof err);
        rc = rc || ap_schedule_load_csv(&back, p, 3, 6, err, sizeof err);
        ok(!rc && ap_schedule_equal(s, back) && back->style == s->style &&
               back->stages_per_rank == s->stages_per_rank && !back->lowered,
           "%s pp3 m6: compute_only CSV loads back identical (%s)", names[i], rc ? err : "ok");
        rc = ap_schedule_lower(s, &low, err, sizeof err);
        rc = rc || ap_schedule_dump_csv(low, p, err, sizeof err);
        rc = rc || ap_schedule_load_csv(&lback, p, 0, 0, err, sizeof err);
        ok(!rc && ap_schedule_equal(low, lback) && lback->lowered &&
               ap_schedule_validate(lback, err, sizeof err) == 0,
           "%s pp3 m6: compute_comms CSV loads back identical and validates (%s)", names[i],
           rc ? err : "ok");
        ap_schedule_free(s);
        ap_schedule_free(back);
        ap_schedule_free(low);
        ap_schedule_free(lback);
    }
}

static void test_torch_fixtures(const char *srcdir) {
    char p1[4096], p2[4096];
    snprintf(p1, sizeof p1, "%s/tests/data/schedule/torch_1f1b_pp2_m4_compute_only.csv", srcdir);
    snprintf(p2, sizeof p2, "%s/tests/data/schedule/torch_1f1b_pp2_m4_compute_comms.csv", srcdir);
    ap_schedule *co = NULL, *cc = NULL, *low = NULL, *gen = NULL;
    int rc = ap_schedule_load_csv(&co, p1, 0, 0, err, sizeof err);
    ok(rc == 0, "PyTorch compute_only CSV (CRLF, idle cells) loads: %s", rc ? err : "ok");
    if (rc) return;
    ok(co->pp == 2 && co->num_stages == 2 && co->microbatches == 4 && co->style == AP_STYLE_LOOP &&
           !co->lowered && co->len[0] == 12 && co->len[1] == 9,
       "shape inferred: pp 2, 2 stages, 4 microbatches, loop, 12 and 9 cells");
    ok(ap_schedule_validate(co, err, sizeof err) == 0, "PyTorch compute_only CSV validates");
    rc = ap_schedule_generate(&gen, "pp_schedule_csv", p1, 2, 1, 4, err, sizeof err);
    ok(rc == 0 && gen->kind == AP_SCHED_CSV, "pp_schedule_csv generator takes the file: %s",
       rc ? err : "ok");
    ap_schedule_free(gen);
    /* PyTorch's Interleaved1F1B with one stage per rank writes this grid */
    rc = ap_schedule_generate(&gen, "Interleaved1F1B", NULL, 2, 1, 4, err, sizeof err);
    ok(rc == 0 && ap_schedule_equal(gen, co), "interleaved_1f1b v=1 pp2 m4 equals PyTorch's grid");
    ap_schedule_free(gen);
    rc = ap_schedule_load_csv(&cc, p2, 2, 4, err, sizeof err);
    ok(rc == 0 && cc->lowered, "PyTorch compute_comms CSV loads as lowered: %s", rc ? err : "ok");
    ok(rc == 0 && ap_schedule_validate(cc, err, sizeof err) == 0, "PyTorch compute_comms CSV validates");
    rc = ap_schedule_lower(co, &low, err, sizeof err);
    ok(rc == 0 && cc && ap_schedule_equal(low, cc),
       "our lowering of the compute_only file equals PyTorch's _add_send_recv output");
    ap_schedule_free(co);
    ap_schedule_free(cc);
    ap_schedule_free(low);
}

/* grids generated by (a transcription of) PyTorch's schedule classes */
static void test_torch_generated(const char *srcdir) {
    struct {
        const char *name;
        int pp, v, m;
    } t[] = {
        {"interleaved_1f1b", 4, 2, 8}, {"interleaved_1f1b", 3, 3, 6}, {"interleaved_1f1b", 4, 2, 3},
        {"looped_bfs", 3, 2, 5},       {"interleaved_zb", 4, 2, 8},   {"interleaved_zb", 3, 2, 3},
        {"zbv", 4, 2, 8},              {"zbv", 3, 2, 4},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char p1[4096], p2[4096];
        snprintf(p1, sizeof p1, "%s/tests/data/schedule/torch_%s_pp%d_v%d_m%d_compute_only.csv", srcdir,
                 t[i].name, t[i].pp, t[i].v, t[i].m);
        snprintf(p2, sizeof p2, "%s/tests/data/schedule/torch_%s_pp%d_v%d_m%d_compute_comms.csv", srcdir,
                 t[i].name, t[i].pp, t[i].v, t[i].m);
        ap_schedule *co = NULL, *cc = NULL, *ours = NULL, *low = NULL;
        int rc = ap_schedule_load_csv(&co, p1, t[i].pp, t[i].m, err, sizeof err);
        rc = rc || ap_schedule_validate(co, err, sizeof err);
        rc = rc || ap_schedule_generate(&ours, t[i].name, NULL, t[i].pp, t[i].v, t[i].m, err, sizeof err);
        ok(!rc && ap_schedule_equal(co, ours) && co->style == ours->style,
           "%s pp%d v%d m%d: PyTorch's compute_only grid loads, validates, equals ours (%s)", t[i].name,
           t[i].pp, t[i].v, t[i].m, rc ? err : "ok");
        rc = ap_schedule_load_csv(&cc, p2, t[i].pp, t[i].m, err, sizeof err);
        rc = rc || ap_schedule_validate(cc, err, sizeof err);
        rc = rc || !co || ap_schedule_lower(co, &low, err, sizeof err);
        ok(!rc && cc->lowered && ap_schedule_equal(cc, low),
           "%s pp%d v%d m%d: PyTorch's compute_comms lowering loads, validates, equals ours (%s)",
           t[i].name, t[i].pp, t[i].v, t[i].m, rc ? err : "ok");
        ap_schedule_free(co);
        ap_schedule_free(cc);
        ap_schedule_free(ours);
        ap_schedule_free(low);
    }
}

/* same compute actions per rank in order, and as many sends and receives
 * (PyTorch's no-op cells take turns in its lowering, so receives may sit
 * at other places) */
static int same_actions(const ap_schedule *a, const ap_schedule *b) {
    if (a->pp != b->pp) return 0;
    for (int r = 0; r < a->pp; r++) {
        int i = 0, j = 0, comm_a = 0, comm_b = 0;
        for (int k = 0; k < a->len[r]; k++) comm_a += a->acts[r][k].type >= AP_ACT_SEND_F;
        for (int k = 0; k < b->len[r]; k++) comm_b += b->acts[r][k].type >= AP_ACT_SEND_F;
        if (comm_a != comm_b) return 0;
        for (;;) {
            while (i < a->len[r] && !ap_act_is_compute(a->acts[r][i].type)) i++;
            while (j < b->len[r] && !ap_act_is_compute(b->acts[r][j].type)) j++;
            if (i == a->len[r] || j == b->len[r]) {
                if (i != a->len[r] || j != b->len[r]) return 0;
                break;
            }
            ap_action x = a->acts[r][i++], y = b->acts[r][j++];
            if (x.type != y.type || x.stage != y.stage || x.mb != y.mb) return 0;
        }
    }
    return 1;
}

/* PyTorch's _PipelineScheduleRuntime._dump_csv(format="compute_comms"):
 * with UNSHARD/RESHARD/REDUCE_GRAD cells from its lowering passes */
static void test_torch_runtime(const char *srcdir) {
    struct {
        const char *name;
        int pp, v, m;
    } t[] = {{"interleaved_1f1b", 2, 2, 4}, {"zbv", 2, 2, 4}};
    for (size_t i = 0; i < 2; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/tests/data/schedule/torch_%s_pp%d_v%d_m%d_runtime_compute_comms.csv",
                 srcdir, t[i].name, t[i].pp, t[i].v, t[i].m);
        ap_schedule *cc = NULL, *ours = NULL, *low = NULL;
        int rc = ap_schedule_load_csv(&cc, p, t[i].pp, t[i].m, err, sizeof err);
        rc = rc || ap_schedule_validate(cc, err, sizeof err);
        rc = rc || ap_schedule_generate(&ours, t[i].name, NULL, t[i].pp, t[i].v, t[i].m, err, sizeof err);
        rc = rc || ap_schedule_lower(ours, &low, err, sizeof err);
        ok(!rc && cc->lowered && same_actions(cc, low),
           "%s pp%d v%d m%d: PyTorch runtime dump (UNSHARD/RESHARD/REDUCE_GRAD) loads, validates, same "
           "compute order and send/recv counts as our lowering (%s)", t[i].name, t[i].pp, t[i].v, t[i].m, rc ? err : "ok");
        ap_schedule_free(cc);
        ap_schedule_free(ours);
        ap_schedule_free(low);
    }
}

static void test_csv_errors(void) {
    struct {
        const char *text, *want;
        int pp, mb;
    } t[] = {
        {"0F0,0X1\n", "t.csv:1:2: '0X1': expected an action type", 0, 0},
        {"0F0,0B0\n1F0,1B0,1F0x\n", "t.csv:2:3:", 0, 0},
        {"0F0,0B0\n", "1 rows but pp size is 2", 2, 0},
        {"0F0,0B0,0F5\n", "t.csv:1:3: microbatch 5, but there are 2 microbatches", 1, 2},
        {"0F0,1F0\n1B0\n", "stage 1 appears on rank 0 and on rank 1", 0, 0},
        {"\"0F0,0B0\n", "unterminated quoted cell", 0, 0},
        {"", "no rows", 0, 0},
        {",,\n", "no actions", 0, 0},
        {"0F0,0B0,2F0,2B0\n", "stage 1 appears on no rank", 0, 0},
        {"0F0,0B0,0123456789012345678901234567890123456789012345678901234567890123456789012F0\n",
         "t.csv:1:3: cell too long", 0, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        ap_schedule *s = NULL;
        err[0] = '\0';
        int rc = ap_schedule_parse_csv(&s, t[i].text, strlen(t[i].text), "t.csv", t[i].pp, t[i].mb, err,
                                       sizeof err);
        ok(rc < 0 && !s && strstr(err, t[i].want), "bad CSV %zu rejected: %s", i, err);
    }
    /* trailing blank lines (an editor's extra newline) are not ranks */
    {
        ap_schedule *s = NULL;
        const char *tb = "0F0,0B0\n1F0,1B0\n\n\n";
        int rc = ap_schedule_parse_csv(&s, tb, strlen(tb), "tb.csv", 0, 0, err, sizeof err);
        ok(rc == 0 && s->pp == 2, "trailing blank lines ignored: %s", rc ? err : "ok");
        ap_schedule_free(s);
    }
    /* a quoted cell as csv.writer would write it if it had to */
    ap_schedule *s = NULL;
    const char *q = "\"0F0\",0B0\n";
    int rc = ap_schedule_parse_csv(&s, q, strlen(q), "q.csv", 1, 1, err, sizeof err);
    ok(rc == 0 && s->len[0] == 2 && s->acts[0][0].type == AP_ACT_F, "quoted cells accepted");
    ap_schedule_free(s);
    rc = ap_schedule_load_csv(&s, "/nonexistent/x.csv", 0, 0, err, sizeof err);
    ok(rc < 0 && strstr(err, "/nonexistent/x.csv: cannot open"), "missing file named: %s", err);
}

static void test_grid(void) {
    ap_schedule *s = NULL;
    ap_schedule_generate(&s, "1f1b", NULL, 2, 1, 2, err, sizeof err);
    char buf[4096];
    ap_schedule_format_grid(s, 1, 2, buf, sizeof buf);
    ok(strstr(buf, "Rank 0") && strstr(buf, "Rank 1") && strstr(buf, ">>1B0<<") &&
           strstr(buf, "<-- ERROR HERE") && strstr(buf, "Step 0:"),
       "grid has rank headers, step labels and the marked cell");
    char small[16];
    size_t want = ap_schedule_format_grid(s, -1, -1, small, sizeof small);
    ok(want > sizeof small && strlen(small) == sizeof small - 1, "grid output is bounded by the buffer");
    ap_schedule_free(s);
}

int main(void) {
    const char *srcdir = getenv("top_srcdir");
    if (!srcdir) srcdir = ".";
    char tmp[] = "/tmp/ap-sched-XXXXXX";
    if (!mkdtemp(tmp)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    test_actions();
    test_names();
    test_placement();
    test_roundtrip(tmp);
    test_torch_fixtures(srcdir);
    test_torch_generated(srcdir);
    test_torch_runtime(srcdir);
    test_csv_errors();
    test_grid();
    unlink(path_in(tmp, "rt.csv"));
    rmdir(tmp);
    return tap_done();
}
