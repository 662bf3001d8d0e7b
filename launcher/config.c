/* config.c - YAML config + `--section.key value` overrides, driven by the
 * schema table in config_schema.def; see config.h.
 *
 * Every value (file, override, default) goes through one path: libyaml parses
 * the text into a node, set_value() converts the node by the key's type into
 * temporaries, checks the range, and only then swaps it into the struct, so
 * an error never leaves a half-written value behind. */
#include "launcher/config.h"
#include "launcher/topology.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

/* ---- the schema table ---- */

#define AP_BASE_INT AP_CFG_INT
#define AP_BASE_INT_N AP_CFG_INT
#define AP_BASE_FLOAT AP_CFG_FLOAT
#define AP_BASE_FLOAT_N AP_CFG_FLOAT
#define AP_BASE_BOOL AP_CFG_BOOL
#define AP_BASE_STR AP_CFG_STR
#define AP_BASE_STR_N AP_CFG_STR
#define AP_BASE_ENUM AP_CFG_ENUM
#define AP_BASE_ENUM_N AP_CFG_ENUM
#define AP_BASE_LIST_STR AP_CFG_LIST_STR
#define AP_BASE_LIST_STR_N AP_CFG_LIST_STR
#define AP_BASE_LIST_LIST_STR AP_CFG_LIST_LIST_STR
#define AP_BASE_LIST_LIST_STR_N AP_CFG_LIST_LIST_STR
#define AP_BASE_LIST_FLOAT AP_CFG_LIST_FLOAT

#define AP_NULLABLE_INT 0
#define AP_NULLABLE_INT_N 1
#define AP_NULLABLE_FLOAT 0
#define AP_NULLABLE_FLOAT_N 1
#define AP_NULLABLE_BOOL 0
#define AP_NULLABLE_STR 0
#define AP_NULLABLE_STR_N 1
#define AP_NULLABLE_ENUM 0
#define AP_NULLABLE_ENUM_N 1
#define AP_NULLABLE_LIST_STR 0
#define AP_NULLABLE_LIST_STR_N 1
#define AP_NULLABLE_LIST_LIST_STR 0
#define AP_NULLABLE_LIST_LIST_STR_N 1
#define AP_NULLABLE_LIST_FLOAT 0

#define AP_HASOFF_INT(s, k) -1
#define AP_HASOFF_INT_N(s, k) (long)offsetof(ap_config, s.has_##k)
#define AP_HASOFF_FLOAT(s, k) -1
#define AP_HASOFF_FLOAT_N(s, k) (long)offsetof(ap_config, s.has_##k)
#define AP_HASOFF_BOOL(s, k) -1
#define AP_HASOFF_STR(s, k) -1
#define AP_HASOFF_STR_N(s, k) -1
#define AP_HASOFF_ENUM(s, k) -1
#define AP_HASOFF_ENUM_N(s, k) -1
#define AP_HASOFF_LIST_STR(s, k) -1
#define AP_HASOFF_LIST_STR_N(s, k) -1
#define AP_HASOFF_LIST_LIST_STR(s, k) -1
#define AP_HASOFF_LIST_LIST_STR_N(s, k) -1
#define AP_HASOFF_LIST_FLOAT(s, k) -1

