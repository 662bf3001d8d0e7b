/* ir.c - the schedule IR: actions, their text form, names, placement, grid. */
#include "common/error.h"
#include "trainer/schedule/schedule.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const type_names[AP_ACT_NTYPES] = {
    "", "F", "B", "I", "W", "SEND_F", "RECV_F", "SEND_B", "RECV_B",
};

const char *ap_act_type_name(int type) {
    return type >= 0 && type < AP_ACT_NTYPES ? type_names[type] : "?";
}

int ap_act_is_compute(int type) {
    return type == AP_ACT_F || type == AP_ACT_B || type == AP_ACT_I || type == AP_ACT_W;
}

ap_schedule *ap_schedule_new(int pp, int num_stages, int microbatches, int style, int kind) {
    if (pp < 1 || num_stages < 1 || microbatches < 1) return NULL;
    ap_schedule *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->pp = pp;
    s->num_stages = num_stages;
    s->stages_per_rank = num_stages / pp;
    s->microbatches = microbatches;
    s->style = style;
    s->kind = kind;
    s->stage_to_rank = calloc((size_t)num_stages, sizeof(int));
    s->len = calloc((size_t)pp, sizeof(int));
    s->cap = calloc((size_t)pp, sizeof(int));
    s->acts = calloc((size_t)pp, sizeof(ap_action *));
    if (!s->stage_to_rank || !s->len || !s->cap || !s->acts) {
        ap_schedule_free(s);
        return NULL;
    }
    for (int st = 0; st < num_stages; st++)
        s->stage_to_rank[st] = style == AP_STYLE_CUSTOM ? -1 : ap_stage_to_rank(pp, num_stages, style, st);
    return s;
}

void ap_schedule_free(ap_schedule *s) {
    if (!s) return;
    if (s->acts)
        for (int r = 0; r < s->pp; r++) free(s->acts[r]);
    free(s->acts);
    free(s->len);
    free(s->cap);
    free(s->stage_to_rank);
    free(s);
}

int ap_schedule_push(ap_schedule *s, int rank, ap_action a) {
    if (rank < 0 || rank >= s->pp) return -1;
    if (s->len[rank] == s->cap[rank]) {
        int nc = s->cap[rank] ? 2 * s->cap[rank] : 32;
        ap_action *p = realloc(s->acts[rank], (size_t)nc * sizeof *p);
        if (!p) return -1;
        s->acts[rank] = p;
        s->cap[rank] = nc;
    }
    s->acts[rank][s->len[rank]++] = a;
    return 0;
}

ap_schedule *ap_schedule_clone(const ap_schedule *s) {
    ap_schedule *c = ap_schedule_new(s->pp, s->num_stages, s->microbatches, s->style, s->kind);
    if (!c) return NULL;
    c->stages_per_rank = s->stages_per_rank;
    c->lowered = s->lowered;
    c->forward_only = s->forward_only;
    memcpy(c->stage_to_rank, s->stage_to_rank, (size_t)s->num_stages * sizeof(int));
    for (int r = 0; r < s->pp; r++)
        for (int i = 0; i < s->len[r]; i++)
            if (ap_schedule_push(c, r, s->acts[r][i])) {
                ap_schedule_free(c);
                return NULL;
            }
    return c;
}

static int trimmed_len(const ap_schedule *s, int r) {
    int n = s->len[r];
    while (n > 0 && s->acts[r][n - 1].type == AP_ACT_NONE) n--;
    return n;
}

int ap_schedule_equal(const ap_schedule *a, const ap_schedule *b) {
    if (a->pp != b->pp || a->num_stages != b->num_stages || a->microbatches != b->microbatches ||
        a->lowered != b->lowered || a->forward_only != b->forward_only)
        return 0;
    for (int st = 0; st < a->num_stages; st++)
        if (a->stage_to_rank[st] != b->stage_to_rank[st]) return 0;
    for (int r = 0; r < a->pp; r++) {
        int n = trimmed_len(a, r);
        if (n != trimmed_len(b, r)) return 0;
        for (int i = 0; i < n; i++) {
            ap_action x = a->acts[r][i], y = b->acts[r][i];
            if (x.type != y.type) return 0;
            if (x.type != AP_ACT_NONE && (x.stage != y.stage || x.mb != y.mb)) return 0;
        }
    }
    return 1;
}

