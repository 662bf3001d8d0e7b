/* safetensors.c - checked reader and writer for Hugging Face safetensors.
 * See safetensors.h for the format and the rules applied to headers. */
#include "common/error.h"
#include "common/file.h"
#include "checkpoint/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host (safetensors data is little-endian)"
#endif

#define MAX_INDEX_BYTES (100u << 20) /* model.safetensors.index.json */
#define MAX_SAFE_INT 9007199254740992.0 /* 2^53: JSON numbers are doubles in cJSON */
#define CHUNK_ELEMS (1u << 18)

struct ap_st_model {
    int nfiles;
    char **paths;
    ap_st_tensor *t;
    int n;
    int *by_name; /* indices of t sorted by name */
};

static const struct { const char *name; size_t size; } dtypes[AP_ST_NDTYPES] = {
    [AP_ST_BOOL] = {"BOOL", 1}, [AP_ST_U8] = {"U8", 1},     [AP_ST_I8] = {"I8", 1},
    [AP_ST_F8_E5M2] = {"F8_E5M2", 1}, [AP_ST_F8_E4M3] = {"F8_E4M3", 1},
    [AP_ST_I16] = {"I16", 2}, [AP_ST_U16] = {"U16", 2},   [AP_ST_F16] = {"F16", 2},
    [AP_ST_BF16] = {"BF16", 2}, [AP_ST_I32] = {"I32", 4}, [AP_ST_U32] = {"U32", 4},
    [AP_ST_F32] = {"F32", 4}, [AP_ST_F64] = {"F64", 8},   [AP_ST_I64] = {"I64", 8},
    [AP_ST_U64] = {"U64", 8},
};

const char *ap_st_dtype_name(ap_st_dtype d) {
    return (unsigned)d < AP_ST_NDTYPES ? dtypes[d].name : "?";
}
size_t ap_st_dtype_size(ap_st_dtype d) {
    return (unsigned)d < AP_ST_NDTYPES ? dtypes[d].size : 0;
}

/* ---- 16-bit floats ---- */

float ap_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t ap_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float ap_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { man <<= 1; e++; } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- header parsing ---- */

void ap_st_free_tensors(ap_st_tensor *t, int n) {
    if (!t) return;
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
}

/* A JSON number that is a non-negative integer exactly representable. */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= MAX_SAFE_INT) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static int parse_dtype(const char *s, ap_st_dtype *out) {
    for (int i = 0; i < AP_ST_NDTYPES; i++)
        if (!strcmp(s, dtypes[i].name)) { *out = (ap_st_dtype)i; return 0; }
    return -1;
}

static int cmp_by_begin(const void *a, const void *b, void *base) {
    const ap_st_tensor *x = &((const ap_st_tensor *)base)[*(const int *)a];
    const ap_st_tensor *y = &((const ap_st_tensor *)base)[*(const int *)b];
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1
         : x->nbytes < y->nbytes ? -1 : x->nbytes > y->nbytes;
}

