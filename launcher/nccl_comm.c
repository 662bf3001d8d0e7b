/* nccl_comm.c - NCCL communicators per mesh axis from the MPI mesh. Every
 * step that can fail on one rank is followed by an agreement (MPI_Allreduce
 * of a flag) so no rank waits in a collective its peers never enter. */
#include "launcher/nccl_comm.h"

#include <stdio.h>
#include <string.h>

#include <cuda_runtime.h>

/* 1 on every rank of comm iff ok is 1 on all of them */
static int all_ok(MPI_Comm comm, int ok) {
    int all = 0;
    if (MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) return 0;
    return all;
}

/* The lowest failing rank's message reaches every rank's err. */
static void share_error(MPI_Comm comm, int ok, char *err, size_t errlen) {
    int rank = 0, first = 0;
    MPI_Comm_rank(comm, &rank);
    int mine = ok ? 1 << 30 : rank;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm);
    char buf[512];
    snprintf(buf, sizeof buf, "%s", err && errlen ? err : "");
    MPI_Bcast(buf, (int)sizeof buf, MPI_CHAR, first, comm);
    if (err && errlen) snprintf(err, errlen, "%s", buf);
}

int ap_nccl_comm_from_mpi(ncclComm_t *out, MPI_Comm comm, const char *label, char *err,
                          size_t errlen) {
    *out = NULL;
    int rank = 0, size = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS) {
        snprintf(err, errlen, "%s: not a valid MPI communicator", label);
        return -1;
    }
    /* rank 0 makes the id; a status word travels with it so a failure
     * there stops everyone before ncclCommInitRank */
    struct {
        int status;
        ncclUniqueId id;
    } msg;
    memset(&msg, 0, sizeof msg);
    if (rank == 0) {
        ncclResult_t r = ncclGetUniqueId(&msg.id);
        if (r != ncclSuccess) {
            msg.status = -1;
            snprintf(err, errlen, "%s: ncclGetUniqueId on rank 0 failed: %s", label,
                     ncclGetErrorString(r));
        }
    }
    if (MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, comm) != MPI_SUCCESS) {
        snprintf(err, errlen, "%s: MPI_Bcast of the NCCL id failed", label);
        return -1;
    }
    if (msg.status != 0) {
        share_error(comm, rank != 0, err, errlen);
        return -1;
    }
    ncclComm_t c = NULL;
    ncclResult_t r = ncclCommInitRank(&c, size, msg.id, rank);
    int ok = r == ncclSuccess;
    if (!ok)
        snprintf(err, errlen, "%s: ncclCommInitRank (rank %d of %d) failed: %s (%s)", label, rank,
                 size, ncclGetErrorString(r), ncclGetLastError(NULL));
    if (!all_ok(comm, ok)) {
        share_error(comm, ok, err, errlen);
        if (c) ncclCommDestroy(c);
        return -1;
    }
    *out = c;
    return 0;
}

/* Agreement over the whole mesh without a world communicator: a minimum
 * taken over pp, then dp, then tp groups reaches every rank of the product.
 * Ranks that succeeded get a failing rank's message. Returns the agreed ok. */
static int mesh_agree(const ap_mesh_comm *mc, int ok, char *err, size_t errlen) {
    for (int a = 0; a < AP_NAXES; a++) {
        MPI_Comm c = ap_mesh_comm_axis(mc, (enum ap_axis)a);
        int all = all_ok(c, ok);
        if (!all) share_error(c, ok, err, errlen);
        ok = all;
    }
    return ok;
}

int ap_nccl_mesh_init(ap_nccl_mesh *nm, const ap_mesh_comm *mc, int device, char *err,
                      size_t errlen) {
    memset(nm, 0, sizeof *nm);
    nm->device = -1;
    int ndev = 0, ok = 1;
    cudaError_t e = cudaGetDeviceCount(&ndev);
    if (e != cudaSuccess || ndev < 1) {
        (void)cudaGetLastError();
        snprintf(err, errlen, "rank %d: no CUDA device visible (%s)", mc->rank,
                 e != cudaSuccess ? cudaGetErrorString(e) : "count is 0");
        ok = 0;
    } else {
        int dev = device >= 0 ? device : (mc->local_rank >= 0 ? mc->local_rank : 0) % ndev;
        if (dev >= ndev) {
            snprintf(err, errlen, "rank %d: CUDA device %d requested but %d visible", mc->rank,
                     dev, ndev);
            ok = 0;
        } else if ((e = cudaSetDevice(dev)) != cudaSuccess) {
            snprintf(err, errlen, "rank %d: cudaSetDevice(%d): %s", mc->rank, dev,
                     cudaGetErrorString(e));
            ok = 0;
        } else {
            nm->device = dev;
        }
    }
    /* every rank enters the NCCL inits, or none does */
    if (!mesh_agree(mc, ok, err, errlen)) {
        nm->device = -1;
        return -1;
    }
    for (int a = 0; a < AP_NAXES; a++) {
        char label[32];
        snprintf(label, sizeof label, "NCCL %s communicator", ap_axis_name((enum ap_axis)a));
        int rc = ap_nccl_comm_from_mpi(&nm->axis[a], ap_mesh_comm_axis(mc, (enum ap_axis)a),
                                       label, err, errlen);
        /* agreed inside the axis group; other groups of the axis may differ */
        if (!mesh_agree(mc, rc == 0, err, errlen)) {
            ap_nccl_mesh_free(nm);
            nm->device = -1;
            return -1;
        }
    }
    return 0;
}

void ap_nccl_mesh_free(ap_nccl_mesh *nm) {
    for (int a = 0; a < AP_NAXES; a++) {
        if (nm->axis[a]) ncclCommDestroy(nm->axis[a]);
        nm->axis[a] = NULL;
    }
}

ncclComm_t ap_nccl_mesh_axis(const ap_nccl_mesh *nm, enum ap_axis a) {
    return (a >= 0 && a < AP_NAXES) ? nm->axis[a] : NULL;
}
