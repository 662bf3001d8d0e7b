/* gen.c - schedule generators: gpipe, 1f1b, interleaved_1f1b, looped_bfs,
 * interleaved_zb (ZB1P), zbv, and a user CSV.
 *
 * Each writes the compute-only step grid torch.distributed.pipelining builds
 * for the same schedule (its _get_pipeline_order / _calculate_single_rank_
 * operations), idle cells included, so the pictures match; the executor
 * runs the order, not the steps. */
#include "common/error.h"
#include "trainer/schedule/schedule.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* Generators build into s; a failed push (out of memory) is remembered. */
typedef struct {
    ap_schedule *s;
    int oom;
} gen_t;

static void act(gen_t *g, int rank, int type, int stage, int mb) {
    if (ap_schedule_push(g->s, rank, (ap_action){type, stage, mb})) g->oom = 1;
}

static void idle(gen_t *g, int rank, int n) {
    for (int i = 0; i < n; i++) act(g, rank, AP_ACT_NONE, 0, 0);
}

static void gen_gpipe(gen_t *g) {
    int p = g->s->pp, m = g->s->microbatches;
    for (int r = 0; r < p; r++) {
        idle(g, r, r);
        for (int mb = 0; mb < m; mb++) act(g, r, AP_ACT_F, r, mb);
        idle(g, r, 3 * (p - 1 - r)); /* the first backward comes back 3 steps per hop later */
        for (int mb = 0; mb < m; mb++) act(g, r, AP_ACT_B, r, mb);
    }
}

static void gen_1f1b(gen_t *g) {
    int p = g->s->pp, m = g->s->microbatches;
    for (int r = 0; r < p; r++) {
        int warm = p - 1 - r, f = 0, b = 0;
        idle(g, r, r);
        for (; f < warm; f++) act(g, r, AP_ACT_F, r, f);
        idle(g, r, 2 * (p - 1 - r));
        while (f < m) { /* steady state: one forward, one backward */
            act(g, r, AP_ACT_F, r, f++);
            act(g, r, AP_ACT_B, r, b++);
        }
        while (b < m) { /* cooldown: a backward every other step */
            idle(g, r, 1);
            act(g, r, AP_ACT_B, r, b++);
        }
    }
}

static void gen_looped_bfs(gen_t *g) {
    int p = g->s->pp, m = g->s->microbatches, v = g->s->stages_per_rank;
    for (int r = 0; r < p; r++) {
        idle(g, r, r);
        for (int k = 0; k < v; k++)
            for (int mb = 0; mb < m; mb++) act(g, r, AP_ACT_F, k * p + r, mb);
        idle(g, r, 2 * (p - 1 - r));
        for (int k = v - 1; k >= 0; k--)
            for (int mb = m - 1; mb >= 0; mb--) act(g, r, AP_ACT_B, k * p + r, mb);
    }
}

/* Interleaved 1F1B and ZB1P share one shape (PyTorch's _get_1f1b_rank_ops):
 * warmup forwards, then forward/backward pairs, then the remaining
 * backwards; local stages are visited in rounds of `mpr` microbatches,
 * forwards front to back, backwards back to front. Zero bubble splits the
 * backward into I and W and runs each W `r` pairs later to fill bubbles. */
static void gen_interleaved(gen_t *g, int rank, int zero_bubble) {
    int p = g->s->pp, m = g->s->microbatches, v = g->s->stages_per_rank, r = rank;
    int rounds = m / p > 1 ? m / p : 1, mpr = m / rounds;
    int warm = (v - 1) * mpr + (zero_bubble ? 1 : 2) * (p - 1 - r);
    if (warm > m * v) warm = m * v;
    int ops = m * v, fwd_bwd = ops - warm, total = ops + warm;
    int post_warm = zero_bubble ? p - r - 1 : (v * p + 2 * (p - 1 - r)) - (warm + r);
    int bwd_type = zero_bubble ? AP_ACT_I : AP_ACT_B;
    int *fmb = calloc((size_t)g->s->num_stages, sizeof(int));
    int *bmb = calloc((size_t)g->s->num_stages, sizeof(int));
    int *wmb = calloc((size_t)g->s->num_stages, sizeof(int));
    int *bwd_ops = calloc((size_t)total + 1, sizeof(int));
    int n_bwd = 0, n_w = 0;
    if (!fmb || !bmb || !wmb || !bwd_ops) {
        g->oom = 1;
        goto out;
    }
#define FWD_STAGE(op) ((((op) / mpr) % v) * p + r)
#define BWD_STAGE(op) ((v - 1 - (((op)-warm) / mpr) % v) * p + r)
    idle(g, r, r);
    for (int op = 0; op < total; op++) {
        if (op < warm) {
            int st = FWD_STAGE(op);
            act(g, r, AP_ACT_F, st, fmb[st]++);
            if (op == warm - 1) idle(g, r, post_warm);
            continue;
        }
        if (op < warm + fwd_bwd) {
            int st = FWD_STAGE(op);
            act(g, r, AP_ACT_F, st, fmb[st]++);
        } else if (!zero_bubble) {
            idle(g, r, 1); /* keep step with the 1F1B pairs of other ranks */
        }
        int st = BWD_STAGE(op);
        act(g, r, bwd_type, st, bmb[st]++);
        bwd_ops[n_bwd++] = op;
        if (zero_bubble && op - warm >= r) {
            int ws = BWD_STAGE(bwd_ops[n_w]);
            n_w++;
            act(g, r, AP_ACT_W, ws, wmb[ws]++);
        }
    }
    while (zero_bubble && n_w < n_bwd) {
        int ws = BWD_STAGE(bwd_ops[n_w]);
        n_w++;
        act(g, r, AP_ACT_W, ws, wmb[ws]++);
    }
#undef FWD_STAGE
#undef BWD_STAGE
out:
    free(fmb);
    free(bmb);
    free(wmb);
    free(bwd_ops);
}

