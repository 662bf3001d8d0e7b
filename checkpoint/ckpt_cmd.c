/* ckpt_cmd.c - `autopipe ckpt`: look into, check, compare and export
 * checkpoints of any layout. Reads only; never modifies a checkpoint.
 * Exit: 0 ok (or match), 1 damaged / differ / runtime failure, 2 usage. */
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"
#include "launcher/commands.h"

#include <cJSON.h>
#include <getopt.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* Messages may be cut at their buffer size; that is fine for a report. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

int ap_ckpt_export(ap_ckpt *ck, const char *out, uint64_t max_shard, int bf16, cJSON *report, char *err,
                   size_t errlen);

static const char usage_text[] =
    "usage: autopipe ckpt COMMAND [options] DIR\n\n"
    "Inspect autopipe checkpoints. DIR is a step directory, checkpoint_dir/latest or checkpoint_dir.\n\n"
    "  info DIR                       step, topology, files with layer ranges, sizes, model summary\n"
    "  ls DIR [--stage N] [--stats]   every tensor: shape, dtype, file (--stats: min max mean L2)\n"
    "  verify DIR                     marker, manifest, each layer once, every checksum read back\n"
    "  diff A B [--rtol X]            per-tensor max abs/rel difference of params and moments\n"
    "  export DIR --to OUT [--max-shard-size SIZE] [--dtype float32|bfloat16]\n"
    "                                 Hugging Face model directory (config.json + safetensors,\n"
    "                                 sharded with an index above SIZE, default 5GB)\n\n"
    "Options: --json (machine-readable output), --help.\n"
    "Exit status: 0 ok / match, 1 damaged, different or failed, 2 usage error.\n";

static int usage_err(const char *fmt, const char *arg) {
    fprintf(stderr, "autopipe ckpt: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n(see `autopipe ckpt --help`)\n");
    return AP_EXIT_USAGE;
}

static void print_json(cJSON *j) {
    char *s = cJSON_Print(j);
    printf("%s\n", s);
    free(s);
}

static void shape_str(char *b, size_t n, int ndim, const size_t *s) {
    size_t o = (size_t)snprintf(b, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(b + o, n - o, "%s%zu", i ? ", " : "", s[i]);
    if (o < n) snprintf(b + o, n - o, "]");
}

static cJSON *shape_json(int ndim, const size_t *s) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < ndim; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)s[i]));
    return a;
}

static void human(char *b, size_t n, double bytes) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (bytes >= 1024 && i < 4) bytes /= 1024, i++;
    snprintf(b, n, i ? "%.1f %s" : "%.0f %s", bytes, u[i]);
}

static int open_or_fail(const char *path, ap_ckpt **ck) {
    char err[1024];
    if (ap_ckpt_open(path, ck, err, sizeof err)) {
        fprintf(stderr, "autopipe ckpt: %s\n", err);
        return -1;
    }
    return 0;
}

