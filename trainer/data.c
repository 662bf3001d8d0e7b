/* data.c - token shards, SFT JSONL and byte-tokenized text as samples of
 * seq_len; validation split; seeded, resumable shuffling (see data.h). */
#include "common/file.h"
#include "trainer/data.h"

#include "launcher/commands.h"
#include "trainer/tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* What a dataset reads from: a token stream (cut into overlapping windows)
 * or materialised samples (SFT). Shared by slices, freed with the last one. */
typedef struct {
    int refs;
    char *path;
    int T, pad_id;
    int is_stream;
    /* stream: n_tokens tokens of `width` bytes at base (mmapped shard) or in owned */
    const unsigned char *base;
    int width;
    size_t n_tokens;
    void *map;
    size_t map_len;
    int32_t *owned;
    /* samples: (n_samples, T) each */
    int32_t *inputs, *labels;
    int32_t *positions; /* packed SFT: position ids restarting at each example; else NULL */
    size_t n_samples;
} storage;

struct ap_dataset {
    storage *s;
    size_t begin, end;
};

static void storage_unref(storage *s) {
    if (!s || --s->refs > 0) return;
    if (s->map) munmap(s->map, s->map_len);
    free(s->owned);
    free(s->inputs);
    free(s->labels);
    free(s->positions);
    free(s->path);
    free(s);
}

