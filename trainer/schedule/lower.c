/* lower.c - add SEND/RECV pairs to a compute-only schedule.
 *
 * As PyTorch's _add_send_recv: ranks take turns placing their next compute
 * action once its input is placed (the previous stage's F on this rank, or
 * a RECV some sender already put here). Placing an F whose next stage lives
 * on another rank also places SEND_F here and RECV_F at the end of the
 * receiver's list, so every receive sits before the compute that waits on it
 * and the executor can post it early; the same for B/I with SEND_B/RECV_B.
 * Stages on one rank (the tip of a V) hand over in memory: no SEND/RECV. */
#include "trainer/schedule/schedule.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

int ap_schedule_lower(const ap_schedule *in, ap_schedule **out, char *err, size_t errlen) {
    *out = NULL;
    if (in->lowered) {
        *out = ap_schedule_clone(in);
        if (!*out && err && errlen) snprintf(err, errlen, "out of memory lowering the schedule");
        return *out ? 0 : -1;
    }
    int p = in->pp, ns = in->num_stages, m = in->microbatches, rv = -1;
    if ((double)ns * m > AP_SCHED_MAX_CELLS) {
        if (err && errlen)
            snprintf(err, errlen, "%d stages x %d microbatches is beyond the supported %d", ns, m,
                     AP_SCHED_MAX_CELLS);
        return -1;
    }
    size_t nkey = (size_t)ns * (size_t)m * AP_ACT_NTYPES;
    ap_schedule *s = ap_schedule_new(p, ns, m, in->style, in->kind);
    char *placed = calloc(nkey, 1);
    int *pc = calloc((size_t)p, sizeof(int));
    if (!s || !placed || !pc) goto oom;
    s->lowered = 1;
    s->forward_only = in->forward_only;
    s->stages_per_rank = in->stages_per_rank;
    memcpy(s->stage_to_rank, in->stage_to_rank, (size_t)ns * sizeof(int));
#define KEY(st, mb, ty) (((size_t)(st) * (size_t)m + (size_t)(mb)) * AP_ACT_NTYPES + (size_t)(ty))
#define OK_ACT(a) ((a).stage >= 0 && (a).stage < ns && (a).mb >= 0 && (a).mb < m)
    for (;;) {
        int left = 0, moved = 0;
        for (int r = 0; r < p; r++) {
            while (pc[r] < in->len[r] && in->acts[r][pc[r]].type == AP_ACT_NONE) pc[r]++;
            if (pc[r] >= in->len[r]) continue;
            left = 1;
            ap_action a = in->acts[r][pc[r]];
            if (!OK_ACT(a) || !ap_act_is_compute(a.type)) {
                if (err && errlen)
                    snprintf(err, errlen, "rank %d step %d: cannot lower action (type %s stage %d mb %d)",
                             r, pc[r], ap_act_type_name(a.type), a.stage, a.mb);
                goto fail;
            }
            int st = a.stage, mb = a.mb, ready = 1;
            if (a.type == AP_ACT_F && st > 0)
                ready = placed[KEY(st, mb, AP_ACT_RECV_F)] || placed[KEY(st - 1, mb, AP_ACT_F)];
            else if ((a.type == AP_ACT_B || a.type == AP_ACT_I) && st < ns - 1)
                ready = placed[KEY(st, mb, AP_ACT_RECV_B)] || placed[KEY(st + 1, mb, AP_ACT_B)] ||
                        placed[KEY(st + 1, mb, AP_ACT_I)];
            if (!ready) continue;
            if (ap_schedule_push(s, r, a)) goto oom;
            placed[KEY(st, mb, a.type)] = 1;
            int peer = -1, send = 0, recv = 0;
            if (a.type == AP_ACT_F && st < ns - 1) {
                peer = st + 1;
                send = AP_ACT_SEND_F;
                recv = AP_ACT_RECV_F;
            } else if ((a.type == AP_ACT_B || a.type == AP_ACT_I) && st > 0) {
                peer = st - 1;
                send = AP_ACT_SEND_B;
                recv = AP_ACT_RECV_B;
            }
            if (peer >= 0 && in->stage_to_rank[peer] != r) {
                if (ap_schedule_push(s, r, (ap_action){send, st, mb})) goto oom;
                if (ap_schedule_push(s, in->stage_to_rank[peer], (ap_action){recv, peer, mb})) goto oom;
                placed[KEY(st, mb, send)] = 1;
                placed[KEY(peer, mb, recv)] = 1;
            }
            pc[r]++;
            moved = 1;
        }
        if (!left) break;
        if (!moved) {
            if (err && errlen) {
                int n = snprintf(err, errlen, "cannot lower: every rank waits for an input that is "
                                 "never produced first (validate the compute-only schedule)\n");
                if (n > 0 && (size_t)n < errlen)
                    ap_schedule_format_grid(in, -1, -1, err + n, errlen - (size_t)n);
            }
            goto fail;
        }
    }
#undef KEY
#undef OK_ACT
    *out = s;
    s = NULL;
    rv = 0;
    goto fail;
oom:
    if (err && errlen) snprintf(err, errlen, "out of memory lowering the schedule");
fail:
    ap_schedule_free(s);
    free(placed);
    free(pc);
    return rv;
}