int ap_stage_to_rank(int pp, int num_stages, int style, int stage) {
    if (pp < 1 || stage < 0 || stage >= num_stages) return -1;
    int round = stage / pp, pos = stage % pp;
    /* v: even rounds go down the ranks, odd rounds come back up (PyTorch's style="v") */
    if (style == AP_STYLE_V && (round % 2)) return pp - 1 - pos;
    return pos;
}

int ap_schedule_rank_stages(const ap_schedule *s, int rank, int *stages, int max) {
    int n = 0;
    for (int st = 0; st < s->num_stages; st++)
        if (s->stage_to_rank[st] == rank) {
            if (n < max) stages[n] = st;
            n++;
        }
    return n;
}

int ap_action_format(char *buf, size_t len, ap_action a) {
    if (a.type == AP_ACT_NONE) {
        if (len) buf[0] = '\0';
        return 0;
    }
    return snprintf(buf, len, "%d%s%d", a.stage, ap_act_type_name(a.type), a.mb);
}

/* Reads a bounded non-negative decimal; returns digits consumed, 0 if none, -1 if too large. */
static int read_uint(const char *p, int *out) {
    long v = 0;
    int n = 0;
    while (isdigit((unsigned char)p[n])) {
        v = v * 10 + (p[n] - '0');
        if (v > 1000000) return -1;
        n++;
    }
    *out = (int)v;
    return n;
}

int ap_action_parse(const char *text, ap_action *out, char *err, size_t errlen) {
    const char *p = text;
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strlen(p);
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r')) n--;
    *out = (ap_action){AP_ACT_NONE, 0, 0};
    if (n == 0) return 0;
    char cell[64];
    if (n >= sizeof cell) {
        ap_errf(err, errlen, "cell of %zu characters; expected an action like 0F1 or 1SEND_B0", n);
        return -1;
    }
    memcpy(cell, p, n);
    cell[n] = '\0';
    int stage, mb, k = read_uint(cell, &stage);
    if (k <= 0) {
        ap_errf(err, errlen, "'%s': expected a stage number first, as in 0F1 or 1SEND_B0", cell);
        return -1;
    }
    const char *t = cell + k;
    /* PyTorch's runtime lowering adds FSDP and gradient-reduction steps
     * ("0UNSHARD", "0RESHARD", "0REDUCE_GRAD"): not ours to run (no FSDP; the
     * executor reduces grads itself), so they read as idle cells */
    static const char *const noops[] = {"UNSHARD", "RESHARD", "REDUCE_GRAD"};
    for (size_t q = 0; q < sizeof noops / sizeof noops[0]; q++) {
        size_t l = strlen(noops[q]);
        if (!strncmp(t, noops[q], l)) {
            const char *rest = t + l;
            while (isdigit((unsigned char)*rest)) rest++;
            if (*rest) {
                ap_errf(err, errlen, "'%s': unexpected '%s' after %s", cell, rest, noops[q]);
                return -1;
            }
            return 0;
        }
    }
    int type = AP_ACT_NONE;
    size_t tl = 0;
    /* longest match first: SEND_F before F */
    for (int ty = AP_ACT_NTYPES - 1; ty > AP_ACT_NONE; ty--) {
        size_t l = strlen(type_names[ty]);
        if (!strncmp(t, type_names[ty], l)) {
            type = ty;
            tl = l;
            break;
        }
    }
    if (type == AP_ACT_NONE) {
        ap_errf(err, errlen,
               "'%s': expected an action type F, B, I, W, SEND_F, RECV_F, SEND_B or RECV_B after the "
               "stage (OVERLAP_F_B, as in DualPipeV, is not supported)",
               cell);
        return -1;
    }
    int m = read_uint(t + tl, &mb);
    if (m <= 0) {
        ap_errf(err, errlen, "'%s': expected a microbatch number after %s", cell, type_names[type]);
        return -1;
    }
    if (t[tl + m] != '\0') {
        ap_errf(err, errlen, "'%s': unexpected '%s' after the microbatch number", cell, t + tl + m);
        return -1;
    }
    *out = (ap_action){type, stage, mb};
    return 0;
}

/* ---- names ---- */