const ap_cfg_key ap_cfg_keys[] = {
#define AP_SECTION(s, help)
#define AP_KEY(s, k, type, def, range, extra, help)                                              \
    {#s, #k, AP_BASE_##type, AP_NULLABLE_##type, def, range, extra, help,                        \
     offsetof(ap_config, s.k), AP_HASOFF_##type(s, k)},
#define AP_END(s)
#include "launcher/config_schema.def"
#undef AP_SECTION
#undef AP_KEY
#undef AP_END
};
const int ap_cfg_nkeys = (int)(sizeof ap_cfg_keys / sizeof *ap_cfg_keys);

typedef struct {
    const char *name, *help;
} section_info;

static const section_info sections[] = {
#define AP_SECTION(s, help) {#s, help},
#define AP_KEY(s, k, type, def, range, extra, help)
#define AP_END(s)
#include "launcher/config_schema.def"
#undef AP_SECTION
#undef AP_KEY
#undef AP_END
};
static const int nsections = (int)(sizeof sections / sizeof *sections);

typedef struct {
    const char *section, *name;
} target_info;

static const target_info targets[] = {
#define AP_SECTION(s, help)
#define AP_KEY(s, k, type, def, range, extra, help)
#define AP_END(s)
#define AP_TARGET(s, name) {#s, name},
#include "launcher/config_schema.def"
#undef AP_SECTION
#undef AP_KEY
#undef AP_END
#undef AP_TARGET
};
static const int ntargets = (int)(sizeof targets / sizeof *targets);

const ap_cfg_key *ap_cfg_find(const char *section, const char *key) {
    for (int i = 0; i < ap_cfg_nkeys; i++)
        if (!strcmp(ap_cfg_keys[i].section, section) && !strcmp(ap_cfg_keys[i].key, key))
            return &ap_cfg_keys[i];
    return NULL;
}

static int section_exists(const char *name, size_t len) {
    for (int i = 0; i < nsections; i++)
        if (strlen(sections[i].name) == len && !strncmp(sections[i].name, name, len)) return 1;
    return 0;
}

/* ---- messages ---- */

/* Where a value came from: a file position or an override flag. */
typedef struct {
    const char *file; /* NULL for overrides and defaults */
    int line, col;    /* 1-based */
    const char *flag; /* "--section.key" or "default" */
} loc;

static void errf(char *err, size_t errlen, const loc *l, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void errf(char *err, size_t errlen, const loc *l, const char *fmt, ...) {
    if (!err || !errlen) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (l && l->file) {
        snprintf(err, errlen, "%s:%d:%d: %s", l->file, l->line, l->col, msg);
    } else if (l && l->flag) {
        /* "--model.hidden_size: model.hidden_size: ..." says the name twice */
        size_t n = strlen(l->flag);
        if (n > 2 && !strncmp(l->flag, "--", 2) && !strncmp(msg, l->flag + 2, n - 2))
            snprintf(err, errlen, "--%s", msg);
        else
            snprintf(err, errlen, "%s: %s", l->flag, msg);
    } else {
        snprintf(err, errlen, "%s", msg);
    }
}

static loc node_loc(const char *file, const yaml_node_t *node, const char *flag) {
    loc l = {file, 0, 0, flag};
    if (node) {
        l.line = (int)node->start_mark.line + 1;
        l.col = (int)node->start_mark.column + 1;
    }
    return l;
}

/* Levenshtein distance, for "did you mean". Long names are simply far. */
static int edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 1000;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int sub = d[i - 1][j - 1] + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
            d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
    return d[la][lb];
}

static int close_enough(const char *typed, const char *cand, int dist) {
    int lim = (int)strlen(typed) / 3;
    if (lim < 2) lim = 2;
    return dist <= lim || (strlen(typed) >= 4 && strstr(cand, typed));
}

/* " (did you mean X?)" or "" for an unknown section name. */
static void suggest_section(const char *typed, char *out, size_t len) {
    out[0] = 0;
    int best = 1000;
    for (int i = 0; i < nsections; i++) {
        int d = edit_distance(typed, sections[i].name);
        if (d < best && close_enough(typed, sections[i].name, d)) {
            best = d;
            snprintf(out, len, " (did you mean %s?)", sections[i].name);
        }
    }
    if (out[0]) return;
    /* a key written at the top level: "pp_size:" -> distributed.pp_size */
    for (int i = 0; i < ap_cfg_nkeys; i++)
        if (!strcmp(typed, ap_cfg_keys[i].key) && strcmp(typed, "_target_")) {
            snprintf(out, len, " (did you mean %s.%s, inside the %s section?)", ap_cfg_keys[i].section,
                     typed, ap_cfg_keys[i].section);
            return;
        }
}

/* Suggestion for an unknown key in a known section. */
static void suggest_key(const char *section, const char *typed, char *out, size_t len) {
    out[0] = 0;
    int best = 1000;
    for (int i = 0; i < ap_cfg_nkeys; i++) {
        if (strcmp(ap_cfg_keys[i].section, section)) continue;
        int d = edit_distance(typed, ap_cfg_keys[i].key);
        if (d < best && close_enough(typed, ap_cfg_keys[i].key, d)) {
            best = d;
            snprintf(out, len, " (did you mean %s.%s?)", section, ap_cfg_keys[i].key);
        }
    }
    if (out[0]) return;
    for (int i = 0; i < ap_cfg_nkeys; i++) { /* the right key in another section */
        if (!strcmp(ap_cfg_keys[i].key, "_target_")) continue;
        if (!strcmp(ap_cfg_keys[i].key, typed) || edit_distance(typed, ap_cfg_keys[i].key) <= 1) {
            snprintf(out, len, " (did you mean %s.%s?)", ap_cfg_keys[i].section, ap_cfg_keys[i].key);
            return;
        }
    }
    size_t n = (size_t)snprintf(out, len, " (keys of %s:", section);
    for (int i = 0; i < ap_cfg_nkeys && n < len; i++)
        if (!strcmp(ap_cfg_keys[i].section, section))
            n += (size_t)snprintf(out + n, len - n, " %s", ap_cfg_keys[i].key);
    if (n < len) snprintf(out + n, len - n, ")");
}

/* ---- freeing values ---- */

static void strlist_free(ap_strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void strlistlist_free(ap_strlistlist *l) {
    for (int i = 0; i < l->n; i++) strlist_free(&l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

static void *field(ap_config *cfg, const ap_cfg_key *k) { return (char *)cfg + k->offset; }
static const void *cfield(const ap_config *cfg, const ap_cfg_key *k) {
    return (const char *)cfg + k->offset;
}

static void value_free(ap_config *cfg, const ap_cfg_key *k) {
    void *p = field(cfg, k);
    switch (k->type) {
    case AP_CFG_STR: free(*(char **)p); *(char **)p = NULL; break;
    case AP_CFG_LIST_STR: strlist_free(p); break;
    case AP_CFG_LIST_LIST_STR: strlistlist_free(p); break;
    default: break;
    }
}

void ap_config_free(ap_config *cfg) {
    if (!cfg) return;
    for (int i = 0; i < ap_cfg_nkeys; i++) value_free(cfg, &ap_cfg_keys[i]);
}

/* ---- scalars ---- */

typedef struct {
    const char *s;
    size_t len;
    int plain; /* unquoted: may be null/bool/number */
} scalar;

static int scalar_of(const yaml_node_t *n, scalar *out) {
    if (!n || n->type != YAML_SCALAR_NODE) return -1;
    out->s = (const char *)n->data.scalar.value;
    out->len = n->data.scalar.length;
    out->plain = n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
    return 0;
}

static int text_is(const scalar *sc, const char *const *words) {
    for (; *words; words++)
        if (strlen(*words) == sc->len && !memcmp(sc->s, *words, sc->len)) return 1;
    return 0;
}

static int is_null_node(const yaml_node_t *n) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    scalar sc;
    if (!n) return 1; /* an empty document */
    return !scalar_of(n, &sc) && sc.plain && text_is(&sc, nulls);
}

/* 0 false, 1 true, -1 not a YAML 1.1 boolean. */
static int parse_bool(const scalar *sc) {
    static const char *const t[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", NULL};
    static const char *const f[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", NULL};
    if (!sc->plain) return -1;
    if (text_is(sc, t)) return 1;
    if (text_is(sc, f)) return 0;
    return -1;
}

static int parse_int(const scalar *sc, long long *out) {
    char buf[64];
    if (sc->len == 0 || sc->len >= sizeof buf) return -1;
    memcpy(buf, sc->s, sc->len);
    buf[sc->len] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf || isspace((unsigned char)buf[0])) return -1;
    *out = v;
    return 0;
}

static int parse_float(const scalar *sc, double *out) {
    static const char *const pinf[] = {".inf", ".Inf", ".INF", "+.inf", "+.Inf", "inf", "Inf", "+inf", "infinity", NULL};
    static const char *const ninf[] = {"-.inf", "-.Inf", "-.INF", "-inf", "-Inf", "-infinity", NULL};
    char buf[64];
    if (text_is(sc, pinf)) { *out = INFINITY; return 0; }
    if (text_is(sc, ninf)) { *out = -INFINITY; return 0; }
    if (sc->len == 0 || sc->len >= sizeof buf) return -1;
    memcpy(buf, sc->s, sc->len);
    buf[sc->len] = 0;
    char *end;
    errno = 0;
    double v = strtod(buf, &end);
    if (*end || end == buf || isspace((unsigned char)buf[0]) || isnan(v) || isinf(v) ||
        (errno == ERANGE && fabs(v) > 1.0))
        return -1;
    *out = v;
    return 0;
}

/* ---- ranges: "[lo,hi]", "(lo,)" ... ---- */

typedef struct {
    int has_lo, has_hi, lo_open, hi_open;
    double lo, hi;
} range;

static range parse_range(const char *r) {
    range g = {0};
    if (!r || !r[0]) return g;
    g.lo_open = r[0] == '(';
    const char *p = r + 1;
    char *end;
    if (*p != ',') { g.lo = strtod(p, &end); g.has_lo = 1; p = end; }
    if (*p == ',') p++;
    if (*p != ']' && *p != ')') { g.hi = strtod(p, &end); g.has_hi = 1; p = end; }
    g.hi_open = *p == ')';
    return g;
}

static int in_range(const range *g, double v) {
    if (g->has_lo && (g->lo_open ? !(v > g->lo) : !(v >= g->lo))) return 0;
    if (g->has_hi && (g->hi_open ? !(v < g->hi) : !(v <= g->hi))) return 0;
    return 1;
}

/* "an integer >= 1", "a number in (0, 1)". */
static void describe_range(const ap_cfg_key *k, char *out, size_t len) {
    const char *what = k->type == AP_CFG_INT ? "an integer" : "a number";
    range g = parse_range(k->range);
    if (g.has_lo && g.has_hi && g.lo == g.hi)
        snprintf(out, len, "%s equal to %.15g", what, g.lo);
    else if (g.has_lo && g.has_hi)
        snprintf(out, len, "%s in %c%.15g, %.15g%c", what, g.lo_open ? '(' : '[', g.lo, g.hi,
                 g.hi_open ? ')' : ']');
    else if (g.has_lo)
        snprintf(out, len, "%s %s %.15g", what, g.lo_open ? ">" : ">=", g.lo);
    else if (g.has_hi)
        snprintf(out, len, "%s %s %.15g", what, g.hi_open ? "<" : "<=", g.hi);
    else
        snprintf(out, len, "%s", what);
}

static int enum_index(const ap_cfg_key *k, const char *s, size_t len) {
    const char *p = k->extra;
    for (int i = 0; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncasecmp(p, s, len)) return i;
        if (!bar) break;
        p = bar + 1;
    }
    return -1;
}

const char *ap_config_enum_name(const char *section, const char *key, int value) {
    static __thread char buf[64];
    const ap_cfg_key *k = ap_cfg_find(section, key);
    if (!k || k->type != AP_CFG_ENUM || value < 0) return "null";
    const char *p = k->extra;
    for (int i = 0; *p; i++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (i == value) {
            if (n >= sizeof buf) n = sizeof buf - 1;
            memcpy(buf, p, n);
            buf[n] = 0;
            return buf;
        }
        if (!bar) break;
        p = bar + 1;
    }
    return "null";
}

static void enum_choices(const ap_cfg_key *k, char *out, size_t len) {
    size_t n = 0;
    out[0] = 0;
    for (const char *p = k->extra; *p && n < len; p++) {
        if (*p == '|')
            n += (size_t)snprintf(out + n, len - n, ", ");
        else
            out[n++] = *p, out[n < len ? n : len - 1] = 0;
    }
    if (k->nullable && n < len) snprintf(out + n, len - n, ", null");
}

/* A short excerpt of the offending value for messages. */
static void show_node(const yaml_node_t *n, char *out, size_t len) {
    scalar sc;
    if (!n) snprintf(out, len, "null");
    else if (!scalar_of(n, &sc)) snprintf(out, len, "'%.*s'", (int)(sc.len > 60 ? 60 : sc.len), sc.s);
    else if (n->type == YAML_SEQUENCE_NODE) snprintf(out, len, "a list");
    else snprintf(out, len, "a mapping");
}

/* ---- converting a node to a key's value ---- */

static char *dup_scalar(const scalar *sc) {
    char *s = malloc(sc->len + 1);
    if (!s) return NULL;
    memcpy(s, sc->s, sc->len);
    s[sc->len] = 0;
    return s;
}

static int node_strlist(yaml_document_t *doc, yaml_node_t *n, ap_strlist *out, const loc *where,
                        const char *file, const char *name, char *err, size_t errlen) {
    out->v = NULL;
    out->n = 0;
    if (!n || n->type != YAML_SEQUENCE_NODE) {
        char got[96];
        show_node(n, got, sizeof got);
        errf(err, errlen, where, "%s: expected a list of strings like [a, b], got %s", name, got);
        return -1;
    }
    size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (cnt > 1000000) {
        errf(err, errlen, where, "%s: list of %zu items is too long", name, cnt);
        return -1;
    }
    out->v = calloc(cnt ? cnt : 1, sizeof *out->v);
    if (!out->v) { errf(err, errlen, where, "%s: out of memory", name); return -1; }
    for (size_t i = 0; i < cnt; i++) {
        yaml_node_t *it = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        scalar sc;
        if (scalar_of(it, &sc) || is_null_node(it)) {
            char got[96];
            show_node(it, got, sizeof got);
            loc l = file ? node_loc(file, it, NULL) : *where;
            errf(err, errlen, &l, "%s: item %zu: expected a string, got %s", name, i, got);
            strlist_free(out);
            return -1;
        }
        if (!(out->v[i] = dup_scalar(&sc))) { strlist_free(out); return -1; }
        out->n = (int)i + 1;
    }
    return 0;
}

/* Converts node (NULL = null) to key k's type and stores it in cfg. */
static int set_value(ap_config *cfg, const ap_cfg_key *k, yaml_document_t *doc, yaml_node_t *n,
                     const loc *where, const char *file, char *err, size_t errlen) {
    char name[160], got[96], want[128];
    snprintf(name, sizeof name, "%s.%s", k->section, k->key);
    show_node(n, got, sizeof got);
    void *p = field(cfg, k);
    int isnull = is_null_node(n);
    if (isnull && !k->nullable) {
        switch (k->type) {
        case AP_CFG_INT: case AP_CFG_FLOAT: describe_range(k, want, sizeof want); break;
        case AP_CFG_BOOL: snprintf(want, sizeof want, "true or false"); break;
        case AP_CFG_ENUM: {
            char choices[96];
            enum_choices(k, choices, sizeof choices);
            snprintf(want, sizeof want, "one of %s", choices);
            break;
        }
        case AP_CFG_LIST_FLOAT: snprintf(want, sizeof want, "a list of %s numbers", k->extra); break;
        default: snprintf(want, sizeof want, "a value"); break;
        }
        errf(err, errlen, where, "%s may not be null (expected %s)", name, want);
        return -1;
    }
    scalar sc = {0};
    int is_scalar = !isnull && !scalar_of(n, &sc);
    range g = parse_range(k->range);

    switch (k->type) {
    case AP_CFG_INT: {
        if (isnull) {
            *(int *)p = -1;
            *(int *)((char *)cfg + k->has_offset) = 0;
            return 0;
        }
        long long v;
        describe_range(k, want, sizeof want);
        if (!is_scalar || parse_int(&sc, &v)) {
            errf(err, errlen, where, "%s: %s is not an integer (expected %s)", name, got, want);
            return -1;
        }
        if (v < INT_MIN || v > INT_MAX || !in_range(&g, (double)v)) {
            errf(err, errlen, where, "%s: %lld is out of range (expected %s)", name, v, want);
            return -1;
        }
        *(int *)p = (int)v;
        if (k->has_offset >= 0) *(int *)((char *)cfg + k->has_offset) = 1;
        return 0;
    }
    case AP_CFG_FLOAT: {
        if (isnull) {
            *(double *)p = 0.0;
            *(int *)((char *)cfg + k->has_offset) = 0;
            return 0;
        }
        double v;
        describe_range(k, want, sizeof want);
        if (!is_scalar || parse_float(&sc, &v)) {
            errf(err, errlen, where, "%s: %s is not a number (expected %s)", name, got, want);
            return -1;
        }
        if (!in_range(&g, v)) {
            errf(err, errlen, where, "%s: %g is out of range (expected %s)", name, v, want);
            return -1;
        }
        *(double *)p = v;
        if (k->has_offset >= 0) *(int *)((char *)cfg + k->has_offset) = 1;
        return 0;
    }
    case AP_CFG_BOOL: {
        int b = is_scalar ? parse_bool(&sc) : -1;
        if (b < 0) {
            errf(err, errlen, where, "%s: %s is not a boolean (expected true or false)", name, got);
            return -1;
        }
        *(int *)p = b;
        return 0;
    }
    case AP_CFG_STR: {
        char *s = NULL;
        if (!isnull) {
            if (!is_scalar) {
                errf(err, errlen, where, "%s: expected a string, got %s", name, got);
                return -1;
            }
            if (memchr(sc.s, 0, sc.len)) {
                errf(err, errlen, where, "%s: string contains a NUL byte", name);
                return -1;
            }
            if (!(s = dup_scalar(&sc))) { errf(err, errlen, where, "out of memory"); return -1; }
        }
        free(*(char **)p);
        *(char **)p = s;
        return 0;
    }
    case AP_CFG_ENUM: {
        int v = -1;
        if (!isnull) {
            v = is_scalar ? enum_index(k, sc.s, sc.len) : -1;
            if (v < 0) {
                enum_choices(k, want, sizeof want);
                errf(err, errlen, where, "%s: %s is not a valid choice (expected one of %s)", name, got, want);
                return -1;
            }
        }
        *(int *)p = v;
        return 0;
    }
    case AP_CFG_LIST_STR: {
        ap_strlist l = {0};
        if (!isnull && node_strlist(doc, n, &l, where, file, name, err, errlen)) return -1;
        strlist_free(p);
        *(ap_strlist *)p = l;
        return 0;
    }
    case AP_CFG_LIST_LIST_STR: {
        ap_strlistlist ll = {0};
        if (!isnull) {
            if (n->type != YAML_SEQUENCE_NODE) {
                errf(err, errlen, where, "%s: expected a list of lists like [[a, b], [c]], got %s", name, got);
                return -1;
            }
            size_t cnt = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
            if (cnt > 100000) {
                errf(err, errlen, where, "%s: list of %zu items is too long", name, cnt);
                return -1;
            }
            ll.v = calloc(cnt ? cnt : 1, sizeof *ll.v);
            if (!ll.v) { errf(err, errlen, where, "out of memory"); return -1; }
            for (size_t i = 0; i < cnt; i++) {
                yaml_node_t *it = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
                char iname[192];
                snprintf(iname, sizeof iname, "%s[%zu]", name, i);
                loc l = file ? node_loc(file, it, NULL) : *where;
                if (node_strlist(doc, it, &ll.v[i], &l, file, iname, err, errlen)) {
                    strlistlist_free(&ll);
                    return -1;
                }
                ll.n = (int)i + 1;
            }
        }
        strlistlist_free(p);
        *(ap_strlistlist *)p = ll;
        return 0;
    }
    case AP_CFG_LIST_FLOAT: {
        int want_n = atoi(k->extra);
        double tmp[AP_CFG_MAX_FLOATS];
        describe_range(k, want, sizeof want);
        size_t cnt = n->type == YAML_SEQUENCE_NODE
                         ? (size_t)(n->data.sequence.items.top - n->data.sequence.items.start)
                         : 0;
        if (n->type != YAML_SEQUENCE_NODE) {
            errf(err, errlen, where, "%s: expected a list of %d numbers like [0.9, 0.95], got %s", name,
                 want_n, got);
            return -1;
        }
        if (cnt != (size_t)want_n) {
            errf(err, errlen, where, "%s: expected a list of %d numbers, got %zu", name, want_n, cnt);
            return -1;
        }
        for (size_t i = 0; i < cnt; i++) {
            yaml_node_t *it = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
            scalar isc;
            loc l = file ? node_loc(file, it, NULL) : *where;
            show_node(it, got, sizeof got);
            if (scalar_of(it, &isc) || parse_float(&isc, &tmp[i])) {
                errf(err, errlen, &l, "%s[%zu]: %s is not a number (expected %s)", name, i, got, want);
                return -1;
            }
            if (!in_range(&g, tmp[i])) {
                errf(err, errlen, &l, "%s[%zu]: %g is out of range (expected %s)", name, i, tmp[i], want);
                return -1;
            }
        }
        memcpy(p, tmp, cnt * sizeof *tmp);
        *(int *)((char *)p + sizeof(double) * AP_CFG_MAX_FLOATS) = (int)cnt;
        return 0;
    }
    }
    return -1;
}

/* Configs are small and flat. libyaml's scanner slows down quadratically with
 * flow nesting ("[[[[..."), so bound size and depth before loading. */
#define CFG_MAX_BYTES (4 << 20)
#define CFG_MAX_DEPTH 32

/* 1 (and the position) when collections nest deeper than CFG_MAX_DEPTH;
 * 0 otherwise, also on a syntax error, which the real load then reports. */
static int too_deep(const char *text, size_t len, int *line, int *col) {
    yaml_parser_t p;
    yaml_event_t ev;
    int depth = 0, deep = 0;
    if (!yaml_parser_initialize(&p)) return 0;
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!deep && yaml_parser_parse(&p, &ev)) {
        yaml_event_type_t t = ev.type;
        if (t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT) {
            if (++depth > CFG_MAX_DEPTH) {
                deep = 1;
                *line = (int)ev.start_mark.line + 1;
                *col = (int)ev.start_mark.column + 1;
            }
        } else if (t == YAML_SEQUENCE_END_EVENT || t == YAML_MAPPING_END_EVENT) {
            depth--;
        }
        yaml_event_delete(&ev);
        if (t == YAML_STREAM_END_EVENT) break;
    }
    yaml_parser_delete(&p);
    return deep;
}

/* Parses `text` as a one-value YAML document and sets key k from it. */
static int set_from_text(ap_config *cfg, const ap_cfg_key *k, const char *text, const loc *where,
                         char *err, size_t errlen) {
    /* A string key takes the text as it is (a path may hold ": " or " #"),
     * unless it is quoted or a null word. */
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    scalar raw = {text, strlen(text), 1};
    if (k->type == AP_CFG_STR && text[0] != '\'' && text[0] != '"' && !text_is(&raw, nulls)) {
        char *s = strdup(text);
        if (!s) { errf(err, errlen, where, "out of memory"); return -1; }
        free(*(char **)field(cfg, k));
        *(char **)field(cfg, k) = s;
        return 0;
    }
    size_t len = strlen(text);
    int line, col;
    if (len > CFG_MAX_BYTES) {
        errf(err, errlen, where, "value of %zu bytes is too long", len);
        return -1;
    }
    if (too_deep(text, len, &line, &col)) {
        errf(err, errlen, where, "value nests lists or mappings deeper than %d levels (column %d)",
             CFG_MAX_DEPTH, col);
        return -1;
    }
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) { errf(err, errlen, where, "out of memory"); return -1; }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        errf(err, errlen, where, "cannot read value '%s' as YAML: %s (column %zu)", text,
             parser.problem ? parser.problem : "syntax error", parser.problem_mark.column + 1);
        yaml_parser_delete(&parser);
        return -1;
    }
    int rc = set_value(cfg, k, &doc, yaml_document_get_root_node(&doc), where, NULL, err, errlen);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return rc;
}

