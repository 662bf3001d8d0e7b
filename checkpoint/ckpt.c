/* ckpt.c - checkpoint save (atomic, collective) and load (any layout).
 *
 * Save order, so that a crash at any point leaves the previous checkpoint
 * loadable: rank 0 removes uncommitted step directories and creates step_N;
 * each writer writes its stage files to NAME.tmp, flushes, closes, fsyncs and
 * renames them, then fsyncs the directory; all ranks agree; rank 0 writes
 * manifest.json, then COMMITTED, then repoints `latest`, then prunes to
 * keep_last. A loader only ever opens directories holding COMMITTED. */
#include "checkpoint/ckpt.h"
#include "checkpoint/ckpt_internal.h"

#include <cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hdf5.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

/* Directory arguments are checked to be < PATH_MAX - 256 on entry, so the
 * joined paths below fit; gcc cannot see that. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

#define CHUNK_BYTES (4u << 20) /* HDF5 chunk target: fletcher32 works per chunk */
#define MANIFEST_MAX (1u << 30)


/* ---- HDF5 errors: silence the default printer, keep the innermost message ---- */
static herr_t h5_walk(unsigned n, const H5E_error2_t *e, void *data) {
    char *buf = data;
    if (e->desc && e->desc[0]) snprintf(buf, 256, "%s", e->desc); /* last one seen is the innermost */
    return 0;
}

/* HDF5 API calls clear the error stack on entry: capture it right after the
 * failing call, report it later. */
static __thread char h5_last[256];

void ap_ckpt_h5capture(void) {
    char buf[256] = "";
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, h5_walk, buf);
    H5Eclear2(H5E_DEFAULT);
    if (buf[0]) snprintf(h5_last, sizeof h5_last, "%s", buf);
}

const char *ap_ckpt_h5err(void) {
    static __thread char out[256];
    ap_ckpt_h5capture();
    snprintf(out, sizeof out, "%s", h5_last[0] ? h5_last : "unknown HDF5 error");
    h5_last[0] = 0;
    return out;
}

void ap_ckpt_h5init(void) {
    H5open();
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

uint32_t ap_ckpt_crc32(const void *p, size_t n) {
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *b = p;
    while (n) {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        c = crc32(c, b, k);
        b += k;
        n -= k;
    }
    return (uint32_t)c;
}

size_t ap_ckpt_numel(int ndim, const size_t *shape) {
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void ap_ckpt_stage_file_name(char *buf, size_t n, int stage_id, int tp_rank, int tp) {
    if (tp > 1 || tp_rank > 0) snprintf(buf, n, "stage_%03d_tp%02d.h5", stage_id, tp_rank);
    else snprintf(buf, n, "stage_%03d.h5", stage_id);
}

static int fsync_path(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        ap_errf(err, errlen, "%s: cannot open to fsync: %s", path, strerror(errno));
        return -1;
    }
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0) {
        ap_errf(err, errlen, "%s: fsync failed: %s", path, strerror(e));
        return -1;
    }
    return 0;
}

/* Write text to dir/name atomically: tmp, fsync, rename, fsync dir. */
static int write_file_atomic(const char *dir, const char *name, const char *text, size_t len, char *err,
                             size_t errlen) {
    char tmp[PATH_MAX], dst[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", dir, name);
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        ap_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, text + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            ap_errf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        ap_errf(err, errlen, "%s: fsync/close failed: %s", tmp, strerror(errno));
        return -1;
    }
    if (rename(tmp, dst) != 0) {
        ap_errf(err, errlen, "%s: rename to %s failed: %s", tmp, name, strerror(errno));
        return -1;
    }
    return fsync_path(dir, err, errlen);
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    return remove(p) ? -1 : 0;
}

