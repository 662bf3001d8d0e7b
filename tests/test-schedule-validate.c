/* test-schedule-validate.c - corrupted schedules are rejected with the grid
 * and the bad cell marked; impossible settings get clear errors. */
#include "tests/tap.h"
#include "trainer/schedule/schedule.h"

#include <string.h>

static char err[65536];

/* Parse a CSV from text and validate it; returns the validator's code
 * (parse failures count as "not rejected by the validator": 1). */
static int check(const char *csv, int pp, int mb) {
    ap_schedule *s = NULL;
    err[0] = '\0';
    if (ap_schedule_parse_csv(&s, csv, strlen(csv), "case.csv", pp, mb, err, sizeof err)) return 1;
    int rc = ap_schedule_validate(s, err, sizeof err);
    ap_schedule_free(s);
    return rc;
}

static int has_grid(void) { return strstr(err, "Rank 0") && strstr(err, "Step 0"); }
static int marked(const char *cell) {
    char m[64];
    snprintf(m, sizeof m, ">>%s<<", cell);
    return strstr(err, m) && strstr(err, "<-- ERROR HERE");
}

/* the 1F1B pp=2 m=4 grid PyTorch writes, and its lowered form */
static const char *CO = "0F0,0F1,,,0F2,0B0,0F3,0B1,,0B2,,0B3\n"
                        ",1F0,1B0,1F1,1B1,1F2,1B2,1F3,1B3\n";
static const char *CC = "0F0,0SEND_F0,0F1,0SEND_F1,0RECV_B0,0F2,0SEND_F2,0B0,0RECV_B1,0F3,0SEND_F3,0B1,"
                        "0RECV_B2,0B2,0RECV_B3,0B3\n"
                        "1RECV_F0,1F0,1RECV_F1,1B0,1SEND_B0,1RECV_F2,1F1,1B1,1SEND_B1,1RECV_F3,1F2,1B2,"
                        "1SEND_B2,1F3,1B3,1SEND_B3\n";

static void edit(char *dst, size_t n, const char *src, const char *from, const char *to) {
    const char *p = strstr(src, from);
    if (!p) {
        snprintf(dst, n, "%s", src);
        return;
    }
    snprintf(dst, n, "%.*s%s%s", (int)(p - src), src, to, p + strlen(from));
}

