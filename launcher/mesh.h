/* mesh.h - the process mesh over MPI: which rank holds which (pp, dp, tp)
 * coordinate, and one communicator per axis. The layout comes from the
 * AUTOPIPE_* variables the Slurm plugin sets (they win) or from the sizes the
 * caller got from its config or flags. */
#ifndef AP_MESH_H
#define AP_MESH_H

#include <stddef.h>
#include <stdio.h>

#include <mpi.h>

#include "launcher/topology.h"

typedef struct ap_mesh_comm {
    ap_mesh mesh;
    ap_coord coord;  /* this rank's coordinates */
    int rank, world; /* in the communicator given to ap_mesh_comm_init */
    int local_rank;  /* rank among the processes on this node */
    MPI_Comm pp, dp, tp; /* this rank's group on each axis; rank in it == coord on it */
    const char *source;  /* "env" (the Slurm plugin) or the caller's label */
} ap_mesh_comm;

/* MPI_Init; when it cannot work (srun without PMIx) a message with the hint
 * "use srun --mpi=pmix" goes to err. Returns 0 or -1. */
int ap_mpi_init(int *argc, char ***argv, char *err, size_t errlen);

/* Collective over `world`. sizes: pp, dp, tp from the caller's config or
 * flags (0 = default: pp, tp 1; dp world / (pp * tp)); label names where they
 * came from ("flags", "config"). When the AUTOPIPE_* variables are set they
 * are used instead (source "env") and must match this process's MPI rank
 * and the world size. On any rank's error every rank returns -1 with the
 * first failing rank's message, before any communicator is made. With a
 * non-NULL log, rank 0 writes one line naming the source. */
int ap_mesh_comm_init(ap_mesh_comm *mc, MPI_Comm world, const int sizes[AP_NAXES],
                      const char *label, FILE *log, char *err, size_t errlen);

void ap_mesh_comm_free(ap_mesh_comm *mc);

/* The communicator of axis a (MPI_COMM_NULL for a bad axis). */
MPI_Comm ap_mesh_comm_axis(const ap_mesh_comm *mc, enum ap_axis a);

/* `autopipe mesh [--pp N] [--dp N] [--tp N]`: print every rank's place in
 * rank order and check the axis communicators against ap_mesh_group. */
int ap_cmd_mesh(int argc, char **argv);

#endif
