/* test-nccl-comm.c - NCCL communicators per mesh axis (run by
 * tests/test-nccl-comm.sh under mpirun). Usage:
 *   test-nccl-comm --devices          print the CUDA device count (no MPI)
 *   test-nccl-comm [--pp N] [--dp N] [--tp N]
 * Every rank builds the mesh and its NCCL communicators, checks that each
 * communicator's size and rank equal the MPI axis group's, and all-reduces
 * a buffer on every axis against the sum computed from ap_mesh_group. Rank
 * 0 prints TAP; a case passes only when it passes on every rank. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "launcher/mesh.h"
#include "launcher/nccl_comm.h"
#include "tests/tap.h"

static int world_rank = 0;

/* one TAP case agreed over MPI_COMM_WORLD */
static int ok_all(int cond, const char *what) {
    int all = 0;
    MPI_Allreduce(&cond, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (world_rank == 0) ok(all, "%s", what);
    return all;
}

int main(int argc, char **argv) {
    if (argc == 2 && strcmp(argv[1], "--devices") == 0) {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) n = 0;
        printf("%d\n", n);
        return 0;
    }
    int sizes[AP_NAXES] = {0, 0, 0};
    for (int i = 1; i + 1 < argc; i += 2) {
        int a = strcmp(argv[i], "--pp") == 0 ? AP_AXIS_PP
                : strcmp(argv[i], "--dp") == 0 ? AP_AXIS_DP
                : strcmp(argv[i], "--tp") == 0 ? AP_AXIS_TP : -1;
        if (a < 0) {
            fprintf(stderr, "usage: test-nccl-comm [--devices | --pp N --dp N --tp N]\n");
            return 2;
        }
        sizes[a] = atoi(argv[i + 1]);
    }
    char err[512] = "";
    if (ap_mpi_init(&argc, &argv, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    ap_mesh_comm mc;
    if (ap_mesh_comm_init(&mc, MPI_COMM_WORLD, sizes, "flags", NULL, err, sizeof err) != 0) {
        if (world_rank == 0) printf("not ok 1 - mesh: %s\n1..1\n", err);
        MPI_Finalize();
        return 1;
    }
    ap_nccl_mesh nm;
    int rc = ap_nccl_mesh_init(&nm, &mc, -1, err, sizeof err);
    if (!ok_all(rc == 0, "ap_nccl_mesh_init: one communicator per axis on every rank")) {
        if (world_rank == 0) diag("%s", err);
        MPI_Finalize();
        return tap_done();
    }
    const size_t n = 4099; /* odd: no alignment luck */
    float *h = malloc(n * sizeof(float));
    float *d = NULL;
    if (!h || cudaMalloc((void **)&d, n * sizeof(float)) != cudaSuccess) return 1;
    for (int a = 0; a < AP_NAXES; a++) {
        ncclComm_t c = ap_nccl_mesh_axis(&nm, (enum ap_axis)a);
        int count = -1, urank = -1;
        int msize = 0, mrank = 0;
        MPI_Comm_size(ap_mesh_comm_axis(&mc, (enum ap_axis)a), &msize);
        MPI_Comm_rank(ap_mesh_comm_axis(&mc, (enum ap_axis)a), &mrank);
        int good = ncclCommCount(c, &count) == ncclSuccess &&
                   ncclCommUserRank(c, &urank) == ncclSuccess && count == msize &&
                   urank == mrank && urank == mc.coord.r[a];
        char what[128];
        snprintf(what, sizeof what, "%s: NCCL size and rank equal the MPI axis group's",
                 ap_axis_name((enum ap_axis)a));
        ok_all(good, what);
        /* element i of rank r holds r * 10000 + i: the sum over the group is known */
        for (size_t i = 0; i < n; i++) h[i] = (float)(mc.rank * 10000 + (int)i);
        cudaMemcpy(d, h, n * sizeof(float), cudaMemcpyHostToDevice);
        ncclResult_t r = ncclAllReduce(d, d, n, ncclFloat, ncclSum, c, 0);
        cudaError_t e = cudaStreamSynchronize(0);
        cudaMemcpy(h, d, n * sizeof(float), cudaMemcpyDeviceToHost);
        int group[64];
        int gs = ap_mesh_group(&mc.mesh, (enum ap_axis)a, mc.rank, group, 64);
        good = r == ncclSuccess && e == cudaSuccess && gs == msize;
        for (size_t i = 0; good && i < n; i++) {
            double want = 0;
            for (int k = 0; k < gs; k++) want += group[k] * 10000.0 + (double)i;
            if ((double)h[i] != want) good = 0;
        }
        snprintf(what, sizeof what, "%s: ncclAllReduce sums exactly the ranks of the group",
                 ap_axis_name((enum ap_axis)a));
        ok_all(good, what);
    }
    cudaFree(d);
    free(h);
    ap_nccl_mesh_free(&nm);
    /* a device that does not exist fails on every rank, no hang */
    rc = ap_nccl_mesh_init(&nm, &mc, 1 << 20, err, sizeof err);
    ok_all(rc == -1 && strstr(err, "requested") != NULL,
           "a missing device fails on every rank with a message");
    ap_mesh_comm_free(&mc);
    MPI_Finalize();
    return world_rank == 0 ? tap_done() : 0;
}
