/* csv.c - schedules in torch.distributed.pipelining's CSV form.
 *
 * One row per rank, one cell per time step, an empty cell is an idle step;
 * cells are action strings ("0F1", "1SEND_B0"). csv.writer quotes nothing
 * here, but quoted cells are accepted. A file with SEND/RECV cells is the
 * compute_comms form. */
#include "common/error.h"
#include "common/file.h"
#include "trainer/schedule/schedule.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CSV_BYTES (64u << 20)
#define MAX_RANKS 4096

typedef struct {
    ap_action *a;
    int n, cap;
} row_t;

static int row_push(row_t *r, ap_action a) {
    if (r->n == r->cap) {
        int nc = r->cap ? 2 * r->cap : 64;
        ap_action *p = realloc(r->a, (size_t)nc * sizeof *p);
        if (!p) return -1;
        r->a = p;
        r->cap = nc;
    }
    r->a[r->n++] = a;
    return 0;
}

int ap_schedule_parse_csv(ap_schedule **out, const char *text, size_t n, const char *name, int pp,
                          int microbatches, char *err, size_t errlen) {
    int rv = -1, nrows = 0;
    row_t *rows = NULL;
    int *owner = NULL;
    ap_schedule *s = NULL;
    *out = NULL;
    if (!name) name = "<csv>";
    if (n > MAX_CSV_BYTES) {
        ap_errf(err, errlen, "%s: %zu bytes; a schedule CSV is expected to be under %u bytes", name, n,
               MAX_CSV_BYTES);
        return -1;
    }
    rows = calloc(MAX_RANKS, sizeof *rows);
    if (!rows) goto oom;

    /* split into rows and cells */
    size_t i = 0;
    while (i < n) {
        if (nrows == MAX_RANKS) {
            ap_errf(err, errlen, "%s:%d: more than %d rows (one row per pp rank expected)", name,
                   nrows + 1, MAX_RANKS);
            goto fail;
        }
        row_t *row = &rows[nrows];
        int col = 0, line_blank = 1;
        for (;;) { /* one cell */
            char cell[72];
            size_t cl = 0;
            int quoted = 0, overflow = 0;
            if (i < n && text[i] == '"') {
                quoted = 1;
                i++;
            }
            while (i < n) {
                char c = text[i];
                if (quoted) {
                    if (c == '"') {
                        if (i + 1 < n && text[i + 1] == '"') {
                            i++;
                        } else {
                            quoted = 0;
                            i++;
                            continue;
                        }
                    }
                } else if (c == ',' || c == '\n' || c == '\r') {
                    break;
                }
                if (c == '\0') {
                    ap_errf(err, errlen, "%s:%d:%d: NUL byte; expected text", name, nrows + 1, col + 1);
                    goto fail;
                }
                if (cl + 1 < sizeof cell)
                    cell[cl++] = c;
                else
                    overflow = 1;
                i++;
            }
            if (quoted) {
                ap_errf(err, errlen, "%s:%d:%d: unterminated quoted cell; expected a closing '\"'", name,
                       nrows + 1, col + 1);
                goto fail;
            }
            cell[cl] = '\0';
            ap_action a;
            char why[256];
            if (overflow) {
                ap_errf(err, errlen, "%s:%d:%d: cell too long; expected an action like 0F1 or 1SEND_B0",
                       name, nrows + 1, col + 1);
                goto fail;
            }
            if (ap_action_parse(cell, &a, why, sizeof why)) {
                ap_errf(err, errlen, "%s:%d:%d: %s", name, nrows + 1, col + 1, why);
                goto fail;
            }
            if (cl) line_blank = 0;
            if (row_push(row, a)) goto oom;
            col++;
            if (i < n && text[i] == ',') {
                i++;
                continue;
            }
            break;
        }
        if (i < n && text[i] == '\r') i++;
        if (i < n && text[i] == '\n') i++;
        if (line_blank && row->n == 1) row->n = 0; /* an empty line is a rank with no actions */
        nrows++;
    }
    /* trailing empty lines beyond pp (or all of them when pp is inferred) carry nothing */
    while (nrows > (pp > 0 ? pp : 1) && rows[nrows - 1].n == 0) nrows--;
    if (nrows == 0) {
        ap_errf(err, errlen, "%s: no rows; expected one row of actions per pp rank", name);
        goto fail;
    }
    if (pp > 0 && nrows != pp) {
        ap_errf(err, errlen, "%s: %d rows but pp size is %d; expected one row per pp rank", name, nrows,
               pp);
        goto fail;
    }
    pp = nrows;

    /* shape: stages, microbatches, lowered */
    int max_stage = -1, max_mb = -1, lowered = 0, backward = 0;
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < rows[r].n; c++) {
            ap_action a = rows[r].a[c];
            if (a.type == AP_ACT_NONE) continue;
            if (a.stage > max_stage) max_stage = a.stage;
            if (a.mb > max_mb) max_mb = a.mb;
            if (!ap_act_is_compute(a.type)) lowered = 1;
            if (a.type == AP_ACT_B || a.type == AP_ACT_I || a.type == AP_ACT_W) backward = 1;
            if (microbatches > 0 && a.mb >= microbatches) {
                ap_errf(err, errlen, "%s:%d:%d: microbatch %d, but there are %d microbatches (0..%d)",
                       name, r + 1, c + 1, a.mb, microbatches, microbatches - 1);
                goto fail;
            }
        }
    if (max_stage < 0) {
        ap_errf(err, errlen, "%s: no actions; expected F and B (or I and W) cells", name);
        goto fail;
    }
    int num_stages = max_stage + 1;
    if (microbatches <= 0) microbatches = max_mb + 1;
    if ((double)num_stages * microbatches > AP_SCHED_MAX_CELLS) {
        ap_errf(err, errlen, "%s: %d stages x %d microbatches is beyond the supported %d", name,
               num_stages, microbatches, AP_SCHED_MAX_CELLS);
        goto fail;
    }

    /* placement: each stage lives on the rank whose row names it */
    owner = malloc((size_t)num_stages * sizeof(int));
    if (!owner) goto oom;
    for (int st = 0; st < num_stages; st++) owner[st] = -1;
    for (int r = 0; r < nrows; r++)
        for (int c = 0; c < rows[r].n; c++) {
            ap_action a = rows[r].a[c];
            if (a.type == AP_ACT_NONE) continue;
            if (owner[a.stage] >= 0 && owner[a.stage] != r) {
                ap_errf(err, errlen, "%s:%d:%d: stage %d appears on rank %d and on rank %d; a stage "
                       "is expected on one rank",
                       name, r + 1, c + 1, a.stage, owner[a.stage], r);
                goto fail;
            }
            owner[a.stage] = r;
        }
    for (int st = 0; st < num_stages; st++)
        if (owner[st] < 0) {
            ap_errf(err, errlen, "%s: stage %d appears on no rank (stages 0..%d expected)", name, st,
                   num_stages - 1);
            goto fail;
        }
    if (num_stages % pp) {
        ap_errf(err, errlen, "%s: %d stages over %d ranks; expected the same number of stages on every rank",
               name, num_stages, pp);
        goto fail;
    }
    int style = AP_STYLE_CUSTOM;
    for (int sty = AP_STYLE_LOOP; sty <= AP_STYLE_V && style == AP_STYLE_CUSTOM; sty++) {
        int same = 1;
        for (int st = 0; st < num_stages; st++)
            if (owner[st] != ap_stage_to_rank(pp, num_stages, sty, st)) same = 0;
        if (same) style = sty;
    }
    for (int r = 0; r < pp; r++) {
        int k = 0;
        for (int st = 0; st < num_stages; st++) k += owner[st] == r;
        if (k != num_stages / pp) {
            ap_errf(err, errlen, "%s: rank %d holds %d stages, expected %d (the same on every rank)", name,
                   r, k, num_stages / pp);
            goto fail;
        }
    }

    s = ap_schedule_new(pp, num_stages, microbatches, style, AP_SCHED_CSV);
    if (!s) goto oom;
    s->lowered = lowered;
    s->forward_only = !backward; /* no backward anywhere: a forward-only (validation) schedule */
    memcpy(s->stage_to_rank, owner, (size_t)num_stages * sizeof(int));
    for (int r = 0; r < pp; r++)
        for (int c = 0; c < rows[r].n; c++)
            if (ap_schedule_push(s, r, rows[r].a[c])) goto oom;
    *out = s;
    s = NULL;
    rv = 0;
    goto fail;