/* ZB1P's step grid gets idle cells where an action's input is not there yet
 * (PyTorch's _add_bubbles_to_actions, with I checked like B). */
static int add_bubbles(gen_t *g, char *err, size_t errlen) {
    ap_schedule *in = g->s;
    int p = in->pp, ns = in->num_stages, m = in->microbatches;
    ap_schedule *outs = ap_schedule_new(p, ns, m, in->style, in->kind);
    char *seen = calloc((size_t)ns * (size_t)m * AP_ACT_NTYPES, 1);
    char *now = calloc((size_t)ns * (size_t)m * AP_ACT_NTYPES, 1);
    int *next = calloc((size_t)p, sizeof(int));
    int rv = -1;
    if (!outs || !seen || !now || !next) {
        g->oom = 1;
        goto out;
    }
#define SEEN(st, ty, mb) seen[((size_t)(st) * (size_t)m + (size_t)(mb)) * AP_ACT_NTYPES + (size_t)(ty)]
    for (;;) {
        int left = 0, moved = 0;
        memset(now, 0, (size_t)ns * (size_t)m * AP_ACT_NTYPES);
        for (int r = 0; r < p; r++) {
            if (next[r] >= in->len[r]) continue;
            left = 1;
            ap_action a = in->acts[r][next[r]];
            int wait = 0;
            if (a.type == AP_ACT_F)
                wait = a.stage > 0 && !SEEN(a.stage - 1, AP_ACT_F, a.mb);
            else if (a.type == AP_ACT_I || a.type == AP_ACT_B)
                wait = a.stage == ns - 1 ? !SEEN(a.stage, AP_ACT_F, a.mb)
                                         : !SEEN(a.stage + 1, AP_ACT_I, a.mb) &&
                                               !SEEN(a.stage + 1, AP_ACT_B, a.mb);
            if (wait) {
                if (ap_schedule_push(outs, r, (ap_action){AP_ACT_NONE, 0, 0})) g->oom = 1;
                continue;
            }
            if (ap_schedule_push(outs, r, a)) g->oom = 1;
            if (a.type != AP_ACT_NONE)
                now[((size_t)a.stage * (size_t)m + (size_t)a.mb) * AP_ACT_NTYPES + (size_t)a.type] = 1;
            next[r]++;
            moved = 1;
        }
        for (size_t k = 0; k < (size_t)ns * (size_t)m * AP_ACT_NTYPES; k++) seen[k] |= now[k];
        if (!left) break;
        if (!moved) {
            ap_errf(err, errlen, "%s: generated order cannot progress (internal error)",
                   ap_schedule_kind_name(in->kind));
            goto out;
        }
    }
#undef SEEN
    ap_schedule_free(in);
    g->s = outs;
    outs = NULL;
    rv = 0;
out:
    ap_schedule_free(outs);
    free(seen);
    free(now);
    free(next);
    return rv;
}