int main(void) {
    char buf[4096];
    ok(check(CO, 2, 4) == 0, "good compute_only schedule validates");
    ok(check(CC, 2, 4) == 0, "good compute_comms schedule validates");

    /* missing B */
    edit(buf, sizeof buf, CO, ",0B3\n", ",\n");
    ok(check(buf, 2, 4) < 0 && strstr(err, "never runs a backward for microbatch 3") && has_grid(),
       "missing 0B3 rejected with the grid: %.80s", err);
    /* duplicated F */
    edit(buf, sizeof buf, CO, "0F0,0F1,,,", "0F0,0F1,0F1,,");
    ok(check(buf, 2, 4) < 0 && strstr(err, "appears twice") && marked("0F1"),
       "duplicated 0F1 rejected, cell marked: %.80s", err);
    /* B and I+W for one microbatch */
    edit(buf, sizeof buf, CO, ",1B3\n", ",1B3,1I3,1W3\n");
    ok(check(buf, 2, 4) < 0 && strstr(err, "not both") && marked("1I3"), "B plus I for 1/3 rejected: %.80s",
       err);
    /* I without W */
    edit(buf, sizeof buf, CO, ",1B3\n", ",1I3\n");
    ok(check(buf, 2, 4) < 0 && strstr(err, "has no 1W3") && marked("1I3"), "I without W rejected: %.80s",
       err);
    /* W before I */
    edit(buf, sizeof buf, CO, ",1B3\n", ",1W3,1I3\n");
    ok(check(buf, 2, 4) < 0 && strstr(err, "before its input gradient") && marked("1W3"),
       "W before I rejected: %.80s", err);
    /* same-rank order: backward before its forward */
    edit(buf, sizeof buf, CO, ",1F0,1B0,", ",1B0,1F0,");
    ok(check(buf, 2, 4) < 0 && strstr(err, "before the forward 1F0") && marked("1B0"),
       "1B0 before 1F0 rejected: %.80s", err);
    /* cross-rank dependency cycle: rank 1 wants microbatch 1 first, rank 0 waits on 1B0 */
    ok(check("0F0,0B0,0F1,0B1\n1F1,1B1,1F0,1B0\n", 2, 2) < 0 && strstr(err, "deadlock") &&
           strstr(err, "rank 0 step 1: 0B0 waits for the gradient of stage 1 microbatch 0") &&
           strstr(err, "rank 1 step 0: 1F1 waits for the output of stage 0 microbatch 1") && marked("0B0"),
       "dependency cycle across ranks reported as deadlock with the grid: %.120s", err);
    /* unmatched send: drop the receive */
    edit(buf, sizeof buf, CC, "1RECV_F2,", "");
    ok(check(buf, 2, 4) < 0 && strstr(err, "0SEND_F2 has no matching 1RECV_F2") && marked("0SEND_F2"),
       "unmatched 0SEND_F2 rejected: %.80s", err);
    /* missing send */
    edit(buf, sizeof buf, CC, "1SEND_B1,", "");
    ok(check(buf, 2, 4) < 0 && strstr(err, "1B1 is never sent") && marked("1B1"), "missing 1SEND_B1: %.80s",
       err);
    /* send before what it sends */
    edit(buf, sizeof buf, CC, "0F0,0SEND_F0,", "0SEND_F0,0F0,");
    ok(check(buf, 2, 4) < 0 && strstr(err, "before the forward 0F0 it sends") && marked("0SEND_F0"),
       "send before its forward rejected: %.80s", err);
    /* receive posted after the compute that waits on it */
    edit(buf, sizeof buf, CC, "1RECV_F1,1B0,1SEND_B0,", "1B0,1SEND_B0,");
    {
        char b2[4096];
        edit(b2, sizeof b2, buf, "1F1,", "1F1,1RECV_F1,");
        ok(check(b2, 2, 4) < 0 && strstr(err, "runs before its receive") && marked("1F1"),
           "compute before its receive is posted rejected: %.80s", err);
    }
    /* lowered deadlock: rank 1 receives microbatch 1 first but rank 0 sends it after waiting */
    ok(check("0F0,0SEND_F0,0RECV_B0,0B0,0F1,0SEND_F1,0RECV_B1,0B1\n"
             "1RECV_F1,1RECV_F0,1F1,1B1,1SEND_B1,1F0,1B0,1SEND_B0\n",
             2, 2) < 0 &&
           strstr(err, "deadlock") && has_grid(),
       "lowered cycle reported as deadlock: %.80s", err);
    /* stricter runtimes: fine with nonblocking sends and receives, not with blocking ones */
    {
        const char *ss = "0F0,0SEND_F0,0F1,0SEND_F1,0RECV_B0,0RECV_B1,0B0,0B1\n"
                         "1RECV_F0,1F0,1B0,1SEND_B0,1RECV_F1,1F1,1B1,1SEND_B1\n";
        const char *rr = "0F0,0SEND_F0,0RECV_B0,0F1,0SEND_F1,0RECV_B1,0B0,0B1\n"
                         "1RECV_F0,1RECV_F1,1F0,1B0,1SEND_B0,1F1,1B1,1SEND_B1\n";
        ap_schedule *a = NULL, *b = NULL;
        ap_schedule_parse_csv(&a, ss, strlen(ss), "ss.csv", 2, 2, err, sizeof err);
        ap_schedule_parse_csv(&b, rr, strlen(rr), "rr.csv", 2, 2, err, sizeof err);
        ok(ap_schedule_validate(a, err, sizeof err) == 0 && ap_schedule_validate(b, err, sizeof err) == 0,
           "both orders are deadlock-free with nonblocking sends and receives");
        ok(ap_schedule_validate_ex(a, AP_VALIDATE_BLOCKING_SENDS, err, sizeof err) < 0 &&
               strstr(err, "0SEND_F1 waits for rank 1 to post 1RECV_F1") &&
               ap_schedule_validate_ex(a, AP_VALIDATE_BLOCKING_RECVS, err, sizeof err) == 0,
           "late receive post deadlocks blocking sends only: %.100s", err);
        ok(ap_schedule_validate_ex(b, AP_VALIDATE_BLOCKING_RECVS, err, sizeof err) < 0 &&
               strstr(err, "1RECV_F1 waits for rank 0 to send 0SEND_F1") &&
               ap_schedule_validate_ex(b, AP_VALIDATE_BLOCKING_SENDS, err, sizeof err) == 0,
           "early receive deadlocks blocking receives only: %.100s", err);
        ap_schedule_free(a);
        ap_schedule_free(b);
    }
    /* send between stages on one rank (the tip of a V) */
    ok(check("0F0,0SEND_F0,1F0,1B0,0B0\n", 1, 1) < 0 && strstr(err, "no neighbour on another rank"),
       "send between stages on the same rank rejected: %.80s", err);
    /* compute-only schedule with a comm cell mixed in is lowered; SEND in CO flagged by the scan */
    {
        ap_schedule *s = NULL;
        ap_schedule_parse_csv(&s, CO, strlen(CO), "co.csv", 2, 4, err, sizeof err);
        s->acts[0][2] = (ap_action){AP_ACT_SEND_F, 0, 0};
        ok(ap_schedule_validate(s, err, sizeof err) < 0 && strstr(err, "compute-only schedule"),
           "SEND cell in a compute-only schedule rejected");
        s->acts[0][2] = (ap_action){AP_ACT_F, 0, 9};
        ok(ap_schedule_validate(s, err, sizeof err) < 0 && strstr(err, "microbatch 9; expected 0..3") &&
               marked("0F9"),
           "out of range microbatch rejected: %.60s", err);
        ap_schedule_free(s);
    }
    /* a big grid is not printed whole */
    {
        ap_schedule *s = NULL;
        ap_schedule_generate(&s, "gpipe", NULL, 2, 1, 300, err, sizeof err);
        s->acts[1][s->len[1] - 1] = (ap_action){AP_ACT_NONE, 0, 0};
        ok(ap_schedule_validate(s, err, sizeof err) < 0 && strstr(err, "not shown"),
           "grid of 600+ steps summarised: %.60s", err);
        ap_schedule_free(s);
    }

    /* impossible settings */
    struct {
        const char *name;
        int pp, v, m;
        const char *want;
    } bad[] = {
        {"1f1b", 4, 1, 3, "at least as many microbatches as pp ranks: 3 microbatches < pp 4"},
        {"interleaved_1f1b", 4, 2, 9, "multiple of the rounds (2): use 8 or 10"},
        {"interleaved_zb", 2, 2, 5, "multiple of the rounds (2)"},
        {"zbv", 2, 3, 4, "exactly 2 stages per rank, got 3"},
        {"zbv", 2, 1, 4, "exactly 2 stages per rank, got 1"},
        {"gpipe", 2, 2, 4, "one stage per rank"},
        {"1F1B", 2, 3, 4, "one stage per rank"},
        {"2f2b", 2, 1, 4, "unknown schedule '2f2b'"},
        {"pp_schedule_csv", 2, 1, 4, "needs a CSV file"},
        {"gpipe", 0, 1, 4, "pp size 0"},
        {"gpipe", 2, 1, 0, "0 microbatches"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ap_schedule *s = NULL;
        err[0] = '\0';
        int rc = ap_schedule_generate(&s, bad[i].name, NULL, bad[i].pp, bad[i].v, bad[i].m, err, sizeof err);
        ok(rc < 0 && !s && strstr(err, bad[i].want), "%s pp %d v %d m %d rejected: %s", bad[i].name,
           bad[i].pp, bad[i].v, bad[i].m, err);
    }
    ap_schedule *s = NULL;
    ok(ap_schedule_generate(&s, "interleaved_1f1b", NULL, 4, 2, 3, err, sizeof err) == 0,
       "interleaved_1f1b with fewer microbatches than ranks (one round) is allowed");
    ap_schedule_free(s);
    s = NULL;
    ok(ap_schedule_generate(&s, "zbv", NULL, 4, 0, 4, err, sizeof err) == 0 && s->stages_per_rank == 2 &&
           s->style == AP_STYLE_V,
       "zbv defaults to 2 stages per rank in a V");
    ap_schedule_free(s);

    /* random corruptions of every generated schedule, compute-only and lowered:
     * dropping or duplicating any action is always caught; a reordering the
     * validator accepts must also run to the end in the simulator */
    {
        const char *names[] = {"gpipe", "1f1b", "interleaved_1f1b", "looped_bfs", "interleaved_zb", "zbv"};
        unsigned seed = 12345;
        ap_sched_costs c;
        ap_sched_costs_default(&c);
        for (int k = 0; k < 6; k++)
            for (int lowered = 0; lowered < 2; lowered++) {
                ap_schedule *g = NULL, *l = NULL;
                ap_schedule_generate(&g, names[k], NULL, 3, 0, 6, err, sizeof err);
                ap_schedule_lower(g, &l, err, sizeof err);
                ap_schedule *base = lowered ? l : g;
                int drop_caught = 0, dup_caught = 0, trials = 150, swaps_ok = 0, swaps_bad = 0, sim_ok = 1;
                for (int t = 0; t < trials; t++) {
                    ap_schedule *x = ap_schedule_clone(base);
                    seed = seed * 1103515245u + 12345u;
                    int r = (int)((seed >> 8) % (unsigned)x->pp), n = x->len[r];
                    seed = seed * 1103515245u + 12345u;
                    int i = (int)((seed >> 8) % (unsigned)n);
                    while (x->acts[r][i].type == AP_ACT_NONE) i = (i + 1) % n;
                    ap_action a = x->acts[r][i];
                    /* drop */
                    memmove(&x->acts[r][i], &x->acts[r][i + 1], (size_t)(n - i - 1) * sizeof(ap_action));
                    x->len[r]--;
                    drop_caught += ap_schedule_validate(x, err, sizeof err) < 0;
                    /* duplicate at the end of the rank */
                    x->len[r]++;
                    memmove(&x->acts[r][i + 1], &x->acts[r][i], (size_t)(n - i - 1) * sizeof(ap_action));
                    x->acts[r][i] = a;
                    ap_schedule_push(x, r, a);
                    dup_caught += ap_schedule_validate(x, err, sizeof err) < 0;
                    x->len[r]--;
                    /* swap with another cell of the rank */
                    seed = seed * 1103515245u + 12345u;
                    int j = (int)((seed >> 8) % (unsigned)n);
                    x->acts[r][i] = x->acts[r][j];
                    x->acts[r][j] = a;
                    if (ap_schedule_validate(x, err, sizeof err) == 0) {
                        ap_sched_sim sr;
                        swaps_ok++;
                        if (ap_schedule_simulate(x, &c, &sr, err, sizeof err) == 0)
                            ap_sched_sim_free(&sr);
                        else
                            sim_ok = 0;
                    } else {
                        swaps_bad++;
                    }
                    ap_schedule_free(x);
                }
                ok(drop_caught == trials && dup_caught == trials && sim_ok && swaps_bad > 0,
                   "%s pp3 m6 %s: %d/%d drops and %d/%d duplicates caught; %d swaps accepted (all "
                   "simulate), %d rejected",
                   names[k], lowered ? "lowered" : "compute_only", drop_caught, trials, dup_caught, trials,
                   swaps_ok, swaps_bad);
                ap_schedule_free(g);
                ap_schedule_free(l);
            }
    }

    /* forward-only (validation) schedules from every training schedule */
    {
        const char *names[] = {"gpipe", "1f1b", "interleaved_1f1b", "looped_bfs", "interleaved_zb", "zbv"};
        ap_sched_costs c;
        ap_sched_costs_default(&c);
        for (int k = 0; k < 6; k++) {
            ap_schedule *g = NULL, *f = NULL, *l = NULL, *back = NULL;
            ap_sched_sim r;
            int rc = ap_schedule_generate(&g, names[k], NULL, 4, 0, 8, err, sizeof err);
            rc = rc || ap_schedule_forward_only(&f, g, err, sizeof err);
            rc = rc || ap_schedule_lower(f, &l, err, sizeof err) || ap_schedule_validate(l, err, sizeof err);
            int fonly = !rc, nf = 0;
            for (int rk = 0; !rc && rk < l->pp; rk++)
                for (int i = 0; i < l->len[rk]; i++) {
                    int t = l->acts[rk][i].type;
                    nf += t == AP_ACT_F;
                    fonly &= t == AP_ACT_F || t == AP_ACT_SEND_F || t == AP_ACT_RECV_F;
                }
            char csv[65536];
            FILE *mf = fmemopen(csv, sizeof csv, "w");
            ap_schedule_write_csv(f, mf);
            fclose(mf);
            rc = rc || ap_schedule_parse_csv(&back, csv, strlen(csv), "fo.csv", 0, 0, err, sizeof err);
            rc = rc || ap_schedule_simulate(f, &c, &r, err, sizeof err);
            int v = g ? g->stages_per_rank : 0;
            ok(!rc && fonly && nf == 8 * 4 * v && f->forward_only && back->forward_only &&
                   ap_schedule_equal(f, back) && r.peak_live[0] == 0,
               "%s forward-only: validates, lowered has only F/SEND_F/RECV_F, reloads as forward-only, "
               "makespan %g: %s", names[k], rc ? 0.0 : r.makespan, rc ? err : "ok");
            if (!rc && k == 0)
                ok(r.makespan == 8 + 4 - 1, "gpipe forward-only p4 m8 makespan m+p-1 = 11 (%g)", r.makespan);
            if (!rc) ap_sched_sim_free(&r);
            if (f && k == 1) {
                f->acts[0][0] = (ap_action){AP_ACT_B, 0, 0};
                ok(ap_schedule_validate(f, err, sizeof err) < 0 && strstr(err, "in a forward-only schedule"),
                   "a backward in a forward-only schedule is rejected");
            }
            ap_schedule_free(g);
            ap_schedule_free(f);
            ap_schedule_free(l);
            ap_schedule_free(back);
        }
    }

    int n = 0;
    ok(ap_schedule_check_batch(12, 3, &n, err, sizeof err) == 0 && n == 4, "batch 12 / microbatch 3 -> 4");
    ok(ap_schedule_check_batch(10, 3, &n, err, sizeof err) < 0 &&
           strstr(err, "batch_size 10 is not divisible by autopipeline.pp_microbatch_size 3"),
       "batch 10 / microbatch 3 rejected: %s", err);
    ok(ap_schedule_check_batch(8, 0, &n, err, sizeof err) < 0 && strstr(err, "pp_microbatch_size is 0"),
       "microbatch size 0 rejected");
    ok(ap_schedule_check_batch(0, 1, &n, err, sizeof err) < 0 && strstr(err, "batch_size is 0"),
       "batch size 0 rejected");
    return tap_done();
}