/* One tensor entry of a header. */
static int parse_entry(const cJSON *e, ap_st_tensor *t, uint64_t data_start, uint64_t data_len,
                       const char *fname, char *err, size_t errlen) {
    const char *nm = e->string;
    if (!cJSON_IsObject(e)) return ap_errf(err, errlen, "%s: tensor '%s': entry is not a JSON object", fname, nm);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || parse_dtype(dt->valuestring, &t->dtype))
        return ap_errf(err, errlen, "%s: tensor '%s': missing or unknown dtype (expected one of F32, BF16, F16, F64, "
                    "I64, I32, I16, I8, U8, ..., BOOL)", fname, nm);
    if (!cJSON_IsArray(sh)) return ap_errf(err, errlen, "%s: tensor '%s': shape is missing or not an array", fname, nm);
    int nd = cJSON_GetArraySize(sh);
    if (nd > AP_ST_MAX_DIMS)
        return ap_errf(err, errlen, "%s: tensor '%s': %d dimensions (at most %d supported)", fname, nm, nd, AP_ST_MAX_DIMS);
    t->ndim = nd;
    uint64_t numel = 1;
    int d = 0;
    for (const cJSON *x = sh->child; x; x = x->next, d++) {
        if (json_u64(x, &t->shape[d]))
            return ap_errf(err, errlen, "%s: tensor '%s': shape[%d] is not a non-negative integer", fname, nm, d);
        if (__builtin_mul_overflow(numel, t->shape[d], &numel))
            return ap_errf(err, errlen, "%s: tensor '%s': shape product overflows", fname, nm);
    }
    t->numel = numel;
    if (__builtin_mul_overflow(numel, (uint64_t)dtypes[t->dtype].size, &t->nbytes))
        return ap_errf(err, errlen, "%s: tensor '%s': byte size overflows", fname, nm);
    uint64_t b, en;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || json_u64(off->child, &b) ||
        json_u64(off->child->next, &en))
        return ap_errf(err, errlen, "%s: tensor '%s': data_offsets must be [begin, end] with non-negative integers",
                    fname, nm);
    if (b > en || en > data_len)
        return ap_errf(err, errlen, "%s: tensor '%s': data_offsets [%llu, %llu] outside the data section of %llu bytes",
                    fname, nm, (unsigned long long)b, (unsigned long long)en, (unsigned long long)data_len);
    if (en - b != t->nbytes)
        return ap_errf(err, errlen, "%s: tensor '%s': data_offsets span %llu bytes but %s x %llu elements need %llu",
                    fname, nm, (unsigned long long)(en - b), dtypes[t->dtype].name, (unsigned long long)numel,
                    (unsigned long long)t->nbytes);
    t->offset = data_start + b;
    return 0;
}

int ap_st_parse_header(const char *hdr, size_t len, uint64_t data_start, uint64_t data_len, int file,
                       const char *fname, ap_st_tensor **tensors, int *n, char *err, size_t errlen) {
    if (len > AP_ST_MAX_HEADER)
        return ap_errf(err, errlen, "%s: header of %zu bytes exceeds the limit of %u", fname, len, AP_ST_MAX_HEADER);
    if (data_start > UINT64_MAX - data_len) return ap_errf(err, errlen, "%s: data section overflows", fname);
    cJSON *root = cJSON_ParseWithLength(hdr, len);
    if (!root) return ap_errf(err, errlen, "%s: header is not valid JSON", fname);
    int rv = -1, first = *n, *order = NULL;
    if (!cJSON_IsObject(root)) {
        ap_errf(err, errlen, "%s: header is not a JSON object", fname);
        goto done;
    }
    int count = 0;
    for (const cJSON *e = root->child; e; e = e->next) count++;
    if (count > INT_MAX / 2 - *n) {
        ap_errf(err, errlen, "%s: too many tensors", fname);
        goto done;
    }
    ap_st_tensor *nt = realloc(*tensors, (size_t)(*n + count + 1) * sizeof *nt);
    if (!nt) {
        ap_errf(err, errlen, "%s: out of memory for %d tensor entries", fname, count);
        goto done;
    }
    *tensors = nt;
    for (const cJSON *e = root->child; e; e = e->next) {
        const char *nm = e->string;
        size_t nl = nm ? strnlen(nm, AP_ST_MAX_NAME) : 0;
        if (nl == 0 || nl >= AP_ST_MAX_NAME) {
            ap_errf(err, errlen, "%s: tensor name %s", fname, nl ? "longer than 511 bytes" : "empty");
            goto done;
        }
        if (!strcmp(nm, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                ap_errf(err, errlen, "%s: __metadata__ is not a JSON object", fname);
                goto done;
            }
            for (const cJSON *m = e->child; m; m = m->next)
                if (!cJSON_IsString(m)) {
                    ap_errf(err, errlen, "%s: __metadata__ value '%.64s' is not a string", fname, m->string);
                    goto done;
                }
            continue;
        }
        ap_st_tensor *t = &(*tensors)[*n];
        memset(t, 0, sizeof *t);
        if (parse_entry(e, t, data_start, data_len, fname, err, errlen)) goto done;
        if (!(t->name = strdup(nm))) {
            ap_errf(err, errlen, "%s: out of memory", fname);
            goto done;
        }
        t->file = file;
        (*n)++;
    }
    /* Byte ranges of this file's tensors must not overlap (aliasing would let
     * a writer of one tensor corrupt another). Empty tensors overlap nothing. */
    int m = *n - first;
    if (m > 1) {
        if (!(order = malloc((size_t)m * sizeof *order))) {
            ap_errf(err, errlen, "%s: out of memory", fname);
            goto done;
        }
        for (int i = 0; i < m; i++) order[i] = first + i;
        qsort_r(order, (size_t)m, sizeof *order, cmp_by_begin, *tensors);
        uint64_t end = 0;
        const char *prev = NULL;
        for (int i = 0; i < m; i++) {
            const ap_st_tensor *t = &(*tensors)[order[i]];
            if (t->nbytes == 0) continue;
            if (prev && t->offset < end) {
                ap_errf(err, errlen, "%s: tensor '%s' overlaps tensor '%s' in the data section", fname, t->name, prev);
                goto done;
            }
            end = t->offset + t->nbytes;
            prev = t->name;
        }
    }
    rv = 0;
done:
    free(order);
    cJSON_Delete(root);
    return rv;
}