/* ---- info ---- */
static int cmd_info(ap_ckpt *ck, int json) {
    ap_ckpt_state st;
    char err[1024];
    if (ap_ckpt_get_state(ck, &st, err, sizeof err)) {
        fprintf(stderr, "autopipe ckpt: %s\n", err);
        return AP_EXIT_FAIL;
    }
    int nf = ap_ckpt_n_files(ck);
    double *params = calloc((size_t)nf, sizeof(double)), *bytes = calloc((size_t)nf, sizeof(double));
    double tp = 0, tb = 0, disk = 0;
    for (int i = 0; i < ap_ckpt_n_entries(ck); i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        params[e->file] += (double)e->numel;
        bytes[e->file] += (double)e->numel * 4 * (e->has_moments ? 3 : 1);
    }
    cJSON *cfg = st.model_config_json ? cJSON_Parse(st.model_config_json) : NULL;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", ap_ckpt_dir(ck));
    cJSON_AddNumberToObject(j, "step", (double)st.step);
    cJSON_AddNumberToObject(j, "tokens_consumed", (double)st.tokens_consumed);
    cJSON_AddNumberToObject(j, "samples_consumed", (double)st.samples_consumed);
    cJSON_AddNumberToObject(j, "lr_step", (double)st.lr_step);
    cJSON *topo = cJSON_AddObjectToObject(j, "topology");
    cJSON_AddNumberToObject(topo, "pp", st.pp);
    cJSON_AddNumberToObject(topo, "dp", st.dp);
    cJSON_AddNumberToObject(topo, "tp", st.tp);
    cJSON_AddNumberToObject(topo, "stages_per_rank", st.stages_per_rank);
    cJSON_AddStringToObject(topo, "schedule", st.schedule);
    cJSON *fa = cJSON_AddArrayToObject(j, "files");
    for (int i = 0; i < nf; i++) {
        const ap_ckpt_file *f = ap_ckpt_file_at(ck, i);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", f->name);
        cJSON_AddNumberToObject(o, "stage", f->stage_id);
        cJSON_AddNumberToObject(o, "tp_rank", f->tp_rank);
        cJSON_AddNumberToObject(o, "first_layer", f->first_layer);
        cJSON_AddNumberToObject(o, "last_layer", f->last_layer);
        cJSON_AddNumberToObject(o, "tensors", f->n_tensors);
        cJSON_AddNumberToObject(o, "params", params[i]);
        cJSON_AddNumberToObject(o, "bytes", bytes[i]);
        cJSON_AddNumberToObject(o, "size_on_disk", (double)f->size);
        cJSON_AddItemToArray(fa, o);
        tp += params[i], tb += bytes[i], disk += (double)f->size;
    }
    cJSON_AddNumberToObject(j, "tensors", ap_ckpt_n_entries(ck));
    cJSON_AddNumberToObject(j, "params", tp);
    cJSON_AddNumberToObject(j, "bytes", tb);
    cJSON_AddNumberToObject(j, "size_on_disk", disk);
    static const char *keys[] = {"model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
                                 "num_attention_heads", "num_key_value_heads", "tie_word_embeddings", NULL};
    cJSON *model = cJSON_AddObjectToObject(j, "model");
    for (int k = 0; cfg && keys[k]; k++) {
        cJSON *it = cJSON_GetObjectItemCaseSensitive(cfg, keys[k]);
        if (it) cJSON_AddItemToObject(model, keys[k], cJSON_Duplicate(it, 1));
    }
    if (json) {
        print_json(j);
    } else {
        char h[32], h2[32];
        printf("checkpoint   %s (committed)\n", ap_ckpt_dir(ck));
        printf("step         %" PRId64 "  (tokens %" PRId64 ", samples %" PRId64 ", lr step %" PRId64 ")\n", st.step,
               st.tokens_consumed, st.samples_consumed, st.lr_step);
        printf("topology     pp=%d dp=%d tp=%d stages_per_rank=%d schedule=%s (%d stage files)\n", st.pp, st.dp, st.tp,
               st.stages_per_rank, st.schedule[0] ? st.schedule : "-", nf);
        printf("model       ");
        cJSON *it;
        cJSON_ArrayForEach(it, model) {
            char v[64];
            if (cJSON_IsString(it)) snprintf(v, sizeof v, "%s", it->valuestring);
            else if (cJSON_IsBool(it)) snprintf(v, sizeof v, "%s", cJSON_IsTrue(it) ? "true" : "false");
            else snprintf(v, sizeof v, "%g", it->valuedouble);
            printf(" %s=%s", it->string, v);
        }
        printf("%s\n", model->child ? "" : " (no config.json recorded)");
        printf("files:\n");
        for (int i = 0; i < nf; i++) {
            const ap_ckpt_file *f = ap_ckpt_file_at(ck, i);
            human(h, sizeof h, bytes[i]);
            human(h2, sizeof h2, (double)f->size);
            printf("  %-20s stage %-3d layers [%d, %d)  %5d tensors  %12.0f params  %10s (+moments)  %10s on disk\n",
                   f->name, f->stage_id, f->first_layer, f->last_layer, f->n_tensors, params[i], h, h2);
        }
        human(h, sizeof h, tb);
        human(h2, sizeof h2, disk);
        printf("total        %d tensors, %.0f parameters, %s with AdamW moments, %s on disk\n", ap_ckpt_n_entries(ck), tp,
               h, h2);
    }
    cJSON_Delete(j);
    cJSON_Delete(cfg);
    free(params);
    free(bytes);
    ap_ckpt_state_free(&st);
    return AP_EXIT_OK;
}