static int rm_rf(const char *path) {
    return nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* step_%08d exactly; returns the step or -1. */
int ap_ckpt_parse_step_name(const char *name) {
    if (strncmp(name, "step_", 5) != 0 || strlen(name) != 13) return -1;
    int v = 0;
    for (int i = 5; i < 13; i++) {
        if (name[i] < '0' || name[i] > '9') return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v;
}

int ap_ckpt_is_committed(const char *stepdir) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/COMMITTED", stepdir);
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* ---- HDF5 writing helpers ---- */
static int attr_i64(hid_t obj, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &v);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int attr_u64s(hid_t obj, const char *name, const uint64_t *v, int n) {
    hsize_t d = (hsize_t)(n > 0 ? n : 1);
    uint64_t zero = 0;
    hid_t sp = H5Screate_simple(1, &d, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_U64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_UINT64, n > 0 ? v : &zero);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int attr_str(hid_t obj, const char *name, const char *s) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) > 0 ? strlen(s) : 1);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a < 0 ? -1 : H5Awrite(a, t, strlen(s) > 0 ? s : "");
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return rc < 0 ? -1 : 0;
}

/* Big text goes into a dataset: attributes live in the 64 KiB object header. */
static int dset_text(hid_t loc, const char *name, const char *s) {
    if (!s) s = "";
    size_t n = strlen(s);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, n > 0 ? n : 1);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t d = H5Dcreate2(loc, name, t, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = d < 0 ? -1 : H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, n > 0 ? s : "");
    if (d >= 0) H5Dclose(d);
    H5Sclose(sp);
    H5Tclose(t);
    return rc < 0 ? -1 : 0;
}

static int dset_bytes(hid_t loc, const char *name, const unsigned char *b, size_t n) {
    hsize_t d = n;
    hid_t sp = H5Screate_simple(1, &d, NULL);
    hid_t ds = H5Dcreate2(loc, name, H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds < 0 ? -1 : (n ? H5Dwrite(ds, H5T_NATIVE_UCHAR, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) : 0);
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

/* HDF5's fletcher32 filter checksum, bit for bit. HDF5 (H5_checksum_fletcher32)
 * runs sum1 += w, sum2 += sum1 over big-endian 16-bit words, folding both
 * sums ((x & 0xffff) + (x >> 16)) every 360 words: that keeps them
 * congruent mod 65535 and never folds a nonzero sum to 0, so its results are
 * "sum mod 65535, with 0xffff for a nonzero multiple, 0 only when every
 * word is 0". Here the same sums are computed blockwise so they vectorize:
 * over a block of m words w_j, sum1 grows by sum(w_j) and sum2 by
 * m * sum1_before + sum((m - j) * w_j). Stored after the chunk, little-endian.
 * tests/test-ckpt.c checks it against HDF5's loop; HDF5 verifies every chunk
 * we write when h5dump or H5Dread reads it. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
uint32_t ap_ckpt_fletcher32(const void *p, size_t nbytes) {
    const uint8_t *d = p;
    size_t n = nbytes / 2;
    uint64_t s1 = 0, s2 = 0;
    int any = 0;
    for (size_t o = 0; o < n; o += 256) { /* 256 words: both block sums fit 32 bits */
        uint32_t m = (uint32_t)(n - o < 256 ? n - o : 256), a = 0, b = 0;
        const uint8_t *q = d + 2 * o;
#pragma omp simd reduction(+ : a, b)
        for (uint32_t j = 0; j < m; j++) {
            uint32_t w = (uint32_t)q[2 * j] << 8 | q[2 * j + 1];
            a += w;
            b += (m - j) * w;
        }
        s2 = (s2 + m * s1 + b) % 65535;
        s1 = (s1 + a) % 65535;
        any |= a != 0;
    }
    if (nbytes % 2) {
        uint32_t w = (uint32_t)d[nbytes - 1] << 8;
        s1 = (s1 + w) % 65535;
        s2 = (s2 + s1) % 65535;
        any |= w != 0;
    }
    if (!any) return 0;
    return (uint32_t)(s2 ? s2 : 0xffff) << 16 | (uint32_t)(s1 ? s1 : 0xffff);
}

/* One reusable chunk buffer: HDF5's filter path mallocs (and the kernel
 * zeroes) a fresh 4 MiB buffer per chunk. */
static unsigned char *chunk_buf;
static size_t chunk_cap;

static unsigned char *chunk_buffer(size_t n) {
    if (n > chunk_cap) {
        free(chunk_buf);
        chunk_buf = malloc(n);
        chunk_cap = chunk_buf ? n : 0;
    }
    return chunk_buf;
}