int ap_config_defaults(ap_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    char err[256];
    for (int i = 0; i < ap_cfg_nkeys; i++) {
        loc l = {NULL, 0, 0, "default"};
        if (set_from_text(cfg, &ap_cfg_keys[i], ap_cfg_keys[i].def, &l, err, sizeof err)) {
            /* A bad default is a bug in config_schema.def: make it loud. */
            fprintf(stderr, "autopipe: config_schema.def: %s\n", err);
            abort();
        }
    }
    return 0;
}

/* ---- the YAML file ---- */

/* Reads one YAML document of sections from text[0..len); `path` names it in
 * messages. */
static int load_yaml(ap_config *cfg, const char *text, size_t len, const char *path, char *err,
                     size_t errlen) {
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = -1, have_doc = 0, dline, dcol;
    if (too_deep(text, len, &dline, &dcol)) {
        loc l = {path, dline, dcol, NULL};
        errf(err, errlen, &l, "lists or mappings nest deeper than %d levels", CFG_MAX_DEPTH);
        return -1;
    }
    char *seen = calloc((size_t)ap_cfg_nkeys, 1);
    char *seen_sec = calloc((size_t)nsections, 1);
    if (!seen || !seen_sec || !yaml_parser_initialize(&parser)) {
        errf(err, errlen, NULL, "out of memory");
        free(seen);
        free(seen_sec);
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        if (parser.error == YAML_READER_ERROR)
            errf(err, errlen, NULL, "%s: cannot read: %s", path, parser.problem ? parser.problem : "read error");
        else {
            loc l = {path, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1, NULL};
            if (parser.context)
                errf(err, errlen, &l, "YAML syntax error: %s %s (see line %zu, column %zu)",
                     parser.problem ? parser.problem : "", parser.context, parser.context_mark.line + 1,
                     parser.context_mark.column + 1);
            else
                errf(err, errlen, &l, "YAML syntax error: %s", parser.problem ? parser.problem : "bad input");
        }
        goto done;
    }
    have_doc = 1;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || is_null_node(root)) { rc = 0; goto done; } /* an empty file: all defaults */
    if (root->type != YAML_MAPPING_NODE) {
        loc l = node_loc(path, root, NULL);
        errf(err, errlen, &l, "expected a mapping of sections (distributed:, autopipeline:, model:, ...)");
        goto done;
    }
    for (yaml_node_pair_t *sp = root->data.mapping.pairs.start; sp < root->data.mapping.pairs.top; sp++) {
        yaml_node_t *kn = yaml_document_get_node(&doc, sp->key);
        yaml_node_t *vn = yaml_document_get_node(&doc, sp->value);
        loc kl = node_loc(path, kn, NULL);
        scalar ks;
        if (scalar_of(kn, &ks) || memchr(ks.s, 0, ks.len)) {
            errf(err, errlen, &kl, "a section name must be a plain string");
            goto done;
        }
        char sec[96];
        snprintf(sec, sizeof sec, "%.*s", (int)(ks.len > 90 ? 90 : ks.len), ks.s);
        int si = -1;
        for (int i = 0; i < nsections; i++)
            if (!strcmp(sections[i].name, sec)) si = i;
        if (si < 0) {
            char hint[512];
            suggest_section(sec, hint, sizeof hint);
            errf(err, errlen, &kl, "unknown section '%s'%s", sec, hint);
            goto done;
        }
        if (seen_sec[si]++) {
            errf(err, errlen, &kl, "duplicate section '%s'", sec);
            goto done;
        }
        if (is_null_node(vn)) continue; /* "model:" with nothing under it */
        if (vn->type != YAML_MAPPING_NODE) {
            loc vl = node_loc(path, vn, NULL);
            errf(err, errlen, &vl, "section '%s' must be a mapping of keys", sec);
            goto done;
        }
        for (yaml_node_pair_t *kp = vn->data.mapping.pairs.start; kp < vn->data.mapping.pairs.top; kp++) {
            yaml_node_t *kk = yaml_document_get_node(&doc, kp->key);
            yaml_node_t *kv = yaml_document_get_node(&doc, kp->value);
            loc l = node_loc(path, kk, NULL);
            scalar kks;
            if (scalar_of(kk, &kks) || memchr(kks.s, 0, kks.len)) {
                errf(err, errlen, &l, "a key in section '%s' must be a plain string", sec);
                goto done;
            }
            char key[96];
            snprintf(key, sizeof key, "%.*s", (int)(kks.len > 90 ? 90 : kks.len), kks.s);
            const ap_cfg_key *k = ap_cfg_find(sec, key);
            if (!k) {
                char hint[512];
                suggest_key(sec, key, hint, sizeof hint);
                errf(err, errlen, &l, "unknown key '%s.%s'%s", sec, key, hint);
                goto done;
            }
            int idx = (int)(k - ap_cfg_keys);
            if (seen[idx]++) {
                errf(err, errlen, &l, "duplicate key '%s.%s'", sec, key);
                goto done;
            }
            loc vl = node_loc(path, kv, NULL);
            if (set_value(cfg, k, &doc, kv, &vl, path, err, errlen)) goto done;
        }
    }
    /* A second document would be silently ignored: refuse it instead. */
    yaml_document_t doc2;
    if (!yaml_parser_load(&parser, &doc2)) {
        loc l = {path, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1, NULL};
        errf(err, errlen, &l, "YAML syntax error: %s", parser.problem ? parser.problem : "bad input");
        goto done;
    }
    int more = yaml_document_get_root_node(&doc2) != NULL;
    yaml_document_delete(&doc2);
    if (more) {
        errf(err, errlen, NULL, "%s: expected one YAML document, found more ('---')", path);
        goto done;
    }
    rc = 0;