/* ---- ls ---- */
static int cmd_ls(ap_ckpt *ck, int stage, int stats, int json) {
    cJSON *arr = cJSON_CreateArray();
    float *buf = NULL;
    size_t cap = 0;
    int rc = AP_EXIT_OK;
    for (int i = 0; i < ap_ckpt_n_entries(ck); i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        const ap_ckpt_file *f = ap_ckpt_file_at(ck, e->file);
        if (stage >= 0 && f->stage_id != stage) continue;
        char sh[96];
        shape_str(sh, sizeof sh, e->ndim, e->shape);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", e->name);
        cJSON_AddItemToObject(o, "shape", shape_json(e->ndim, e->shape));
        cJSON_AddStringToObject(o, "dtype", "float32");
        cJSON_AddStringToObject(o, "file", f->name);
        cJSON_AddBoolToObject(o, "moments", e->has_moments);
        double mn = 0, mx = 0, sum = 0, sq = 0;
        if (stats) {
            char err[1024];
            if (e->numel > cap) buf = realloc(buf, (cap = e->numel) * sizeof *buf);
            if (!buf) {
                fprintf(stderr, "autopipe ckpt: out of memory reading %s\n", e->name);
                rc = AP_EXIT_FAIL;
                cJSON_Delete(o);
                break;
            }
            if (ap_ckpt_read_entry(ck, e, buf, NULL, NULL, err, sizeof err)) {
                fprintf(stderr, "autopipe ckpt: %s\n", err);
                rc = AP_EXIT_FAIL;
                cJSON_Delete(o);
                break;
            }
            mn = mx = buf[0];
            for (size_t k = 0; k < e->numel; k++) {
                double v = buf[k];
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
                sum += v;
                sq += v * v;
            }
            cJSON_AddNumberToObject(o, "min", mn);
            cJSON_AddNumberToObject(o, "max", mx);
            cJSON_AddNumberToObject(o, "mean", sum / (double)e->numel);
            cJSON_AddNumberToObject(o, "l2", sqrt(sq));
        }
        if (!json) {
            printf("%-56s %-16s float32  %s", e->name, sh, f->name);
            if (stats) printf("  min %.6g max %.6g mean %.6g l2 %.6g", mn, mx, sum / (double)e->numel, sqrt(sq));
            printf("\n");
        }
        cJSON_AddItemToArray(arr, o);
    }
    if (json && rc == AP_EXIT_OK) print_json(arr);
    cJSON_Delete(arr);
    free(buf);
    return rc;
}

/* ---- verify: list every problem, do not stop at the first ---- */
static void problem(cJSON *list, int json, const char *msg) {
    cJSON_AddItemToArray(list, cJSON_CreateString(msg));
    if (!json) printf("problem: %s\n", msg);
}

static int layer_of(const char *fqn) {
    const char *p = strstr(fqn, "layers.");
    if (!p) return -1;
    char *end;
    long v = strtol(p + 7, &end, 10);
    return end != p + 7 && *end == '.' && v >= 0 && v < (1 << 24) ? (int)v : -1;
}