void ap_ckpt_chunk_buffer_free(void) {
    free(chunk_buf);
    chunk_buf = NULL;
    chunk_cap = 0;
}

/* Chunk shape: shrink from the outermost dim until a chunk holds <= 4 MiB. */
void ap_ckpt_chunk_dims(int ndim, const size_t *shape, hsize_t *chunk) {
    size_t lim = CHUNK_BYTES / 4;
    for (int i = 0; i < ndim; i++) chunk[i] = shape[i];
    for (int i = 0; i < ndim; i++) {
        size_t rest = 1;
        for (int k = i + 1; k < ndim; k++) rest *= shape[k];
        if (rest >= lim) {
            chunk[i] = 1;
            continue;
        }
        if (lim / rest < chunk[i]) chunk[i] = lim / rest;
        break;
    }
}

/* One fp32 array, chunked (~4 MiB), fletcher32-checked; *crc gets the crc32
 * of its bytes. Chunks that are whole rows are contiguous in memory: those
 * are written directly (our fletcher32, one copy, one pwrite each), the
 * same bytes HDF5's filter would store; others go through H5Dwrite. */
static int write_array(hid_t grp, const char *name, const ap_ckpt_tensor *t, const float *data, uint32_t *crc) {
    hsize_t dims[4], chunk[4];
    for (int i = 0; i < t->ndim; i++) dims[i] = t->shape[i];
    ap_ckpt_chunk_dims(t->ndim, t->shape, chunk);
    hid_t sp = H5Screate_simple(t->ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, t->ndim, chunk);
    H5Pset_fletcher32(dcpl);
    hid_t d = H5Dcreate2(grp, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    size_t row = 1, n = ap_ckpt_numel(t->ndim, t->shape);
    int rows_whole = 1;
    for (int i = 1; i < t->ndim; i++) row *= t->shape[i], rows_whole &= chunk[i] == t->shape[i];
    herr_t rc = d < 0 ? -1 : 0;
    if (rc == 0 && rows_whole) {
        size_t per = (size_t)chunk[0], cb = per * row * 4;
        unsigned char *buf = chunk_buffer(cb + 4);
        uLong c = crc32(0L, Z_NULL, 0);
        if (!buf) rc = -1;
        for (size_t r0 = 0; rc == 0 && r0 < t->shape[0]; r0 += per) {
            size_t nr = t->shape[0] - r0 < per ? t->shape[0] - r0 : per, nb = nr * row * 4;
            const unsigned char *src = (const unsigned char *)(data + r0 * row);
            memcpy(buf, src, nb);
            if (nb < cb) memset(buf + nb, 0, cb - nb); /* edge chunks are stored full size */
            c = crc32(c, buf, (uInt)nb);
            uint32_t f = ap_ckpt_fletcher32(buf, cb);
            for (int k = 0; k < 4; k++) buf[cb + k] = (unsigned char)(f >> (8 * k));
            hsize_t off[4] = {r0, 0, 0, 0};
            rc = H5Dwrite_chunk(d, H5P_DEFAULT, 0, off, cb + 4, buf);
        }
        *crc = (uint32_t)c;
    } else if (rc == 0) {
        rc = H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
        *crc = ap_ckpt_crc32(data, n * 4);
    }
    if (rc < 0) ap_ckpt_h5capture();
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return rc < 0 ? -1 : 0;
}

static int check_tensor(const ap_ckpt_tensor *t, char *err, size_t errlen) {
    if (!t->name || !t->name[0] || strlen(t->name) > 255 || strchr(t->name, '/') || !strcmp(t->name, ".")) {
        ap_errf(err, errlen, "tensor name '%s' is not a valid FQN (1..255 chars, no '/')", t->name ? t->name : "(null)");
        return -1;
    }
    if (t->ndim < 1 || t->ndim > 4) {
        ap_errf(err, errlen, "tensor %s: ndim %d, expected 1..4", t->name, t->ndim);
        return -1;
    }
    for (int i = 0; i < t->ndim; i++)
        if (t->shape[i] == 0) {
            ap_errf(err, errlen, "tensor %s: dimension %d is 0", t->name, i);
            return -1;
        }
    if (!t->param) {
        ap_errf(err, errlen, "tensor %s: param is NULL", t->name);
        return -1;
    }
    if (!t->exp_avg != !t->exp_avg_sq) {
        ap_errf(err, errlen, "tensor %s: give both AdamW moments or neither", t->name);
        return -1;
    }
    return 0;
}

static void put_state_attrs(hid_t f, const ap_ckpt_state *st) {
    attr_str(f, "format", "autopipe-checkpoint");
    attr_i64(f, "format_version", AP_CKPT_FORMAT_VERSION);
    attr_i64(f, "step", st->step);
    attr_i64(f, "tokens_consumed", st->tokens_consumed);
    attr_i64(f, "samples_consumed", st->samples_consumed);
    attr_i64(f, "lr_step", st->lr_step);
    attr_u64s(f, "data_position", st->data_pos, st->n_data_pos);
    attr_i64(f, "pp", st->pp);
    attr_i64(f, "dp", st->dp);
    attr_i64(f, "tp", st->tp);
    attr_i64(f, "stages_per_rank", st->stages_per_rank);
    attr_str(f, "schedule", st->schedule);
}

/* Write one stage file under its final name (via .tmp); returns its manifest entry. */
static cJSON *write_stage(const char *stepdir, const ap_ckpt_state *st, const ap_ckpt_stage *sg,
                          const ap_ckpt_save_opts *o, char *err, size_t errlen) {
    char name[64], tmp[PATH_MAX], dst[PATH_MAX];
    ap_ckpt_stage_file_name(name, sizeof name, sg->stage_id, sg->tp_rank, st->tp);
    snprintf(tmp, sizeof tmp, "%s/%s.tmp", stepdir, name);
    snprintf(dst, sizeof dst, "%s/%s", stepdir, name);
    cJSON *je = cJSON_CreateObject(), *jt = cJSON_CreateArray();
    cJSON_AddStringToObject(je, "name", name);
    cJSON_AddNumberToObject(je, "stage", sg->stage_id);
    cJSON_AddNumberToObject(je, "tp_rank", sg->tp_rank);
    cJSON_AddNumberToObject(je, "first_layer", sg->first_layer);
    cJSON_AddNumberToObject(je, "last_layer", sg->last_layer);

    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    if (f < 0) ap_ckpt_h5capture();
    H5Pclose(fapl);
    if (f < 0) {
        ap_errf(err, errlen, "%s: cannot create HDF5 file: %s (on Lustre/NFS try HDF5_USE_FILE_LOCKING=FALSE)", tmp,
               ap_ckpt_h5err());
        cJSON_Delete(je);
        cJSON_Delete(jt);
        return NULL;
    }
    put_state_attrs(f, st);
    attr_i64(f, "stage_id", sg->stage_id);
    attr_i64(f, "tp_rank", sg->tp_rank);
    attr_i64(f, "first_layer", sg->first_layer);
    attr_i64(f, "last_layer", sg->last_layer);
    attr_i64(f, "num_tensors", sg->n_tensors);
    int bad = 0;
    hid_t meta = H5Gcreate2(f, "meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (meta < 0 || dset_text(meta, "config.yaml", st->config_yaml) || dset_text(meta, "config.json", st->model_config_json) ||
        dset_bytes(meta, "rng_state", st->rng_state, st->rng_state ? st->rng_len : 0))
        bad = 1;
    if (meta >= 0) H5Gclose(meta);
    hid_t tg = H5Gcreate2(f, "tensors", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    if (tg < 0) bad = 1;
    for (int i = 0; i < sg->n_tensors && !bad; i++) {
        const ap_ckpt_tensor *t = &sg->tensors[i];
        if (check_tensor(t, err, errlen)) {
            bad = 2;
            break;
        }
        hid_t g = H5Gcreate2(tg, t->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) ap_ckpt_h5capture();
        if (g < 0) {
            ap_errf(err, errlen, "%s: tensor %s: cannot create group (given twice?): %s", tmp, t->name, ap_ckpt_h5err());
            bad = 2;
            break;
        }
        uint32_t crcs[3];
        int rc = write_array(g, "param", t, t->param, &crcs[0]);
        if (!rc && t->exp_avg) rc = write_array(g, "exp_avg", t, t->exp_avg, &crcs[1]);
        if (!rc && t->exp_avg_sq) rc = write_array(g, "exp_avg_sq", t, t->exp_avg_sq, &crcs[2]);
        H5Gclose(g);
        if (rc) {
            ap_errf(err, errlen, "%s: writing tensor %s failed: %s", tmp, t->name, ap_ckpt_h5err());
            bad = 2;
            break;
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", t->name);
        cJSON *sh = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < t->ndim; k++) cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t->shape[k]));
        cJSON_AddStringToObject(e, "dtype", "float32");
        cJSON *crc = cJSON_AddArrayToObject(e, "crc32");
        for (int k = 0; k < (t->exp_avg ? 3 : 1); k++) cJSON_AddItemToArray(crc, cJSON_CreateNumber(crcs[k]));
        cJSON_AddItemToArray(jt, e);
        if (o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_TENSOR, t->name);
    }
    if (tg >= 0) H5Gclose(tg);
    if (bad == 1) ap_errf(err, errlen, "%s: writing metadata failed: %s", tmp, ap_ckpt_h5err());
    /* Flush before close: a file cut short before close cannot be opened. */
    if (!bad && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
        ap_errf(err, errlen, "%s: H5Fflush failed: %s", tmp, ap_ckpt_h5err());
        bad = 1;
    }
    if (H5Fclose(f) < 0 && !bad) {
        ap_errf(err, errlen, "%s: H5Fclose failed: %s", tmp, ap_ckpt_h5err());
        bad = 1;
    }
    struct stat sb;
    if (!bad && (fsync_path(tmp, err, errlen) || stat(tmp, &sb) != 0)) bad = 1;
    if (!bad && rename(tmp, dst) != 0) {
        ap_errf(err, errlen, "%s: rename to %s failed: %s", tmp, name, strerror(errno));
        bad = 1;
    }
    if (bad) {
        unlink(tmp);
        cJSON_Delete(je);
        cJSON_Delete(jt);
        return NULL;
    }
    cJSON_AddNumberToObject(je, "size", (double)sb.st_size);
    cJSON_AddItemToObject(je, "tensors", jt);
    if (o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_FILE, name);
    return je;
}

