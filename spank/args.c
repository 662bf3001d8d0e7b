/* args.c - option, plugstack and topology parsing for the SPANK plugin; see
 * args.h. Runs inside srun and slurmstepd (as root): every string is bounded
 * with strnlen before it is read, and nothing here allocates. */
#include "spank/args.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const flag_names[AP_NAXES] = {"--pp-size", "--dp-size", "--tp-size"};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A printable, bounded copy of user input for messages: junk may hold
 * control characters or be huge, and it ends up on the user's terminal. */
static const char *quote(char *dst, size_t cap, const char *s) {
    size_t n = strnlen(s, AP_SPANK_ARG_MAX + 1), j = 0;
    for (size_t i = 0; i < n && j + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[j++] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (n > AP_SPANK_ARG_MAX && j + 4 < cap) {
        memcpy(dst + j, "...", 3);
        j += 3;
    }
    dst[j] = '\0';
    return dst;
}

void ap_spank_conf_init(ap_spank_conf *c) {
    for (int a = 0; a < AP_NAXES; a++) {
        c->max[a] = AP_MESH_MAX_RANKS;
        c->default_size[a] = 1;
    }
}

int ap_spank_parse_size(const char *s, int max, const char *what, int *out, char *err,
                        size_t errlen) {
    char q[AP_SPANK_ARG_MAX + 8];
    if (!s || !*s) {
        set_err(err, errlen, "%s needs a positive integer, got an empty value", what);
        return -1;
    }
    size_t n = strnlen(s, AP_SPANK_ARG_MAX + 1);
    if (n > AP_SPANK_ARG_MAX) {
        set_err(err, errlen, "%s='%s' is too long (a positive integer up to %d)", what,
                quote(q, sizeof q, s), max);
        return -1;
    }
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            set_err(err, errlen, "%s='%s' is not a positive integer", what, quote(q, sizeof q, s));
            return -1;
        }
        v = v * 10 + (s[i] - '0');
        if (v > max) { /* also stops long digit strings before overflow */
            set_err(err, errlen, "%s=%s exceeds the limit %d", what, quote(q, sizeof q, s), max);
            return -1;
        }
    }
    if (v < 1) {
        set_err(err, errlen, "%s=%s must be at least 1", what, quote(q, sizeof q, s));
        return -1;
    }
    *out = (int)v;
    return 0;
}

int ap_spank_conf_arg(ap_spank_conf *c, const char *arg, char *err, size_t errlen) {
    static const struct {
        const char *key;
        int axis, is_max;
    } keys[] = {
        {"max_pp", AP_AXIS_PP, 1},     {"max_dp", AP_AXIS_DP, 1},
        {"max_tp", AP_AXIS_TP, 1},     {"default_pp", AP_AXIS_PP, 0},
        {"default_tp", AP_AXIS_TP, 0},
    };
    char q[AP_SPANK_ARG_MAX + 8];
    if (!arg) {
        set_err(err, errlen, "missing plugstack.conf argument");
        return -1;
    }
    if (strnlen(arg, AP_SPANK_ARG_MAX + 1) > AP_SPANK_ARG_MAX) {
        set_err(err, errlen, "plugstack.conf argument '%s' is too long", quote(q, sizeof q, arg));
        return -1;
    }
    const char *eq = strchr(arg, '=');
    if (!eq) {
        set_err(err, errlen,
                "plugstack.conf argument '%s' is not key=value (known keys: max_pp, max_dp, "
                "max_tp, default_pp, default_tp)",
                quote(q, sizeof q, arg));
        return -1;
    }
    size_t klen = (size_t)(eq - arg);
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strlen(keys[i].key) != klen || strncmp(keys[i].key, arg, klen)) continue;
        int v;
        if (ap_spank_parse_size(eq + 1, AP_MESH_MAX_RANKS, keys[i].key, &v, err, errlen))
            return -1;
        if (keys[i].is_max)
            c->max[keys[i].axis] = v;
        else
            c->default_size[keys[i].axis] = v;
        return 0;
    }
    set_err(err, errlen,
            "unknown plugstack.conf argument '%s' (known keys: max_pp, max_dp, max_tp, "
            "default_pp, default_tp)",
            quote(q, sizeof q, arg));
    return -1;
}