/* ---- opening files ---- */

static char *path_join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/') p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int read_full(int fd, void *buf, size_t len, uint64_t off) {
    char *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int add_file(ap_st_model *m, const char *path) {
    char **np = realloc(m->paths, (size_t)(m->nfiles + 1) * sizeof *np);
    if (!np) return -1;
    m->paths = np;
    if (!(m->paths[m->nfiles] = strdup(path))) return -1;
    return m->nfiles++;
}

/* Reads and parses the header of one .safetensors file. */
static int open_shard(ap_st_model *m, const char *path, char *err, size_t errlen) {
    int file = add_file(m, path);
    if (file < 0) return ap_errf(err, errlen, "%s: out of memory", path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ap_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    int rv = -1;
    char *hdr = NULL;
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        ap_errf(err, errlen, "%s: not a regular file", path);
        goto done;
    }
    uint64_t size = (uint64_t)st.st_size;
    unsigned char lenbuf[8];
    if (size < 8 || read_full(fd, lenbuf, 8, 0)) {
        ap_errf(err, errlen, "%s: truncated (%llu bytes): a safetensors file starts with an 8-byte header length",
             path, (unsigned long long)size);
        goto done;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | lenbuf[i];
    if (hlen > AP_ST_MAX_HEADER) {
        ap_errf(err, errlen, "%s: header length %llu exceeds the limit of %u bytes (corrupt or not safetensors)", path,
             (unsigned long long)hlen, AP_ST_MAX_HEADER);
        goto done;
    }
    if (hlen > size - 8) {
        ap_errf(err, errlen, "%s: header length %llu exceeds the file size %llu (truncated?)", path,
             (unsigned long long)hlen, (unsigned long long)size);
        goto done;
    }
    if (!(hdr = malloc(hlen ? hlen : 1)) || read_full(fd, hdr, hlen, 8)) {
        ap_errf(err, errlen, "%s: cannot read the %llu-byte header", path, (unsigned long long)hlen);
        goto done;
    }
    rv = ap_st_parse_header(hdr, hlen, 8 + hlen, size - 8 - hlen, file, path, &m->t, &m->n, err, errlen);
done:
    free(hdr);
    close(fd);
    return rv;
}

static int cmp_name_idx(const void *a, const void *b, void *base) {
    const ap_st_tensor *t = base;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Sorts tensor names for lookup; a name in two shards is an error. */
static int index_names(ap_st_model *m, const char *path, char *err, size_t errlen) {
    free(m->by_name);
    if (!(m->by_name = malloc((size_t)(m->n ? m->n : 1) * sizeof *m->by_name)))
        return ap_errf(err, errlen, "%s: out of memory", path);
    for (int i = 0; i < m->n; i++) m->by_name[i] = i;
    qsort_r(m->by_name, (size_t)m->n, sizeof *m->by_name, cmp_name_idx, m->t);
    for (int i = 1; i < m->n; i++) {
        const ap_st_tensor *a = &m->t[m->by_name[i - 1]], *b = &m->t[m->by_name[i]];
        if (!strcmp(a->name, b->name))
            return ap_errf(err, errlen, "%s: tensor '%s' appears twice (in %s and %s)", path, a->name,
                        m->paths[a->file], m->paths[b->file]);
    }
    return 0;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static int open_index(ap_st_model *m, const char *path, char *err, size_t errlen) {
    size_t len;
    char *text = ap_read_file(path, MAX_INDEX_BYTES, &len, err, errlen);
    if (!text) return -1;
    int rv = -1;
    char *dir = strdup(path), *shard = NULL;
    cJSON *root = cJSON_ParseWithLength(text, len);
    const cJSON *wm = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!dir) {
        ap_errf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (slash) slash[1] = 0;
    else strcpy(dir, ".");
    if (!root || !cJSON_IsObject(root)) {
        ap_errf(err, errlen, "%s: not a JSON object", path);
        goto done;
    }
    if (!cJSON_IsObject(wm)) {
        ap_errf(err, errlen, "%s: key 'weight_map' missing or not an object", path);
        goto done;
    }
    /* Open each distinct shard once, in order of first appearance. */
    for (const cJSON *e = wm->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            ap_errf(err, errlen, "%s: weight_map['%.128s'] is not a string", path, e->string);
            goto done;
        }
        const char *f = e->valuestring;
        size_t fl = strnlen(f, 256);
        if (fl == 0 || fl >= 256 || strchr(f, '/') || !strcmp(f, ".") || !strcmp(f, "..")) {
            ap_errf(err, errlen, "%s: weight_map['%.128s'] = '%.64s' is not a plain file name in the index's directory",
                 path, e->string, f);
            goto done;
        }
        int seen = 0;
        for (int i = m->nfiles - 1; i >= 0 && !seen; i--) seen = !strcmp(base_name(m->paths[i]), f);
        if (seen) continue;
        if (m->nfiles >= AP_ST_MAX_SHARDS) {
            ap_errf(err, errlen, "%s: more than %d shard files", path, AP_ST_MAX_SHARDS);
            goto done;
        }
        free(shard);
        if (!(shard = path_join(dir, f))) {
            ap_errf(err, errlen, "%s: out of memory", path);
            goto done;
        }
        if (open_shard(m, shard, err, errlen)) goto done;
    }
    /* Every tensor the index names must be in the shard it names. */
    if (index_names(m, path, err, errlen)) goto done;
    for (const cJSON *e = wm->child; e; e = e->next) {
        const ap_st_tensor *t = ap_st_find(m, e->string);
        if (!t || strcmp(base_name(m->paths[t->file]), e->valuestring)) {
            ap_errf(err, errlen, "%s: weight_map puts tensor '%.128s' in %s, but that file has no such tensor", path,
                 e->string, e->valuestring);
            goto done;
        }
    }
    rv = 0;
done:
    free(shard);
    free(dir);
    cJSON_Delete(root);
    free(text);
    return rv;
}

void ap_st_close(ap_st_model *m) {
    if (!m) return;
    for (int i = 0; i < m->nfiles; i++) free(m->paths[i]);
    free(m->paths);
    ap_st_free_tensors(m->t, m->n);
    free(m->by_name);
    free(m);
}

int ap_st_open(ap_st_model **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    ap_st_model *m = calloc(1, sizeof *m);
    char *p = NULL;
    if (!m) return ap_errf(err, errlen, "%s: out of memory", path);
    int rv = -1;
    struct stat st;
    if (stat(path, &st)) {
        ap_errf(err, errlen, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        if (!(p = path_join(path, "model.safetensors.index.json"))) goto oom;
        if (access(p, F_OK) == 0) {
            rv = open_index(m, p, err, errlen);
        } else {
            free(p);
            if (!(p = path_join(path, "model.safetensors"))) goto oom;
            if (access(p, F_OK)) {
                ap_errf(err, errlen, "%s: no model.safetensors or model.safetensors.index.json in this directory", path);
                goto done;
            }
            rv = open_shard(m, p, err, errlen);
        }
    } else {
        rv = ends_with(path, ".json") ? open_index(m, path, err, errlen) : open_shard(m, path, err, errlen);
    }
    if (rv) goto done;
    rv = index_names(m, path, err, errlen);
    if (rv) goto done;
    goto done;
oom:
    ap_errf(err, errlen, "%s: out of memory", path);
done:
    free(p);
    if (rv) ap_st_close(m);
    else *out = m;
    return rv;
}

int ap_st_count(const ap_st_model *m) { return m->n; }
const ap_st_tensor *ap_st_at(const ap_st_model *m, int i) { return i >= 0 && i < m->n ? &m->t[i] : NULL; }
const char *ap_st_file(const ap_st_model *m, int file) {
    return file >= 0 && file < m->nfiles ? m->paths[file] : "?";
}

const ap_st_tensor *ap_st_find(const ap_st_model *m, const char *name) {
    int lo = 0, hi = m->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(name, m->t[m->by_name[mid]].name);
        if (!c) return &m->t[m->by_name[mid]];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

/* ---- reading data ---- */

/* Opens the tensor's file, checking it still covers the tensor's bytes. */
static int open_for(const ap_st_model *m, const ap_st_tensor *t, char *err, size_t errlen) {
    const char *path = m->paths[t->file];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) return ap_errf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) || (uint64_t)st.st_size < t->offset + t->nbytes) {
        close(fd);
        return ap_errf(err, errlen, "%s: tensor '%s': file shrank below its data (modified while open?)", path, t->name);
    }
    return fd;
}

static const ap_st_tensor *find_checked(const ap_st_model *m, const char *name, char *err, size_t errlen) {
    const ap_st_tensor *t = ap_st_find(m, name);
    if (!t) ap_errf(err, errlen, "%s: tensor '%s' not found", m->nfiles ? m->paths[0] : "safetensors", name);
    return t;
}

static void shape_str(char *buf, size_t len, int nd, const uint64_t *s64, const size_t *sz) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, len - k, "[");
    for (int i = 0; i < nd && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%llu", i ? ", " : "",
                              (unsigned long long)(s64 ? s64[i] : sz[i]));
    if (k < len) snprintf(buf + k, len - k, "]");
}