done:
    if (have_doc) yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    free(seen);
    free(seen_sec);
    return rc;
}

static int load_file(ap_config *cfg, const char *path, char *err, size_t errlen) {
    struct stat st;
    if (stat(path, &st)) {
        errf(err, errlen, NULL, "cannot read config file '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        errf(err, errlen, NULL, "cannot read config file '%s': not a regular file", path);
        return -1;
    }
    if (st.st_size > CFG_MAX_BYTES) {
        errf(err, errlen, NULL, "config file '%s' is %lld bytes, more than a config can be (%d)", path,
             (long long)st.st_size, CFG_MAX_BYTES);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        errf(err, errlen, NULL, "cannot read config file '%s': %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(CFG_MAX_BYTES + 1);
    size_t n = buf ? fread(buf, 1, CFG_MAX_BYTES + 1, f) : 0;
    int bad = !buf || ferror(f) || n > CFG_MAX_BYTES;
    int e = errno;
    fclose(f);
    if (bad) {
        errf(err, errlen, NULL, "cannot read config file '%s': %s", path,
             !buf ? "out of memory" : n > CFG_MAX_BYTES ? "file grew beyond the size limit" : strerror(e));
        free(buf);
        return -1;
    }
    buf[n] = 0;
    int rc = load_yaml(cfg, buf, n, path, err, errlen);
    free(buf);
    return rc;
}

/* ---- overrides ---- */

int ap_config_set(ap_config *cfg, const char *dotted, const char *value, char *err, size_t errlen) {
    char flag[200];
    snprintf(flag, sizeof flag, "--%s", dotted);
    loc l = {NULL, 0, 0, flag};
    const char *dot = strchr(dotted, '.');
    char sec[96], key[96];
    if (!dot || dot == dotted || (size_t)(dot - dotted) >= sizeof sec || strlen(dot + 1) >= sizeof key) {
        errf(err, errlen, &l, "not a config key (expected --section.key VALUE, e.g. --distributed.pp_size 2)");
        return -1;
    }
    snprintf(sec, sizeof sec, "%.*s", (int)(dot - dotted), dotted);
    snprintf(key, sizeof key, "%s", dot + 1);
    if (!section_exists(sec, strlen(sec))) {
        char hint[512];
        suggest_section(sec, hint, sizeof hint);
        errf(err, errlen, &l, "no such config key: unknown section '%s'%s", sec, hint);
        return -1;
    }
    const ap_cfg_key *k = ap_cfg_find(sec, key);
    if (!k) {
        char hint[512];
        suggest_key(sec, key, hint, sizeof hint);
        errf(err, errlen, &l, "no such config key '%s.%s'%s", sec, key, hint);
        return -1;
    }
    return set_from_text(cfg, k, value, &l, err, errlen);
}

/* Applies argv-style overrides: "--a.b" "v" or "--a.b=v". */
static int apply_overrides(ap_config *cfg, int argc, char **argv, char *err, size_t errlen) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) || !a[2]) {
            errf(err, errlen, NULL, "unexpected argument '%s' (expected --section.key VALUE)", a);
            return -1;
        }
        const char *eq = strchr(a, '=');
        char name[200];
        const char *val;
        if (eq) {
            snprintf(name, sizeof name, "%.*s", (int)(eq - a - 2), a + 2);
            val = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a + 2);
            if (i + 1 >= argc) {
                errf(err, errlen, NULL, "%s needs a value (--section.key VALUE or --section.key=VALUE)", a);
                return -1;
            }
            val = argv[++i];
        }
        if (ap_config_set(cfg, name, val, err, errlen)) return -1;
    }
    return 0;
}