int ap_spank_conf_parse(ap_spank_conf *c, int argc, char *const *argv, char *err, size_t errlen) {
    ap_spank_conf_init(c);
    for (int i = 0; i < argc; i++)
        if (ap_spank_conf_arg(c, argv[i], err, errlen)) return -1;
    for (int a = 0; a < AP_NAXES; a++) {
        if (a == AP_AXIS_DP) continue;
        if (c->default_size[a] > c->max[a]) {
            set_err(err, errlen, "plugstack.conf: default_%s=%d exceeds max_%s=%d", ap_axis_name(a),
                    c->default_size[a], ap_axis_name(a), c->max[a]);
            return -1;
        }
    }
    return 0;
}

int ap_spank_request_parse(const ap_spank_conf *c, const char *const raw[AP_NAXES],
                           ap_spank_request *r, char *err, size_t errlen) {
    for (int a = 0; a < AP_NAXES; a++) {
        r->size[a] = 0;
        if (!raw[a]) continue;
        char what[32];
        snprintf(what, sizeof what, "%s", flag_names[a]);
        if (ap_spank_parse_size(raw[a], c->max[a], what, &r->size[a], err, errlen)) {
            /* name the site limit when that is what the value broke */
            int v;
            if (c->max[a] < AP_MESH_MAX_RANKS &&
                !ap_spank_parse_size(raw[a], AP_MESH_MAX_RANKS, what, &v, NULL, 0))
                set_err(err, errlen, "%s=%d exceeds this cluster's limit max_%s=%d", what, v,
                        ap_axis_name(a), c->max[a]);
            r->size[a] = 0;
            return -1;
        }
    }
    return 0;
}

int ap_spank_request_active(const ap_spank_request *r) {
    return r->size[0] > 0 || r->size[1] > 0 || r->size[2] > 0;
}

int ap_spank_resolve(const ap_spank_conf *c, const ap_spank_request *r, long long ntasks,
                     ap_mesh *out, char *err, size_t errlen) {
    if (ntasks < 1 || ntasks > AP_MESH_MAX_RANKS) {
        set_err(err, errlen, "this step has %lld tasks; expected 1 to %d", ntasks,
                AP_MESH_MAX_RANKS);
        return -1;
    }
    int pp = r->size[AP_AXIS_PP] ? r->size[AP_AXIS_PP] : c->default_size[AP_AXIS_PP];
    int tp = r->size[AP_AXIS_TP] ? r->size[AP_AXIS_TP] : c->default_size[AP_AXIS_TP];
    int dp = r->size[AP_AXIS_DP];
    if (pp < 1 || tp < 1) {
        set_err(err, errlen, "pp and tp sizes must be at least 1 (got %d and %d)", pp, tp);
        return -1;
    }
    if (!dp) {
        long long per_replica = (long long)pp * tp; /* each <= 2^24: fits */
        if (ntasks % per_replica) {
            set_err(err, errlen,
                    "--pp-size=%d x --tp-size=%d = %lld ranks per data-parallel replica, which "
                    "does not divide this step's %lld tasks",
                    pp, tp, per_replica, ntasks);
            return -1;
        }
        long long d = ntasks / per_replica;
        if (d > c->max[AP_AXIS_DP]) {
            set_err(err, errlen,
                    "%lld tasks / (--pp-size=%d x --tp-size=%d) gives --dp-size=%lld, above this "
                    "cluster's limit max_dp=%d",
                    ntasks, pp, tp, d, c->max[AP_AXIS_DP]);
            return -1;
        }
        dp = (int)d;
    }
    long long world = 0;
    int overflow = __builtin_mul_overflow((long long)pp, (long long)dp, &world) ||
                   __builtin_mul_overflow(world, (long long)tp, &world);
    if (overflow || world != ntasks) {
        if (!overflow)
            set_err(err, errlen,
                    "--pp-size=%d x --dp-size=%d x --tp-size=%d = %lld ranks, but this step has "
                    "%lld tasks",
                    pp, dp, tp, world, ntasks);
        else
            set_err(err, errlen,
                    "--pp-size=%d x --dp-size=%d x --tp-size=%d is too many ranks, but this step "
                    "has %lld tasks",
                    pp, dp, tp, ntasks);
        return -1;
    }
    out->size[AP_AXIS_PP] = pp;
    out->size[AP_AXIS_DP] = dp;
    out->size[AP_AXIS_TP] = tp;
    if (ap_mesh_check(out)) { /* unreachable once world == ntasks <= max; kept as a guard */
        set_err(err, errlen, "pp=%d x dp=%d x tp=%d is not a valid mesh", pp, dp, tp);
        return -1;
    }
    return 0;
}
