/* costs.c - per-action costs measured in a run, from Chrome trace files.
 *
 * Reads the complete events ("ph": "X") named like actions ("2F3") that the
 * executor's trace (logging trace) and ap_schedule_write_trace write, and
 * averages their duration per (type, stage), in milliseconds. */
#include "common/file.h"
#include "trainer/schedule/schedule.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TRACE_BYTES (256u << 20)


int ap_sched_costs_from_traces(ap_sched_costs *c, const char *const *paths, int n_paths, char *err,
                               size_t errlen) {
    double(*sum)[AP_SCHED_COST_STAGES] = calloc(AP_ACT_NTYPES, sizeof *sum);
    long(*cnt)[AP_SCHED_COST_STAGES] = calloc(AP_ACT_NTYPES, sizeof *cnt);
    long used = 0;
    int rv = -1;
    if (err && errlen) err[0] = '\0';
    if (!sum || !cnt) {
        snprintf(err, errlen, "out of memory reading traces");
        goto out;
    }
    for (int k = 0; k < n_paths; k++) {
        size_t len;
        char *text = ap_read_file(paths[k], MAX_TRACE_BYTES, &len, err, errlen);
        if (!text) goto out;
        cJSON *root = cJSON_ParseWithLength(text, len);
        free(text);
        cJSON *evs = root ? cJSON_GetObjectItemCaseSensitive(root, "traceEvents") : NULL;
        if (!cJSON_IsArray(evs)) {
            snprintf(err, errlen, "%s: expected a Chrome trace (a JSON object with a traceEvents array)",
                     paths[k]);
            cJSON_Delete(root);
            goto out;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, evs) {
            const cJSON *ph = cJSON_GetObjectItemCaseSensitive(e, "ph");
            const cJSON *name = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *dur = cJSON_GetObjectItemCaseSensitive(e, "dur");
            if (!cJSON_IsString(ph) || strcmp(ph->valuestring, "X") || !cJSON_IsString(name) ||
                !cJSON_IsNumber(dur))
                continue;
            ap_action a;
            char why[256];
            if (ap_action_parse(name->valuestring, &a, why, sizeof why) || !ap_act_is_compute(a.type))
                continue; /* other events (sends, waits, optimizer) do not cost actions */
            if (a.stage >= AP_SCHED_COST_STAGES || !(dur->valuedouble >= 0)) continue;
            sum[a.type][a.stage] += dur->valuedouble / 1000.0; /* us -> ms */
            cnt[a.type][a.stage]++;
            used++;
        }
        cJSON_Delete(root);
    }
    if (!used) {
        snprintf(err, errlen, "no F, B, I or W events in the trace%s; expected events named like 2F3",
                 n_paths > 1 ? "s" : "");
        goto out;
    }
    /* per stage where measured; the type's mean elsewhere */
    double type_mean[AP_ACT_NTYPES] = {0};
    int measured[AP_ACT_NTYPES] = {0};
    for (int t = 0; t < AP_ACT_NTYPES; t++) {
        double s = 0;
        long n = 0;
        for (int st = 0; st < AP_SCHED_COST_STAGES; st++) {
            if (!cnt[t][st]) continue;
            c->over[t][st] = sum[t][st] / (double)cnt[t][st];
            c->has_over[t][st] = 1;
            s += sum[t][st];
            n += cnt[t][st];
        }
        if (n) {
            type_mean[t] = s / (double)n;
            measured[t] = 1;
            c->cost[t] = type_mean[t];
        }
    }
    /* a run with whole backwards predicts split ones as halves, and back */
    if (measured[AP_ACT_B] && !measured[AP_ACT_I]) c->cost[AP_ACT_I] = type_mean[AP_ACT_B] / 2;
    if (measured[AP_ACT_B] && !measured[AP_ACT_W]) c->cost[AP_ACT_W] = type_mean[AP_ACT_B] / 2;
    if (!measured[AP_ACT_B] && measured[AP_ACT_I] && measured[AP_ACT_W])
        c->cost[AP_ACT_B] = type_mean[AP_ACT_I] + type_mean[AP_ACT_W];
    rv = (int)(used > 1000000000 ? 1000000000 : used);
out:
    free(sum);
    free(cnt);
    return rv;
}