int ap_st_read_f32(ap_st_model *m, const char *name, float *dst, int ndim, const size_t *shape, char *err,
                   size_t errlen) {
    const ap_st_tensor *t = find_checked(m, name, err, errlen);
    if (!t) return -1;
    const char *path = m->paths[t->file];
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == (uint64_t)shape[i];
    if (!same) {
        char a[160], b[160];
        shape_str(a, sizeof a, t->ndim, t->shape, NULL);
        shape_str(b, sizeof b, ndim, NULL, shape);
        return ap_errf(err, errlen, "%s: tensor '%s' has shape %s, expected %s", path, name, a, b);
    }
    if (t->dtype != AP_ST_F32 && t->dtype != AP_ST_BF16 && t->dtype != AP_ST_F16)
        return ap_errf(err, errlen, "%s: tensor '%s' has dtype %s (supported: F32, BF16, F16)", path, name,
                    dtypes[t->dtype].name);
    int fd = open_for(m, t, err, errlen);
    if (fd < 0) return -1;
    int rv = 0;
    if (t->dtype == AP_ST_F32) {
        if (read_full(fd, dst, (size_t)t->nbytes, t->offset)) rv = -1;
    } else {
        uint16_t *buf = malloc(CHUNK_ELEMS * sizeof *buf);
        if (!buf) rv = -1;
        for (uint64_t i = 0; !rv && i < t->numel; i += CHUNK_ELEMS) {
            size_t k = (size_t)(t->numel - i < CHUNK_ELEMS ? t->numel - i : CHUNK_ELEMS);
            if (read_full(fd, buf, k * 2, t->offset + i * 2)) { rv = -1; break; }
            if (t->dtype == AP_ST_BF16) for (size_t j = 0; j < k; j++) dst[i + j] = ap_bf16_to_f32(buf[j]);
            else for (size_t j = 0; j < k; j++) dst[i + j] = ap_f16_to_f32(buf[j]);
        }
        free(buf);
    }
    close(fd);
    if (rv) return ap_errf(err, errlen, "%s: tensor '%s': read error", path, name);
    return 0;
}

