/* test-schedule-sim.c - every generator over many (pp, microbatches,
 * stages per rank) validates before and after lowering, and the simulator
 * gives the textbook figures:
 *   GPipe, 1F1B: bubble (p-1)/(m+p-1); peak live on rank 0: m (GPipe), p (1F1B)
 *   interleaved 1F1B and looped BFS, v stages/rank, m % p == 0: (p-1)/(v*m+p-1)
 *   interleaved_zb (m >= p) and zbv (m >= 2p), F=I=W=1: every rank idles at
 *   most (p-1) time units, i.e. bubble <= (p-1)/(3*v*m+p-1), a sixth of
 *   1F1B's figure at v=2. */
#include "tests/tap.h"
#include "trainer/schedule/schedule.h"

#include <string.h>
#include <unistd.h>

static char err[65536];

static int near(double a, double b) { return fabs(a - b) < 1e-9; }

/* generate, validate, lower, validate, simulate */
static int build(const char *name, int p, int v, int m, ap_schedule **s, ap_sched_sim *r) {
    ap_schedule *low = NULL;
    ap_sched_costs c;
    ap_sched_costs_default(&c);
    *s = NULL;
    if (ap_schedule_generate(s, name, NULL, p, v, m, err, sizeof err)) return -1;
    if (ap_schedule_lower(*s, &low, err, sizeof err) || ap_schedule_validate(low, err, sizeof err)) {
        ap_schedule_free(low);
        return -2;
    }
    /* a lowered schedule has no SEND/RECV between stages on one rank */
    for (int rk = 0; rk < low->pp; rk++)
        for (int i = 0; i < low->len[rk]; i++) {
            ap_action a = low->acts[rk][i];
            int peer = a.type == AP_ACT_SEND_F ? a.stage + 1 : a.type == AP_ACT_SEND_B ? a.stage - 1 : -1;
            if (peer >= 0 && low->stage_to_rank[peer] == rk) {
                snprintf(err, sizeof err, "send between stages %d and %d on rank %d", a.stage, peer, rk);
                ap_schedule_free(low);
                return -3;
            }
        }
    /* PyTorch's lowering order is safe for stricter runtimes too */
    if (ap_schedule_validate_ex(low, AP_VALIDATE_BLOCKING_SENDS, err, sizeof err) ||
        ap_schedule_validate_ex(low, AP_VALIDATE_BLOCKING_RECVS, err, sizeof err)) {
        ap_schedule_free(low);
        return -5;
    }
    ap_schedule_free(low);
    if (ap_schedule_simulate(*s, &c, r, err, sizeof err)) return -4;
    return 0;
}

static double max_idle(const ap_sched_sim *r) {
    double mx = 0;
    for (int k = 0; k < r->pp; k++)
        if (r->makespan - r->busy[k] > mx) mx = r->makespan - r->busy[k];
    return mx;
}

