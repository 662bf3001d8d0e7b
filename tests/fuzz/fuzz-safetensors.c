/* fuzz-safetensors.c - libFuzzer harness for the safetensors header parser
 * (and, with -DFUZZ_HF_CONFIG, the config.json parser). Not part of `make
 * check`: scripts/fuzz.sh builds it with clang -fsanitize=fuzzer,address,
 * undefined and runs it.
 *
 * Input: 8 bytes little-endian data-section length, then header bytes. On
 * success every tensor must satisfy what readers rely on: its bytes inside
 * the data section, nbytes = numel x dtype size = product(shape) x size,
 * a bounded name, no overlap with another tensor; a violation aborts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint/safetensors.h"
#include "trainer/hf_config.h"

static int by_offset(const void *a, const void *b) {
    const ap_st_tensor *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[512];
#ifdef FUZZ_HF_CONFIG
    ap_model_config c;
    if (ap_hf_config_parse(&c, (const char *)data, size, "config.json", err, sizeof err) == 0) {
        if (ap_model_config_check(&c, "config.json", err, sizeof err)) abort();
        char *j = ap_hf_config_to_json(&c, err, sizeof err);
        ap_model_config d;
        if (j && ap_hf_config_parse(&d, j, strlen(j), "roundtrip", err, sizeof err)) abort();
        free(j);
    }
    return 0;
#else
    if (size < 8) return 0;
    uint64_t data_len = 0;
    for (int i = 7; i >= 0; i--) data_len = data_len << 8 | data[i];
    const char *hdr = (const char *)data + 8;
    size_t hlen = size - 8;
    uint64_t start = 8 + hlen;
    ap_st_tensor *t = NULL;
    int n = 0;
    int rv = ap_st_parse_header(hdr, hlen, start, data_len, 0, "fuzz", &t, &n, err, sizeof err);
    if (rv == 0) {
        for (int i = 0; i < n; i++) {
            const ap_st_tensor *e = &t[i];
            if (!e->name || strlen(e->name) >= AP_ST_MAX_NAME || e->ndim < 0 || e->ndim > AP_ST_MAX_DIMS ||
                (unsigned)e->dtype >= AP_ST_NDTYPES)
                abort();
            uint64_t numel = 1;
            for (int d = 0; d < e->ndim; d++) numel *= e->shape[d];
            if (numel != e->numel || e->nbytes != numel * ap_st_dtype_size(e->dtype)) abort();
            if (e->offset < start || e->offset - start > data_len || e->nbytes > data_len - (e->offset - start))
                abort();
        }
        ap_st_tensor *s = malloc((size_t)n * sizeof *s + 1);
        memcpy(s, t, (size_t)n * sizeof *s);
        qsort(s, (size_t)n, sizeof *s, by_offset);
        uint64_t end = 0;
        for (int i = 0; i < n; i++) {
            if (!s[i].nbytes) continue;
            if (s[i].offset < end) abort();
            end = s[i].offset + s[i].nbytes;
        }
        free(s);
    } else if (!strstr(err, "fuzz")) {
        abort(); /* every error names the file */
    }
    ap_st_free_tensors(t, n);
    return 0;
#endif
}