/* ---- validation across keys ---- */

int ap_config_validate(const ap_config *cfg, char *err, size_t errlen) {
    for (int i = 0; i < ap_cfg_nkeys; i++) {
        const ap_cfg_key *k = &ap_cfg_keys[i];
        if (strcmp(k->key, "_target_")) continue;
        const char *v = *(char *const *)cfield(cfg, k);
        if (!v) continue;
        int known = 0;
        for (int t = 0; t < ntargets; t++)
            if (!strcmp(targets[t].section, k->section) && !strcmp(targets[t].name, v)) known = 1;
        if (known) continue;
        char list[1024];
        size_t n = 0;
        list[0] = 0;
        for (int t = 0; t < ntargets && n < sizeof list; t++)
            if (!strcmp(targets[t].section, k->section))
                n += (size_t)snprintf(list + n, sizeof list - n, "%s%s", n ? ", " : "", targets[t].name);
        errf(err, errlen, NULL, "%s._target_: unknown target '%s' (known: %s)", k->section, v, list);
        return -1;
    }
    if (cfg->distributed.sequence_parallel) {
        errf(err, errlen, NULL, "distributed.sequence_parallel: true is not supported (expected false)");
        return -1;
    }
    if (cfg->clip_grad_norm.norm_type != 2.0 && !isinf(cfg->clip_grad_norm.norm_type)) {
        errf(err, errlen, NULL, "clip_grad_norm.norm_type: %g is not supported (expected 2.0 or inf)",
             cfg->clip_grad_norm.norm_type);
        return -1;
    }
    ap_mesh mesh = {{cfg->distributed.pp_size, cfg->distributed.dp_size, cfg->distributed.tp_size}};
    if (ap_mesh_check(&mesh)) {
        errf(err, errlen, NULL,
             "distributed: pp_size %d x dp_size %d x tp_size %d is more than %d ranks",
             cfg->distributed.pp_size, cfg->distributed.dp_size, cfg->distributed.tp_size, AP_MESH_MAX_RANKS);
        return -1;
    }
    if (cfg->dataloader.batch_size % cfg->autopipeline.pp_microbatch_size) {
        errf(err, errlen, NULL,
             "dataloader.batch_size %d is not divisible by autopipeline.pp_microbatch_size %d",
             cfg->dataloader.batch_size, cfg->autopipeline.pp_microbatch_size);
        return -1;
    }
    const struct ap_config_model *m = &cfg->model;
    if (m->num_key_value_heads > m->num_attention_heads || m->num_attention_heads % m->num_key_value_heads) {
        errf(err, errlen, NULL,
             "model.num_key_value_heads %d must divide model.num_attention_heads %d",
             m->num_key_value_heads, m->num_attention_heads);
        return -1;
    }
    if (!m->has_head_dim && m->hidden_size % m->num_attention_heads) {
        errf(err, errlen, NULL,
             "model.hidden_size %d is not divisible by model.num_attention_heads %d (set model.head_dim)",
             m->hidden_size, m->num_attention_heads);
        return -1;
    }
    const char *t = cfg->model._target_;
    if (t && strstr(t, "from_pretrained") && !m->pretrained_model_name_or_path) {
        errf(err, errlen, NULL, "model._target_ is from_pretrained but model.pretrained_model_name_or_path is null");
        return -1;
    }
    return 0;
}