int main(void) {
    const int pps[] = {1, 2, 3, 4, 5, 8};
    /* GPipe and 1F1B: every (p, m) */
    for (size_t i = 0; i < sizeof pps / sizeof pps[0]; i++) {
        int p = pps[i];
        for (int m = 1; m <= 3 * p + 1; m++) {
            const char *names[2] = {"gpipe", "1f1b"};
            for (int k = 0; k < 2; k++) {
                if (k == 1 && m < p) continue;
                ap_schedule *s;
                ap_sched_sim r;
                int rc = build(names[k], p, 1, m, &s, &r);
                if (rc) {
                    ok(0, "%s p%d m%d builds: %s", names[k], p, m, err);
                    ap_schedule_free(s);
                    continue;
                }
                double want = (double)(p - 1) / (m + p - 1);
                int all = 1;
                for (int rk = 0; rk < p; rk++) all &= near(r.bubble[rk], want);
                int peak0 = k == 0 ? m : p;
                int peaks = 1; /* 1F1B: rank r holds min(m, p - r) */
                for (int rk = 0; rk < p && k == 1; rk++) peaks &= r.peak_live[rk] == (m < p - rk ? m : p - rk);
                ok(all && near(r.makespan, 3.0 * (m + p - 1)) && r.peak_live[0] == peak0 && peaks,
                   "%s p%d m%d: bubble %.4f = (p-1)/(m+p-1) = %.4f on every rank, makespan %g, rank 0 "
                   "peak live %d (want %d)",
                   names[k], p, m, r.bubble_mean, want, r.makespan, r.peak_live[0], peak0);
                ap_sched_sim_free(&r);
                ap_schedule_free(s);
            }
        }
    }
    /* interleaved 1F1B and looped BFS: v stages per rank */
    for (size_t i = 0; i < sizeof pps / sizeof pps[0]; i++) {
        int p = pps[i];
        for (int v = 1; v <= 4; v++)
            for (int m = 1; m <= 3 * p; m++) {
                const char *names[2] = {"interleaved_1f1b", "looped_bfs"};
                for (int k = 0; k < 2; k++) {
                    ap_schedule *s;
                    ap_sched_sim r;
                    int rounds = m / p > 1 ? m / p : 1;
                    int rc = build(names[k], p, v, m, &s, &r);
                    if (k == 0 && m % rounds) {
                        ok(rc == -1 && strstr(err, "rounds"), "%s p%d v%d m%d rejected: %s", names[k], p,
                           v, m, err);
                        ap_schedule_free(s);
                        continue;
                    }
                    if (rc) {
                        ok(0, "%s p%d v%d m%d builds: %s", names[k], p, v, m, err);
                        ap_schedule_free(s);
                        continue;
                    }
                    if (m % p == 0) {
                        double want = (double)(p - 1) / (v * m + p - 1);
                        ok(near(r.bubble_mean, want) && near(r.makespan, 3.0 * (v * m + p - 1)),
                           "%s p%d v%d m%d: bubble %.4f = (p-1)/(v*m+p-1) = %.4f", names[k], p, v, m,
                           r.bubble_mean, want);
                    } else {
                        ok(r.bubble_mean < 1, "%s p%d v%d m%d: validates, bubble %.4f", names[k], p, v, m,
                           r.bubble_mean);
                    }
                    ap_sched_sim_free(&r);
                    ap_schedule_free(s);
                }
            }
    }
    /* zero bubble: interleaved_zb (v 1..3) and zbv (v = 2) with F = I = W = 1 */
    for (size_t i = 0; i < sizeof pps / sizeof pps[0]; i++) {
        int p = pps[i];
        for (int v = 1; v <= 3; v++)
            for (int m = 1; m <= 3 * p; m++) {
                const char *names[2] = {"interleaved_zb", "zbv"};
                for (int k = 0; k < 2; k++) {
                    if (k == 1 && v != 2) continue;
                    int rounds = m / p > 1 ? m / p : 1;
                    ap_schedule *s;
                    ap_sched_sim r;
                    int rc = build(names[k], p, v, m, &s, &r);
                    if (k == 0 && m % rounds) {
                        ok(rc == -1 && strstr(err, "rounds"), "%s p%d v%d m%d rejected: %s", names[k], p,
                           v, m, err);
                        ap_schedule_free(s);
                        continue;
                    }
                    if (rc) {
                        ok(0, "%s p%d v%d m%d builds: %s", names[k], p, v, m, err);
                        ap_schedule_free(s);
                        continue;
                    }
                    int uses_split = 1; /* every backward is split into I and W */
                    for (int rk = 0; rk < p; rk++)
                        for (int j = 0; j < s->len[rk]; j++) uses_split &= s->acts[rk][j].type != AP_ACT_B;
                    int bound_applies = k == 0 ? m >= p : m >= 2 * p;
                    double bound = (double)(p - 1) / (3.0 * v * m + p - 1);
                    if (bound_applies)
                        ok(uses_split && max_idle(&r) <= p - 1 + 1e-9 && r.bubble_mean <= bound + 1e-9,
                           "%s p%d v%d m%d: idle %g <= p-1 per rank, bubble %.4f <= %.4f", names[k], p, v,
                           m, max_idle(&r), r.bubble_mean, bound);
                    else
                        ok(uses_split, "%s p%d v%d m%d: validates, bubble %.4f", names[k], p, v, m,
                           r.bubble_mean);
                    ap_sched_sim_free(&r);
                    ap_schedule_free(s);
                }
            }
    }
    /* zbv beats 1F1B at the same work: p=4, m=8, chunks of half a stage */
    {
        ap_schedule *a, *b;
        ap_sched_sim ra, rb;
        build("1f1b", 4, 1, 8, &a, &ra);
        build("zbv", 4, 2, 8, &b, &rb);
        ok(rb.bubble_mean < ra.bubble_mean / 4, "zbv bubble %.4f is under a quarter of 1f1b's %.4f",
           rb.bubble_mean, ra.bubble_mean);
        ap_sched_sim_free(&ra);
        ap_sched_sim_free(&rb);
        ap_schedule_free(a);
        ap_schedule_free(b);
    }
    /* costs: given per type, per stage, and comm */
    {
        ap_schedule *s;
        ap_sched_sim r;
        ap_sched_costs c;
        build("gpipe", 2, 1, 4, &s, &r);
        ap_sched_sim_free(&r);
        ap_sched_costs_default(&c);
        ok(ap_sched_costs_parse(&c, "F=2,B=3,comm=0.5", err, sizeof err) == 0 && c.cost[AP_ACT_F] == 2 &&
               c.cost[AP_ACT_B] == 3 && c.comm == 0.5 && c.cost[AP_ACT_I] == 1,
           "costs parse F=2,B=3,comm=0.5");
        /* GPipe p=2 m=4: 5 forwards + 5 backwards along the critical path, 2 hops */
        ap_schedule_simulate(s, &c, &r, err, sizeof err);
        ok(near(r.makespan, 5 * 2 + 5 * 3 + 2 * 0.5), "gpipe p2 m4 with F=2 B=3 comm=0.5: makespan %g = 26",
           r.makespan);
        ap_sched_sim_free(&r);
        double fst[2] = {1, 3};
        ap_sched_costs_default(&c);
        c.stage_cost[AP_ACT_F] = fst;
        ap_schedule_simulate(s, &c, &r, err, sizeof err);
        /* stage 1 forwards cost 3: rank 1 is the bottleneck, 1 + 4*3 + 4*2 + 2 */
        ok(near(r.makespan, 1 + 4 * 3 + 4 * 2 + 2) && near(r.busy[1], 4 * 3 + 4 * 2),
           "per-stage forward costs (1, 3): makespan %g = 23", r.makespan);
        ap_sched_sim_free(&r);
        ap_sched_costs_default(&c);
        ok(ap_sched_costs_parse(&c, "F@1=3", err, sizeof err) == 0, "costs parse F@1=3");
        ap_schedule_simulate(s, &c, &r, err, sizeof err);
        ok(near(r.makespan, 1 + 4 * 3 + 4 * 2 + 2), "F@1=3 gives the same makespan as the array (%g)",
           r.makespan);
        ap_sched_sim_free(&r);
        const char *bad[] = {"F", "X=1", "F=-1", "F=1,,", "F=abc", "F@x=1", "comm@1=2", "F@999=1"};
        for (int i = 0; i < 8; i++) {
            err[0] = '\0';
            ok(ap_sched_costs_parse(&c, bad[i], err, sizeof err) < 0 && err[0],
               "costs '%s' rejected: %s", bad[i], err);
        }
        ap_schedule_free(s);
    }
    /* costs measured in a run: from our own trace (round trip) and from the executor's format */
    {
        ap_schedule *s;
        ap_sched_sim r, r2;
        ap_sched_costs c, m;
        char path[] = "/tmp/ap-sched-trace-XXXXXX";
        int fd = mkstemp(path);
        build("interleaved_1f1b", 2, 2, 4, &s, &r);
        ap_sched_sim_free(&r);
        ap_sched_costs_default(&c);
        ap_sched_costs_parse(&c, "F=1.5,B=2,B@3=4,F@0=0.5", err, sizeof err);
        ap_schedule_simulate(s, &c, &r, err, sizeof err);
        FILE *f = fdopen(fd, "w");
        ap_schedule_write_trace(s, &r, f);
        fclose(f);
        ap_sched_costs_default(&m);
        const char *paths[1] = {path};
        int n = ap_sched_costs_from_traces(&m, paths, 1, err, sizeof err);
        int rc = n > 0 ? ap_schedule_simulate(s, &m, &r2, err, sizeof err) : -1;
        ok(n == 32 && rc == 0 && near(r2.makespan, r.makespan) && near(m.over[AP_ACT_B][3], 4) &&
               near(m.over[AP_ACT_F][0], 0.5) && near(m.over[AP_ACT_F][1], 1.5),
           "costs read back from the simulated trace predict the same makespan (%g, %g), %d events",
           rc ? 0.0 : r2.makespan, r.makespan, n);
        if (!rc) ap_sched_sim_free(&r2);
        ap_sched_sim_free(&r);
        /* the executor's trace: microseconds, other events mixed in */
        const char *exec_trace =
            "{\"traceEvents\":[\n"
            "{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":0,\"args\":{\"name\":\"rank 0\"}},\n"
            "{\"name\":\"0F0\",\"cat\":\"F\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":0,\"dur\":1000},\n"
            "{\"name\":\"0F1\",\"cat\":\"F\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":1000,\"dur\":3000},\n"
            "{\"name\":\"0SEND_F1\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":4000,\"dur\":500},\n"
            "{\"name\":\"optimizer\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":4000,\"dur\":500},\n"
            "{\"name\":\"0B0\",\"cat\":\"B\",\"ph\":\"X\",\"pid\":0,\"tid\":0,\"ts\":5000,\"dur\":6000}\n"
            "],\"displayTimeUnit\":\"ms\"}\n";
        f = fopen(path, "w");
        fputs(exec_trace, f);
        fclose(f);
        ap_sched_costs_default(&m);
        n = ap_sched_costs_from_traces(&m, paths, 1, err, sizeof err);
        ok(n == 3 && near(m.over[AP_ACT_F][0], 2) && near(m.cost[AP_ACT_F], 2) && near(m.cost[AP_ACT_B], 6) &&
               near(m.cost[AP_ACT_I], 3) && near(m.cost[AP_ACT_W], 3) && !m.has_over[AP_ACT_F][1],
           "executor trace: F mean 2 ms, B 6 ms, I and W half of B; sends and other events ignored (%d)", n);
        const char *bad[] = {"not json", "{\"x\": 1}", "{\"traceEvents\": [{\"name\": \"opt\", \"ph\": \"X\", \"dur\": 1}]}"};
        const char *want[] = {"expected a Chrome trace", "expected a Chrome trace", "no F, B, I or W events"};
        for (int i = 0; i < 3; i++) {
            f = fopen(path, "w");
            fputs(bad[i], f);
            fclose(f);
            err[0] = '\0';
            ok(ap_sched_costs_from_traces(&m, paths, 1, err, sizeof err) < 0 && strstr(err, want[i]),
               "bad trace %d rejected: %s", i, err);
        }
        const char *missing[1] = {"/nonexistent/trace.json"};
        ok(ap_sched_costs_from_traces(&m, missing, 1, err, sizeof err) < 0 && strstr(err, "cannot open"),
           "missing trace file named: %s", err);
        unlink(path);
        ap_schedule_free(s);
    }
    /* peak live per stage is what the executor sizes activation slots by */
    {
        ap_schedule *s;
        ap_sched_sim r;
        build("interleaved_1f1b", 2, 2, 4, &s, &r);
        int sum_ok = 1;
        for (int rk = 0; rk < 2; rk++) {
            int st[4], n = ap_schedule_rank_stages(s, rk, st, 4), sum = 0;
            for (int j = 0; j < n; j++) sum += r.peak_live_stage[st[j]];
            sum_ok &= n == 2 && sum >= r.peak_live[rk];
        }
        ok(sum_ok, "per-stage peaks bound the per-rank peak");
        ap_sched_sim_free(&r);
        ap_schedule_free(s);
    }
    return tap_done();
}
