/* ckpt_load.c - open a committed checkpoint and read tensors by FQN from
 * whichever stage files hold them, so any layout loads into any other.
 * Nothing here writes to the checkpoint. */
#include "common/file.h"
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Paths are checked to be < PATH_MAX - 256 on entry, so the joined paths
 * below fit; gcc cannot see that. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define MANIFEST_MAX (256u << 20)

static hid_t file_handle(ap_ckpt *ck, int fi, char *err, size_t errlen);

struct ap_ckpt {
    char dir[PATH_MAX];
    cJSON *man;
    ap_ckpt_file *files;
    int nfiles;
    ap_ckpt_entry *ents;
    int nents;
    int *order; /* entry indices sorted by name */
    hid_t *fh;  /* per file, opened on first read */
    int64_t step;
};

const char *ap_ckpt_dir(const ap_ckpt *ck) { return ck->dir; }
int ap_ckpt_n_files(const ap_ckpt *ck) { return ck->nfiles; }
const ap_ckpt_file *ap_ckpt_file_at(const ap_ckpt *ck, int i) { return i >= 0 && i < ck->nfiles ? &ck->files[i] : NULL; }
int ap_ckpt_n_entries(const ap_ckpt *ck) { return ck->nents; }
const ap_ckpt_entry *ap_ckpt_entry_at(const ap_ckpt *ck, int i) { return i >= 0 && i < ck->nents ? &ck->ents[i] : NULL; }

static int is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int ap_ckpt_find_latest(const char *cdir, char *out, size_t outlen, char *err, size_t errlen) {
    char p[PATH_MAX], rp[PATH_MAX];
    if (strlen(cdir) > PATH_MAX - 256 || !is_dir(cdir)) return 0;
    snprintf(p, sizeof p, "%s/latest", cdir);
    if (realpath(p, rp) && ap_ckpt_is_committed(rp)) {
        snprintf(out, outlen, "%s", rp);
        return 1;
    }
    /* no usable `latest`: the newest committed step directory */
    DIR *d = opendir(cdir);
    if (!d) {
        ap_errf(err, errlen, "%s: cannot list: %s", cdir, strerror(errno));
        return -1;
    }
    int best = -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        int s = ap_ckpt_parse_step_name(de->d_name);
        snprintf(p, sizeof p, "%s/%s", cdir, de->d_name);
        if (s > best && ap_ckpt_is_committed(p)) best = s;
    }
    closedir(d);
    if (best < 0) return 0;
    snprintf(p, sizeof p, "%s/step_%08d", cdir, best);
    if (!realpath(p, rp)) snprintf(rp, sizeof rp, "%s", p);
    snprintf(out, outlen, "%s", rp);
    return 1;
}

static int resolve(const char *path, char *out, size_t n, char *err, size_t errlen) {
    struct stat sb;
    char rp[PATH_MAX], p[PATH_MAX];
    if (strlen(path) > PATH_MAX - 256) {
        ap_errf(err, errlen, "checkpoint path is longer than %d characters", PATH_MAX - 256);
        return -1;
    }
    if (stat(path, &sb) != 0) {
        ap_errf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        ap_errf(err, errlen, "%s: not a directory (give a checkpoint step directory, checkpoint_dir/latest or checkpoint_dir)", path);
        return -1;
    }
    if (!realpath(path, rp)) snprintf(rp, sizeof rp, "%s", path);
    if (ap_ckpt_is_committed(rp)) {
        snprintf(out, n, "%s", rp);
        return 0;
    }
    snprintf(p, sizeof p, "%s/manifest.json", rp);
    char base[PATH_MAX];
    snprintf(base, sizeof base, "%s", rp);
    if (stat(p, &sb) == 0 || ap_ckpt_parse_step_name(basename(base)) >= 0) {
        ap_errf(err, errlen, "%s: uncommitted checkpoint: no COMMITTED marker (an interrupted save; never loaded, the next save removes it)", path);
        return -1;
    }
    int f = ap_ckpt_find_latest(rp, out, n, err, errlen);
    if (f < 0) return -1;
    if (f == 0) {
        /* a checkpoint_dir whose saves were all interrupted says so */
        DIR *d = opendir(rp);
        struct dirent *de;
        char unc[64] = "";
        while (d && (de = readdir(d)))
            if (ap_ckpt_parse_step_name(de->d_name) >= 0) snprintf(unc, sizeof unc, "%s", de->d_name);
        if (d) closedir(d);
        if (unc[0])
            ap_errf(err, errlen, "%s: no committed checkpoint: only uncommitted step directories such as %s (interrupted saves)",
                   path, unc);
        else
            ap_errf(err, errlen, "%s: not an autopipe checkpoint: no COMMITTED marker, manifest.json, `latest` link or committed step_* directory", path);
        return -1;
    }
    return 0;
}