static inline int32_t stream_tok(const storage *s, size_t i) {
    const unsigned char *p = s->base + i * (size_t)s->width;
    if (s->width == 4 && s->owned) return ((const int32_t *)(const void *)s->base)[i];
    if (s->width == 2) return (int32_t)(p[0] | (uint32_t)p[1] << 8);
    return (int32_t)(p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static size_t storage_len(const storage *s) {
    if (!s->is_stream) return s->n_samples;
    if (s->n_tokens < 2) return 0;
    return (s->n_tokens - 1 + (size_t)s->T - 1) / (size_t)s->T;
}

/* Data files are read whole; the bound only stops a path that is not data. */
#define MAX_DATA_BYTES ((size_t)1 << 36)

static uint32_t le32(const unsigned char *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const unsigned char *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int open_shard(storage *s, const char *path, int vocab, char *err, size_t errlen) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        snprintf(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t size = (size_t)sb.st_size;
    if (size < AP_SHARD_HEADER_BYTES) {
        snprintf(err, errlen, "%s: truncated token shard: %zu bytes, shorter than the %d-byte header", path, size,
                 AP_SHARD_HEADER_BYTES);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
        return -1;
    }
    s->map = map;
    s->map_len = size;
    const unsigned char *h = map;
    if (memcmp(h, AP_SHARD_MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not an autopipe token shard (bad magic at byte 0; expected \"%s\"; make one with "
                 "`autopipe tokenize`)", path, AP_SHARD_MAGIC);
        return -1;
    }
    uint32_t version = le32(h + 8), width = le32(h + 12), file_vocab = le32(h + 24);
    uint64_t n = le64(h + 16);
    if (version != AP_SHARD_VERSION) {
        snprintf(err, errlen, "%s: token shard version %u at byte 8 is not supported (expected %u)", path, version,
                 AP_SHARD_VERSION);
        return -1;
    }
    if (width != 2 && width != 4) {
        snprintf(err, errlen, "%s: token width %u at byte 12 must be 2 (uint16) or 4 (uint32)", path, width);
        return -1;
    }
    size_t avail = (size - AP_SHARD_HEADER_BYTES) / width;
    if (n > avail) {
        snprintf(err, errlen, "%s: truncated token shard: header says %llu tokens but the file holds %zu (%zu bytes)",
                 path, (unsigned long long)n, avail, size);
        return -1;
    }
    if (size != AP_SHARD_HEADER_BYTES + n * width) {
        snprintf(err, errlen, "%s: %zu bytes after the %llu tokens the header announces (corrupt shard?)", path,
                 size - AP_SHARD_HEADER_BYTES - (size_t)n * width, (unsigned long long)n);
        return -1;
    }
    if (file_vocab != 0 && (int64_t)file_vocab > vocab) {
        snprintf(err, errlen, "%s: made for vocab_size %u, larger than the model's %d", path, file_vocab, vocab);
        return -1;
    }
    s->base = h + AP_SHARD_HEADER_BYTES;
    s->width = (int)width;
    s->n_tokens = (size_t)n;
    for (size_t i = 0; i < s->n_tokens; i++) {
        int32_t t = stream_tok(s, i);
        if (t < 0 || t >= vocab) {
            snprintf(err, errlen, "%s: token %lld at index %zu (byte offset %zu) is not below vocab_size %d", path,
                     (long long)(uint32_t)t, i, AP_SHARD_HEADER_BYTES + i * width, vocab);
            return -1;
        }
    }
    return 0;
}

static int open_text_buf(storage *s, const char *label, const char *text, size_t n, int vocab, char *err,
                         size_t errlen) {
    if (vocab != AP_BYTE_VOCAB) {
        snprintf(err, errlen, "%s: plain text uses the byte tokenizer (vocab_size %d) but the model has vocab_size "
                 "%d: give token shards (.bin) or SFT JSONL made with the model's tokenizer", label, AP_BYTE_VOCAB,
                 vocab);
        return -1;
    }
    s->owned = malloc((n + 2) * sizeof(int32_t));
    if (!s->owned) {
        snprintf(err, errlen, "%s: out of memory", label);
        return -1;
    }
    s->n_tokens = ap_byte_encode(text, n, 1, 1, s->owned);
    s->base = (const unsigned char *)s->owned;
    s->width = 4;
    return 0;
}

/* Appends to a growing int32 pair of arrays. */
typedef struct {
    int32_t *a, *b;
    size_t n, cap;
} pairbuf;

static int pair_push(pairbuf *p, int32_t a, int32_t b) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 4096;
        int32_t *na = realloc(p->a, cap * sizeof *na);
        if (!na) return -1;
        p->a = na;
        int32_t *nb = realloc(p->b, cap * sizeof *nb);
        if (!nb) return -1;
        p->b = nb;
        p->cap = cap;
    }
    p->a[p->n] = a;
    p->b[p->n] = b;
    p->n++;
    return 0;
}

/* Checks one JSON array of token ids; returns its length or -1 (message set). */
static long json_ids(const cJSON *arr, const char *field, const char *path, size_t line, int vocab, int is_label,
                     char *err, size_t errlen) {
    if (!cJSON_IsArray(arr)) {
        snprintf(err, errlen, "%s:%zu: \"%s\" must be an array of integers", path, line, field);
        return -1;
    }
    long k = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) {
        double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
        int valid = isfinite(x) && x == floor(x) &&
                    ((x >= 0 && x < vocab) || (is_label && x == AP_IGNORE_INDEX));
        if (!valid) {
            char shown[64];
            if (cJSON_IsNumber(v)) snprintf(shown, sizeof shown, "%g", x);
            else snprintf(shown, sizeof shown, "a non-number");
            snprintf(err, errlen, "%s:%zu: %s[%ld] is %s: expected an integer in [0, %d)%s", path, line, field, k,
                     shown, vocab, is_label ? " or -100" : "");
            return -1;
        }
        k++;
    }
    return k;
}

/* Parses SFT JSONL into one example per line, then lays them out as padded
 * samples or packs them into a stream of (input, label) pairs. */
static int open_sft(storage *s, const char *path, int vocab, int packed, char *err, size_t errlen) {
    size_t len;
    char *buf = ap_read_file(path, MAX_DATA_BYTES, &len, err, errlen);
    if (!buf) return -1;
    pairbuf all = {0};     /* every example back to back: a = input id, b = label */
    size_t *starts = NULL; /* example offsets into `all` (n_ex + 1) */
    size_t n_ex = 0, cap_ex = 0;
    int rv = -1;
    size_t line = 0;
    for (char *p = buf; p < buf + len;) {
        char *nl = memchr(p, '\n', (size_t)(buf + len - p));
        char *end = nl ? nl : buf + len;
        line++;
        char *q = p;
        while (q < end && (*q == ' ' || *q == '\t' || *q == '\r')) q++;
        if (q == end) {
            p = end + 1;
            continue;
        }
        cJSON *j = cJSON_ParseWithLength(p, (size_t)(end - p));
        if (!j || !cJSON_IsObject(j)) {
            const char *e = cJSON_GetErrorPtr();
            long col = j ? 1 : (e && e >= p && e <= end ? (long)(e - p) + 1 : 1);
            snprintf(err, errlen, "%s:%zu: malformed JSON line near column %ld: expected an object "
                     "{\"input_ids\": [...], \"labels\": [...]}", path, line, col);
            cJSON_Delete(j);
            goto fail;
        }
        const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "input_ids");
        const cJSON *labs = cJSON_GetObjectItemCaseSensitive(j, "labels");
        if (!ids) {
            snprintf(err, errlen, "%s:%zu: missing \"input_ids\"", path, line);
            cJSON_Delete(j);
            goto fail;
        }
        size_t first = all.n;
        long ni = json_ids(ids, "input_ids", path, line, vocab, 0, err, errlen);
        if (ni < 0) {
            cJSON_Delete(j);
            goto fail;
        }
        /* input ids first (labels filled below) */
        const cJSON *v;
        cJSON_ArrayForEach(v, ids) {
            if (pair_push(&all, (int32_t)v->valuedouble, AP_IGNORE_INDEX) < 0) {
                snprintf(err, errlen, "%s: out of memory", path);
                cJSON_Delete(j);
                goto fail;
            }
        }
        if (labs) {
            long nl2 = json_ids(labs, "labels", path, line, vocab, 1, err, errlen);
            if (nl2 < 0) {
                cJSON_Delete(j);
                goto fail;
            }
            if (nl2 != ni) {
                snprintf(err, errlen, "%s:%zu: \"labels\" has %ld entries but \"input_ids\" has %ld (labels are "
                         "already shifted: labels[t] is the token after input_ids[t])", path, line, nl2, ni);
                cJSON_Delete(j);
                goto fail;
            }
            size_t t = first;
            cJSON_ArrayForEach(v, labs) all.b[t++] = (int32_t)v->valuedouble;
        } else {
            /* no labels: predict every next token of the example */
            for (size_t t = first; t + 1 < all.n; t++) all.b[t] = all.a[t + 1];
        }
        cJSON_Delete(j);
        if (n_ex + 2 > cap_ex) {
            cap_ex = cap_ex ? cap_ex * 2 : 256;
            size_t *ns = realloc(starts, cap_ex * sizeof *ns);
            if (!ns) {
                snprintf(err, errlen, "%s: out of memory", path);
                goto fail;
            }
            starts = ns;
        }
        starts[n_ex++] = first;
        p = end + 1;
    }
    if (n_ex == 0) {
        snprintf(err, errlen, "%s: no examples (expected one JSON object per line)", path);
        goto fail;
    }
    starts[n_ex] = all.n;
    size_t T = (size_t)s->T;
    size_t n_samples = packed ? (all.n + T - 1) / T : n_ex;
    s->inputs = malloc(n_samples * T * sizeof(int32_t));
    s->labels = malloc(n_samples * T * sizeof(int32_t));
    if (!s->inputs || !s->labels) {
        snprintf(err, errlen, "%s: out of memory for %zu samples", path, n_samples);
        goto fail;
    }
    for (size_t i = 0; i < n_samples * T; i++) {
        s->inputs[i] = s->pad_id;
        s->labels[i] = AP_IGNORE_INDEX;
    }
    if (packed) {
        memcpy(s->inputs, all.a, all.n * sizeof(int32_t));
        memcpy(s->labels, all.b, all.n * sizeof(int32_t));
        s->n_samples = n_samples;
        /* Position ids restart where an example starts and where a row does
         * (an example cut by the row end goes on from 0 in the next row), so
         * attention stays within each example; the padding of the last row
         * counts on from its last example. */
        if (!(s->positions = malloc(n_samples * T * sizeof(int32_t)))) {
            snprintf(err, errlen, "%s: out of memory for %zu samples", path, n_samples);
            goto fail;
        }
        for (size_t e = 0, k = 0; k < n_samples * T; k++) {
            while (e + 1 < n_ex && starts[e + 1] <= k) e++;
            size_t from = starts[e] > k - k % T ? starts[e] : k - k % T;
            s->positions[k] = (int32_t)(k - from);
        }
    } else {
        /* one example per sample, truncated to seq_len; examples left without
         * any label token would only add zero to the loss: dropped */
        size_t k = 0;
        for (size_t e = 0; e < n_ex; e++) {
            size_t n = starts[e + 1] - starts[e];
            if (n > T) n = T;
            int has_label = 0;
            for (size_t t = 0; t < n; t++) has_label |= all.b[starts[e] + t] != AP_IGNORE_INDEX;
            if (!has_label) continue;
            memcpy(s->inputs + k * T, all.a + starts[e], n * sizeof(int32_t));
            memcpy(s->labels + k * T, all.b + starts[e], n * sizeof(int32_t));
            k++;
        }
        if (k == 0) {
            snprintf(err, errlen, "%s: no example has a label token (all labels are -100)", path);
            goto fail;
        }
        s->n_samples = k;
    }
    rv = 0;
fail:
    free(all.a);
    free(all.b);
    free(starts);
    free(buf);
    return rv;
}

