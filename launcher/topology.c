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
    if (style != AP_STYLE_LOOP && style != AP_STYLE_V) {
        snprintf(err, errlen, "unknown stage placement style %d (expected loop or v)", (int)style);
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

int calculate_virtual_stages(int num_layers, int layers_per_stage, int pp_size,
                             int is_single_stage_schedule, enum ap_round_mode round,
                             int *num_virtual_stages, int *stages_per_rank, char *err,
                             size_t errlen) {
    if (pp_size < 1) {
        snprintf(err, errlen, "pp_size must be at least 1, got %d", pp_size);
        return -1;
    }
    if (layers_per_stage < 0) { /* None: the schedule's default */
        int per = is_single_stage_schedule ? 1 : 2;
        if (pp_size > AP_MESH_MAX_RANKS / per) {
            snprintf(err, errlen, "pp_size %d is too large", pp_size);
            return -1;
        }
        *stages_per_rank = per;
        *num_virtual_stages = pp_size * per;
        return 0;
    }
    if (layers_per_stage == 0) {
        snprintf(err, errlen, "layers_per_stage must be positive, got 0");
        return -1;
    }
    if (num_layers < 1) {
        snprintf(err, errlen, "the model needs at least one layer, got %d", num_layers);
        return -1;
    }
    int n = num_layers / layers_per_stage + (num_layers % layers_per_stage != 0);
    int rem = n % pp_size;
    if (rem) {
        if (round == AP_ROUND_UP) {
            n += pp_size - rem;
        } else if (round == AP_ROUND_DOWN) {
            n -= rem;
            if (n == 0) {
                snprintf(err, errlen,
                         "rounding %d virtual stages down to a multiple of pp_size %d leaves none "
                         "(model has %d layers with layers_per_stage=%d); round up or lower "
                         "layers_per_stage",
                         n + rem, pp_size, num_layers, layers_per_stage);
                return -1;
            }
        } else if (round == AP_ROUND_NONE) {
            snprintf(err, errlen,
                     "number of virtual stages (%d) must be divisible by pipeline parallel size (%d): "
                     "model has %d layers with layers_per_stage=%d; adjust layers_per_stage or set "
                     "round_virtual_stages_to_pp_multiple to up or down",
                     n, pp_size, num_layers, layers_per_stage);
            return -1;
        } else {
            snprintf(err, errlen, "invalid round_virtual_stages_to_pp_multiple %d: use up or down", (int)round);
            return -1;
        }
    }
    int per = n / pp_size;
    if (is_single_stage_schedule && per != 1) {
        snprintf(err, errlen,
                 "single-stage schedule requires exactly 1 stage per rank, but got %d stages per rank "
                 "(model has %d layers with layers_per_stage=%d, resulting in %d stages across %d PP "
                 "ranks); increase layers_per_stage to %d or higher",
                 per, num_layers, layers_per_stage, n, pp_size, num_layers / pp_size);
        return -1;
    }
    if (!is_single_stage_schedule && per < 2) {
        snprintf(err, errlen,
                 "multi-stage schedule requires at least 2 stages per rank, but got %d stages per rank "
                 "(model has %d layers with layers_per_stage=%d, resulting in %d stages across %d PP "
                 "ranks); decrease layers_per_stage to %d or lower",
                 per, num_layers, layers_per_stage, n, pp_size, num_layers / (2 * pp_size));
        return -1;
    }
    *num_virtual_stages = n;
    *stages_per_rank = per;
    return 0;
}

int generate_hf_model_fqn_per_model_part(int num_stages, int num_layers, int include_embeddings,
                                         int include_lm_head, int include_rotary_emb,
                                         const char *fqn_prefix, ap_stage_modules *out,
                                         size_t cap, char *err, size_t errlen) {
    if (num_stages < 1) {
        snprintf(err, errlen, "number of stages must be at least 1, got %d", num_stages);
        return -1;
    }
    if (num_stages > num_layers) {
        snprintf(err, errlen, "number of stages (%d) cannot exceed number of layers (%d)", num_stages,
                 num_layers);
        return -1;
    }
    if ((size_t)num_stages > cap) {
        snprintf(err, errlen, "%d stages exceed the room for %zu", num_stages, cap);
        return -1;
    }
    int base = num_layers / num_stages, extra = num_layers % num_stages, layer = 0;
    for (int s = 0; s < num_stages; s++) {
        ap_stage_modules *m = &out[s];
        m->first_layer = layer;
        layer += base + (s < extra);
        m->last_layer = layer;
        m->has_embed = s == 0 && include_embeddings;
        m->has_norm = s == num_stages - 1;
        m->has_lm_head = s == num_stages - 1 && include_lm_head;
        m->has_rotary = !!include_rotary_emb;
        m->prefix = fqn_prefix ? fqn_prefix : "";
    }
    return num_stages;
}

int ap_stage_modules_count(const ap_stage_modules *m) {
    return m->has_embed + (m->last_layer - m->first_layer) + m->has_norm + m->has_lm_head +
           m->has_rotary;
}

int ap_stage_modules_fqn(const ap_stage_modules *m, int i, char *buf, size_t len) {
    const char *p = m->prefix ? m->prefix : "";
    int nl = m->last_layer - m->first_layer, n;
    if (i < 0 || i >= ap_stage_modules_count(m)) return -1;
    if (m->has_embed && i-- == 0)
        n = snprintf(buf, len, "%sembed_tokens", p);
    else if (i < nl)
        n = snprintf(buf, len, "%slayers.%d", p, m->first_layer + i);
    else if (i -= nl, m->has_norm && i-- == 0)
        n = snprintf(buf, len, "%snorm", p);
    else if (m->has_lm_head && i-- == 0)
        n = snprintf(buf, len, "lm_head");
    else
        n = snprintf(buf, len, "%srotary_emb", p);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