const char ap_config_builtin_yaml[] =
    "# the built-in default: the key defaults (a tiny Llama-shaped model) on 2 pipeline stages\n"
    "distributed:\n"
    "  pp_size: 2\n";

static int load_impl(ap_config *cfg, const char *path, int builtin, int argc, char **overrides,
                     char *err, size_t errlen) {
    ap_config_defaults(cfg);
    if ((builtin && load_yaml(cfg, ap_config_builtin_yaml, strlen(ap_config_builtin_yaml), "<built-in config>", err, errlen)) ||
        (path && load_file(cfg, path, err, errlen)) || apply_overrides(cfg, argc, overrides, err, errlen) ||
        ap_config_validate(cfg, err, errlen)) {
        ap_config_free(cfg);
        return -1;
    }
    return 0;
}

int ap_config_load(ap_config *cfg, const char *path, int argc, char **overrides, char *err,
                   size_t errlen) {
    return load_impl(cfg, path, 0, argc, overrides, err, errlen);
}

int ap_config_load_builtin(ap_config *cfg, int argc, char **overrides, char *err, size_t errlen) {
    return load_impl(cfg, NULL, 1, argc, overrides, err, errlen);
}

int ap_config_load_string(ap_config *cfg, const char *yaml, const char *name, char *err,
                          size_t errlen) {
    ap_config_defaults(cfg);
    if (load_yaml(cfg, yaml, strlen(yaml), name ? name : "<config text>", err, errlen) ||
        ap_config_validate(cfg, err, errlen)) {
        ap_config_free(cfg);
        return -1;
    }
    return 0;
}

/* ---- the subcommand command line ---- */

static const ap_cli_flag *find_flag(const ap_cli_flag *flags, const char *name, size_t len) {
    for (; flags && flags->name; flags++)
        if (strlen(flags->name) == len && !strncmp(flags->name, name, len)) return flags;
    return NULL;
}

