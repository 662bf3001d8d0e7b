/* ckpt_export.c - a checkpoint's parameters as a Hugging Face model
 * directory: config.json + model.safetensors, or above max_shard bytes
 * model-0000i-of-0000n.safetensors + model.safetensors.index.json, the way
 * transformers' save_pretrained lays them out (the safetensors writer is
 * checkpoint/safetensors.c). Moments are not exported. */
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"
#include "checkpoint/safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#pragma GCC diagnostic ignored "-Wformat-truncation" /* OUT is checked < PATH_MAX - 256 */


static int write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

static int finish(FILE *f, const char *tmp, const char *dst, char *err, size_t errlen) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        ap_errf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, dst) != 0) {
        ap_errf(err, errlen, "%s: rename to %s failed: %s", tmp, dst, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f || write_all(f, text, strlen(text))) {
        ap_errf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    return finish(f, tmp, path, err, errlen);
}

int ap_ckpt_export(ap_ckpt *ck, const char *out, uint64_t max_shard, int bf16, cJSON *report, char *err,
                   size_t errlen) {
    if (strlen(out) > PATH_MAX - 256) {
        ap_errf(err, errlen, "export directory name is too long");
        return -1;
    }
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(ap_ckpt_manifest(ck), "config_json");
    if (!cJSON_IsString(cj) || !cj->valuestring[0]) {
        ap_errf(err, errlen, "%s: the checkpoint records no config.json; cannot make a Hugging Face directory", ap_ckpt_dir(ck));
        return -1;
    }
    /* every parameter in memory (moments stay behind), in manifest order:
     * stage by stage, layer by layer, as save_pretrained orders them */
    int ne = ap_ckpt_n_entries(ck);
    size_t total = 0;
    for (int i = 0; i < ne; i++) total += ap_ckpt_entry_at(ck, i)->numel;
    float *all = malloc((total ? total : 1) * sizeof *all);
    ap_st_out *t = calloc(ne > 0 ? (size_t)ne : 1, sizeof *t);
    if (!all || !t) {
        ap_errf(err, errlen, "out of memory holding %zu parameters for export", total);
        free(all);
        free(t);
        return -1;
    }
    int rc = 0;
    size_t off = 0;
    for (int i = 0; i < ne && !rc; i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        rc = ap_ckpt_read_entry(ck, e, all + off, NULL, NULL, err, errlen);
        t[i].name = e->name;
        t[i].ndim = e->ndim;
        for (int k = 0; k < e->ndim; k++) t[i].shape[k] = e->shape[k];
        t[i].data = all + off;
        off += e->numel;
    }
    if (!rc && mkdir(out, 0755) != 0 && errno != EEXIST) {
        ap_errf(err, errlen, "%s: cannot create: %s", out, strerror(errno));
        rc = -1;
    }
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/config.json", out);
    if (!rc) rc = write_text(p, cj->valuestring, err, errlen);
    if (!rc) rc = ap_st_write(out, NULL, t, ne, bf16 ? AP_ST_BF16 : AP_ST_F32, max_shard, err, errlen);
    free(all);
    free(t);
    if (rc) return -1;
    /* what was written, from the index when sharded */
    cJSON *files = cJSON_AddArrayToObject(report, "files");
    cJSON_AddItemToArray(files, cJSON_CreateString("config.json"));
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
    FILE *f = (size_t)total * (bf16 ? 2 : 4) > max_shard ? fopen(p, "rb") : NULL;
    int shards = 1;
    if (f) {
        fclose(f);
        cJSON_AddItemToArray(files, cJSON_CreateString("model.safetensors.index.json"));
        for (shards = 1;; shards++) { /* model-0000K-of-0000N: find N by probing K = 1 */
            char name[64];
            snprintf(name, sizeof name, "model-00001-of-%05d.safetensors", shards);
            snprintf(p, sizeof p, "%s/%s", out, name);
            struct stat sb;
            if (stat(p, &sb) == 0 || shards > 99999) break;
        }
        for (int k = 1; k <= shards; k++) {
            char name[64];
            snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", k, shards);
            cJSON_AddItemToArray(files, cJSON_CreateString(name));
        }
    } else {
        cJSON_AddItemToArray(files, cJSON_CreateString("model.safetensors"));
    }
    cJSON_AddNumberToObject(report, "params", (double)total);
    cJSON_AddNumberToObject(report, "shards", shards);
    cJSON_AddStringToObject(report, "dtype", bf16 ? "BF16" : "F32");
    return 0;
}