/* Every rank returns the same verdict: the lowest failing rank's message. */
static int agree(MPI_Comm comm, int rc, char *err, size_t errlen) {
    int rank, size, who;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    int mine = rc < 0 ? rank : size;
    MPI_Allreduce(&mine, &who, 1, MPI_INT, MPI_MIN, comm);
    if (who == size) return 0;
    char msg[1024] = {0};
    if (rank == who && err) snprintf(msg, sizeof msg, "%s", err);
    MPI_Bcast(msg, sizeof msg, MPI_CHAR, who, comm);
    if (size > 1) ap_errf(err, errlen, "rank %d: %s", who, msg);
    return -1;
}

static void hex_encode(char *dst, const unsigned char *b, size_t n) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        dst[2 * i] = hx[b[i] >> 4];
        dst[2 * i + 1] = hx[b[i] & 15];
    }
    dst[2 * n] = 0;
}

static int cmp_file_entry(const void *a, const void *b) {
    const cJSON *x = *(cJSON *const *)a, *y = *(cJSON *const *)b;
    int sx = cJSON_GetObjectItem(x, "stage")->valueint, sy = cJSON_GetObjectItem(y, "stage")->valueint;
    if (sx != sy) return sx < sy ? -1 : 1;
    int tx = cJSON_GetObjectItem(x, "tp_rank")->valueint, ty = cJSON_GetObjectItem(y, "tp_rank")->valueint;
    return tx < ty ? -1 : tx > ty;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Rank 0: the manifest from every writer's file entries; checks that each
 * (stage, tp rank) is written once and each FQN appears once. */
static char *build_manifest(const ap_ckpt_state *st, cJSON **frags, int nfrag, char *err, size_t errlen) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "format", "autopipe-checkpoint");
    cJSON_AddNumberToObject(m, "format_version", AP_CKPT_FORMAT_VERSION);
    cJSON_AddNumberToObject(m, "step", (double)st->step);
    cJSON_AddNumberToObject(m, "tokens_consumed", (double)st->tokens_consumed);
    cJSON_AddNumberToObject(m, "samples_consumed", (double)st->samples_consumed);
    cJSON_AddNumberToObject(m, "lr_step", (double)st->lr_step);
    cJSON *dpos = cJSON_AddArrayToObject(m, "data_position"); /* decimal strings: u64 exceeds a double */
    for (int i = 0; i < st->n_data_pos && i < AP_CKPT_MAX_DATA_POS; i++) {
        char b[32];
        snprintf(b, sizeof b, "%" PRIu64, st->data_pos[i]);
        cJSON_AddItemToArray(dpos, cJSON_CreateString(b));
    }
    char *hex = malloc(2 * (st->rng_state ? st->rng_len : 0) + 1);
    hex_encode(hex, st->rng_state, st->rng_state ? st->rng_len : 0);
    cJSON_AddStringToObject(m, "rng_state_hex", hex);
    free(hex);
    cJSON *topo = cJSON_AddObjectToObject(m, "topology");
    cJSON_AddNumberToObject(topo, "pp", st->pp);
    cJSON_AddNumberToObject(topo, "dp", st->dp);
    cJSON_AddNumberToObject(topo, "tp", st->tp);
    cJSON_AddNumberToObject(topo, "stages_per_rank", st->stages_per_rank);
    cJSON_AddNumberToObject(topo, "num_stages", st->pp * st->stages_per_rank);
    cJSON_AddStringToObject(topo, "schedule", st->schedule);
    const char *cj = st->model_config_json ? st->model_config_json : "";
    cJSON_AddNumberToObject(m, "config_json_crc32", ap_ckpt_crc32(cj, strlen(cj)));
    cJSON_AddStringToObject(m, "config_json", cj);
    cJSON_AddStringToObject(m, "config_yaml", st->config_yaml ? st->config_yaml : "");

    /* collect file entries */
    int nf = 0, cap = 16;
    cJSON **fe = malloc(sizeof *fe * cap);
    for (int i = 0; i < nfrag; i++) {
        cJSON *it;
        cJSON_ArrayForEach(it, frags[i]) {
            if (nf == cap) fe = realloc(fe, sizeof *fe * (cap *= 2));
            fe[nf++] = it;
        }
    }
    qsort(fe, nf, sizeof *fe, cmp_file_entry);
    char *out = NULL;
    int nstages = st->pp * st->stages_per_rank, ntp = st->tp > 0 ? st->tp : 1;
    if (nf != nstages * ntp) {
        ap_errf(err, errlen, "%d stage files written, topology pp=%d x stages_per_rank=%d x tp=%d needs %d", nf, st->pp,
               st->stages_per_rank, ntp, nstages * ntp);
        goto done;
    }
    size_t nt = 0;
    for (int i = 0; i < nf; i++) {
        int s = cJSON_GetObjectItem(fe[i], "stage")->valueint, t = cJSON_GetObjectItem(fe[i], "tp_rank")->valueint;
        if (s != i / ntp || t != i % ntp) {
            ap_errf(err, errlen, "stage %d tp %d missing or written twice (found %s)", i / ntp, i % ntp,
                   cJSON_GetObjectItem(fe[i], "name")->valuestring);
            goto done;
        }
        nt += (size_t)cJSON_GetArraySize(cJSON_GetObjectItem(fe[i], "tensors"));
    }
    if (ntp == 1) { /* with tp, shards of one FQN live in several files */
        const char **names = malloc(sizeof *names * (nt ? nt : 1));
        size_t k = 0;
        for (int i = 0; i < nf; i++) {
            cJSON *it;
            cJSON_ArrayForEach(it, cJSON_GetObjectItem(fe[i], "tensors")) names[k++] = cJSON_GetObjectItem(it, "name")->valuestring;
        }
        qsort(names, nt, sizeof *names, cmp_str);
        for (size_t i = 1; i < nt; i++)
            if (!strcmp(names[i], names[i - 1])) {
                ap_errf(err, errlen, "tensor %s is written by two stages", names[i]);
                free(names);
                goto done;
            }
        free(names);
    }
    cJSON *files = cJSON_AddArrayToObject(m, "files");
    for (int i = 0; i < nf; i++) cJSON_AddItemReferenceToArray(files, fe[i]);
    out = cJSON_Print(m);