oom:
    ap_errf(err, errlen, "%s: out of memory", name);
fail:
    if (rows)
        for (int r = 0; r < MAX_RANKS; r++) free(rows[r].a);
    free(rows);
    free(owner);
    ap_schedule_free(s);
    return rv;
}

int ap_schedule_load_csv(ap_schedule **out, const char *path, int pp, int microbatches, char *err,
                         size_t errlen) {
    *out = NULL;
    size_t n;
    char *buf = ap_read_file(path, MAX_CSV_BYTES, &n, err, errlen);
    if (!buf) return -1;
    int rv = ap_schedule_parse_csv(out, buf, n, path, pp, microbatches, err, errlen);
    free(buf);
    return rv;
}

int ap_schedule_write_csv(const ap_schedule *s, FILE *f) {
    for (int r = 0; r < s->pp; r++) {
        for (int i = 0; i < s->len[r]; i++) {
            char c[64];
            ap_action_format(c, sizeof c, s->acts[r][i]);
            if (fprintf(f, "%s%s", i ? "," : "", c) < 0) return -1;
        }
        /* csv.writer ends rows with \r\n; readers accept both */
        if (fputs("\n", f) < 0) return -1;
    }
    return 0;
}

int ap_schedule_dump_csv(const ap_schedule *s, const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        ap_errf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    int rv = ap_schedule_write_csv(s, f);
    if (fclose(f) || rv) {
        ap_errf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}
