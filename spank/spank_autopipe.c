/* spank_autopipe.c - Slurm SPANK plugin: --pp-size/--dp-size/--tp-size.
 *
 *   srun --pp-size=4 --dp-size=2 -n 8 autopipe train --config run.yaml
 *
 * srun (local): checks the values and pp * dp * tp == the step's task count
 * before any task starts. slurmstepd (remote): gives each task its mesh
 * coordinates in AUTOPIPE_{PP,DP,TP}_{SIZE,RANK} and AUTOPIPE_LOCAL_RANK,
 * computed by launcher/topology.c, the same code the launcher uses.
 * sbatch/salloc (allocator): checks the values (the task count is unknown
 * there) and passes them to the job, so `#SBATCH --pp-size=2` works.
 * Without any of the flags the plugin does nothing.
 *
 * Rules learnt on Slurm 22.05 (see docs/slurm.md): options must be
 * registered in slurm_spank_init to reach sbatch; option callbacks run more
 * than once (they only record); a failure in remote init_post_opt/user_init
 * drains nodes or reports a false success, so remote problems fail in
 * task_init, where the message reaches the user. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

#include "launcher/topology.h"
#include "spank/args.h"

SPANK_PLUGIN(autopipe, 1)

/* Set once by slurm_spank_init from plugstack.conf. */
static ap_spank_conf conf;
static int conf_bad; /* remote only: the arguments were rejected, tasks will fail */

/* The raw option values; NULL entries were not given. Callbacks store
 * copies, so a second call with the same value changes nothing. */
static char raw_buf[AP_NAXES][AP_SPANK_ARG_MAX + 2];
static const char *raw[AP_NAXES];

static int opt_cb(int val, const char *optarg, int remote) {
    if (val < 0 || val >= AP_NAXES) return -1;
    /* Copy one byte more than ARG_MAX so a too-long value is still seen as such. */
    snprintf(raw_buf[val], sizeof raw_buf[val], "%s", optarg ? optarg : "");
    raw[val] = raw_buf[val];
    return 0;
}

static struct spank_option options[AP_NAXES] = {
    {"pp-size", "N", "autopipe: pipeline-parallel size (default 1 when another size is given)", 1,
     AP_AXIS_PP, opt_cb},
    {"dp-size", "N", "autopipe: data-parallel size (default: tasks / (pp-size * tp-size))", 1,
     AP_AXIS_DP, opt_cb},
    {"tp-size", "N", "autopipe: tensor-parallel size (default 1 when another size is given)", 1,
     AP_AXIS_TP, opt_cb},
};

static int any_given(void) { return raw[0] || raw[1] || raw[2]; }

int slurm_spank_init(spank_t sp, int ac, char **av) {
    int rv = -1;
    char err[256];
    spank_context_t ctx = spank_context();

    if (ap_spank_conf_parse(&conf, ac, av, err, sizeof err)) {
        slurm_error("autopipe: %s; the plugin is not loaded", err);
        /* srun/sbatch/salloc refuse: the flags do not exist. In slurmd and
         * slurmstepd a failed init would hurt the node (a required plugin
         * stops slurmd); there the tasks that use the flags fail instead. */
        if (ctx == S_CTX_LOCAL || ctx == S_CTX_ALLOCATOR) goto fail;
        conf_bad = 1;
    }
    if (ctx == S_CTX_LOCAL || ctx == S_CTX_REMOTE || ctx == S_CTX_ALLOCATOR) {
        for (int a = 0; a < AP_NAXES; a++) {
            spank_err_t e = spank_option_register(sp, &options[a]);
            if (e != ESPANK_SUCCESS) {
                slurm_error("autopipe: cannot register --%s: %s", options[a].name,
                            spank_strerror(e));
                if (ctx != S_CTX_REMOTE) goto fail;
            }
        }
    }
    rv = 0;
fail:
    return rv;
}

/* sbatch/salloc, init_post_opt: reject junk at submission (the task count
 * comes later). */
static int allocator_check(spank_t sp) {
    int rv = -1;
    char err[256];
    ap_spank_request req;

    if (ap_spank_request_parse(&conf, raw, &req, err, sizeof err)) {
        slurm_error("autopipe: %s", err);
        goto fail;
    }
    rv = 0;
fail:
    return rv;
}

/* srun, local_user_init, before any task starts: the full check against the
 * step's size. */
static int local_check(spank_t sp) {
    int rv = -1;
    char err[256];
    ap_spank_request req;
    ap_mesh mesh;
    uint32_t ntasks = 0;
    spank_err_t e;

    if (ap_spank_request_parse(&conf, raw, &req, err, sizeof err)) {
        slurm_error("autopipe: %s", err);
        goto fail;
    }
    if ((e = spank_get_item(sp, S_JOB_TOTAL_TASK_COUNT, &ntasks)) != ESPANK_SUCCESS) {
        slurm_error("autopipe: cannot read the step's task count: %s", spank_strerror(e));
        goto fail;
    }
    if (ap_spank_resolve(&conf, &req, ntasks, &mesh, err, sizeof err)) {
        slurm_error("autopipe: %s", err);
        goto fail;
    }
    slurm_verbose("autopipe: mesh pp=%d x dp=%d x tp=%d for %u tasks", mesh.size[AP_AXIS_PP],
                  mesh.size[AP_AXIS_DP], mesh.size[AP_AXIS_TP], ntasks);
    rv = 0;
fail:
    return rv;
}

