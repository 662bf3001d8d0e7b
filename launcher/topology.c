/* topology.c - rank <-> (pp, dp, tp) coordinates; see topology.h. */
#include "launcher/topology.h"

#include <stdio.h>

int ap_mesh_check(const ap_mesh *m) {
    long long world = 1;
    for (int a = 0; a < AP_NAXES; a++) {
        if (m->size[a] < 1) return -1;
        world *= m->size[a];
        if (world > AP_MESH_MAX_RANKS) return -1;
    }
    return 0;
}

int ap_mesh_world(const ap_mesh *m) {
    return ap_mesh_check(m) ? -1 : m->size[0] * m->size[1] * m->size[2];
}

const char *ap_axis_name(enum ap_axis a) {
    static const char *names[AP_NAXES] = {"pp", "dp", "tp"};
    return (unsigned)a < AP_NAXES ? names[a] : "?";
}

int ap_mesh_rank(const ap_mesh *m, ap_coord c) {
    if (ap_mesh_check(m)) return -1;
    for (int a = 0; a < AP_NAXES; a++)
        if (c.r[a] < 0 || c.r[a] >= m->size[a]) return -1;
    return (c.r[AP_AXIS_PP] * m->size[AP_AXIS_DP] + c.r[AP_AXIS_DP]) * m->size[AP_AXIS_TP] +
           c.r[AP_AXIS_TP];
}

int ap_mesh_coord(const ap_mesh *m, int rank, ap_coord *out) {
    int world = ap_mesh_world(m);
    if (world < 0 || rank < 0 || rank >= world) return -1;
    out->r[AP_AXIS_TP] = rank % m->size[AP_AXIS_TP];
    rank /= m->size[AP_AXIS_TP];
    out->r[AP_AXIS_DP] = rank % m->size[AP_AXIS_DP];
    out->r[AP_AXIS_PP] = rank / m->size[AP_AXIS_DP];
    return 0;
}

int ap_mesh_group(const ap_mesh *m, enum ap_axis a, int rank, int *out, size_t cap) {
    ap_coord c;
    if ((unsigned)a >= AP_NAXES || ap_mesh_coord(m, rank, &c)) return -1;
    if ((size_t)m->size[a] > cap) return -1;
    for (int i = 0; i < m->size[a]; i++) {
        c.r[a] = i;
        out[i] = ap_mesh_rank(m, c);
    }
    return m->size[a];
}

int stage_ids_this_rank(int pp_rank, int pp_size, int num_stages, enum ap_stage_style style,
                        int *out, size_t cap, char *err, size_t errlen) {
    if (pp_size < 1 || pp_rank < 0 || pp_rank >= pp_size) {
        snprintf(err, errlen, "pp_rank %d is not in [0, pp_size=%d)", pp_rank, pp_size);
        return -1;
    }
    if (num_stages < pp_size || num_stages % pp_size) {
        snprintf(err, errlen, "num_stages %d must be a positive multiple of pp_size %d", num_stages,
                 pp_size);
        return -1;
    }
    int per_rank = num_stages / pp_size;
    if ((size_t)per_rank > cap) {
        snprintf(err, errlen, "%d stages per rank exceed the room for %zu", per_rank, cap);
        return -1;
    }
    if (style == AP_STYLE_V) {
        if (per_rank != 2) {
            snprintf(err, errlen,
                     "style 'v' needs exactly 2 stages per rank, got %d stages for pp_size %d",
                     num_stages, pp_size);
            return -1;
        }
        out[0] = pp_rank;
        out[1] = 2 * pp_size - 1 - pp_rank;
        return 2;
    }
    for (int i = 0; i < per_rank; i++) out[i] = pp_rank + i * pp_size;
    return per_rank;
}