int ap_config_from_args(ap_config *cfg, int argc, char **argv, const ap_cli_flag *flags, char **rest,
                        int *nrest, char *err, size_t errlen) {
    const char *cmd = argc > 0 ? argv[0] : "autopipe";
    const char *path = NULL;
    int nov = 0, nr = 1, help = 0;
    char **ov = calloc((size_t)argc + 1, sizeof *ov);
    if (!ov) { errf(err, errlen, NULL, "out of memory"); return -1; }
    rest[0] = argv[0];
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (!strcmp(a, "--")) { /* everything after is positional */
            while (++i < argc) rest[nr++] = argv[i];
            break;
        }
        if (!strcmp(a, "--config") || !strncmp(a, "--config=", 9)) {
            if (path) { errf(err, errlen, NULL, "--config given twice"); goto fail; }
            if (a[8] == '=') path = a + 9;
            else if (i + 1 < argc) path = argv[++i];
            else { errf(err, errlen, NULL, "--config needs a file name"); goto fail; }
            if (!path[0]) { errf(err, errlen, NULL, "--config needs a file name"); goto fail; }
            continue;
        }
        if (a[0] == '-' && a[1]) {
            const char *name = a + (a[1] == '-' ? 2 : 1);
            const char *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const char *dot = memchr(name, '.', len);
            if (a[1] == '-' && dot) { /* a config override */
                ov[nov++] = a;
                if (!eq) {
                    if (i + 1 >= argc) {
                        errf(err, errlen, NULL, "%s needs a value (--section.key VALUE or --section.key=VALUE)", a);
                        goto fail;
                    }
                    ov[nov++] = argv[++i];
                }
                continue;
            }
            const ap_cli_flag *f = find_flag(flags, name, len);
            if (!f) {
                errf(err, errlen, NULL, "unknown option '%s' for '%s' (see `autopipe %s --help`)", a, cmd, cmd);
                goto fail;
            }
            if (!strcmp(f->name, "help") || !strcmp(f->name, "h")) help = 1;
            rest[nr++] = a;
            if (f->has_arg && !eq) {
                if (i + 1 >= argc) { errf(err, errlen, NULL, "option '%s' needs a value", a); goto fail; }
                rest[nr++] = argv[++i];
            } else if (!f->has_arg && eq) {
                errf(err, errlen, NULL, "option '--%.*s' takes no value", (int)len, name);
                goto fail;
            }
            continue;
        }
        rest[nr++] = a; /* positional */
    }
    rest[nr] = NULL;
    *nrest = nr;
    /* --help must work even when the config would not load. */
    int rc = help    ? ap_config_defaults(cfg)
             : path  ? ap_config_load(cfg, path, nov, ov, err, errlen)
                     : ap_config_load_builtin(cfg, nov, ov, err, errlen);
    free(ov);
    return rc;
fail:
    free(ov);
    rest[0] = argv[0];
    rest[1] = NULL;
    *nrest = 1;
    return -1;
}

/* ---- writing YAML ---- */

/* Shortest text that reads back to exactly v. */
static void fmt_double(double v, char *out, size_t len) {
    if (isinf(v)) { snprintf(out, len, v > 0 ? ".inf" : "-.inf"); return; }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, len, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

/* A str value that YAML would read as something else must be quoted. */
static int needs_quotes(const char *s) {
    static const char *const special[] = {"", "~", "null", "Null", "NULL", "true", "True", "TRUE",
                                          "false", "False", "FALSE", "yes", "Yes", "YES", "no", "No",
                                          "NO", "on", "On", "ON", "off", "Off", "OFF", NULL};
    scalar sc = {s, strlen(s), 1};
    double d;
    return text_is(&sc, special) || !parse_float(&sc, &d) || (s[0] == '.' && s[1] == 'i');
}

typedef struct {
    yaml_emitter_t em;
    int ok;
} emitter;

static void emit_scalar(emitter *e, const char *s, int quote) {
    yaml_event_t ev;
    if (!e->ok) return;
    if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 1,
                                      quote ? YAML_SINGLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE) ||
        !yaml_emitter_emit(&e->em, &ev))
        e->ok = 0;
}

static void emit_seq(emitter *e, int start) {
    yaml_event_t ev;
    if (!e->ok) return;
    int r = start ? yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_FLOW_SEQUENCE_STYLE)
                  : yaml_sequence_end_event_initialize(&ev);
    if (!r || !yaml_emitter_emit(&e->em, &ev)) e->ok = 0;
}

static void emit_map(emitter *e, int start) {
    yaml_event_t ev;
    if (!e->ok) return;
    int r = start ? yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE)
                  : yaml_mapping_end_event_initialize(&ev);
    if (!r || !yaml_emitter_emit(&e->em, &ev)) e->ok = 0;
}

static void emit_strlist(emitter *e, const ap_strlist *l) {
    emit_seq(e, 1);
    for (int i = 0; i < l->n; i++) emit_scalar(e, l->v[i], needs_quotes(l->v[i]));
    emit_seq(e, 0);
}

static void emit_value(emitter *e, const ap_config *cfg, const ap_cfg_key *k) {
    const void *p = cfield(cfg, k);
    char buf[64];
    int isnull = k->has_offset >= 0 && !*(const int *)((const char *)cfg + k->has_offset);
    if (isnull) { emit_scalar(e, "null", 0); return; }
    switch (k->type) {
    case AP_CFG_INT: snprintf(buf, sizeof buf, "%d", *(const int *)p); emit_scalar(e, buf, 0); break;
    case AP_CFG_FLOAT: fmt_double(*(const double *)p, buf, sizeof buf); emit_scalar(e, buf, 0); break;
    case AP_CFG_BOOL: emit_scalar(e, *(const int *)p ? "true" : "false", 0); break;
    case AP_CFG_STR: {
        const char *s = *(char *const *)p;
        emit_scalar(e, s ? s : "null", s && needs_quotes(s));
        break;
    }
    case AP_CFG_ENUM: emit_scalar(e, ap_config_enum_name(k->section, k->key, *(const int *)p), 0); break;
    case AP_CFG_LIST_STR: {
        const ap_strlist *l = p;
        if (!l->n && k->nullable) emit_scalar(e, "null", 0);
        else emit_strlist(e, l);
        break;
    }
    case AP_CFG_LIST_LIST_STR: {
        const ap_strlistlist *l = p;
        if (!l->n && k->nullable) { emit_scalar(e, "null", 0); break; }
        emit_seq(e, 1);
        for (int i = 0; i < l->n; i++) emit_strlist(e, &l->v[i]);
        emit_seq(e, 0);
        break;
    }
    case AP_CFG_LIST_FLOAT: {
        const double *d = p;
        int n = *(const int *)((const char *)p + sizeof(double) * AP_CFG_MAX_FLOATS);
        emit_seq(e, 1);
        for (int i = 0; i < n; i++) {
            fmt_double(d[i], buf, sizeof buf);
            emit_scalar(e, buf, 0);
        }
        emit_seq(e, 0);
        break;
    }
    }
}

int ap_config_emit_yaml(const ap_config *cfg, FILE *f) {
    emitter e = {.ok = 1};
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&e.em)) return -1;
    yaml_emitter_set_output_file(&e.em, f);
    yaml_emitter_set_width(&e.em, 100);
    yaml_emitter_set_unicode(&e.em, 1);
    if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || !yaml_emitter_emit(&e.em, &ev) ||
        !yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) || !yaml_emitter_emit(&e.em, &ev))
        e.ok = 0;
    emit_map(&e, 1);
    for (int s = 0; s < nsections; s++) {
        emit_scalar(&e, sections[s].name, 0);
        emit_map(&e, 1);
        for (int i = 0; i < ap_cfg_nkeys; i++) {
            if (strcmp(ap_cfg_keys[i].section, sections[s].name)) continue;
            emit_scalar(&e, ap_cfg_keys[i].key, 0);
            emit_value(&e, cfg, &ap_cfg_keys[i]);
        }
        emit_map(&e, 0);
    }
    emit_map(&e, 0);
    if (e.ok && (!yaml_document_end_event_initialize(&ev, 1) || !yaml_emitter_emit(&e.em, &ev) ||
                 !yaml_stream_end_event_initialize(&ev) || !yaml_emitter_emit(&e.em, &ev)))
        e.ok = 0;
    if (e.ok && !yaml_emitter_flush(&e.em)) e.ok = 0;
    yaml_emitter_delete(&e.em);
    return e.ok && !ferror(f) ? 0 : -1;
}

