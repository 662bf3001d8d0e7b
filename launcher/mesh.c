/* mesh.c - the MPI process mesh and the `autopipe mesh` command; see mesh.h. */
#include "launcher/mesh.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "launcher/commands.h"
#include "launcher/env_topology.h"

#define MSG_LEN 320

int ap_mpi_init(int *argc, char ***argv, char *err, size_t errlen) {
    /* Under srun without PMIx, Debian's Open MPI (PMIx only) either aborts
     * in MPI_Init or starts every task as its own 1-rank world: say so first. */
    const char *step = getenv("SLURM_STEP_ID"), *ntasks = getenv("SLURM_STEP_NUM_TASKS");
    if (step && !getenv("PMIX_RANK") && !getenv("OMPI_COMM_WORLD_RANK") && ntasks &&
        atoi(ntasks) > 1) {
        snprintf(err, errlen,
                 "this srun step has no PMIx (Open MPI here speaks PMIx only): use srun "
                 "--mpi=pmix");
        return -1;
    }
    int rc = MPI_Init(argc, argv);
    if (rc != MPI_SUCCESS) {
        snprintf(err, errlen, "MPI_Init failed (error %d)%s", rc,
                 step ? ": under Slurm, use srun --mpi=pmix" : "");
        return -1;
    }
    return 0;
}

static void mesh_str(char *buf, size_t len, const ap_mesh *m) {
    snprintf(buf, len, "pp=%d x dp=%d x tp=%d", m->size[AP_AXIS_PP], m->size[AP_AXIS_DP],
             m->size[AP_AXIS_TP]);
}

/* This rank's part of init, no communication: fills mesh, coord, local_rank
 * (or -1 for "ask MPI"), source. */
static int place_rank(ap_mesh_comm *mc, const int sizes[AP_NAXES], const char *label,
                      char *err, size_t errlen) {
    char ms[64];
    int local = -1;
    int env = ap_topology_from_env(&mc->mesh, &mc->coord, &local, err, errlen);
    if (env < 0) return -1;
    if (env == 1) {
        mc->source = "env";
        mc->local_rank = local;
        mesh_str(ms, sizeof ms, &mc->mesh);
        if (ap_mesh_world(&mc->mesh) != mc->world) {
            snprintf(err, errlen,
                     "the Slurm plugin's AUTOPIPE_* variables describe %s = %d ranks, but MPI "
                     "has %d (start the step with srun --mpi=pmix and the same task count)",
                     ms, ap_mesh_world(&mc->mesh), mc->world);
            return -1;
        }
        int r = ap_mesh_rank(&mc->mesh, mc->coord);
        if (r != mc->rank) {
            snprintf(err, errlen,
                     "rank %d: AUTOPIPE_* places this task at pp=%d dp=%d tp=%d (rank %d of %s), "
                     "but MPI says it is rank %d",
                     mc->rank, mc->coord.r[0], mc->coord.r[1], mc->coord.r[2], r, ms, mc->rank);
            return -1;
        }
        return 0;
    }
    mc->source = label;
    mc->local_rank = -1;
    for (int a = 0; a < AP_NAXES; a++) {
        if (sizes[a] < 0) {
            snprintf(err, errlen, "%s: %s size %d must be positive", label,
                     ap_axis_name((enum ap_axis)a), sizes[a]);
            return -1;
        }
    }
    int pp = sizes[AP_AXIS_PP] ? sizes[AP_AXIS_PP] : 1;
    int tp = sizes[AP_AXIS_TP] ? sizes[AP_AXIS_TP] : 1;
    int dp = sizes[AP_AXIS_DP];
    if (!dp) {
        if (mc->world % ((long long)pp * tp)) {
            snprintf(err, errlen, "%s: pp=%d x tp=%d does not divide the %d MPI ranks", label, pp,
                     tp, mc->world);
            return -1;
        }
        dp = (int)(mc->world / ((long long)pp * tp));
    }
    mc->mesh.size[AP_AXIS_PP] = pp;
    mc->mesh.size[AP_AXIS_DP] = dp;
    mc->mesh.size[AP_AXIS_TP] = tp;
    mesh_str(ms, sizeof ms, &mc->mesh);
    if (ap_mesh_world(&mc->mesh) != mc->world) {
        snprintf(err, errlen, "%s: %s = %lld ranks, but MPI has %d", label, ms,
                 (long long)pp * dp * tp, mc->world);
        return -1;
    }
    if (ap_mesh_coord(&mc->mesh, mc->rank, &mc->coord)) {
        snprintf(err, errlen, "rank %d is outside the mesh %s", mc->rank, ms);
        return -1;
    }
    return 0;
}