static int set_int(spank_t sp, const char *name, long long v) {
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    spank_err_t e = spank_setenv(sp, name, buf, 1);
    if (e != ESPANK_SUCCESS) {
        slurm_error("autopipe: cannot set %s in the task's environment: %s", name,
                    spank_strerror(e));
        return -1;
    }
    return 0;
}

/* slurmstepd, task_init, once per task, as the user: the task's coordinates. */
static int remote_task_init(spank_t sp) {
    int rv = -1;
    char err[256];
    ap_spank_request req;
    ap_mesh mesh;
    ap_coord c;
    uint32_t stepid = 0, ntasks = 0, gid = 0;
    int local = -1;
    spank_err_t e;

    /* The batch script, extern and interactive steps are not the job's
     * ranks: an srun inside the batch script gets the values and sets them. */
    if ((e = spank_get_item(sp, S_JOB_STEPID, &stepid)) != ESPANK_SUCCESS) {
        slurm_error("autopipe: cannot read the step id: %s", spank_strerror(e));
        goto fail;
    }
    if (stepid >= SLURM_MAX_NORMAL_STEP_ID) return 0;
    if (conf_bad) {
        slurm_error("autopipe: this node's plugstack.conf arguments for spank_autopipe.so are "
                    "invalid (see slurmd's log); cannot place the task");
        goto fail;
    }
    if (ap_spank_request_parse(&conf, raw, &req, err, sizeof err)) {
        slurm_error("autopipe: %s", err);
        goto fail;
    }
    if ((e = spank_get_item(sp, S_JOB_TOTAL_TASK_COUNT, &ntasks)) != ESPANK_SUCCESS ||
        (e = spank_get_item(sp, S_TASK_GLOBAL_ID, &gid)) != ESPANK_SUCCESS ||
        (e = spank_get_item(sp, S_TASK_ID, &local)) != ESPANK_SUCCESS) {
        slurm_error("autopipe: cannot read the task's ids: %s", spank_strerror(e));
        goto fail;
    }
    if (ap_spank_resolve(&conf, &req, ntasks, &mesh, err, sizeof err)) {
        slurm_error("autopipe: %s", err);
        goto fail;
    }
    if (gid > (uint32_t)AP_MESH_MAX_RANKS || ap_mesh_coord(&mesh, (int)gid, &c)) {
        slurm_error("autopipe: task %u is outside the %d-rank mesh", gid, ap_mesh_world(&mesh));
        goto fail;
    }
    if (set_int(sp, "AUTOPIPE_PP_SIZE", mesh.size[AP_AXIS_PP]) ||
        set_int(sp, "AUTOPIPE_DP_SIZE", mesh.size[AP_AXIS_DP]) ||
        set_int(sp, "AUTOPIPE_TP_SIZE", mesh.size[AP_AXIS_TP]) ||
        set_int(sp, "AUTOPIPE_PP_RANK", c.r[AP_AXIS_PP]) ||
        set_int(sp, "AUTOPIPE_DP_RANK", c.r[AP_AXIS_DP]) ||
        set_int(sp, "AUTOPIPE_TP_RANK", c.r[AP_AXIS_TP]) ||
        set_int(sp, "AUTOPIPE_LOCAL_RANK", local))
        goto fail;
    rv = 0;
fail:
    return rv;
}

/* ---- the hooks: one dispatcher decides by context what runs where ---- */

enum hook { HOOK_INIT_POST_OPT, HOOK_LOCAL_USER_INIT, HOOK_TASK_INIT };

static int dispatch(spank_t sp, enum hook h) {
    if (!any_given()) return 0; /* no flag: the plugin does nothing */
    switch (spank_context()) {
    case S_CTX_ALLOCATOR: return h == HOOK_INIT_POST_OPT ? allocator_check(sp) : 0;
    case S_CTX_LOCAL: return h == HOOK_LOCAL_USER_INIT ? local_check(sp) : 0;
    case S_CTX_REMOTE: return h == HOOK_TASK_INIT ? remote_task_init(sp) : 0; /* never fail earlier */
    default: return 0;
    }
}

int slurm_spank_init_post_opt(spank_t sp, int ac, char **av) { return dispatch(sp, HOOK_INIT_POST_OPT); }
int slurm_spank_local_user_init(spank_t sp, int ac, char **av) { return dispatch(sp, HOOK_LOCAL_USER_INIT); }
int slurm_spank_task_init(spank_t sp, int ac, char **av) { return dispatch(sp, HOOK_TASK_INIT); }
