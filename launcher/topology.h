/* topology.h - the rank layout of a pp x dp x tp mesh, and AutoPipeline's
 * stage helpers. Pure functions, no MPI, no allocation: the SPANK plugin
 * compiles this file alone, so both sides agree on the rank order.
 *
 * Rank order: pp slowest, tp fastest:
 *     rank = (pp_rank * dp + dp_rank) * tp + tp_rank
 * so tp groups are neighbours on a node and pipeline stages may span nodes. */
#ifndef AP_TOPOLOGY_H
#define AP_TOPOLOGY_H

#include <stddef.h>

enum ap_axis { AP_AXIS_PP = 0, AP_AXIS_DP = 1, AP_AXIS_TP = 2, AP_NAXES = 3 };

typedef struct {
    int size[AP_NAXES]; /* pp, dp, tp sizes, each >= 1 */
} ap_mesh;

typedef struct {
    int r[AP_NAXES]; /* pp_rank, dp_rank, tp_rank */
} ap_coord;

/* Largest world the helpers accept (keeps every product inside int). */
#define AP_MESH_MAX_RANKS (1 << 24)

/* 0 if every size is >= 1 and the product is <= AP_MESH_MAX_RANKS, else -1. */
int ap_mesh_check(const ap_mesh *m);
int ap_mesh_world(const ap_mesh *m);
const char *ap_axis_name(enum ap_axis a); /* "pp", "dp", "tp" */

/* rank <-> coordinates; -1 when out of range. */
int ap_mesh_rank(const ap_mesh *m, ap_coord c);
int ap_mesh_coord(const ap_mesh *m, int rank, ap_coord *out);

/* The ranks of the axis-`a` group that contains `rank`, in axis order:
 * out[i] is the rank whose coordinate on `a` is i. Writes m->size[a] ranks;
 * returns that count, or -1 on bad input. */
int ap_mesh_group(const ap_mesh *m, enum ap_axis a, int rank, int *out, size_t cap);

/* ---- AutoPipeline's functional API (same names and semantics) ---- */

enum ap_stage_style { AP_STYLE_LOOP = 0, AP_STYLE_V = 1 };

/* Stage ids held by pp_rank: loop gives r, r+p, r+2p, ...; v gives
 * (r, 2p-1-r) and requires num_stages == 2 * pp_size. Writes at most cap ids;
 * returns the count, or -1 (and a message in err) on bad input. */
int stage_ids_this_rank(int pp_rank, int pp_size, int num_stages, enum ap_stage_style style,
                        int *out, size_t cap, char *err, size_t errlen);

#endif
