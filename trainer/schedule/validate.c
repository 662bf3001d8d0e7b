/* validate.c - prove a schedule complete and deadlock-free before it runs.
 *
 * Two passes. The scan checks each cell alone and the counts: stage and
 * microbatch in range, each stage on one rank, F and B (or I then W)
 * exactly once per stage and microbatch, same-rank order (B/I after F, W
 * after I, SEND after what it sends), every SEND matched by one RECV on the
 * peer and posted before the compute that waits on it. The run then plays
 * all ranks with the executor's semantics: sends and receive posts never
 * block (MPI_Isend / MPI_Irecv, all posted receives are eventually matched),
 * a compute waits until its input exists: the previous stage's F (next
 * stage's B/I) on the same rank, or the peer's SEND for a lowered schedule,
 * or that action anywhere for a compute-only one. A round in which no rank
 * moves is a deadlock, reported with the blocked cells. Flags make sends or
 * receives blocking, for stricter runtimes. */
#include "trainer/schedule/schedule.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define GRID_MAX_STEPS 400 /* larger grids are not printed whole */

typedef struct {
    const ap_schedule *s;
    char *err;
    size_t errlen;
} vctx;

/* Message, then the step grid with the bad cell marked. */
static int fail_at(vctx *v, int rank, int step, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int fail_at(vctx *v, int rank, int step, const char *fmt, ...) {
    if (!v->err || !v->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(v->err, v->errlen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n + 40 >= v->errlen) return -1;
    int steps = 0;
    for (int r = 0; r < v->s->pp; r++)
        if (v->s->len[r] > steps) steps = v->s->len[r];
    if (steps > GRID_MAX_STEPS) {
        snprintf(v->err + n, v->errlen - (size_t)n, "\n(grid of %d steps not shown; dump it with "
                 "`autopipe schedule --csv FILE`)\n", steps);
        return -1;
    }
    n += snprintf(v->err + n, v->errlen - (size_t)n, "\n\nschedule (%s):\n",
                  v->s->lowered ? "compute_comms" : "compute_only");
    if ((size_t)n < v->errlen) ap_schedule_format_grid(v->s, rank, step, v->err + n, v->errlen - (size_t)n);
    return -1;
}

static int cross_rank(const ap_schedule *s, int a, int b) {
    return s->stage_to_rank[a] != s->stage_to_rank[b];
}

int ap_schedule_validate(const ap_schedule *s, char *err, size_t errlen) {
    return ap_schedule_validate_ex(s, 0, err, errlen);
}

int ap_schedule_validate_ex(const ap_schedule *s, int flags, char *err, size_t errlen) {
    vctx v = {s, err, errlen};
    int ns = s->num_stages, m = s->microbatches, p = s->pp, rv = -1;
    if (p < 1 || ns < 1 || m < 1)
        return fail_at(&v, -1, -1, "schedule has pp %d, %d stages, %d microbatches; expected positive",
                       p, ns, m);
    if ((double)ns * m > AP_SCHED_MAX_CELLS)
        return fail_at(&v, -1, -1, "%d stages x %d microbatches is beyond the supported %d", ns, m,
                       AP_SCHED_MAX_CELLS);
    for (int st = 0; st < ns; st++)
        if (s->stage_to_rank[st] < 0 || s->stage_to_rank[st] >= p)
            return fail_at(&v, -1, -1, "stage %d is placed on rank %d; expected 0..%d", st,
                           s->stage_to_rank[st], p - 1);
    size_t nkey = (size_t)ns * (size_t)m * AP_ACT_NTYPES;
    /* per (stage, mb, type): occurrences, first position as rank/step, done flag */
    int *count = calloc(nkey, sizeof(int));
    int *prank = malloc(nkey * sizeof(int));
    int *pstep = malloc(nkey * sizeof(int));
    char *done = calloc(nkey, 1);
    int *pc = calloc((size_t)p, sizeof(int));
    if (!count || !prank || !pstep || !done || !pc) {
        fail_at(&v, -1, -1, "out of memory validating the schedule");
        goto out;
    }
#define KEY(st, mb, ty) (((size_t)(st) * (size_t)m + (size_t)(mb)) * AP_ACT_NTYPES + (size_t)(ty))

    /* ---- scan: every cell alone, first positions, counts ---- */
    for (int r = 0; r < p; r++)
        for (int i = 0; i < s->len[r]; i++) {
            ap_action a = s->acts[r][i];
            if (a.type == AP_ACT_NONE) continue;
            char c[64];
            ap_action_format(c, sizeof c, a);
            if (a.type < 0 || a.type >= AP_ACT_NTYPES) {
                fail_at(&v, r, i, "rank %d step %d: unknown action type %d", r, i, a.type);
                goto out;
            }
            if (a.stage < 0 || a.stage >= ns) {
                fail_at(&v, r, i, "rank %d step %d: %s names stage %d; expected 0..%d", r, i, c, a.stage,
                        ns - 1);
                goto out;
            }
            if (a.mb < 0 || a.mb >= m) {
                fail_at(&v, r, i, "rank %d step %d: %s names microbatch %d; expected 0..%d", r, i, c,
                        a.mb, m - 1);
                goto out;
            }
            if (s->stage_to_rank[a.stage] != r) {
                fail_at(&v, r, i, "rank %d step %d: %s is for stage %d, which lives on rank %d", r, i, c,
                        a.stage, s->stage_to_rank[a.stage]);
                goto out;
            }
            if (s->forward_only && (a.type == AP_ACT_B || a.type == AP_ACT_I || a.type == AP_ACT_W ||
                                    a.type == AP_ACT_SEND_B || a.type == AP_ACT_RECV_B)) {
                fail_at(&v, r, i, "rank %d step %d: %s in a forward-only schedule", r, i, c);
                goto out;
            }
            if (!s->lowered && !ap_act_is_compute(a.type)) {
                fail_at(&v, r, i, "rank %d step %d: %s in a compute-only schedule", r, i, c);
                goto out;
            }
            size_t k = KEY(a.stage, a.mb, a.type);
            if (count[k]++) {
                fail_at(&v, r, i, "rank %d step %d: %s appears twice (first at rank %d step %d); "
                        "expected once per stage and microbatch", r, i, c, prank[k], pstep[k]);
                goto out;
            }
            prank[k] = r;
            pstep[k] = i;
            int st = a.stage, mb = a.mb;
            switch (a.type) {
            case AP_ACT_B:
            case AP_ACT_I:
                if (count[KEY(st, mb, a.type == AP_ACT_B ? AP_ACT_I : AP_ACT_B)]) {
                    fail_at(&v, r, i, "rank %d step %d: %s, but stage %d microbatch %d already has a "
                            "%s; expected B or I+W, not both", r, i, c, st, mb,
                            a.type == AP_ACT_B ? "I" : "B");
                    goto out;
                }
                /* fall through */
            case AP_ACT_F:
            case AP_ACT_W:
                if (a.type != AP_ACT_F && !count[KEY(st, mb, AP_ACT_F)]) {
                    fail_at(&v, r, i, "rank %d step %d: %s before the forward %dF%d of its microbatch",
                            r, i, c, st, mb);
                    goto out;
                }
                if (a.type == AP_ACT_W && !count[KEY(st, mb, AP_ACT_I)]) {
                    fail_at(&v, r, i, "rank %d step %d: %s before its input gradient %dI%d", r, i, c, st,
                            mb);
                    goto out;
                }
                break;
            case AP_ACT_SEND_F:
            case AP_ACT_RECV_F: {
                int from = a.type == AP_ACT_SEND_F ? st : st - 1, to = from + 1;
                if (from < 0 || to >= ns || !cross_rank(s, from, to)) {
                    fail_at(&v, r, i, "rank %d step %d: %s, but stage %d has no neighbour on another "
                            "rank to %s", r, i, c, st, a.type == AP_ACT_SEND_F ? "send to" : "receive from");
                    goto out;
                }
                if (a.type == AP_ACT_SEND_F && !count[KEY(st, mb, AP_ACT_F)]) {
                    fail_at(&v, r, i, "rank %d step %d: %s before the forward %dF%d it sends", r, i, c,
                            st, mb);
                    goto out;
                }
                break;
            }
            case AP_ACT_SEND_B:
            case AP_ACT_RECV_B: {
                int from = a.type == AP_ACT_SEND_B ? st : st + 1, to = from - 1;
                if (to < 0 || from >= ns || !cross_rank(s, from, to)) {
                    fail_at(&v, r, i, "rank %d step %d: %s, but stage %d has no neighbour on another "
                            "rank to %s", r, i, c, st, a.type == AP_ACT_SEND_B ? "send to" : "receive from");
                    goto out;
                }
                if (a.type == AP_ACT_SEND_B && !count[KEY(st, mb, AP_ACT_B)] &&
                    !count[KEY(st, mb, AP_ACT_I)]) {
                    fail_at(&v, r, i, "rank %d step %d: %s before the backward %dB%d / %dI%d it sends",
                            r, i, c, st, mb, st, mb);
                    goto out;
                }
                break;
            }
            default: break;
            }
        }

    /* ---- completeness and matching ---- */
    for (int st = 0; st < ns; st++)
        for (int mb = 0; mb < m; mb++) {
            int rk = s->stage_to_rank[st];
            int nb = count[KEY(st, mb, AP_ACT_B)], ni = count[KEY(st, mb, AP_ACT_I)];
            int nw = count[KEY(st, mb, AP_ACT_W)];
            if (!count[KEY(st, mb, AP_ACT_F)]) {
                fail_at(&v, -1, -1, "stage %d (rank %d) never runs forward %dF%d", st, rk, st, mb);
                goto out;
            }
            if (!s->forward_only && !nb && !ni) {
                fail_at(&v, -1, -1, "stage %d (rank %d) never runs a backward for microbatch %d "
                        "(expected %dB%d, or %dI%d and %dW%d)", st, rk, mb, st, mb, st, mb, st, mb);
                goto out;
            }
            if (ni && !nw) {
                fail_at(&v, prank[KEY(st, mb, AP_ACT_I)], pstep[KEY(st, mb, AP_ACT_I)],
                        "stage %d (rank %d): %dI%d has no %dW%d; the weight gradient is never computed",
                        st, rk, st, mb, st, mb);
                goto out;
            }
            if (!s->lowered) continue;
            /* forward edge st -> st+1 and backward edge st -> st-1 across ranks */
            for (int dir = 0; dir < (s->forward_only ? 1 : 2); dir++) {
                int peer = dir == 0 ? st + 1 : st - 1;
                if (peer < 0 || peer >= ns || !cross_rank(s, st, peer)) continue;
                int send = dir == 0 ? AP_ACT_SEND_F : AP_ACT_SEND_B;
                int recv = dir == 0 ? AP_ACT_RECV_F : AP_ACT_RECV_B;
                int wait = dir == 0 ? AP_ACT_F : (count[KEY(peer, mb, AP_ACT_B)] ? AP_ACT_B : AP_ACT_I);
                size_t ks = KEY(st, mb, send), kr = KEY(peer, mb, recv), kw = KEY(peer, mb, wait);
                const char *sn = ap_act_type_name(send), *rn = ap_act_type_name(recv);
                if (!count[ks]) {
                    int src = dir == 0 ? AP_ACT_F : (nb ? AP_ACT_B : AP_ACT_I);
                    size_t kc = KEY(st, mb, src);
                    fail_at(&v, prank[kc], pstep[kc], "rank %d: %d%s%d is never sent to stage %d on "
                            "rank %d (expected %d%s%d after it)", rk, st, ap_act_type_name(src), mb,
                            peer, s->stage_to_rank[peer], st, sn, mb);
                    goto out;
                }
                if (!count[kr]) {
                    fail_at(&v, prank[ks], pstep[ks], "rank %d: %d%s%d has no matching %d%s%d on rank %d",
                            rk, st, sn, mb, peer, rn, mb, s->stage_to_rank[peer]);
                    goto out;
                }
                if (count[kw] && pstep[kr] > pstep[kw]) {
                    fail_at(&v, prank[kw], pstep[kw], "rank %d step %d: %d%s%d runs before its receive "
                            "%d%s%d (step %d) is posted", prank[kw], pstep[kw], peer,
                            ap_act_type_name(wait), mb, peer, rn, mb, pstep[kr]);
                    goto out;
                }
            }
        }

    /* ---- run all ranks with the executor's blocking semantics ---- */
    for (;;) {
        int left = 0, moved = 0;
        for (int r = 0; r < p; r++) {
            while (pc[r] < s->len[r]) {
                ap_action a = s->acts[r][pc[r]];
                int st = a.stage, mb = a.mb, ready = 1;
                if (a.type == AP_ACT_F && st > 0) {
                    int lowered_edge = s->lowered && cross_rank(s, st - 1, st);
                    ready = done[KEY(st - 1, mb, lowered_edge ? AP_ACT_SEND_F : AP_ACT_F)];
                } else if ((a.type == AP_ACT_B || a.type == AP_ACT_I) && st < ns - 1) {
                    if (s->lowered && cross_rank(s, st + 1, st))
                        ready = done[KEY(st + 1, mb, AP_ACT_SEND_B)];
                    else
                        ready = done[KEY(st + 1, mb, AP_ACT_B)] || done[KEY(st + 1, mb, AP_ACT_I)];
                } else if ((flags & AP_VALIDATE_BLOCKING_SENDS) && a.type == AP_ACT_SEND_F) {
                    ready = done[KEY(st + 1, mb, AP_ACT_RECV_F)];
                } else if ((flags & AP_VALIDATE_BLOCKING_SENDS) && a.type == AP_ACT_SEND_B) {
                    ready = done[KEY(st - 1, mb, AP_ACT_RECV_B)];
                } else if ((flags & AP_VALIDATE_BLOCKING_RECVS) && a.type == AP_ACT_RECV_F) {
                    ready = done[KEY(st - 1, mb, AP_ACT_SEND_F)];
                } else if ((flags & AP_VALIDATE_BLOCKING_RECVS) && a.type == AP_ACT_RECV_B) {
                    ready = done[KEY(st + 1, mb, AP_ACT_SEND_B)];
                }
                if (!ready) break;
                if (a.type != AP_ACT_NONE) done[KEY(st, mb, a.type)] = 1;
                pc[r]++;
                moved = 1;
            }
            if (pc[r] < s->len[r]) left = 1;
        }
        if (!left) break;
        if (!moved) {
            /* deadlock: name what every blocked rank waits for */
            char why[1024];
            size_t w = 0;
            int first = -1;
            for (int r = 0; r < p && w < sizeof why; r++) {
                if (pc[r] >= s->len[r]) continue;
                if (first < 0) first = r;
                ap_action a = s->acts[r][pc[r]];
                char c[64];
                ap_action_format(c, sizeof c, a);
                int n;
                if (a.type == AP_ACT_RECV_F || a.type == AP_ACT_RECV_B) {
                    int peer = a.type == AP_ACT_RECV_F ? a.stage - 1 : a.stage + 1;
                    n = snprintf(why + w, sizeof why - w, "\n  rank %d step %d: %s waits for rank %d to "
                                 "send %d%s%d", r, pc[r], c, s->stage_to_rank[peer], peer,
                                 a.type == AP_ACT_RECV_F ? "SEND_F" : "SEND_B", a.mb);
                } else if (a.type == AP_ACT_SEND_F || a.type == AP_ACT_SEND_B) {
                    int peer = a.type == AP_ACT_SEND_F ? a.stage + 1 : a.stage - 1;
                    n = snprintf(why + w, sizeof why - w, "\n  rank %d step %d: %s waits for rank %d to "
                                 "post %d%s%d", r, pc[r], c, s->stage_to_rank[peer], peer,
                                 a.type == AP_ACT_SEND_F ? "RECV_F" : "RECV_B", a.mb);
                } else if (a.type == AP_ACT_F) {
                    n = snprintf(why + w, sizeof why - w, "\n  rank %d step %d: %s waits for the output "
                                 "of stage %d microbatch %d", r, pc[r], c, a.stage - 1, a.mb);
                } else {
                    n = snprintf(why + w, sizeof why - w, "\n  rank %d step %d: %s waits for the gradient "
                                 "of stage %d microbatch %d", r, pc[r], c, a.stage + 1, a.mb);
                }
                if (n > 0) w += (size_t)n;
            }
            fail_at(&v, first, pc[first], "deadlock: no rank can move%s", why);
            goto out;
        }
    }
#undef KEY
    rv = 0;
out:
    free(count);
    free(prank);
    free(pstep);
    free(done);
    free(pc);
    return rv;
}
