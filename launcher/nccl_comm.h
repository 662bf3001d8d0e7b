/* nccl_comm.h - one NCCL communicator per mesh axis, built from the MPI
 * axis communicators of ap_mesh_comm (built only with CUDA: AP_HAVE_CUDA).
 *
 * For each axis, the axis group's rank 0 makes an ncclUniqueId, MPI_Bcast
 * sends it over that axis's MPI communicator, and every member calls
 * ncclCommInitRank with its MPI rank in the group, so NCCL rank == MPI
 * rank == the coordinate on that axis. NCCL allows one rank per GPU inside
 * a communicator: axes of size > 1 need their ranks on distinct devices. */
#ifndef AP_NCCL_COMM_H
#define AP_NCCL_COMM_H

#include <stddef.h>

#include <mpi.h>
#include <nccl.h>

#include "launcher/mesh.h"

/* Collective over comm: a communicator with the same members and ranks as
 * comm, on the current CUDA device. Every rank returns the same status:
 * 0, or -1 with a message naming `label` and the failing rank in err. */
int ap_nccl_comm_from_mpi(ncclComm_t *out, MPI_Comm comm, const char *label, char *err,
                          size_t errlen);

typedef struct {
    ncclComm_t axis[AP_NAXES]; /* pp, dp, tp; NULL where not made */
    int device;                /* the CUDA device the communicators use */
} ap_nccl_mesh;

/* Collective over the whole mesh: selects `device` (< 0: local_rank modulo
 * the visible device count), then one communicator per axis. Returns 0, or
 * -1 on every rank (nothing left allocated) with the reason in err. */
int ap_nccl_mesh_init(ap_nccl_mesh *nm, const ap_mesh_comm *mc, int device, char *err,
                      size_t errlen);
void ap_nccl_mesh_free(ap_nccl_mesh *nm);
/* The communicator of axis a (NULL for a bad axis). */
ncclComm_t ap_nccl_mesh_axis(const ap_nccl_mesh *nm, enum ap_axis a);

#endif