static void gen_zbv(gen_t *g) {
    int p = g->s->pp, m = g->s->microbatches, ns = g->s->num_stages;
    /* enough microbatches to fill the V; the extra ones become idle cells */
    int n = m > 2 * p - 1 ? m : 2 * p - 1;
    for (int r = 0; r < p; r++) {
        int c0 = r, c1 = ns - 1 - r;
        int f0 = 0, f1 = 0, b0 = 0, b1 = 0;
        int start = g->s->len[r];
        idle(g, r, r);
        for (int i = 0; i < 2 * (p - r) - 1; i++) act(g, r, AP_ACT_F, c0, f0++);
        for (int i = 0; i < r; i++) {
            act(g, r, AP_ACT_F, c1, f1++);
            act(g, r, AP_ACT_F, c0, f0++);
        }
        for (int i = 0; i < p - r; i++) {
            act(g, r, AP_ACT_F, c1, f1++);
            act(g, r, AP_ACT_I, c1, b1);
            act(g, r, AP_ACT_W, c1, b1++);
        }
        while (f1 < f0 || f0 < n) { /* steady state */
            if (f0 < n) act(g, r, AP_ACT_F, c0, f0++);
            act(g, r, AP_ACT_I, c0, b0);
            act(g, r, AP_ACT_W, c0, b0++);
            act(g, r, AP_ACT_F, c1, f1++);
            act(g, r, AP_ACT_I, c1, b1);
            act(g, r, AP_ACT_W, c1, b1++);
        }
        int w0 = b0, w1 = b1;
        for (int i = 0; i < r; i++) {
            act(g, r, AP_ACT_I, c0, b0++);
            act(g, r, AP_ACT_I, c1, b1++);
        }
        for (int i = 0; i < p - r; i++) {
            act(g, r, AP_ACT_I, c0, b0++);
            act(g, r, AP_ACT_W, c0, w0++);
        }
        while (w1 < b1) act(g, r, AP_ACT_W, c1, w1++);
        while (w0 < b0) act(g, r, AP_ACT_W, c0, w0++);
        if (g->oom) return;
        for (int i = start; i < g->s->len[r]; i++)
            if (g->s->acts[r][i].type != AP_ACT_NONE && g->s->acts[r][i].mb >= m)
                g->s->acts[r][i] = (ap_action){AP_ACT_NONE, 0, 0};
    }
}

