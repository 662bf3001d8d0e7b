/* ckpt_export.c - a checkpoint's parameters as a Hugging Face model
 * directory: config.json + model.safetensors, or above max_shard bytes
 * model-0000i-of-0000n.safetensors + model.safetensors.index.json, the way
 * transformers' save_pretrained lays them out. Moments are not exported.
 *
 * safetensors: u64 little-endian header length, a JSON header
 * {name: {dtype, shape, data_offsets: [begin, end]}} padded with spaces to a
 * multiple of 8, then the raw little-endian tensor bytes. */
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"

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

#define seterr ap_ckpt_seterr

static int write_all(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

static int finish(FILE *f, const char *tmp, const char *dst, char *err, size_t errlen) {
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        seterr(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return -1;
    }
    fclose(f);
    if (rename(tmp, dst) != 0) {
        seterr(err, errlen, "%s: rename to %s failed: %s", tmp, dst, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* One safetensors file of entries [lo, hi). */
static int write_shard(ap_ckpt *ck, int lo, int hi, const char *path, char *err, size_t errlen) {
    cJSON *h = cJSON_CreateObject();
    cJSON *md = cJSON_AddObjectToObject(h, "__metadata__");
    cJSON_AddStringToObject(md, "format", "pt");
    uint64_t off = 0;
    size_t maxn = 0;
    for (int i = lo; i < hi; i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        cJSON *t = cJSON_AddObjectToObject(h, e->name);
        cJSON_AddStringToObject(t, "dtype", "F32");
        cJSON *sh = cJSON_AddArrayToObject(t, "shape");
        for (int k = 0; k < e->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)e->shape[k]));
        cJSON *o = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        off += (uint64_t)e->numel * 4;
        cJSON_AddItemToArray(o, cJSON_CreateNumber((double)off));
        if (e->numel > maxn) maxn = e->numel;
    }
    char *js = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    size_t jl = strlen(js), padded = (jl + 7) / 8 * 8;
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        seterr(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        free(js);
        return -1;
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++) len8[k] = (unsigned char)((uint64_t)padded >> (8 * k));
    int rc = write_all(f, len8, 8) || write_all(f, js, jl) || write_all(f, "        ", padded - jl);
    free(js);
    float *buf = malloc((maxn ? maxn : 1) * sizeof *buf);
    for (int i = lo; i < hi && !rc; i++) {
        const ap_ckpt_entry *e = ap_ckpt_entry_at(ck, i);
        if (ap_ckpt_read_entry(ck, e, buf, NULL, NULL, err, errlen)) {
            free(buf);
            fclose(f);
            unlink(tmp);
            return -1;
        }
        rc = write_all(f, buf, e->numel * 4);
    }
    free(buf);
    if (rc) {
        seterr(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
        fclose(f);
        unlink(tmp);
        return -1;
    }
    return finish(f, tmp, path, err, errlen);
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    char tmp[PATH_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (!f || write_all(f, text, strlen(text))) {
        seterr(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    return finish(f, tmp, path, err, errlen);
}

int ap_ckpt_export(ap_ckpt *ck, const char *out, uint64_t max_shard, cJSON *report, char *err, size_t errlen) {
    if (strlen(out) > PATH_MAX - 256) {
        seterr(err, errlen, "export directory name is too long");
        return -1;
    }
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(ap_ckpt_manifest(ck), "config_json");
    if (!cJSON_IsString(cj) || !cj->valuestring[0]) {
        seterr(err, errlen, "%s: the checkpoint records no config.json; cannot make a Hugging Face directory", ap_ckpt_dir(ck));
        return -1;
    }
    if (mkdir(out, 0755) != 0 && errno != EEXIST) {
        seterr(err, errlen, "%s: cannot create: %s", out, strerror(errno));
        return -1;
    }
    /* shards: consecutive entries (manifest order: stage, then layer) up to max_shard bytes */
    int ne = ap_ckpt_n_entries(ck), ns = 0;
    int *start = malloc(sizeof(int) * (size_t)(ne + 1));
    uint64_t cur = 0, total = 0;
    for (int i = 0; i < ne; i++) {
        uint64_t b = (uint64_t)ap_ckpt_entry_at(ck, i)->numel * 4;
        if (i == 0 || cur + b > max_shard) start[ns++] = i, cur = 0;
        cur += b;
        total += b;
    }
    start[ns] = ne;
    char p[PATH_MAX];
    cJSON *files = cJSON_AddArrayToObject(report, "files");
    snprintf(p, sizeof p, "%s/config.json", out);
    int rc = write_text(p, cj->valuestring, err, errlen);
    if (!rc) cJSON_AddItemToArray(files, cJSON_CreateString("config.json"));
    cJSON *idx = cJSON_CreateObject();
    cJSON_AddNumberToObject(cJSON_AddObjectToObject(idx, "metadata"), "total_size", (double)total);
    cJSON *wm = cJSON_AddObjectToObject(idx, "weight_map");
    for (int s = 0; s < ns && !rc; s++) {
        char name[64];
        if (ns == 1) snprintf(name, sizeof name, "model.safetensors");
        else snprintf(name, sizeof name, "model-%05d-of-%05d.safetensors", s + 1, ns);
        snprintf(p, sizeof p, "%s/%s", out, name);
        rc = write_shard(ck, start[s], start[s + 1], p, err, errlen);
        if (!rc) cJSON_AddItemToArray(files, cJSON_CreateString(name));
        for (int i = start[s]; i < start[s + 1]; i++) cJSON_AddStringToObject(wm, ap_ckpt_entry_at(ck, i)->name, name);
    }
    if (!rc && ns > 1) {
        char *txt = cJSON_Print(idx);
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", out);
        rc = write_text(p, txt, err, errlen);
        free(txt);
        if (!rc) cJSON_AddItemToArray(files, cJSON_CreateString("model.safetensors.index.json"));
    }
    cJSON_Delete(idx);
    cJSON_AddNumberToObject(report, "total_size", (double)total);
    cJSON_AddNumberToObject(report, "shards", ns);
    free(start);
    return rc;
}