static int jnum(const cJSON *o, const char *key, double lo, double hi, double *v, const char *where, char *err, size_t errlen) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it) || it->valuedouble < lo || it->valuedouble > hi || it->valuedouble != (double)(int64_t)it->valuedouble) {
        ap_errf(err, errlen, "%s: key \"%s\" missing or not an integer in [%.0f, %.0f]", where, key, lo, hi);
        return -1;
    }
    *v = it->valuedouble;
    return 0;
}

static int cmp_entry_name(const void *a, const void *b, void *ctx) {
    const ap_ckpt_entry *e = ctx;
    return strcmp(e[*(const int *)a].name, e[*(const int *)b].name);
}

/* The manifest's files and tensors, every field bounded. */
static int parse_manifest(ap_ckpt *ck, char *err, size_t errlen) {
    char mp[PATH_MAX + 16];
    snprintf(mp, sizeof mp, "%s/manifest.json", ck->dir);
    size_t txt_len;
    char *txt = ap_read_file(mp, MANIFEST_MAX, &txt_len, err, errlen);
    if (!txt) return -1;
    ck->man = cJSON_Parse(txt);
    free(txt);
    if (!ck->man) {
        ap_errf(err, errlen, "%s: not valid JSON (near \"%.20s\")", mp, cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() : "");
        return -1;
    }
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(ck->man, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "autopipe-checkpoint") != 0) {
        ap_errf(err, errlen, "%s: \"format\" is not \"autopipe-checkpoint\"", mp);
        return -1;
    }
    double v;
    if (jnum(ck->man, "format_version", 1, AP_CKPT_FORMAT_VERSION, &v, mp, err, errlen)) return -1;
    if (jnum(ck->man, "step", 0, 99999999, &v, mp, err, errlen)) return -1;
    ck->step = (int64_t)v;
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(ck->man, "files");
    if (!cJSON_IsArray(files) || cJSON_GetArraySize(files) < 1 || cJSON_GetArraySize(files) > 100000) {
        ap_errf(err, errlen, "%s: \"files\" missing or not a non-empty array", mp);
        return -1;
    }
    ck->nfiles = cJSON_GetArraySize(files);
    ck->files = calloc(ck->nfiles, sizeof *ck->files);
    ck->fh = malloc(sizeof(hid_t) * ck->nfiles);
    for (int i = 0; i < ck->nfiles; i++) ck->fh[i] = -1;
    size_t nt = 0;
    int i = 0;
    const cJSON *fe;
    cJSON_ArrayForEach(fe, files) {
        char where[PATH_MAX + 64];
        snprintf(where, sizeof where, "%s: files[%d]", mp, i);
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(fe, "name");
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(fe, "tensors");
        if (!cJSON_IsString(nm) || !nm->valuestring[0] || strchr(nm->valuestring, '/') || nm->valuestring[0] == '.' ||
            strlen(nm->valuestring) > 64) {
            ap_errf(err, errlen, "%s: \"name\" missing or not a plain file name", where);
            return -1;
        }
        if (!cJSON_IsArray(ts)) {
            ap_errf(err, errlen, "%s (%s): \"tensors\" missing or not an array", where, nm->valuestring);
            return -1;
        }
        ap_ckpt_file *f = &ck->files[i];
        f->name = nm->valuestring;
        if (jnum(fe, "stage", 0, 1 << 20, &v, where, err, errlen)) return -1;
        f->stage_id = (int)v;
        if (jnum(fe, "tp_rank", 0, 1 << 20, &v, where, err, errlen)) return -1;
        f->tp_rank = (int)v;
        if (jnum(fe, "first_layer", -1, 1 << 24, &v, where, err, errlen)) return -1;
        f->first_layer = (int)v;
        if (jnum(fe, "last_layer", -1, 1 << 24, &v, where, err, errlen)) return -1;
        f->last_layer = (int)v;
        if (jnum(fe, "size", 0, 9e15, &v, where, err, errlen)) return -1;
        f->size = (uint64_t)v;
        f->n_tensors = cJSON_GetArraySize(ts);
        nt += (size_t)f->n_tensors;
        i++;
    }
    if (nt > 10000000) {
        ap_errf(err, errlen, "%s: %zu tensors is more than supported", mp, nt);
        return -1;
    }
    ck->ents = calloc(nt ? nt : 1, sizeof *ck->ents);
    i = 0;
    cJSON_ArrayForEach(fe, files) {
        const cJSON *te;
        cJSON_ArrayForEach(te, cJSON_GetObjectItemCaseSensitive(fe, "tensors")) {
            char where[PATH_MAX + 128];
            snprintf(where, sizeof where, "%s: %s tensor #%d", mp, ck->files[i].name, ck->nents);
            ap_ckpt_entry *e = &ck->ents[ck->nents];
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(te, "name");
            const cJSON *sh = cJSON_GetObjectItemCaseSensitive(te, "shape");
            const cJSON *dt = cJSON_GetObjectItemCaseSensitive(te, "dtype");
            const cJSON *crc = cJSON_GetObjectItemCaseSensitive(te, "crc32");
            if (!cJSON_IsString(nm) || !nm->valuestring[0] || strlen(nm->valuestring) > 255 || strchr(nm->valuestring, '/')) {
                ap_errf(err, errlen, "%s: \"name\" missing or not a valid FQN", where);
                return -1;
            }
            e->name = nm->valuestring;
            if (!cJSON_IsString(dt) || strcmp(dt->valuestring, "float32") != 0) {
                ap_errf(err, errlen, "%s (%s): dtype must be \"float32\"", where, e->name);
                return -1;
            }
            if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) < 1 || cJSON_GetArraySize(sh) > 4) {
                ap_errf(err, errlen, "%s (%s): \"shape\" must be an array of 1..4 sizes", where, e->name);
                return -1;
            }
            e->ndim = cJSON_GetArraySize(sh);
            double numel = 1;
            for (int k = 0; k < e->ndim; k++) {
                const cJSON *d = cJSON_GetArrayItem(sh, k);
                if (!cJSON_IsNumber(d) || d->valuedouble < 1 || d->valuedouble > 1e12 || d->valuedouble != (double)(int64_t)d->valuedouble) {
                    ap_errf(err, errlen, "%s (%s): shape[%d] is not a positive integer", where, e->name, k);
                    return -1;
                }
                e->shape[k] = (size_t)d->valuedouble;
                numel *= d->valuedouble;
            }
            if (numel > 1e12) {
                ap_errf(err, errlen, "%s (%s): %g elements is too many", where, e->name, numel);
                return -1;
            }
            e->numel = (size_t)numel;
            int nc = cJSON_IsArray(crc) ? cJSON_GetArraySize(crc) : -1;
            if (nc != 1 && nc != 3) {
                ap_errf(err, errlen, "%s (%s): \"crc32\" must hold 1 (param) or 3 (param, exp_avg, exp_avg_sq) checksums", where, e->name);
                return -1;
            }
            for (int k = 0; k < nc; k++) {
                const cJSON *c = cJSON_GetArrayItem(crc, k);
                if (!cJSON_IsNumber(c) || c->valuedouble < 0 || c->valuedouble > 4294967295.0) {
                    ap_errf(err, errlen, "%s (%s): crc32[%d] is not a 32-bit checksum", where, e->name, k);
                    return -1;
                }
                e->crc[k] = (uint32_t)c->valuedouble;
            }
            e->has_moments = nc == 3;
            e->file = i;
            /* the arrays are stored uncompressed: they cannot exceed their file
             * (this also bounds every buffer a reader allocates from the manifest) */
            if (numel * 4 * nc > (double)ck->files[i].size) {
                ap_errf(err, errlen, "%s (%s): %.0f bytes of data, more than %s's %" PRIu64 " bytes", where, e->name,
                       numel * 4 * nc, ck->files[i].name, ck->files[i].size);
                return -1;
            }
            ck->nents++;
        }
        i++;
    }
    ck->order = malloc(sizeof(int) * (ck->nents ? ck->nents : 1));
    for (int k = 0; k < ck->nents; k++) ck->order[k] = k;
    qsort_r(ck->order, ck->nents, sizeof(int), cmp_entry_name, ck->ents);
    for (int k = 1; k < ck->nents; k++) {
        const ap_ckpt_entry *a = &ck->ents[ck->order[k - 1]], *b = &ck->ents[ck->order[k]];
        if (!strcmp(a->name, b->name)) {
            ap_errf(err, errlen, "%s: tensor %s listed twice (in %s and %s)", mp, a->name, ck->files[a->file].name,
                   ck->files[b->file].name);
            return -1;
        }
    }
    return 0;
}