int ap_schedule_forward_only(ap_schedule **out, const ap_schedule *train, char *err, size_t errlen) {
    *out = NULL;
    ap_schedule *s = ap_schedule_new(train->pp, train->num_stages, train->microbatches, train->style,
                                     train->kind);
    if (!s) {
        ap_errf(err, errlen, "out of memory");
        return -1;
    }
    s->stages_per_rank = train->stages_per_rank;
    s->forward_only = 1;
    memcpy(s->stage_to_rank, train->stage_to_rank, (size_t)train->num_stages * sizeof(int));
    for (int r = 0; r < train->pp; r++)
        for (int i = 0; i < train->len[r]; i++)
            if (train->acts[r][i].type == AP_ACT_F && ap_schedule_push(s, r, train->acts[r][i])) {
                ap_errf(err, errlen, "out of memory");
                ap_schedule_free(s);
                return -1;
            }
    if (ap_schedule_validate(s, err, errlen)) {
        ap_schedule_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

int ap_schedule_check_batch(int batch_size, int microbatch_size, int *n_microbatches, char *err,
                            size_t errlen) {
    if (batch_size < 1) {
        ap_errf(err, errlen, "dataloader.batch_size is %d; expected a positive sample count", batch_size);
        return -1;
    }
    if (microbatch_size < 1) {
        ap_errf(err, errlen, "autopipeline.pp_microbatch_size is %d; expected a positive sample count",
               microbatch_size);
        return -1;
    }
    if (batch_size % microbatch_size) {
        ap_errf(err, errlen,
               "dataloader.batch_size %d is not divisible by autopipeline.pp_microbatch_size %d; "
               "expected a multiple (e.g. batch_size %d)",
               batch_size, microbatch_size, (batch_size / microbatch_size + 1) * microbatch_size);
        return -1;
    }
    if (n_microbatches) *n_microbatches = batch_size / microbatch_size;
    return 0;
}

int ap_schedule_generate(ap_schedule **out, const char *name, const char *csv_path, int pp,
                         int stages_per_rank, int microbatches, char *err, size_t errlen) {
    *out = NULL;
    ap_sched_kind kind;
    if (csv_path && *csv_path) {
        kind = AP_SCHED_CSV;
    } else if (!name || ap_schedule_parse_name(name, &kind)) {
        ap_errf(err, errlen,
               "unknown schedule '%s'; expected one of gpipe, 1f1b, interleaved_1f1b, looped_bfs, "
               "interleaved_zb, zbv (or GPipe, 1F1B, Interleaved1F1B, LoopedBFS, "
               "InterleavedZeroBubble, ZBVZeroBubble), or a pp_schedule_csv file",
               name ? name : "(none)");
        return -1;
    } else if (kind == AP_SCHED_CSV) {
        ap_errf(err, errlen, "schedule pp_schedule_csv needs a CSV file (autopipeline.pp_schedule_csv / --csv)");
        return -1;
    }
    if (kind == AP_SCHED_CSV) {
        ap_schedule *s;
        if (ap_schedule_load_csv(&s, csv_path, pp, microbatches, err, errlen)) return -1;
        if (stages_per_rank > 0 && s->stages_per_rank != stages_per_rank) {
            ap_errf(err, errlen, "%s: %d stages per rank in the file, but stages_per_rank is %d", csv_path,
                   s->stages_per_rank, stages_per_rank);
            ap_schedule_free(s);
            return -1;
        }
        if (s->forward_only) {
            ap_errf(err, errlen, "%s: no B, I or W actions: a forward-only schedule cannot train; "
                   "pp_schedule_csv expects a training schedule", csv_path);
            ap_schedule_free(s);
            return -1;
        }
        if (ap_schedule_validate(s, err, errlen)) {
            ap_schedule_free(s);
            return -1;
        }
        *out = s;
        return 0;
    }
    const char *kn = ap_schedule_kind_name(kind);
    int single = kind == AP_SCHED_GPIPE || kind == AP_SCHED_1F1B;
    if (pp < 1) {
        ap_errf(err, errlen, "%s: pp size %d; expected at least 1", kn, pp);
        return -1;
    }
    if (microbatches < 1) {
        ap_errf(err, errlen, "%s: %d microbatches; expected at least 1", kn, microbatches);
        return -1;
    }
    if (stages_per_rank <= 0) stages_per_rank = single ? 1 : 2;
    if (single && stages_per_rank != 1) {
        ap_errf(err, errlen,
               "%s runs one stage per rank, but stages_per_rank is %d; use interleaved_1f1b, "
               "looped_bfs, interleaved_zb or zbv for several",
               kn, stages_per_rank);
        return -1;
    }
    if (kind == AP_SCHED_ZBV && stages_per_rank != 2) {
        ap_errf(err, errlen, "zbv places stages in a V and needs exactly 2 stages per rank, got %d",
               stages_per_rank);
        return -1;
    }
    if (stages_per_rank > 64 || pp > 4096 || microbatches > 100000 ||
        (double)pp * stages_per_rank * microbatches > AP_SCHED_MAX_CELLS) {
        ap_errf(err, errlen, "%s: pp %d x %d stages per rank x %d microbatches is beyond the supported "
               "range (pp <= 4096, stages per rank <= 64, microbatches <= 100000, stages x microbatches <= %d)",
               kn, pp, stages_per_rank, microbatches, AP_SCHED_MAX_CELLS);
        return -1;
    }
    if (kind == AP_SCHED_1F1B && microbatches < pp) {
        ap_errf(err, errlen,
               "1f1b needs at least as many microbatches as pp ranks: %d microbatches < pp %d "
               "(raise dataloader.batch_size / lower pp_microbatch_size, or use gpipe)",
               microbatches, pp);
        return -1;
    }
    if (kind == AP_SCHED_INTERLEAVED_1F1B || kind == AP_SCHED_INTERLEAVED_ZB) {
        int rounds = microbatches / pp > 1 ? microbatches / pp : 1;
        if (microbatches % rounds) {
            ap_errf(err, errlen,
                   "%s runs microbatches in rounds of about pp (%d rounds of %d for %d microbatches "
                   "on pp %d); the microbatch count must be a multiple of the rounds (%d): use %d or %d",
                   kn, rounds, microbatches / rounds, microbatches, pp, rounds,
                   microbatches / rounds * rounds, (microbatches / rounds + 1) * rounds);
            return -1;
        }
    }
    int style = kind == AP_SCHED_ZBV ? AP_STYLE_V : AP_STYLE_LOOP;
    gen_t g = {ap_schedule_new(pp, pp * stages_per_rank, microbatches, style, kind), 0};
    if (!g.s) {
        ap_errf(err, errlen, "%s: out of memory", kn);
        return -1;
    }
    switch (kind) {
    case AP_SCHED_GPIPE: gen_gpipe(&g); break;
    case AP_SCHED_1F1B: gen_1f1b(&g); break;
    case AP_SCHED_LOOPED_BFS: gen_looped_bfs(&g); break;
    case AP_SCHED_INTERLEAVED_1F1B:
        for (int r = 0; r < pp; r++) gen_interleaved(&g, r, 0);
        break;
    case AP_SCHED_INTERLEAVED_ZB:
        for (int r = 0; r < pp; r++) gen_interleaved(&g, r, 1);
        if (!g.oom && add_bubbles(&g, err, errlen)) {
            ap_schedule_free(g.s);
            return -1;
        }
        break;
    case AP_SCHED_ZBV: gen_zbv(&g); break;
    default: break;
    }
    if (g.oom) {
        ap_errf(err, errlen, "%s: out of memory", kn);
        ap_schedule_free(g.s);
        return -1;
    }
    if (ap_schedule_validate(g.s, err, errlen)) {
        ap_schedule_free(g.s);
        return -1;
    }
    *out = g.s;
    return 0;
}