static int cmd_verify(const char *path, int json) {
    char err[1024], msg[1400];
    cJSON *j = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(j, "problems");
    ap_ckpt *ck = NULL;
    if (ap_ckpt_open_ex(path, 0, &ck, err, sizeof err)) {
        problem(list, json, err);
        goto out;
    }
    cJSON_AddStringToObject(j, "path", ap_ckpt_dir(ck));
    int nf = ap_ckpt_n_files(ck), ne = ap_ckpt_n_entries(ck);
    char *usable = calloc((size_t)nf, 1);
    for (int i = 0; i < nf; i++) {
        const ap_ckpt_file *f = ap_ckpt_file_at(ck, i);
        char p[4200];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", ap_ckpt_dir(ck), f->name);
        if (stat(p, &sb) != 0) {
            snprintf(msg, sizeof msg, "%s: missing stage file (listed in manifest.json)", p);
            problem(list, json, msg);
            continue;
        }
        if ((uint64_t)sb.st_size != f->size) {
            snprintf(msg, sizeof msg, "%s: %lld bytes, manifest.json says %" PRIu64 " (truncated or replaced)", p,
                     (long long)sb.st_size, f->size);
            problem(list, json, msg);
            continue;
        }
        int64_t h = ap_ckpt_file_hid(ck, i, err, sizeof err);
        if (h < 0) {
            problem(list, json, err);
            continue;
        }
        usable[i] = 1;
        hid_t g = H5Gopen2((hid_t)h, "tensors", H5P_DEFAULT);
        H5G_info_t gi;
        if (g < 0 || H5Gget_info(g, &gi) < 0 || gi.nlinks != (hsize_t)f->n_tensors) {
            snprintf(msg, sizeof msg, "%s: holds %lld tensors, manifest.json lists %d", p,
                     g < 0 ? -1LL : (long long)gi.nlinks, f->n_tensors);
            problem(list, json, msg);
        }
        if (g >= 0) H5Gclose(g);
        H5Eclear2(H5E_DEFAULT);
    }
    /* every decoder layer exactly once, inside its file's layer range */
    int maxl = -1, nl = -1;
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(ap_ckpt_manifest(ck), "config_json");
    cJSON *cfg = cJSON_IsString(cj) ? cJSON_Parse(cj->valuestring) : NULL;
    cJSON *nh = cJSON_GetObjectItemCaseSensitive(cfg, "num_hidden_layers");
    if (cJSON_IsNumber(nh) && nh->valuedouble >= 0 && nh->valuedouble < (1 << 24)) nl = nh->valueint;
    cJSON_Delete(cfg);
    for (int i = 0; i < ne; i++) {
        int l = layer_of(ap_ckpt_entry_at(ck, i)->name);
        maxl = l > maxl ? l : maxl;
    }
    if (nl < 0) nl = maxl + 1;
    int *owner = malloc(sizeof(int) * (size_t)(nl > maxl + 1 ? nl : maxl + 1) + 1);
    for (int l = 0; l < nl || l <= maxl; l++) owner[l] = -1;
    for (int i = 0; i < ne; i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        const ap_ckpt_file *f = ap_ckpt_file_at(ck, e->file);
        int l = layer_of(e->name);
        if (l < 0) continue;
        if (l >= f->first_layer && l < f->last_layer && (owner[l] == -1 || owner[l] == e->file)) {
            owner[l] = e->file;
            continue;
        }
        if (l >= nl) snprintf(msg, sizeof msg, "%s: %s is beyond num_hidden_layers %d", f->name, e->name, nl);
        else if (owner[l] >= 0 && owner[l] != e->file && ap_ckpt_file_at(ck, owner[l])->tp_rank == f->tp_rank)
            snprintf(msg, sizeof msg, "layer %d appears in %s and %s", l, ap_ckpt_file_at(ck, owner[l])->name, f->name);
        else if (l < f->first_layer || l >= f->last_layer)
            snprintf(msg, sizeof msg, "%s: %s is outside the file's layer range [%d, %d)", f->name, e->name,
                     f->first_layer, f->last_layer);
        else continue;
        problem(list, json, msg);
    }
    for (int l = 0; l < nl; l++)
        if (owner[l] < 0) {
            snprintf(msg, sizeof msg, "layer %d is in no stage file", l);
            problem(list, json, msg);
        }
    free(owner);
    /* read every array back: fletcher32 per chunk, then crc32 against the manifest */
    float *buf = NULL;
    size_t cap = 0;
    for (int i = 0; i < ne; i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        if (!usable[e->file]) continue;
        if (e->numel > cap) buf = realloc(buf, (cap = e->numel) * sizeof *buf);
        if (!buf) {
            snprintf(msg, sizeof msg, "out of memory reading %s", e->name);
            problem(list, json, msg);
            cap = 0;
            continue;
        }
        for (int k = 0; k < (e->has_moments ? 3 : 1); k++)
            if (ap_ckpt_read_entry(ck, e, k == 0 ? buf : NULL, k == 1 ? buf : NULL, k == 2 ? buf : NULL, err, sizeof err))
                problem(list, json, err);
    }
    free(buf);
    free(usable);
    cJSON_AddNumberToObject(j, "files", nf);
    cJSON_AddNumberToObject(j, "tensors", ne);
out:;
    int n = cJSON_GetArraySize(list);
    cJSON_AddBoolToObject(j, "ok", n == 0);
    if (json) print_json(j);
    else if (n == 0) printf("ok: %s: %d files, %d tensors, every layer once, all checksums match\n", ap_ckpt_dir(ck),
                            ap_ckpt_n_files(ck), ap_ckpt_n_entries(ck));
    else printf("damaged: %d problem%s\n", n, n > 1 ? "s" : "");
    cJSON_Delete(j);
    ap_ckpt_close(ck);
    return n ? AP_EXIT_FAIL : AP_EXIT_OK;
}

