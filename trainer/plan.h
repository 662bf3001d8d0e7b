/* plan.h - `autopipe plan`: the mesh, the stage placement and each stage's
 * modules and parameter counts for a config, without MPI. */
#ifndef AP_PLAN_H
#define AP_PLAN_H

#include <stdio.h>

#include "launcher/config.h"
#include "trainer/model_config.h"
#include "trainer/split.h"

/* Prints the plan (max_modules: FQNs listed per stage, 0 = all). 0 or -1. */
int ap_plan_print(FILE *f, const ap_config *cfg, const ap_model_config *mc, const ap_split *sp,
                  int max_modules);

int ap_cmd_plan(int argc, char **argv);

#endif