int ap_ckpt_open(const char *path, ap_ckpt **out, char *err, size_t errlen) {
    return ap_ckpt_open_ex(path, 1, out, err, errlen);
}

int ap_ckpt_open_ex(const char *path, int check_files, ap_ckpt **out, char *err, size_t errlen) {
    *out = NULL;
    ap_ckpt_h5init();
    ap_ckpt *ck = calloc(1, sizeof *ck);
    if (resolve(path, ck->dir, sizeof ck->dir, err, errlen) || parse_manifest(ck, err, errlen)) {
        ap_ckpt_close(ck);
        return -1;
    }
    for (int i = 0; check_files && i < ck->nfiles; i++) { /* cheap checks before any big read */
        char p[PATH_MAX + 80];
        struct stat sb;
        snprintf(p, sizeof p, "%s/%s", ck->dir, ck->files[i].name);
        if (stat(p, &sb) != 0) {
            ap_errf(err, errlen, "%s: missing stage file (listed in manifest.json): %s", p, strerror(errno));
            ap_ckpt_close(ck);
            return -1;
        }
        if ((uint64_t)sb.st_size != ck->files[i].size) {
            ap_errf(err, errlen, "%s: %lld bytes, manifest.json says %" PRIu64 " (truncated or replaced)", p,
                   (long long)sb.st_size, ck->files[i].size);
            ap_ckpt_close(ck);
            return -1;
        }
    }
    *out = ck;
    return 0;
}