/* ---- diff ---- */
static void cmp_arrays(const float *a, const float *b, size_t n, double *abs_out, double *rel_out) {
    double mx = 0, ref = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > mx || d != d) mx = d != d ? INFINITY : d;
        if (fabs((double)b[i]) > ref) ref = fabs((double)b[i]);
    }
    *abs_out = mx;
    *rel_out = mx == 0 ? 0 : ref > 0 ? mx / ref : INFINITY;
}

static int cmd_diff(ap_ckpt *a, ap_ckpt *b, double rtol, int json) {
    cJSON *arr = cJSON_CreateArray();
    int differ = 0, fail = 0, compared = 0;
    float *x[3] = {0}, *y[3] = {0};
    size_t cap = 0;
    char err[1024];
    static const char *kinds[3] = {"param", "exp_avg", "exp_avg_sq"};
    for (int i = 0; i < ap_ckpt_n_entries(a) && !fail; i++) {
        const ap_ckpt_entry *ea = ap_ckpt_entry_at(a, i), *eb = ap_ckpt_find(b, ea->name);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", ea->name);
        cJSON_AddItemToArray(arr, o);
        int same_shape = eb && eb->ndim == ea->ndim;
        for (int k = 0; same_shape && k < ea->ndim; k++) same_shape = ea->shape[k] == eb->shape[k];
        if (!eb || !same_shape) {
            char s1[96], s2[96] = "";
            shape_str(s1, sizeof s1, ea->ndim, ea->shape);
            if (eb) shape_str(s2, sizeof s2, eb->ndim, eb->shape);
            cJSON_AddStringToObject(o, "status", eb ? "shape differs" : "only in A");
            if (!json) {
                if (eb) printf("DIFF  %-56s shape %s vs %s\n", ea->name, s1, s2);
                else printf("DIFF  %-56s only in A\n", ea->name);
            }
            differ = 1;
            continue;
        }
        if (ea->numel > cap) {
            cap = ea->numel;
            for (int k = 0; k < 3; k++) x[k] = realloc(x[k], cap * 4), y[k] = realloc(y[k], cap * 4);
            if (!x[0] || !x[1] || !x[2] || !y[0] || !y[1] || !y[2]) {
                fprintf(stderr, "autopipe ckpt: out of memory comparing %s\n", ea->name);
                fail = 1;
                break;
            }
        }
        int nk = ea->has_moments && eb->has_moments ? 3 : 1;
        if (ap_ckpt_read_entry(a, ea, x[0], nk > 1 ? x[1] : NULL, nk > 1 ? x[2] : NULL, err, sizeof err) ||
            ap_ckpt_read_entry(b, eb, y[0], nk > 1 ? y[1] : NULL, nk > 1 ? y[2] : NULL, err, sizeof err)) {
            fprintf(stderr, "autopipe ckpt: %s\n", err);
            fail = 1;
            break;
        }
        int bad = ea->has_moments != eb->has_moments;
        char line[512];
        size_t lo = 0;
        for (int k = 0; k < nk; k++) {
            double ab, rel;
            cmp_arrays(x[k], y[k], ea->numel, &ab, &rel);
            cJSON *c = cJSON_AddObjectToObject(o, kinds[k]);
            cJSON_AddNumberToObject(c, "max_abs", isfinite(ab) ? ab : 1e308);
            cJSON_AddNumberToObject(c, "max_rel", isfinite(rel) ? rel : 1e308);
            if (!(rel <= rtol)) bad = 1;
            lo += (size_t)snprintf(line + lo, sizeof line - lo, "  %s abs %.3g rel %.3g", kinds[k], ab, rel);
        }
        cJSON_AddStringToObject(o, "status", bad ? "differs" : "match");
        if (!json) printf("%-5s %-56s%s%s\n", bad ? "DIFF" : "same", ea->name, line,
                          ea->has_moments != eb->has_moments ? "  (moments only in one)" : "");
        differ |= bad;
        compared++;
    }
    for (int i = 0; i < ap_ckpt_n_entries(b) && !fail; i++) {
        const ap_ckpt_entry *eb = ap_ckpt_entry_at(b, i);
        if (ap_ckpt_find(a, eb->name)) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", eb->name);
        cJSON_AddStringToObject(o, "status", "only in B");
        cJSON_AddItemToArray(arr, o);
        if (!json) printf("DIFF  %-56s only in B\n", eb->name);
        differ = 1;
    }
    for (int k = 0; k < 3; k++) free(x[k]), free(y[k]);
    if (fail) {
        cJSON_Delete(arr);
        return AP_EXIT_FAIL;
    }
    if (json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "match", !differ);
        cJSON_AddNumberToObject(j, "rtol", rtol);
        cJSON_AddItemToObject(j, "tensors", arr);
        print_json(j);
        cJSON_Delete(j);
    } else {
        cJSON_Delete(arr);
        printf("%s: %d tensors compared, rtol %g\n", differ ? "differ" : "match", compared, rtol);
    }
    return differ ? AP_EXIT_FAIL : AP_EXIT_OK;
}

