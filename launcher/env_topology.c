/* env_topology.c - read the AUTOPIPE_* topology variables; see env_topology.h. */
#include "launcher/env_topology.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const size_vars[AP_NAXES] = {"AUTOPIPE_PP_SIZE", "AUTOPIPE_DP_SIZE",
                                                "AUTOPIPE_TP_SIZE"};
static const char *const rank_vars[AP_NAXES] = {"AUTOPIPE_PP_RANK", "AUTOPIPE_DP_RANK",
                                                "AUTOPIPE_TP_RANK"};
#define LOCAL_VAR "AUTOPIPE_LOCAL_RANK"

/* Decimal digits only, value in [lo, AP_MESH_MAX_RANKS]. */
static int parse_var(const char *name, int lo, int *out, char *err, size_t errlen) {
    const char *s = getenv(name);
    long long v = 0;
    size_t n = s ? strnlen(s, 16) : 0;
    if (!s || n == 0 || n > 15) goto bad;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') goto bad;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > AP_MESH_MAX_RANKS) goto bad;
    *out = (int)v;
    return 0;
bad:
    snprintf(err, errlen, "%s='%.20s%s' is not an integer in [%d, %d] (set by the Slurm plugin: "
             "srun --pp-size=...)",
             name, s ? s : "", s && strnlen(s, 21) > 20 ? "..." : "", lo, AP_MESH_MAX_RANKS);
    return -1;
}

int ap_topology_from_env(ap_mesh *mesh, ap_coord *coord, int *local_rank, char *err,
                         size_t errlen) {
    const char *all[2 * AP_NAXES + 1];
    int present = 0;
    for (int a = 0; a < AP_NAXES; a++) {
        all[a] = size_vars[a];
        all[AP_NAXES + a] = rank_vars[a];
    }
    all[2 * AP_NAXES] = LOCAL_VAR;
    const char *missing = NULL;
    for (int i = 0; i < 2 * AP_NAXES + 1; i++) {
        if (getenv(all[i]))
            present++;
        else if (!missing)
            missing = all[i];
    }
    if (present == 0) return 0;
    if (missing) {
        snprintf(err, errlen, "%s is not set but other AUTOPIPE_* topology variables are; "
                 "set all seven or none", missing);
        return -1;
    }
    ap_mesh m;
    ap_coord c;
    int local;
    for (int a = 0; a < AP_NAXES; a++)
        if (parse_var(size_vars[a], 1, &m.size[a], err, errlen)) return -1;
    if (ap_mesh_check(&m)) {
        snprintf(err, errlen, "AUTOPIPE_PP_SIZE=%d x AUTOPIPE_DP_SIZE=%d x AUTOPIPE_TP_SIZE=%d "
                 "exceeds %d ranks", m.size[0], m.size[1], m.size[2], AP_MESH_MAX_RANKS);
        return -1;
    }
    for (int a = 0; a < AP_NAXES; a++) {
        if (parse_var(rank_vars[a], 0, &c.r[a], err, errlen)) return -1;
        if (c.r[a] >= m.size[a]) {
            snprintf(err, errlen, "%s=%d is not below %s=%d", rank_vars[a], c.r[a], size_vars[a],
                     m.size[a]);
            return -1;
        }
    }
    if (parse_var(LOCAL_VAR, 0, &local, err, errlen)) return -1;
    *mesh = m;
    *coord = c;
    *local_rank = local;
    return 1;
}