void ap_ckpt_close(ap_ckpt *ck) {
    ap_ckpt_read_buffer_free();
    if (!ck) return;
    for (int i = 0; ck->fh && i < ck->nfiles; i++)
        if (ck->fh[i] >= 0) H5Fclose(ck->fh[i]);
    free(ck->fh);
    free(ck->files);
    free(ck->ents);
    free(ck->order);
    cJSON_Delete(ck->man);
    free(ck);
}

const ap_ckpt_entry *ap_ckpt_find(const ap_ckpt *ck, const char *fqn) {
    int lo = 0, hi = ck->nents - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(ck->ents[ck->order[mid]].name, fqn);
        if (!c) return &ck->ents[ck->order[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int64_t ap_ckpt_step(const ap_ckpt *ck) { return ck->step; }
const void *ap_ckpt_manifest(const ap_ckpt *ck) { return ck->man; }

int64_t ap_ckpt_file_hid(ap_ckpt *ck, int fi, char *err, size_t errlen) {
    return file_handle(ck, fi, err, errlen);
}

static hid_t file_handle(ap_ckpt *ck, int fi, char *err, size_t errlen) {
    if (ck->fh[fi] >= 0) return ck->fh[fi];
    char p[PATH_MAX + 80];
    snprintf(p, sizeof p, "%s/%s", ck->dir, ck->files[fi].name);
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) {
        ap_errf(err, errlen, "%s: cannot open as HDF5: %s (damaged? on Lustre/NFS try HDF5_USE_FILE_LOCKING=FALSE)", p,
               ap_ckpt_h5err());
        return -1;
    }
    /* a stage file from another checkpoint gives itself away by its step */
    int64_t step = -1;
    hid_t a = H5Aexists(f, "step") > 0 ? H5Aopen(f, "step", H5P_DEFAULT) : -1;
    if (a < 0 || H5Aread(a, H5T_NATIVE_INT64, &step) < 0 || step != ck->step) {
        ap_errf(err, errlen, "%s: step attribute %" PRId64 ", manifest.json says step %" PRId64 " (file from another checkpoint?)",
               p, step, ck->step);
        if (a >= 0) H5Aclose(a);
        H5Fclose(f);
        H5Eclear2(H5E_DEFAULT);
        return -1;
    }
    H5Aclose(a);
    ck->fh[fi] = f;
    return f;
}

static void fmt_shape(char *b, size_t n, int ndim, const size_t *s) {
    size_t o = (size_t)snprintf(b, n, "[");
    for (int i = 0; i < ndim && o < n; i++) o += (size_t)snprintf(b + o, n - o, "%s%zu", i ? ", " : "", s[i]);
    if (o < n) snprintf(b + o, n - o, "]");
}

static const char *const kinds[3] = {"param", "exp_avg", "exp_avg_sq"};

/* Chunks of whole rows with only the fletcher32 filter (what save writes)
 * are read raw: one pread each into a reused buffer, our own fletcher32
 * check, crc32 on the way. Returns 1 when the layout is anything else. */
static unsigned char *rbuf;
static size_t rcap;

static int read_direct(hid_t d, const ap_ckpt_entry *e, float *out, uint32_t *crc, const char *dir, const char *fname,
                       const char *path, char *err, size_t errlen) {
    hid_t dcpl = H5Dget_create_plist(d);
    hsize_t chunk[8];
    int ok = H5Pget_layout(dcpl) == H5D_CHUNKED && H5Pget_chunk(dcpl, 8, chunk) == e->ndim && H5Pget_nfilters(dcpl) == 1;
    if (ok) {
        unsigned flags;
        size_t nel = 0;
        unsigned cd[1];
        ok = H5Pget_filter2(dcpl, 0, &flags, &nel, cd, 0, NULL, NULL) == H5Z_FILTER_FLETCHER32;
    }
    H5Pclose(dcpl);
    size_t row = 1;
    for (int i = 1; ok && i < e->ndim; i++) row *= e->shape[i], ok = chunk[i] == e->shape[i];
    if (!ok || chunk[0] == 0) {
        H5Eclear2(H5E_DEFAULT);
        return 1;
    }
    size_t per = (size_t)chunk[0], cb = per * row * 4;
    if (cb + 4 > rcap) {
        free(rbuf);
        rbuf = malloc(cb + 4);
        rcap = rbuf ? cb + 4 : 0;
        if (!rbuf) return 1;
    }
    uLong c = crc32(0L, Z_NULL, 0);
    for (size_t r0 = 0; r0 < e->shape[0]; r0 += per) {
        size_t nr = e->shape[0] - r0 < per ? e->shape[0] - r0 : per, nb = nr * row * 4;
        hsize_t off[8] = {r0, 0, 0, 0, 0, 0, 0, 0}, sz = 0;
        uint32_t mask = 0;
        /* a chunk followed by 4 more bytes of output is read in place: its
         * checksum lands where the next chunk goes, and gets overwritten */
        unsigned char *dst = (unsigned char *)out + r0 * row * 4;
        int inplace = (e->shape[0] - r0) * row * 4 >= cb + 4;
        unsigned char *b = inplace ? dst : rbuf;
        if (H5Dget_chunk_storage_size(d, off, &sz) < 0 || sz != cb + 4 || H5Dread_chunk(d, H5P_DEFAULT, off, &mask, b) < 0 ||
            mask != 0) {
            ap_ckpt_h5capture();
            ap_errf(err, errlen, "%s/%s: reading %s failed at row %zu: chunk of %llu bytes, expected %zu (%s)", dir, fname,
                   path, r0, (unsigned long long)sz, cb + 4, ap_ckpt_h5err());
            return -1;
        }
        uint32_t stored = (uint32_t)b[cb] | (uint32_t)b[cb + 1] << 8 | (uint32_t)b[cb + 2] << 16 | (uint32_t)b[cb + 3] << 24;
        if (ap_ckpt_fletcher32(b, cb) != stored) {
            ap_errf(err, errlen, "%s/%s: reading %s failed: data error detected by Fletcher32 checksum (chunk at row %zu)",
                   dir, fname, path, r0);
            return -1;
        }
        c = crc32(c, b, (uInt)nb);
        if (!inplace) memcpy(dst, rbuf, nb);
    }
    *crc = (uint32_t)c;
    return 0;
}

void ap_ckpt_read_buffer_free(void) {
    free(rbuf);
    rbuf = NULL;
    rcap = 0;
}

static int read_array(ap_ckpt *ck, const ap_ckpt_entry *e, int kind, float *buf, char *err, size_t errlen) {
    const char *fname = ck->files[e->file].name;
    hid_t f = file_handle(ck, e->file, err, errlen);
    if (f < 0) return -1;
    char path[600];
    snprintf(path, sizeof path, "/tensors/%s/%s", e->name, kinds[kind]);
    hid_t d = H5Lexists(f, "/tensors", H5P_DEFAULT) > 0 && H5Lexists(f, path, H5P_DEFAULT) > 0 ? H5Dopen2(f, path, H5P_DEFAULT) : -1;
    if (d < 0) {
        H5Eclear2(H5E_DEFAULT);
        ap_errf(err, errlen, "%s/%s: no dataset %s (manifest.json disagrees with the file)", ck->dir, fname, path);
        return -1;
    }
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    hsize_t dims[8];
    int nd = H5Sget_simple_extent_ndims(sp);
    int same = nd == e->ndim && H5Tget_class(ty) == H5T_FLOAT && H5Tget_size(ty) == 4;
    if (nd > 0 && nd <= 8) H5Sget_simple_extent_dims(sp, dims, NULL);
    for (int i = 0; same && i < nd; i++) same = dims[i] == e->shape[i];
    H5Sclose(sp);
    H5Tclose(ty);
    if (!same) {
        char s[96];
        fmt_shape(s, sizeof s, e->ndim, e->shape);
        ap_errf(err, errlen, "%s/%s: %s is not float32 of shape %s as manifest.json says", ck->dir, fname, path, s);
        H5Dclose(d);
        return -1;
    }
    uint32_t c;
    int rc = read_direct(d, e, buf, &c, ck->dir, fname, path, err, errlen);
    if (rc == 1) { /* not our chunk layout: HDF5's own filter path */
        rc = H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0 ? -1 : 0;
        if (rc < 0) {
            ap_ckpt_h5capture();
            ap_errf(err, errlen, "%s/%s: reading %s failed: %s", ck->dir, fname, path, ap_ckpt_h5err());
        }
        c = ap_ckpt_crc32(buf, e->numel * 4);
    }
    H5Dclose(d);
    if (rc < 0) return -1;
    if (c != e->crc[kind]) {
        ap_errf(err, errlen, "%s/%s: %s checksum crc32 %08x, manifest.json says %08x (damaged or replaced)", ck->dir, fname,
               path, c, e->crc[kind]);
        return -1;
    }
    return 0;
}

int ap_ckpt_read_entry(ap_ckpt *ck, const ap_ckpt_entry *e, float *param, float *exp_avg, float *exp_avg_sq, char *err,
                       size_t errlen) {
    float *bufs[3] = {param, exp_avg, exp_avg_sq};
    for (int k = 0; k < 3; k++) {
        if (!bufs[k]) continue;
        if (k > 0 && !e->has_moments) {
            ap_errf(err, errlen, "%s/%s: tensor %s was saved without AdamW moments", ck->dir, ck->files[e->file].name, e->name);
            return -1;
        }
        if (read_array(ck, e, k, bufs[k], err, errlen)) return -1;
    }
    return 0;
}

int ap_ckpt_load_tensors(ap_ckpt *ck, ap_ckpt_tensor *t, int n, char *err, size_t errlen) {
    for (int i = 0; i < n; i++) {
        const ap_ckpt_entry *e = t[i].name ? ap_ckpt_find(ck, t[i].name) : NULL;
        if (!e) {
            ap_errf(err, errlen, "%s: tensor %s not in this checkpoint (another model, or a checkpoint missing a stage?)",
                   ck->dir, t[i].name ? t[i].name : "(null)");
            return -1;
        }
        int same = t[i].ndim == e->ndim;
        for (int k = 0; same && k < e->ndim; k++) same = t[i].shape[k] == e->shape[k];
        if (!same) {
            char a[96], b[96];
            fmt_shape(a, sizeof a, e->ndim, e->shape);
            fmt_shape(b, sizeof b, t[i].ndim < 0 || t[i].ndim > 4 ? 0 : t[i].ndim, t[i].shape);
            ap_errf(err, errlen, "%s/%s: tensor %s has shape %s, the model wants %s", ck->dir, ck->files[e->file].name,
                   e->name, a, b);
            return -1;
        }
        if (ap_ckpt_read_entry(ck, e, t[i].param, t[i].exp_avg, t[i].exp_avg_sq, err, errlen)) return -1;
    }
    return 0;
}

static char *dup_item(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(it) ? strdup(it->valuestring) : NULL;
}

static int64_t num_item(const cJSON *o, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(it) ? (int64_t)it->valuedouble : 0;
}

int ap_ckpt_get_state(const ap_ckpt *ck, ap_ckpt_state *st, char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    const cJSON *m = ck->man, *topo = cJSON_GetObjectItemCaseSensitive(m, "topology");
    st->format_version = (int)num_item(m, "format_version");
    st->step = ck->step;
    st->tokens_consumed = num_item(m, "tokens_consumed");
    st->samples_consumed = num_item(m, "samples_consumed");
    st->lr_step = num_item(m, "lr_step");
    const cJSON *dp = cJSON_GetObjectItemCaseSensitive(m, "data_position"), *it;
    cJSON_ArrayForEach(it, dp) {
        if (st->n_data_pos >= AP_CKPT_MAX_DATA_POS || !cJSON_IsString(it)) {
            ap_errf(err, errlen, "%s/manifest.json: data_position must be at most %d decimal strings", ck->dir, AP_CKPT_MAX_DATA_POS);
            return -1;
        }
        st->data_pos[st->n_data_pos++] = strtoull(it->valuestring, NULL, 10);
    }
    const cJSON *hex = cJSON_GetObjectItemCaseSensitive(m, "rng_state_hex");
    if (cJSON_IsString(hex)) {
        size_t n = strlen(hex->valuestring);
        if (n % 2) {
            ap_errf(err, errlen, "%s/manifest.json: rng_state_hex has an odd length", ck->dir);
            return -1;
        }
        st->rng_state = malloc(n / 2 + 1);
        st->rng_len = n / 2;
        for (size_t i = 0; i < n / 2; i++) {
            unsigned v;
            if (sscanf(hex->valuestring + 2 * i, "%2x", &v) != 1) {
                ap_errf(err, errlen, "%s/manifest.json: rng_state_hex is not hex", ck->dir);
                ap_ckpt_state_free(st);
                return -1;
            }
            st->rng_state[i] = (unsigned char)v;
        }
    }
    st->pp = (int)num_item(topo, "pp");
    st->dp = (int)num_item(topo, "dp");
    st->tp = (int)num_item(topo, "tp");
    st->stages_per_rank = (int)num_item(topo, "stages_per_rank");
    const cJSON *sch = cJSON_GetObjectItemCaseSensitive(topo, "schedule");
    if (cJSON_IsString(sch)) snprintf(st->schedule, sizeof st->schedule, "%s", sch->valuestring);
    st->config_yaml = dup_item(m, "config_yaml");
    st->model_config_json = dup_item(m, "config_json");
    return 0;
}

void ap_ckpt_state_free(ap_ckpt_state *st) {
    free(st->rng_state);
    free(st->config_yaml);
    free(st->model_config_json);
    st->rng_state = NULL;
    st->config_yaml = st->model_config_json = NULL;
}

/* Keys of config.json that decide tensor names and shapes. */
static const char *const shape_keys[] = {"model_type", "vocab_size", "hidden_size", "intermediate_size",
                                         "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                         "head_dim", "tie_word_embeddings", "attention_bias", NULL};

static void jval(char *b, size_t n, const cJSON *it) {
    if (!it) snprintf(b, n, "absent");
    else if (cJSON_IsString(it)) snprintf(b, n, "\"%s\"", it->valuestring);
    else if (cJSON_IsNumber(it)) snprintf(b, n, "%g", it->valuedouble);
    else if (cJSON_IsBool(it)) snprintf(b, n, "%s", cJSON_IsTrue(it) ? "true" : "false");
    else snprintf(b, n, "(other)");
}

int ap_ckpt_check_model_config(const ap_ckpt *ck, const char *config_json, char *err, size_t errlen) {
    const cJSON *mine = cJSON_GetObjectItemCaseSensitive(ck->man, "config_json");
    if (!config_json || !cJSON_IsString(mine) || !mine->valuestring[0]) return 0;
    cJSON *a = cJSON_Parse(mine->valuestring), *b = cJSON_Parse(config_json);
    int rc = 0;
    if (!a || !b) {
        ap_errf(err, errlen, "%s: %s config.json is not valid JSON", !a ? ck->dir : "the model's", !a ? "the checkpoint's" : "");
        rc = -1;
    }
    for (int i = 0; !rc && shape_keys[i]; i++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(a, shape_keys[i]);
        const cJSON *y = cJSON_GetObjectItemCaseSensitive(b, shape_keys[i]);
        if ((!x && !y) || (x && y && cJSON_Compare(x, y, 1))) continue;
        char vx[128], vy[128];
        jval(vx, sizeof vx, x);
        jval(vy, sizeof vy, y);
        ap_errf(err, errlen, "%s: checkpoint of another model: config.json key %s is %s in the checkpoint, %s in this model",
               ck->dir, shape_keys[i], vx, vy);
        rc = -1;
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
    return rc;
}

int ap_ckpt_load(const char *path, const char *config_json, ap_ckpt_state *st, ap_ckpt_tensor *t, int n, MPI_Comm comm,
                 char *err, size_t errlen) {
    ap_ckpt *ck = NULL;
    int rc = ap_ckpt_open(path, &ck, err, errlen);
    if (!rc) rc = ap_ckpt_check_model_config(ck, config_json, err, errlen);
    if (!rc && st) rc = ap_ckpt_get_state(ck, st, err, errlen);
    if (!rc) rc = ap_ckpt_load_tensors(ck, t, n, err, errlen);
    ap_ckpt_close(ck);
    /* same verdict everywhere: the lowest failing rank's message */
    int rank, size, who, mine;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    mine = rc < 0 ? rank : size;
    MPI_Allreduce(&mine, &who, 1, MPI_INT, MPI_MIN, comm);
    if (who == size) return 0;
    char msg[1024] = {0};
    if (rank == who) snprintf(msg, sizeof msg, "%s", err);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, who, comm);
    if (size > 1) ap_errf(err, errlen, "rank %d: %s", who, msg);
    if (st && rc == 0) ap_ckpt_state_free(st);
    return -1;
}

int ap_ckpt_is_checkpoint(const char *path) {
    char out[PATH_MAX], err[256];
    struct stat sb;
    if (!path || strlen(path) > PATH_MAX - 256 || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    if (ap_ckpt_is_committed(path)) return 1;
    return ap_ckpt_find_latest(path, out, sizeof out, err, sizeof err) == 1;
}

char *ap_ckpt_read_config_json(const char *path, char *err, size_t errlen) {
    ap_ckpt *ck = NULL;
    if (ap_ckpt_open(path, &ck, err, errlen)) return NULL;
    const cJSON *cj = cJSON_GetObjectItemCaseSensitive(ck->man, "config_json");
    char *s = cJSON_IsString(cj) && cj->valuestring[0] ? strdup(cj->valuestring) : NULL;
    if (!s) ap_errf(err, errlen, "%s: the checkpoint records no config.json", ck->dir);
    ap_ckpt_close(ck);
    return s;
}