int ap_st_read_i32(ap_st_model *m, const char *name, int32_t *dst, size_t numel, char *err, size_t errlen) {
    const ap_st_tensor *t = find_checked(m, name, err, errlen);
    if (!t) return -1;
    const char *path = m->paths[t->file];
    if (t->numel != numel)
        return ap_errf(err, errlen, "%s: tensor '%s' has %llu elements, expected %zu", path, name,
                    (unsigned long long)t->numel, numel);
    if (t->dtype != AP_ST_I32 && t->dtype != AP_ST_I64)
        return ap_errf(err, errlen, "%s: tensor '%s' has dtype %s (expected I32 or I64)", path, name,
                    dtypes[t->dtype].name);
    int fd = open_for(m, t, err, errlen);
    if (fd < 0) return -1;
    int rv = 0;
    if (t->dtype == AP_ST_I32) {
        rv = read_full(fd, dst, numel * 4, t->offset);
    } else {
        int64_t v;
        for (size_t i = 0; !rv && i < numel; i++) {
            if (read_full(fd, &v, 8, t->offset + i * 8)) rv = -1;
            else if (v < INT32_MIN || v > INT32_MAX) {
                close(fd);
                return ap_errf(err, errlen, "%s: tensor '%s': element %zu = %lld does not fit 32 bits", path, name, i,
                            (long long)v);
            } else dst[i] = (int32_t)v;
        }
    }
    close(fd);
    if (rv) return ap_errf(err, errlen, "%s: tensor '%s': read error", path, name);
    return 0;
}

