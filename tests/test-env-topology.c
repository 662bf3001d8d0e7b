/* test-env-topology.c - reading the Slurm plugin's AUTOPIPE_* variables. */
#include <stdlib.h>
#include <string.h>

#include "launcher/env_topology.h"
#include "tests/tap.h"

static const char *vars[] = {"AUTOPIPE_PP_SIZE", "AUTOPIPE_DP_SIZE", "AUTOPIPE_TP_SIZE",
                             "AUTOPIPE_PP_RANK", "AUTOPIPE_DP_RANK", "AUTOPIPE_TP_RANK",
                             "AUTOPIPE_LOCAL_RANK"};

static void set_all(const char *const v[7]) {
    for (int i = 0; i < 7; i++) {
        if (v[i])
            setenv(vars[i], v[i], 1);
        else
            unsetenv(vars[i]);
    }
}

static int read_env(ap_mesh *m, ap_coord *c, int *local, char *err) {
    err[0] = '\0';
    return ap_topology_from_env(m, c, local, err, 256);
}

int main(void) {
    ap_mesh m;
    ap_coord c;
    int local = -5;
    char err[256];

    set_all((const char *[7]){NULL, NULL, NULL, NULL, NULL, NULL, NULL});
    ok(read_env(&m, &c, &local, err) == 0, "none set: 0 (absent)");

    set_all((const char *[7]){"2", "3", "2", "1", "2", "0", "5"});
    ok(read_env(&m, &c, &local, err) == 1 && m.size[0] == 2 && m.size[1] == 3 && m.size[2] == 2 &&
           c.r[0] == 1 && c.r[1] == 2 && c.r[2] == 0 && local == 5,
       "all set: 1 with the values");
    ok(ap_mesh_rank(&m, c) == (1 * 3 + 2) * 2 + 0, "coordinates give rank 10");

    static const struct {
        int var;
        const char *val;
        const char *what;
    } bad[] = {
        {0, "0", "zero size"},     {0, "-2", "negative size"},   {1, "2x", "trailing chars"},
        {2, "", "empty"},          {0, " 2", "leading space"},    {3, "2", "rank = size"},
        {4, "9", "rank > size"},   {5, "-1", "negative rank"},    {6, "a", "junk local rank"},
        {0, "99999999999999999999", "overflow"}, {1, "+3", "plus sign"},
        {0, "16777216", "product over the mesh limit"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_all((const char *[7]){"2", "3", "2", "1", "2", "0", "5"});
        setenv(vars[bad[i].var], bad[i].val, 1);
        int rc = read_env(&m, &c, &local, err);
        ok(rc == -1 && strstr(err, "AUTOPIPE_"), "%s (%s=%s) rejected: %s", bad[i].what,
           vars[bad[i].var], bad[i].val, err);
    }
    for (int i = 0; i < 7; i++) {
        set_all((const char *[7]){"2", "3", "2", "1", "2", "0", "5"});
        unsetenv(vars[i]);
        ok(read_env(&m, &c, &local, err) == -1 && strstr(err, vars[i]),
           "only %s missing: -1 naming it", vars[i]);
    }
    return tap_done();
}