int ap_mesh_comm_init(ap_mesh_comm *mc, MPI_Comm world, const int sizes[AP_NAXES],
                      const char *label, FILE *log, char *err, size_t errlen) {
    char msg[MSG_LEN] = "";
    memset(mc, 0, sizeof *mc);
    mc->pp = mc->dp = mc->tp = MPI_COMM_NULL;
    MPI_Comm_rank(world, &mc->rank);
    MPI_Comm_size(world, &mc->world);

    /* Agree on success before any collective that a failed rank would skip. */
    struct {
        int failed, rank;
    } mine = {0, mc->rank}, first;
    mine.failed = place_rank(mc, sizes, label ? label : "config", msg, sizeof msg) ? 1 : 0;
    MPI_Allreduce(&mine, &first, 1, MPI_2INT, MPI_MAXLOC, world);
    if (first.failed) {
        /* MAXLOC picks the lowest rank among equal maxima: its message for all. */
        MPI_Bcast(msg, MSG_LEN, MPI_CHAR, first.rank, world);
        msg[MSG_LEN - 1] = '\0';
        snprintf(err, errlen, "%s", msg);
        return -1;
    }

    const ap_coord c = mc->coord;
    const int dp = mc->mesh.size[AP_AXIS_DP], tp = mc->mesh.size[AP_AXIS_TP];
    /* color: the coordinates on the other two axes; key: the coordinate on
     * this axis, so the rank inside each communicator is the coordinate. */
    int rc = MPI_Comm_split(world, c.r[AP_AXIS_DP] * tp + c.r[AP_AXIS_TP], c.r[AP_AXIS_PP], &mc->pp);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_split(world, c.r[AP_AXIS_PP] * tp + c.r[AP_AXIS_TP], c.r[AP_AXIS_DP], &mc->dp);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_split(world, c.r[AP_AXIS_PP] * dp + c.r[AP_AXIS_DP], c.r[AP_AXIS_TP], &mc->tp);
    if (rc == MPI_SUCCESS && mc->local_rank < 0) {
        MPI_Comm node;
        rc = MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, mc->rank, MPI_INFO_NULL, &node);
        if (rc == MPI_SUCCESS) {
            MPI_Comm_rank(node, &mc->local_rank);
            MPI_Comm_free(&node);
        }
    }
    if (rc != MPI_SUCCESS) {
        snprintf(err, errlen, "rank %d: MPI_Comm_split for the mesh failed (error %d)", mc->rank, rc);
        ap_mesh_comm_free(mc);
        return -1;
    }
    if (log && mc->rank == 0) {
        char ms[64];
        mesh_str(ms, sizeof ms, &mc->mesh);
        if (!strcmp(mc->source, "env")) {
            int given = sizes[0] || sizes[1] || sizes[2];
            fprintf(log, "autopipe: mesh %s from env (AUTOPIPE_* set by the Slurm plugin)%s%s\n",
                    ms, given ? "; ignoring the sizes from " : "", given ? (label ? label : "config") : "");
        } else {
            fprintf(log, "autopipe: mesh %s from %s\n", ms, mc->source);
        }
        fflush(log);
    }
    return 0;
}

void ap_mesh_comm_free(ap_mesh_comm *mc) {
    MPI_Comm *cs[AP_NAXES] = {&mc->pp, &mc->dp, &mc->tp};
    for (int a = 0; a < AP_NAXES; a++)
        if (*cs[a] != MPI_COMM_NULL) MPI_Comm_free(cs[a]);
}

MPI_Comm ap_mesh_comm_axis(const ap_mesh_comm *mc, enum ap_axis a) {
    switch (a) {
    case AP_AXIS_PP: return mc->pp;
    case AP_AXIS_DP: return mc->dp;
    case AP_AXIS_TP: return mc->tp;
    default: return MPI_COMM_NULL;
    }
}

/* ---- `autopipe mesh` ---- */

static void mesh_usage(FILE *f) {
    fprintf(f,
            "usage: autopipe mesh [--pp N] [--dp N] [--tp N]\n\n"
            "Set up the process mesh as `autopipe train` does and print one line per rank, in\n"
            "rank order:  rank R pp=.. dp=.. tp=.. local=.. source=env|flags\n"
            "The AUTOPIPE_* variables of the Slurm plugin (srun --pp-size=...) win over the\n"
            "flags. Checks that each axis communicator holds the ranks the topology says.\n"
            "Run it under MPI: mpirun -np 4 autopipe mesh --pp 2, or srun --mpi=pmix --pp-size=2 -n 4\n");
}

static int parse_flag(const char *s, const char *name, int *out) {
    char *end;
    long v;
    if (!s || !*s || *s < '0' || *s > '9') goto bad;
    v = strtol(s, &end, 10);
    if (*end || v < 1 || v > AP_MESH_MAX_RANKS) goto bad;
    *out = (int)v;
    return 0;
bad:
    fprintf(stderr, "autopipe mesh: --%s needs a positive integer up to %d, got '%s'\n", name,
            AP_MESH_MAX_RANKS, s ? s : "");
    return -1;
}