done:
    free(fe);
    cJSON_Delete(m);
    return out;
}

/* mkdir -p: checkpoint_dir is often nested (checkpoints/<job name>). */
static int mkdir_parents(const char *dir) {
    char p[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof p) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(p, dir, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (p[i] != '/') continue;
        p[i] = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
        p[i] = '/';
    }
    return mkdir(p, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Rank 0, before writing: create checkpoint_dir, drop uncommitted step
 * directories (interrupted saves), make step_N. Returns 1 when step_N is
 * already committed. */
static int prepare_dir(const char *cdir, int64_t step, char *stepdir, size_t sdlen, char *err, size_t errlen) {
    if (mkdir_parents(cdir) != 0) {
        ap_errf(err, errlen, "%s: cannot create checkpoint directory: %s", cdir, strerror(errno));
        return -1;
    }
    snprintf(stepdir, sdlen, "%s/step_%08" PRId64, cdir, step);
    if (ap_ckpt_is_committed(stepdir)) return 1;
    DIR *d = opendir(cdir);
    if (!d) {
        ap_errf(err, errlen, "%s: cannot list: %s", cdir, strerror(errno));
        return -1;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (ap_ckpt_parse_step_name(de->d_name) < 0) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", cdir, de->d_name);
        if (!ap_ckpt_is_committed(p)) rm_rf(p);
    }
    closedir(d);
    if (mkdir(stepdir, 0755) != 0) {
        ap_errf(err, errlen, "%s: cannot create: %s", stepdir, strerror(errno));
        return -1;
    }
    return fsync_path(cdir, err, errlen);
}

static int cmp_int_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return x > y ? -1 : x < y;
}

static void prune(const char *cdir, int keep, int64_t current) {
    DIR *d = opendir(cdir);
    if (!d) return;
    int n = 0, cap = 64, *steps = malloc(sizeof(int) * cap);
    struct dirent *de;
    while ((de = readdir(d))) {
        int s = ap_ckpt_parse_step_name(de->d_name);
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", cdir, de->d_name);
        if (s < 0 || s == current || !ap_ckpt_is_committed(p)) continue;
        if (n == cap) steps = realloc(steps, sizeof(int) * (cap *= 2));
        steps[n++] = s;
    }
    closedir(d);
    qsort(steps, n, sizeof(int), cmp_int_desc);
    for (int i = keep - 1; i < n; i++) { /* the current one counts as one kept */
        char p[PATH_MAX], c[PATH_MAX];
        snprintf(p, sizeof p, "%s/step_%08d", cdir, steps[i]);
        snprintf(c, sizeof c, "%s/COMMITTED", p);
        unlink(c); /* uncommit first: a half-deleted directory is never loaded */
        rm_rf(p);
    }
    free(steps);
}

static int repoint_latest(const char *cdir, int64_t step, char *err, size_t errlen) {
    char tmp[PATH_MAX], dst[PATH_MAX], target[32];
    snprintf(tmp, sizeof tmp, "%s/latest.tmp", cdir);
    snprintf(dst, sizeof dst, "%s/latest", cdir);
    snprintf(target, sizeof target, "step_%08" PRId64, step);
    unlink(tmp);
    if (symlink(target, tmp) != 0 || rename(tmp, dst) != 0) {
        ap_errf(err, errlen, "%s: cannot repoint to %s: %s", dst, target, strerror(errno));
        return -1;
    }
    return fsync_path(cdir, err, errlen);
}

int ap_ckpt_save(const char *cdir, const ap_ckpt_state *st, const ap_ckpt_stage *stages, int n_stages,
                 const ap_ckpt_save_opts *o, MPI_Comm comm, char *err, size_t errlen) {
    int rank, size;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
    ap_ckpt_h5init();
    char stepdir[PATH_MAX];
    snprintf(stepdir, sizeof stepdir, "%s/step_%08" PRId64, cdir, st->step);
    int rc = 0;
    if (strlen(cdir) > PATH_MAX - 256) {
        ap_errf(err, errlen, "checkpoint_dir is longer than %d characters", PATH_MAX - 256);
        rc = -1;
    } else if (st->step < 0 || st->step > 99999999 || st->pp < 1 || st->dp < 1 || st->tp < 1 || st->stages_per_rank < 1 ||
        st->n_data_pos < 0 || st->n_data_pos > AP_CKPT_MAX_DATA_POS) {
        ap_errf(err, errlen, "checkpoint state: step %" PRId64 " (0..99999999), pp %d, dp %d, tp %d, stages_per_rank %d"
               " (>= 1) or n_data_pos %d (0..%d) out of range", st->step, st->pp, st->dp, st->tp, st->stages_per_rank,
               st->n_data_pos, AP_CKPT_MAX_DATA_POS);
        rc = -1;
    }
    /* 1. rank 0 prepares the directory; everyone learns whether to write */
    int exists = 0;
    if (rank == 0 && rc == 0) {
        rc = prepare_dir(cdir, st->step, stepdir, sizeof stepdir, err, errlen);
        if (rc == 1) exists = 1, rc = 0;
    }
    if (agree(comm, rc, err, errlen)) return -1;
    MPI_Bcast(&exists, 1, MPI_INT, 0, comm);
    if (exists) {
        if (rank == 0) rc = repoint_latest(cdir, st->step, err, errlen);
        return agree(comm, rc, err, errlen);
    }
    /* 2. writers write their stage files */
    cJSON *mine = cJSON_CreateArray();
    for (int i = 0; i < n_stages && rc == 0; i++) {
        cJSON *e = write_stage(stepdir, st, &stages[i], o, err, errlen);
        if (!e) rc = -1;
        else cJSON_AddItemToArray(mine, e);
    }
    ap_ckpt_chunk_buffer_free();
    if (rc == 0 && n_stages > 0) rc = fsync_path(stepdir, err, errlen);
    /* 3. rank 0 gathers every file entry */
    char *txt = cJSON_PrintUnformatted(mine);
    cJSON_Delete(mine);
    int len = (int)strlen(txt) + 1, *lens = NULL, *offs = NULL;
    char *all = NULL;
    if (rank == 0) lens = calloc(size, sizeof(int)), offs = calloc(size, sizeof(int));
    MPI_Gather(&len, 1, MPI_INT, lens, 1, MPI_INT, 0, comm);
    if (rank == 0) {
        size_t tot = 0;
        for (int r = 0; r < size; r++) offs[r] = (int)tot, tot += (size_t)lens[r];
        all = malloc(tot ? tot : 1);
    }
    MPI_Gatherv(txt, len, MPI_CHAR, all, lens, offs, MPI_CHAR, 0, comm);
    free(txt);
    if (agree(comm, rc, err, errlen)) {
        free(all), free(lens), free(offs);
        return -1;
    }
    /* 4. rank 0: manifest, marker, latest, prune */
    if (rank == 0) {
        if (o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_FILES_DONE, stepdir);
        cJSON **frags = calloc(size, sizeof *frags);
        for (int r = 0; r < size; r++) frags[r] = cJSON_Parse(all + offs[r]);
        char *man = build_manifest(st, frags, size, err, errlen);
        for (int r = 0; r < size; r++) cJSON_Delete(frags[r]);
        free(frags);
        if (!man) rc = -1;
        if (!rc) rc = write_file_atomic(stepdir, "manifest.json", man, strlen(man), err, errlen);
        free(man);
        if (!rc && o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_MANIFEST, stepdir);
        if (!rc) {
            char mark[128];
            int n = snprintf(mark, sizeof mark, "autopipe checkpoint step %" PRId64 " committed\n", st->step);
            rc = write_file_atomic(stepdir, "COMMITTED", mark, (size_t)n, err, errlen);
        }
        if (!rc && o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_COMMITTED, stepdir);
        if (!rc) rc = repoint_latest(cdir, st->step, err, errlen);
        if (!rc && o && o->keep_last > 0) prune(cdir, o->keep_last, st->step);
        if (!rc && o && o->progress) o->progress(o->progress_ctx, AP_CKPT_PHASE_DONE, stepdir);
    }
    free(all), free(lens), free(offs);
    ap_ckpt_chunk_buffer_free();
    return agree(comm, rc, err, errlen);
}
