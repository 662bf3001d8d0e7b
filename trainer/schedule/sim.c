/* sim.c - cost a schedule: makespan, bubble per rank, live activations.
 *
 * Every rank runs its compute actions in its own order, each as soon as the
 * rank is free and its input exists (the previous stage's F, the next
 * stage's B/I, plus `comm` when that crosses ranks). SEND/RECV and idle
 * cells take no time: receives are posted ahead. */
#include "trainer/schedule/schedule.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ap_sched_costs_default(ap_sched_costs *c) {
    memset(c, 0, sizeof *c);
    c->cost[AP_ACT_F] = 1;
    c->cost[AP_ACT_B] = 2;
    c->cost[AP_ACT_I] = 1;
    c->cost[AP_ACT_W] = 1;
    c->comm = 0;
}

int ap_sched_costs_parse(ap_sched_costs *c, const char *text, char *err, size_t errlen) {
    const char *p = text;
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (!end) end = p + strlen(p);
        if (!eq || eq > end) {
            snprintf(err, errlen, "costs '%s': expected KEY=VALUE pairs like F=1,B=2,I=1,W=1,comm=0",
                     text);
            return -1;
        }
        char key[24];
        size_t kl = (size_t)(eq - p);
        if (kl == 0 || kl >= sizeof key) {
            snprintf(err, errlen, "costs '%s': expected a key F, B, I, W or comm before '='", text);
            return -1;
        }
        memcpy(key, p, kl);
        key[kl] = '\0';
        char *vend;
        double val = strtod(eq + 1, &vend);
        if (vend != end || !(val >= 0) || !isfinite(val) || val > 1e12) {
            snprintf(err, errlen, "costs '%s': value of %s must be a non-negative number", text, key);
            return -1;
        }
        char *at = strchr(key, '@');
        int stage = -1;
        if (at) {
            char *se;
            long st = strtol(at + 1, &se, 10);
            if (se == at + 1 || *se || st < 0 || st >= AP_SCHED_COST_STAGES) {
                snprintf(err, errlen, "costs '%s': '%s': expected TYPE@STAGE with a stage 0..%d", text, key,
                         AP_SCHED_COST_STAGES - 1);
                return -1;
            }
            *at = '\0';
            stage = (int)st;
        }
        int type = -1;
        if (!strcmp(key, "F") || !strcmp(key, "f")) type = AP_ACT_F;
        else if (!strcmp(key, "B") || !strcmp(key, "b")) type = AP_ACT_B;
        else if (!strcmp(key, "I") || !strcmp(key, "i")) type = AP_ACT_I;
        else if (!strcmp(key, "W") || !strcmp(key, "w")) type = AP_ACT_W;
        if (stage >= 0) {
            if (type < 0) {
                snprintf(err, errlen, "costs '%s': per-stage key '%s@%d': expected F, B, I or W before '@'",
                         text, key, stage);
                return -1;
            }
            c->over[type][stage] = val;
            c->has_over[type][stage] = 1;
        } else if (type >= 0)
            c->cost[type] = val;
        else if (!strcasecmp(key, "comm"))
            c->comm = val;
        else {
            snprintf(err, errlen, "costs '%s': unknown key '%s'; expected F, B, I, W or comm", text, key);
            return -1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

static double cost_of(const ap_sched_costs *c, ap_action a) {
    if (c->stage_cost[a.type]) return c->stage_cost[a.type][a.stage];
    if (a.stage < AP_SCHED_COST_STAGES && c->has_over[a.type][a.stage]) return c->over[a.type][a.stage];
    return c->cost[a.type];
}

void ap_sched_sim_free(ap_sched_sim *r) {
    if (!r) return;
    free(r->busy);
    free(r->bubble);
    free(r->peak_live);
    free(r->peak_live_stage);
    free(r->ev);
    memset(r, 0, sizeof *r);
}

int ap_schedule_simulate(const ap_schedule *s, const ap_sched_costs *c, ap_sched_sim *out, char *err,
                         size_t errlen) {
    memset(out, 0, sizeof *out);
    int p = s->pp, ns = s->num_stages, m = s->microbatches, rv = -1;
    size_t nkey = (size_t)ns * (size_t)m * AP_ACT_NTYPES;
    double *fin = malloc(nkey * sizeof(double)); /* finish time, NAN until done */
    int *pc = calloc((size_t)p, sizeof(int));
    double *tfree = calloc((size_t)p, sizeof(double));
    int *live = calloc((size_t)p, sizeof(int));
    int *live_st = calloc((size_t)ns, sizeof(int));
    if ((double)ns * m > AP_SCHED_MAX_CELLS) {
        snprintf(err, errlen, "%d stages x %d microbatches is beyond the supported %d", ns, m,
                 AP_SCHED_MAX_CELLS);
        return -1;
    }
    int total = 0;
    for (int r = 0; r < p; r++) total += s->len[r];
    out->pp = p;
    out->num_stages = ns;
    out->busy = calloc((size_t)p, sizeof(double));
    out->bubble = calloc((size_t)p, sizeof(double));
    out->peak_live = calloc((size_t)p, sizeof(int));
    out->peak_live_stage = calloc((size_t)ns, sizeof(int));
    out->ev = malloc(((size_t)total + 1) * sizeof(ap_sched_event));
    if (!fin || !pc || !tfree || !live || !live_st || !out->busy || !out->bubble || !out->peak_live ||
        !out->peak_live_stage || !out->ev) {
        snprintf(err, errlen, "out of memory simulating the schedule");
        goto out;
    }
    for (size_t k = 0; k < nkey; k++) fin[k] = NAN;
#define KEY(st, mb, ty) (((size_t)(st) * (size_t)m + (size_t)(mb)) * AP_ACT_NTYPES + (size_t)(ty))
    for (;;) {
        int left = 0, moved = 0;
        for (int r = 0; r < p; r++) {
            while (pc[r] < s->len[r]) {
                ap_action a = s->acts[r][pc[r]];
                if (!ap_act_is_compute(a.type)) {
                    pc[r]++;
                    continue;
                }
                if (a.stage < 0 || a.stage >= ns || a.mb < 0 || a.mb >= m) {
                    snprintf(err, errlen, "rank %d step %d: action out of range (validate first)", r,
                             pc[r]);
                    goto out;
                }
                int st = a.stage, mb = a.mb;
                double ready = 0, dep = 0;
                int from = -1;
                if (a.type == AP_ACT_F && st > 0) {
                    dep = fin[KEY(st - 1, mb, AP_ACT_F)];
                    from = st - 1;
                } else if ((a.type == AP_ACT_B || a.type == AP_ACT_I) && st < ns - 1) {
                    dep = fin[KEY(st + 1, mb, AP_ACT_B)];
                    if (isnan(dep)) dep = fin[KEY(st + 1, mb, AP_ACT_I)];
                    from = st + 1;
                }
                if (isnan(dep)) break;
                if (from >= 0) ready = dep + (s->stage_to_rank[from] != r ? c->comm : 0);
                double start = ready > tfree[r] ? ready : tfree[r], d = cost_of(c, a);
                fin[KEY(st, mb, a.type)] = start + d;
                tfree[r] = start + d;
                out->busy[r] += d;
                out->ev[out->n_ev++] = (ap_sched_event){r, pc[r], a, start, start + d};
                if (start + d > out->makespan) out->makespan = start + d;
                /* an activation lives from its F until B, or W for split backwards */
                int delta = a.type == AP_ACT_F ? 1 : (a.type == AP_ACT_B || a.type == AP_ACT_W) ? -1 : 0;
                if (s->forward_only) delta = 0; /* no-grad forwards keep nothing */
                live[r] += delta;
                live_st[st] += delta;
                if (live[r] > out->peak_live[r]) out->peak_live[r] = live[r];
                if (live_st[st] > out->peak_live_stage[st]) out->peak_live_stage[st] = live_st[st];
                pc[r]++;
                moved = 1;
            }
            if (pc[r] < s->len[r]) left = 1;
        }
        if (!left) break;
        if (!moved) {
            snprintf(err, errlen, "simulation stuck: the schedule deadlocks (run the validator for "
                     "the grid)");
            goto out;
        }
    }
#undef KEY
    out->bubble_mean = 0;
    for (int r = 0; r < p; r++) {
        out->bubble[r] = out->makespan > 0 ? 1.0 - out->busy[r] / out->makespan : 0;
        out->bubble_mean += out->bubble[r] / p;
    }
    rv = 0;
out:
    if (rv) ap_sched_sim_free(out);
    free(fin);
    free(pc);
    free(tfree);
    free(live);
    free(live_st);
    return rv;
}