char *ap_config_to_yaml(const ap_config *cfg) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    int rc = ap_config_emit_yaml(cfg, f);
    if (fclose(f) || rc) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* ---- help and the reference ---- */

static void type_name(const ap_cfg_key *k, char *out, size_t len) {
    static const char *names[] = {"int", "float", "bool", "str", "enum", "list of str",
                                  "list of lists of str", "list of float"};
    char choices[256] = "";
    if (k->type == AP_CFG_ENUM) {
        enum_choices(k, choices, sizeof choices);
        snprintf(out, len, "%s", choices);
        return;
    }
    if (k->type == AP_CFG_LIST_FLOAT)
        snprintf(out, len, "list of %s float%s", k->extra, k->range[0] ? " " : "");
    else
        snprintf(out, len, "%s%s%s", names[k->type], k->nullable ? " or null" : "", k->range[0] ? " " : "");
    if (k->range[0]) {
        size_t n = strlen(out);
        snprintf(out + n, len - n, "%s", k->range);
    }
}

static void targets_of(const char *section, char *out, size_t len) {
    size_t n = 0;
    out[0] = 0;
    for (int t = 0; t < ntargets && n < len; t++)
        if (!strcmp(targets[t].section, section))
            n += (size_t)snprintf(out + n, len - n, "%s`%s`", n ? ", " : "", targets[t].name);
}

void ap_config_emit_reference(FILE *f) {
    fprintf(f, "Every key with its type, default and meaning; generated by `autopipe config --reference`\n"
               "from `launcher/config_schema.def`. Set keys in the YAML file (`section:` then `key: value`)\n"
               "or on the command line as `--section.key VALUE` or `--section.key=VALUE` (YAML values:\n"
               "`null`, `true`, `[a, b]`); the command line wins. Ranges: `[1,)` means >= 1, `(0,1)` means\n"
               "between 0 and 1 exclusive.\n");
    for (int s = 0; s < nsections; s++) {
        fprintf(f, "\n### `%s`: %s\n\n| key | type | default | meaning |\n|---|---|---|---|\n",
                sections[s].name, sections[s].help);
        for (int i = 0; i < ap_cfg_nkeys; i++) {
            const ap_cfg_key *k = &ap_cfg_keys[i];
            if (strcmp(k->section, sections[s].name)) continue;
            char type[256], known[1024] = "";
            type_name(k, type, sizeof type);
            if (!strcmp(k->key, "_target_")) targets_of(k->section, known, sizeof known);
            fprintf(f, "| `%s.%s` | %s | `%s` | %s%s%s |\n", k->section, k->key, type, k->def, k->help,
                    known[0] ? "; known: " : "", known);
        }
    }
}

void ap_config_emit_help(FILE *f) {
    fprintf(f, "Config keys (in the --config YAML file, or as --section.key VALUE; `autopipe config\n"
               "--reference` describes each one):\n");
    for (int s = 0; s < nsections; s++) {
        fprintf(f, "  %s:", sections[s].name);
        int col = 4 + (int)strlen(sections[s].name);
        for (int i = 0; i < ap_cfg_nkeys; i++) {
            const ap_cfg_key *k = &ap_cfg_keys[i];
            if (strcmp(k->section, sections[s].name)) continue;
            int w = (int)strlen(k->key) + (int)strlen(k->def) + 3;
            if (col + w > 100) {
                fprintf(f, "\n     ");
                col = 5;
            }
            fprintf(f, " %s=%s", k->key, k->def);
            col += w;
        }
        fprintf(f, "\n");
    }
}

/* ---- the model section ---- */

static ap_pretrained_reader_fn pretrained_reader;

void ap_config_set_pretrained_reader(ap_pretrained_reader_fn fn) { pretrained_reader = fn; }

int ap_config_model(const ap_config *cfg, ap_model_config *mc, char *err, size_t errlen) {
    const struct ap_config_model *m = &cfg->model;
    memset(mc, 0, sizeof *mc);
    if (m->pretrained_model_name_or_path) {
        if (!pretrained_reader) {
            errf(err, errlen, NULL,
                 "model.pretrained_model_name_or_path '%s': reading a Hugging Face config.json is not "
                 "available in this build (set model.pretrained_model_name_or_path: null to use the "
                 "model.* keys)",
                 m->pretrained_model_name_or_path);
            return -1;
        }
        return pretrained_reader(m->pretrained_model_name_or_path, mc, err, errlen);
    }
    mc->model_type = (enum ap_model_type)m->model_type;
    mc->vocab_size = m->vocab_size;
    mc->hidden_size = m->hidden_size;
    mc->intermediate_size = m->intermediate_size;
    mc->num_hidden_layers = m->num_hidden_layers;
    mc->num_attention_heads = m->num_attention_heads;
    mc->num_key_value_heads = m->num_key_value_heads;
    mc->head_dim = m->has_head_dim ? m->head_dim : m->hidden_size / m->num_attention_heads;
    mc->max_position_embeddings = m->max_position_embeddings;
    mc->rms_norm_eps = m->rms_norm_eps;
    mc->rope_theta = m->rope_theta;
    mc->rope_scaling = AP_ROPE_DEFAULT;
    mc->rope_factor = 1.0;
    mc->rope_low_freq_factor = 1.0;
    mc->rope_high_freq_factor = 4.0;
    mc->rope_original_max_position_embeddings = m->max_position_embeddings;
    mc->sliding_window = m->has_sliding_window ? m->sliding_window : 0;
    mc->tie_word_embeddings = m->tie_word_embeddings;
    mc->initializer_range = m->initializer_range;
    mc->hidden_act = AP_ACT_SILU;
    /* The family's fixed traits, as in transformers' modeling files. */
    switch (mc->model_type) {
    case AP_MODEL_QWEN2: mc->attention_bias = 1; break;
    case AP_MODEL_QWEN3: mc->qk_norm = 1; break;
    case AP_MODEL_GEMMA:
        mc->hidden_act = AP_ACT_GELU_TANH;
        mc->norm_plus_one = 1;
        mc->scale_embeddings = 1;
        break;
    default: break;
    }
    /* Token ids come from the tokenizer, not from here. */
    mc->bos_token_id = mc->eos_token_id = mc->pad_token_id = -1;
    if (mc->num_attention_heads % mc->num_key_value_heads) {
        errf(err, errlen, NULL, "model.num_key_value_heads %d must divide model.num_attention_heads %d",
             mc->num_key_value_heads, mc->num_attention_heads);
        return -1;
    }
    if (mc->head_dim < 1) {
        errf(err, errlen, NULL, "model: head_dim %d is not positive", mc->head_dim);
        return -1;
    }
    return 0;
}