static int parse_size(const char *s, uint64_t *out) {
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0) return -1;
    double m = 1;
    if (!strcasecmp(end, "k") || !strcasecmp(end, "kb")) m = 1e3;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb")) m = 1e6;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb")) m = 1e9;
    else if (!strcasecmp(end, "kib")) m = 1024;
    else if (!strcasecmp(end, "mib")) m = 1048576;
    else if (!strcasecmp(end, "gib")) m = 1073741824;
    else if (*end) return -1;
    *out = (uint64_t)(v * m);
    return 0;
}

int ap_cmd_ckpt(int argc, char **argv) {
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},     {"stats", no_argument, NULL, 's'},
                                         {"stage", required_argument, NULL, 'S'}, {"rtol", required_argument, NULL, 'r'},
                                         {"to", required_argument, NULL, 't'},    {"max-shard-size", required_argument, NULL, 'm'},
                                         {"help", no_argument, NULL, 'h'},        {"dtype", required_argument, NULL, 'd'},
                                         {NULL, 0, NULL, 0}};
    int json = 0, stats = 0, stage = -1, bf16 = 0, c;
    double rtol = 0;
    const char *to = NULL;
    uint64_t max_shard = 5000000000ull; /* transformers' default shard size */
    char *end;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = 1; break;
        case 's': stats = 1; break;
        case 'S':
            stage = (int)strtol(optarg, &end, 10);
            if (*end || stage < 0) return usage_err("--stage wants a stage number, got '%s'", optarg);
            break;
        case 'r':
            rtol = strtod(optarg, &end);
            if (*end || !(rtol >= 0)) return usage_err("--rtol wants a number >= 0, got '%s'", optarg);
            break;
        case 't': to = optarg; break;
        case 'm':
            if (parse_size(optarg, &max_shard)) return usage_err("--max-shard-size wants a size like 5GB or 500MiB, got '%s'", optarg);
            break;
        case 'd':
            if (!strcasecmp(optarg, "bf16") || !strcasecmp(optarg, "bfloat16")) bf16 = 1;
            else if (!strcasecmp(optarg, "f32") || !strcasecmp(optarg, "float32")) bf16 = 0;
            else return usage_err("--dtype wants float32 or bfloat16, got '%s'", optarg);
            break;
        case 'h': fputs(usage_text, stdout); return AP_EXIT_OK;
        default: return usage_err("unknown option '%s'", argv[optind - 1]);
        }
    }
    int na = argc - optind;
    if (na < 1) return usage_err("%s", "missing COMMAND (info, ls, verify, diff, export)");
    const char *sub = argv[optind];
    char **args = argv + optind + 1;
    na--;
    int want = !strcmp(sub, "diff") ? 2 : 1;
    if (strcmp(sub, "info") && strcmp(sub, "ls") && strcmp(sub, "verify") && strcmp(sub, "diff") && strcmp(sub, "export"))
        return usage_err("unknown command '%s' (info, ls, verify, diff, export)", sub);
    if (na != want) return usage_err(want == 2 ? "%s wants two checkpoint directories" : "%s wants one checkpoint directory", sub);
    if (!strcmp(sub, "export") && !to) return usage_err("%s wants --to OUT", sub);
    if (!strcmp(sub, "verify")) return cmd_verify(args[0], json);
    ap_ckpt *a = NULL, *b = NULL;
    if (open_or_fail(args[0], &a)) return AP_EXIT_FAIL;
    int rc;
    if (!strcmp(sub, "info")) rc = cmd_info(a, json);
    else if (!strcmp(sub, "ls")) rc = cmd_ls(a, stage, stats, json);
    else if (!strcmp(sub, "diff")) rc = open_or_fail(args[1], &b) ? AP_EXIT_FAIL : cmd_diff(a, b, rtol, json);
    else {
        char err[1024];
        cJSON *rep = cJSON_CreateObject();
        rc = ap_ckpt_export(a, to, max_shard, bf16, rep, err, sizeof err) ? AP_EXIT_FAIL : AP_EXIT_OK;
        if (rc) fprintf(stderr, "autopipe ckpt: %s\n", err);
        else if (json) print_json(rep);
        else {
            cJSON *fs = cJSON_GetObjectItem(rep, "files"), *it;
            printf("exported %s to %s:", ap_ckpt_dir(a), to);
            cJSON_ArrayForEach(it, fs) printf(" %s", it->valuestring);
            printf("\n");
        }
        cJSON_Delete(rep);
    }
    ap_ckpt_close(a);
    ap_ckpt_close(b);
    return rc;
}