/* ---- writing ---- */

static int write_full(FILE *f, const void *p, size_t n) { return fwrite(p, 1, n, f) == n ? 0 : -1; }

/* Writes tensors [a, b) into one file at `path` (temporary name + rename). */
static int write_shard(const char *path, const ap_st_out *t, int a, int b, ap_st_dtype dtype, char *err,
                       size_t errlen) {
    size_t ds = dtypes[dtype].size;
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    char *hdr = NULL, *tmp = NULL;
    FILE *f = NULL;
    uint16_t *buf = NULL;
    int rv = -1;
    if (!meta || !cJSON_AddStringToObject(meta, "format", "pt")) goto oom;
    uint64_t off = 0;
    for (int i = a; i < b; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name), *sh, *of;
        if (!e || !cJSON_AddStringToObject(e, "dtype", dtypes[dtype].name)) goto oom;
        if (!(sh = cJSON_AddArrayToObject(e, "shape"))) goto oom;
        for (int d = 0; d < t[i].ndim; d++)
            if (!cJSON_AddItemToArray(sh, cJSON_CreateNumber((double)t[i].shape[d]))) goto oom;
        if (!(of = cJSON_AddArrayToObject(e, "data_offsets"))) goto oom;
        if (!cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off))) goto oom;
        off += numel * ds;
        if (!cJSON_AddItemToArray(of, cJSON_CreateNumber((double)off))) goto oom;
    }
    if (!(hdr = cJSON_PrintUnformatted(root))) goto oom;
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7; /* 8-byte aligned data, as HF writes */
    if (!(tmp = malloc(strlen(path) + 32))) goto oom;
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    if (!(f = fopen(tmp, "wb"))) {
        ap_errf(err, errlen, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    unsigned char lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    int bad = write_full(f, lenbuf, 8) || write_full(f, hdr, hl);
    for (size_t i = hl; i < padded && !bad; i++) bad = fputc(' ', f) == EOF;
    if (dtype == AP_ST_BF16 && !(buf = malloc(CHUNK_ELEMS * sizeof *buf))) goto oom;
    for (int i = a; i < b && !bad; i++) {
        size_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) numel *= t[i].shape[d];
        if (dtype == AP_ST_F32) {
            bad = write_full(f, t[i].data, numel * 4);
            continue;
        }
        for (size_t j = 0; j < numel && !bad; j += CHUNK_ELEMS) {
            size_t k = numel - j < CHUNK_ELEMS ? numel - j : CHUNK_ELEMS;
            for (size_t q = 0; q < k; q++) buf[q] = ap_f32_to_bf16(t[i].data[j + q]);
            bad = write_full(f, buf, k * 2);
        }
    }
    if (!bad) bad = fflush(f) || fsync(fileno(f));
    if (fclose(f)) bad = 1;
    f = NULL;
    if (bad || rename(tmp, path)) {
        ap_errf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        goto done;
    }
    rv = 0;
    goto done;
oom:
    ap_errf(err, errlen, "%s: out of memory", path);
done:
    if (f) {
        fclose(f);
        unlink(tmp);
    }
    free(buf);
    free(tmp);
    free(hdr);
    cJSON_Delete(root);
    return rv;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
    char *tmp = malloc(strlen(path) + 32);
    if (!tmp) return ap_errf(err, errlen, "%s: out of memory", path);
    sprintf(tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    int bad = !f || write_full(f, text, strlen(text)) || fflush(f) || fsync(fileno(f));
    if (f && fclose(f)) bad = 1;
    if (bad || rename(tmp, path)) {
        ap_errf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

int ap_st_write(const char *dir, const char *basename, const ap_st_out *t, int n, ap_st_dtype dtype,
                uint64_t shard_bytes, char *err, size_t errlen) {
    const char *base = basename ? basename : "model";
    if (dtype != AP_ST_F32 && dtype != AP_ST_BF16)
        return ap_errf(err, errlen, "%s: safetensors writer supports F32 and BF16, not %s", dir, ap_st_dtype_name(dtype));
    if (n < 0) return ap_errf(err, errlen, "%s: negative tensor count", dir);
    size_t ds = dtypes[dtype].size;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        size_t nl = t[i].name ? strnlen(t[i].name, AP_ST_MAX_NAME) : 0;
        if (nl == 0 || nl >= AP_ST_MAX_NAME || !strcmp(t[i].name, "__metadata__"))
            return ap_errf(err, errlen, "%s: tensor %d has an invalid name", dir, i);
        if (t[i].ndim < 0 || t[i].ndim > AP_ST_MAX_DIMS)
            return ap_errf(err, errlen, "%s: tensor '%s': %d dimensions", dir, t[i].name, t[i].ndim);
        uint64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            if (__builtin_mul_overflow(numel, (uint64_t)t[i].shape[d], &numel))
                return ap_errf(err, errlen, "%s: tensor '%s': shape overflows", dir, t[i].name);
        if (numel && !t[i].data) return ap_errf(err, errlen, "%s: tensor '%s' has no data", dir, t[i].name);
        if (numel > (uint64_t)(MAX_SAFE_INT / 8)) return ap_errf(err, errlen, "%s: tensor '%s' too large", dir, t[i].name);
        total += numel * ds;
        for (int j = 0; j < i; j++)
            if (!strcmp(t[i].name, t[j].name)) return ap_errf(err, errlen, "%s: tensor '%s' given twice", dir, t[i].name);
    }
    char path[4096], ipath[4096];
    if (snprintf(ipath, sizeof ipath, "%s/%s.safetensors.index.json", dir, base) >= (int)sizeof ipath)
        return ap_errf(err, errlen, "%s: path too long", dir);
    if (shard_bytes == 0 || total <= shard_bytes) {
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, base);
        if (write_shard(path, t, 0, n, dtype, err, errlen)) return -1;
        unlink(ipath); /* a stale index would shadow the new file */
        return 0;
    }
    /* Greedy split in the given order; count the shards first for the names. */
    int nshards = 0;
    uint64_t cur = 0;
    for (int i = 0; i < n; i++) {
        uint64_t sz = 1;
        for (int d = 0; d < t[i].ndim; d++) sz *= t[i].shape[d];
        sz *= ds;
        if (i == 0 || (cur > 0 && cur + sz > shard_bytes)) { nshards++; cur = 0; }
        cur += sz;
    }
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata"),
          *wm = cJSON_AddObjectToObject(root, "weight_map");
    int rv = -1;
    char *text = NULL;
    if (!meta || !wm || !cJSON_AddNumberToObject(meta, "total_size", (double)total)) goto oom;
    int a = 0, k = 0;
    while (a < n) {
        int b = a;
        cur = 0;
        while (b < n) {
            uint64_t sz = 1;
            for (int d = 0; d < t[b].ndim; d++) sz *= t[b].shape[d];
            sz *= ds;
            if (b > a && cur + sz > shard_bytes) break;
            cur += sz;
            b++;
        }
        char fname[256];
        snprintf(fname, sizeof fname, "%s-%05d-of-%05d.safetensors", base, ++k, nshards);
        if (snprintf(path, sizeof path, "%s/%s", dir, fname) >= (int)sizeof path) {
            ap_errf(err, errlen, "%s: path too long", dir);
            goto done;
        }
        if (write_shard(path, t, a, b, dtype, err, errlen)) goto done;
        for (int i = a; i < b; i++)
            if (!cJSON_AddStringToObject(wm, t[i].name, fname)) goto oom;
        a = b;
    }
    if (!(text = cJSON_Print(root))) goto oom;
    rv = write_text(ipath, text, err, errlen);
    goto done;
oom:
    ap_errf(err, errlen, "%s: out of memory", dir);
done:
    free(text);
    cJSON_Delete(root);
    return rv;
}