static const struct {
    const char *name;
    int kind;
} names[] = {
    {"gpipe", AP_SCHED_GPIPE},
    {"1f1b", AP_SCHED_1F1B},
    {"interleaved_1f1b", AP_SCHED_INTERLEAVED_1F1B},
    {"interleaved1f1b", AP_SCHED_INTERLEAVED_1F1B},
    {"looped_bfs", AP_SCHED_LOOPED_BFS},
    {"loopedbfs", AP_SCHED_LOOPED_BFS},
    {"interleaved_zb", AP_SCHED_INTERLEAVED_ZB},
    {"interleavedzerobubble", AP_SCHED_INTERLEAVED_ZB},
    {"interleaved_zero_bubble", AP_SCHED_INTERLEAVED_ZB},
    {"zbv", AP_SCHED_ZBV},
    {"zbvzerobubble", AP_SCHED_ZBV},
    {"zbv_zero_bubble", AP_SCHED_ZBV},
    {"pp_schedule_csv", AP_SCHED_CSV},
    {"csv", AP_SCHED_CSV},
};

int ap_schedule_parse_name(const char *name, ap_sched_kind *out) {
    if (!name) return -1;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (!strcasecmp(name, names[i].name)) {
            *out = (ap_sched_kind)names[i].kind;
            return 0;
        }
    return -1;
}

const char *ap_schedule_kind_name(int kind) {
    static const char *const k[AP_SCHED_NKINDS] = {"gpipe",       "1f1b",           "interleaved_1f1b",
                                                   "looped_bfs",  "interleaved_zb", "zbv",
                                                   "pp_schedule_csv"};
    return kind >= 0 && kind < AP_SCHED_NKINDS ? k[kind] : "?";
}

int ap_schedule_is_single_stage(const char *name) {
    ap_sched_kind k;
    if (ap_schedule_parse_name(name, &k)) return -1;
    return k == AP_SCHED_GPIPE || k == AP_SCHED_1F1B;
}

int ap_schedule_style(const char *name) {
    ap_sched_kind k;
    if (ap_schedule_parse_name(name, &k)) return -1;
    return k == AP_SCHED_ZBV ? AP_STYLE_V : AP_STYLE_LOOP;
}

/* ---- grid ---- */

typedef struct {
    char *buf;
    size_t len, pos;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t room = b->pos < b->len ? b->len - b->pos : 0;
    int n = vsnprintf(room ? b->buf + b->pos : NULL, room, fmt, ap);
    va_end(ap);
    if (n > 0) b->pos += (size_t)n;
}

size_t ap_schedule_format_grid(const ap_schedule *s, int bad_rank, int bad_step, char *buf,
                               size_t len) {
    sbuf b = {buf, len, 0};
    if (len) buf[0] = '\0';
    int steps = 0;
    for (int r = 0; r < s->pp; r++)
        if (s->len[r] > steps) steps = s->len[r];
    int sw = snprintf(NULL, 0, "%d", steps > 0 ? steps - 1 : 0);
    int *w = calloc((size_t)s->pp, sizeof(int));
    if (!w) return 0;
    for (int r = 0; r < s->pp; r++) {
        w[r] = snprintf(NULL, 0, "Rank %d", r);
        for (int i = 0; i < s->len[r]; i++) {
            char c[64];
            int l = ap_action_format(c, sizeof c, s->acts[r][i]);
            if (r == bad_rank && i == bad_step) l += 4;
            if (l > w[r]) w[r] = l;
        }
    }
    sb_printf(&b, "%*s", sw + 7, "");
    for (int r = 0; r < s->pp; r++) {
        char h[32];
        snprintf(h, sizeof h, "Rank %d", r);
        sb_printf(&b, "%-*s%s", r + 1 < s->pp ? w[r] : 0, h, r + 1 < s->pp ? " " : "\n");
    }
    for (int i = 0; i < steps; i++) {
        sb_printf(&b, "Step %0*d: ", sw, i);
        for (int r = 0; r < s->pp; r++) {
            char c[64] = "", m[80];
            if (i < s->len[r]) ap_action_format(c, sizeof c, s->acts[r][i]);
            if (r == bad_rank && i == bad_step)
                snprintf(m, sizeof m, ">>%s<<", c[0] ? c : "  ");
            else
                snprintf(m, sizeof m, "%s", c);
            int last = r + 1 == s->pp && !(bad_rank >= 0 && i == bad_step);
            sb_printf(&b, "%-*s%s", last ? 0 : w[r], m, r + 1 < s->pp ? " " : "");
        }
        sb_printf(&b, "%s\n", bad_rank >= 0 && i == bad_step ? " <-- ERROR HERE" : "");
    }
    free(w);
    return b.pos;
}