/* 0 when every axis communicator matches ap_mesh_group, else -1 with a message. */
static int check_groups(const ap_mesh_comm *mc, char *err, size_t errlen) {
    for (int a = 0; a < AP_NAXES; a++) {
        MPI_Comm comm = ap_mesh_comm_axis(mc, (enum ap_axis)a);
        int n = mc->mesh.size[a], size, crank;
        MPI_Comm_size(comm, &size);
        MPI_Comm_rank(comm, &crank);
        if (size != n || crank != mc->coord.r[a]) {
            snprintf(err, errlen, "%s communicator: size %d rank %d, expected size %d rank %d",
                     ap_axis_name((enum ap_axis)a), size, crank, n, mc->coord.r[a]);
            return -1;
        }
        int *want = malloc(sizeof(int) * (size_t)n), *got = malloc(sizeof(int) * (size_t)n);
        int bad = !want || !got;
        if (!bad) bad = ap_mesh_group(&mc->mesh, (enum ap_axis)a, mc->rank, want, (size_t)n) != n;
        if (!bad) bad = MPI_Allgather(&mc->rank, 1, MPI_INT, got, 1, MPI_INT, comm) != MPI_SUCCESS;
        for (int i = 0; !bad && i < n; i++)
            if (got[i] != want[i]) {
                snprintf(err, errlen, "%s communicator: member %d is world rank %d, topology says %d",
                         ap_axis_name((enum ap_axis)a), i, got[i], want[i]);
                free(want);
                free(got);
                return -1;
            }
        free(want);
        free(got);
        if (bad) {
            snprintf(err, errlen, "%s communicator: cannot gather its members",
                     ap_axis_name((enum ap_axis)a));
            return -1;
        }
    }
    return 0;
}

int ap_cmd_mesh(int argc, char **argv) {
    static const struct option opts[] = {{"pp", required_argument, NULL, 'p'},
                                         {"dp", required_argument, NULL, 'd'},
                                         {"tp", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int sizes[AP_NAXES] = {0, 0, 0}, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': if (parse_flag(optarg, "pp", &sizes[AP_AXIS_PP])) return AP_EXIT_USAGE; break;
        case 'd': if (parse_flag(optarg, "dp", &sizes[AP_AXIS_DP])) return AP_EXIT_USAGE; break;
        case 't': if (parse_flag(optarg, "tp", &sizes[AP_AXIS_TP])) return AP_EXIT_USAGE; break;
        case 'h': mesh_usage(stdout); return AP_EXIT_OK;
        default: mesh_usage(stderr); return AP_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "autopipe mesh: unexpected argument '%s'\n", argv[optind]);
        return AP_EXIT_USAGE;
    }

    char err[MSG_LEN];
    if (ap_mpi_init(&argc, &argv, err, sizeof err)) {
        fprintf(stderr, "autopipe mesh: %s\n", err);
        return AP_EXIT_FAIL;
    }
    ap_mesh_comm mc;
    if (ap_mesh_comm_init(&mc, MPI_COMM_WORLD, sizes, "flags", stderr, err, sizeof err)) {
        int rank;
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
        if (rank == 0) fprintf(stderr, "autopipe mesh: %s\n", err);
        MPI_Finalize();
        return AP_EXIT_FAIL;
    }

    char line[MSG_LEN + 32], *all = NULL;
    int bad = check_groups(&mc, err, sizeof err);
    if (bad)
        snprintf(line, sizeof line, "rank %d ERROR %.280s", mc.rank, err);
    else
        snprintf(line, sizeof line, "rank %d pp=%d dp=%d tp=%d local=%d source=%s", mc.rank,
                 mc.coord.r[AP_AXIS_PP], mc.coord.r[AP_AXIS_DP], mc.coord.r[AP_AXIS_TP],
                 mc.local_rank, mc.source);
    if (mc.rank == 0 && !(all = malloc((size_t)mc.world * MSG_LEN))) {
        fprintf(stderr, "autopipe mesh: out of memory for %d lines\n", mc.world);
        MPI_Abort(MPI_COMM_WORLD, AP_EXIT_FAIL);
    }
    int any_bad = bad;
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Gather(line, MSG_LEN, MPI_CHAR, all, MSG_LEN, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (mc.rank == 0) {
        for (int r = 0; r < mc.world; r++) {
            all[(size_t)r * MSG_LEN + MSG_LEN - 1] = '\0';
            printf("%s\n", all + (size_t)r * MSG_LEN);
        }
        fflush(stdout);
        free(all);
    }
    ap_mesh_comm_free(&mc);
    MPI_Finalize();
    return any_bad ? AP_EXIT_FAIL : AP_EXIT_OK;
}