static enum ap_data_format guess_format(const char *path) {
    size_t n = strlen(path);
    if (n >= 4 && !strcmp(path + n - 4, ".bin")) return AP_DATA_TOKENS;
    if (n >= 6 && !strcmp(path + n - 6, ".jsonl")) return AP_DATA_SFT_JSONL;
    return AP_DATA_TEXT;
}

int ap_dataset_open(ap_dataset **out, const ap_data_opts *o, char *err, size_t errlen) {
    *out = NULL;
    if (o->seq_len < 1 || o->vocab_size < 1) {
        snprintf(err, errlen, "seq_len (%d) and vocab_size (%d) must be >= 1", o->seq_len, o->vocab_size);
        return -1;
    }
    if (o->pad_id < 0 || o->pad_id >= o->vocab_size) {
        snprintf(err, errlen, "pad token id %d is outside the vocabulary (size %d)", o->pad_id, o->vocab_size);
        return -1;
    }
    storage *s = calloc(1, sizeof *s);
    ap_dataset *d = calloc(1, sizeof *d);
    const char *label = o->path ? o->path : "<built-in text>";
    if (!s || !d || !(s->path = strdup(label))) {
        free(s);
        free(d);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->refs = 1;
    s->T = o->seq_len;
    s->pad_id = o->pad_id;
    int rv;
    enum ap_data_format f = o->format;
    if (!o->path) {
        size_t n;
        char *text = ap_builtin_text(&n);
        s->is_stream = 1;
        rv = text ? open_text_buf(s, label, text, n, o->vocab_size, err, errlen) : -1;
        if (!text) snprintf(err, errlen, "out of memory");
        free(text);
    } else {
        if (f == AP_DATA_AUTO) f = guess_format(o->path);
        if (f == AP_DATA_TOKENS) {
            s->is_stream = 1;
            rv = open_shard(s, o->path, o->vocab_size, err, errlen);
        } else if (f == AP_DATA_SFT_JSONL) {
            rv = open_sft(s, o->path, o->vocab_size, o->packed, err, errlen);
        } else {
            size_t n;
            char *text = ap_read_file(o->path, MAX_DATA_BYTES, &n, err, errlen);
            s->is_stream = 1;
            rv = text ? open_text_buf(s, label, text, n, o->vocab_size, err, errlen) : -1;
            free(text);
        }
    }
    if (rv == 0 && storage_len(s) == 0) {
        snprintf(err, errlen, "%s: no samples: need at least 2 tokens", label);
        rv = -1;
    }
    if (rv < 0) {
        storage_unref(s);
        free(d);
        return -1;
    }
    d->s = s;
    d->begin = 0;
    d->end = storage_len(s);
    *out = d;
    return 0;
}

int ap_dataset_slice(ap_dataset **out, ap_dataset *d, size_t begin, size_t end, char *err, size_t errlen) {
    *out = NULL;
    if (begin > end || end > ap_dataset_len(d)) {
        snprintf(err, errlen, "%s: slice [%zu, %zu) outside its %zu samples", d->s->path, begin, end,
                 ap_dataset_len(d));
        return -1;
    }
    ap_dataset *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    v->s = d->s;
    v->s->refs++;
    v->begin = d->begin + begin;
    v->end = d->begin + end;
    *out = v;
    return 0;
}

int ap_dataset_split(ap_dataset *d, double val_fraction, ap_dataset **train, ap_dataset **val, char *err,
                     size_t errlen) {
    *train = *val = NULL;
    if (!(val_fraction >= 0 && val_fraction < 1)) {
        snprintf(err, errlen, "dataset.val_fraction must be in [0, 1), got %g", val_fraction);
        return -1;
    }
    size_t n = ap_dataset_len(d);
    size_t n_val = (size_t)llround(val_fraction * (double)n);
    if (val_fraction > 0 && n_val == 0 && n >= 2) n_val = 1;
    if (n_val >= n) n_val = 0;
    if (ap_dataset_slice(train, d, 0, n - n_val, err, errlen) < 0) return -1;
    if (n_val && ap_dataset_slice(val, d, n - n_val, n, err, errlen) < 0) {
        ap_dataset_free(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}

void ap_dataset_free(ap_dataset *d) {
    if (!d) return;
    storage_unref(d->s);
    free(d);
}

size_t ap_dataset_len(const ap_dataset *d) { return d->end - d->begin; }
int ap_dataset_seq_len(const ap_dataset *d) { return d->s->T; }
const char *ap_dataset_path(const ap_dataset *d) { return d->s->path; }

int ap_dataset_has_positions(const ap_dataset *d) { return d->s->positions != NULL; }

void ap_dataset_get(const ap_dataset *d, size_t i, int32_t *tokens, int32_t *labels, int32_t *pos) {
    const storage *s = d->s;
    size_t T = (size_t)s->T, g = d->begin + i;
    for (size_t t = 0; pos && t < T; t++) pos[t] = s->positions ? s->positions[g * T + t] : (int32_t)t;
    if (!s->is_stream) {
        memcpy(tokens, s->inputs + g * T, T * sizeof(int32_t));
        memcpy(labels, s->labels + g * T, T * sizeof(int32_t));
        return;
    }
    size_t start = g * T;
    for (size_t t = 0; t < T; t++) {
        size_t k = start + t;
        tokens[t] = k < s->n_tokens ? stream_tok(s, k) : s->pad_id;
        labels[t] = k + 1 < s->n_tokens ? stream_tok(s, k + 1) : AP_IGNORE_INDEX;
    }
}

/* ---- loader ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The order of one epoch: Fisher-Yates driven by (seed, epoch) alone. */
static void make_perm(size_t *perm, size_t n, uint64_t seed, int64_t epoch) {
    uint64_t x = seed ^ ((uint64_t)epoch * 0xD1B54A32D192ED03ull);
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(((unsigned __int128)splitmix64(&x) * i) >> 64);
        size_t t = perm[i - 1];
        perm[i - 1] = perm[j];
        perm[j] = t;
    }
}

int ap_loader_init(ap_loader *l, const ap_dataset *ds, int shuffle, uint64_t seed, char *err, size_t errlen) {
    memset(l, 0, sizeof *l);
    l->ds = ds;
    l->shuffle = shuffle;
    l->st.seed = seed;
    l->perm_epoch = -1;
    if (ap_dataset_len(ds) == 0) {
        snprintf(err, errlen, "%s: no samples to load", ap_dataset_path(ds));
        return -1;
    }
    if (shuffle && !(l->perm = malloc(ap_dataset_len(ds) * sizeof *l->perm))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

int ap_loader_set_state(ap_loader *l, const ap_loader_state *st, char *err, size_t errlen) {
    if (st->epoch < 0 || st->index < 0 || (size_t)st->index > ap_dataset_len(l->ds)) {
        snprintf(err, errlen, "data loader state (epoch %lld, index %lld) does not fit %s's %zu samples",
                 (long long)st->epoch, (long long)st->index, ap_dataset_path(l->ds), ap_dataset_len(l->ds));
        return -1;
    }
    l->st = *st;
    l->perm_epoch = -1;
    return 0;
}

int ap_loader_next(ap_loader *l, int n, int32_t *tokens, int32_t *labels, int32_t *pos, char *err,
                   size_t errlen) {
    size_t len = ap_dataset_len(l->ds), T = (size_t)ap_dataset_seq_len(l->ds);
    if (len == 0) {
        snprintf(err, errlen, "%s: no samples to load", ap_dataset_path(l->ds));
        return -1;
    }
    for (int b = 0; b < n; b++) {
        if ((size_t)l->st.index >= len) {
            l->st.epoch++;
            l->st.index = 0;
        }
        if (l->shuffle && l->perm_epoch != l->st.epoch) {
            make_perm(l->perm, len, l->st.seed, l->st.epoch);
            l->perm_epoch = l->st.epoch;
        }
        size_t i = l->shuffle ? l->perm[l->st.index] : (size_t)l->st.index;
        l->st.index++;
        ap_dataset_get(l->ds, i, tokens + (size_t)b * T, labels + (size_t)b * T, pos ? pos + (size_t)b * T : NULL);
    }
    return 0;
}

void ap_loader_free(ap_loader *l) {
    free(l->perm);
    l->perm = NULL;
}

/* ---- shard writer and `autopipe tokenize` ---- */

static void put32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

int ap_shard_write(const char *path, const int32_t *tokens, size_t n, int width, uint32_t vocab_size, char *err,
                   size_t errlen) {
    if (width != 2 && width != 4) {
        snprintf(err, errlen, "token width must be 2 or 4, got %d", width);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || (width == 2 && tokens[i] > 65535) || (vocab_size && (uint32_t)tokens[i] >= vocab_size)) {
            snprintf(err, errlen, "%s: token %d at index %zu does not fit width %d / vocab_size %u", path, tokens[i],
                     i, width, vocab_size);
            return -1;
        }
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        return -1;
    }
    unsigned char h[AP_SHARD_HEADER_BYTES] = {0};
    memcpy(h, AP_SHARD_MAGIC, 8);
    put32(h + 8, AP_SHARD_VERSION);
    put32(h + 12, (uint32_t)width);
    put32(h + 16, (uint32_t)n);
    put32(h + 20, (uint32_t)((uint64_t)n >> 32));
    put32(h + 24, vocab_size);
    int bad = fwrite(h, 1, sizeof h, f) != sizeof h;
    unsigned char buf[4096];
    size_t k = 0;
    for (size_t i = 0; i < n && !bad; i++) {
        for (int b = 0; b < width; b++) buf[k++] = (unsigned char)((uint32_t)tokens[i] >> (8 * b));
        if (k + 4 > sizeof buf || i + 1 == n) {
            bad = fwrite(buf, 1, k, f) != k;
            k = 0;
        }
    }
    if (fclose(f) != 0) bad = 1;
    if (bad) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void tokenize_usage(FILE *f) {
    fprintf(f, "usage: autopipe tokenize [--width 2|4] IN.txt OUT.bin\n"
               "       autopipe tokenize [--width 2|4] --builtin OUT.bin\n"
               "       autopipe tokenize --print-builtin\n\n"
               "Byte-tokenizes a text file (BOS, its bytes, EOS; vocab_size 259) into a token shard for\n"
               "dataset.path_or_dataset. --builtin uses the built-in training text; --print-builtin writes\n"
               "that text to stdout. Shard format: docs/train.md.\n");
}

int ap_cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {{"width", required_argument, NULL, 'w'},
                                         {"builtin", no_argument, NULL, 'b'},
                                         {"print-builtin", no_argument, NULL, 'p'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int width = 2, builtin = 0, print = 0, c;
    while ((c = getopt_long(argc, argv, "w:h", opts, NULL)) != -1) {
        switch (c) {
        case 'w':
            width = atoi(optarg);
            if (width != 2 && width != 4) {
                fprintf(stderr, "autopipe tokenize: --width must be 2 or 4, got '%s'\n", optarg);
                return AP_EXIT_USAGE;
            }
            break;
        case 'b': builtin = 1; break;
        case 'p': print = 1; break;
        case 'h': tokenize_usage(stdout); return AP_EXIT_OK;
        default: tokenize_usage(stderr); return AP_EXIT_USAGE;
        }
    }
    char err[512];
    size_t n;
    if (print) {
        char *text = ap_builtin_text(&n);
        if (!text) return AP_EXIT_FAIL;
        int bad = fwrite(text, 1, n, stdout) != n;
        free(text);
        return bad ? AP_EXIT_FAIL : AP_EXIT_OK;
    }
    if (argc - optind != (builtin ? 1 : 2)) {
        tokenize_usage(stderr);
        return AP_EXIT_USAGE;
    }
    char *text = builtin ? ap_builtin_text(&n) : ap_read_file(argv[optind], MAX_DATA_BYTES, &n, err, sizeof err);
    if (!text) {
        fprintf(stderr, "autopipe tokenize: %s\n", builtin ? "out of memory" : err);
        return AP_EXIT_FAIL;
    }
    int32_t *tok = malloc((n + 2) * sizeof *tok);
    if (!tok) {
        free(text);
        fprintf(stderr, "autopipe tokenize: out of memory\n");
        return AP_EXIT_FAIL;
    }
    size_t nt = ap_byte_encode(text, n, 1, 1, tok);
    free(text);
    const char *out = argv[argc - 1];
    int rv = ap_shard_write(out, tok, nt, width, AP_BYTE_VOCAB, err, sizeof err);
    free(tok);
    if (rv < 0) {
        fprintf(stderr, "autopipe tokenize: %s\n", err);
        return AP_EXIT_FAIL;
    }
    printf("%s: %zu tokens (vocab_size %d, %d-byte tokens)\n", out, nt, AP_BYTE_VOCAB, width);
    return AP_EXIT_OK;
}
