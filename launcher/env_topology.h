/* env_topology.h - the mesh as the Slurm plugin hands it to a task:
 * AUTOPIPE_{PP,DP,TP}_SIZE, AUTOPIPE_{PP,DP,TP}_RANK, AUTOPIPE_LOCAL_RANK.
 * Pure (getenv only, no MPI). */
#ifndef AP_ENV_TOPOLOGY_H
#define AP_ENV_TOPOLOGY_H

#include <stddef.h>

#include "launcher/topology.h"

/* Returns 1 when all seven variables are present and consistent (sizes a
 * valid mesh, ranks inside it, local rank >= 0), 0 when none is present,
 * and -1 with a message naming the variable when some are missing or any
 * is malformed (not a plain decimal integer, out of range). */
int ap_topology_from_env(ap_mesh *mesh, ap_coord *coord, int *local_rank, char *err,
                         size_t errlen);

#endif
