/* test-safetensors.c - the safetensors reader and writer: round trips (F32,
 * BF16, sharded), F16/BF16/I64 decoding, and hostile files that must give an
 * error naming the file and the tensor instead of a crash or an OOB read. */
#include <stdint.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint/safetensors.h"
#include "tests/tap.h"

static char dir[64], err[512];

static void path_in(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", dir, name); }

/* A file with an 8-byte length (`hlen`, or the header's length when
 * hlen == UINT64_MAX), the header text, then `data_len` bytes of data. */
static void write_file(const char *name, const char *header, uint64_t hlen, const void *data, size_t data_len) {
    char p[256];
    path_in(p, sizeof p, name);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    uint64_t h = hlen == UINT64_MAX ? strlen(header) : hlen;
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(h >> (8 * i));
    fwrite(b, 1, 8, f);
    fwrite(header, 1, strlen(header), f);
    if (data_len) {
        if (data) fwrite(data, 1, data_len, f);
        else for (size_t i = 0; i < data_len; i++) fputc(0, f);
    }
    fclose(f);
}

/* Opening `name` must fail with a message containing `needle` and the file name. */
static void open_fails(const char *name, const char *needle, const char *what) {
    char p[256];
    path_in(p, sizeof p, name);
    ap_st_model *m = (ap_st_model *)1;
    err[0] = 0;
    int rv = ap_st_open(&m, p, err, sizeof err);
    ok(rv == -1 && m == NULL && strstr(err, needle) && strstr(err, name), "hostile: %s (%s)", what, err);
}

static void hostile(const char *header, size_t data_len, const char *needle, const char *what) {
    write_file("bad.safetensors", header, UINT64_MAX, NULL, data_len);
    open_fails("bad.safetensors", needle, what);
}

static void test_conversions(void) {
    ok(ap_f32_to_bf16(1.0f) == 0x3f80 && ap_bf16_to_f32(0x3f80) == 1.0f, "bf16 1.0");
    /* 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties to even (1.0). */
    ok(ap_f32_to_bf16(1.00390625f) == 0x3f80 && ap_f32_to_bf16(1.01171875f) == 0x3f82, "bf16 round to nearest even");
    ok(ap_f32_to_bf16(nextafterf(1.00390625f, 2)) == 0x3f81, "bf16 rounds up above the halfway point");
    float nan = NAN;
    ok((ap_f32_to_bf16(nan) & 0x7f80) == 0x7f80 && (ap_f32_to_bf16(nan) & 0x7f) != 0, "bf16 NaN stays NaN");
    ok(ap_f16_to_f32(0x3c00) == 1.0f && ap_f16_to_f32(0xc000) == -2.0f && ap_f16_to_f32(0x7bff) == 65504.0f,
       "f16 normal values");
    ok(ap_f16_to_f32(0x0001) == ldexpf(1, -24) && ap_f16_to_f32(0x03ff) == ldexpf(1023, -24), "f16 subnormals");
    ok(isinf(ap_f16_to_f32(0x7c00)) && isnan(ap_f16_to_f32(0x7e00)) && signbit(ap_f16_to_f32(0x8000)),
       "f16 inf, nan, -0");
}

static void test_roundtrip(void) {
    float a[6] = {1, -2, 3.5f, 1e-20f, -0.0f, 65504}, b[5 * 3 * 2], c[1] = {42};
    for (int i = 0; i < 30; i++) b[i] = (float)i * 0.37f - 3;
    ap_st_out t[3] = {
        {"model.embed_tokens.weight", 2, {2, 3}, a},
        {"model.layers.0.mlp.up_proj.weight", 3, {5, 3, 2}, b},
        {"scalar", 0, {0}, c},
    };
    int w = ap_st_write(dir, NULL, t, 3, AP_ST_F32, 0, err, sizeof err);
    ap_st_model *m = NULL;
    int o = w ? -1 : ap_st_open(&m, dir, err, sizeof err);
    ok(w == 0 && o == 0 && ap_st_count(m) == 3, "F32: write model.safetensors, open the directory, 3 tensors %s", err);
    if (o) return;
    const ap_st_tensor *e = ap_st_find(m, "model.layers.0.mlp.up_proj.weight");
    ok(e && e->dtype == AP_ST_F32 && e->ndim == 3 && e->shape[0] == 5 && e->shape[2] == 2 && e->numel == 30 &&
       e->nbytes == 120 && e->offset % 8 == 0, "header entry: dtype, shape, 8-byte aligned data");
    float ra[6], rb[30], rc[1];
    size_t sa[2] = {2, 3}, sb[3] = {5, 3, 2};
    ok(ap_st_read_f32(m, "model.embed_tokens.weight", ra, 2, sa, err, sizeof err) == 0 && !memcmp(ra, a, sizeof a) &&
       ap_st_read_f32(m, "model.layers.0.mlp.up_proj.weight", rb, 3, sb, err, sizeof err) == 0 &&
       !memcmp(rb, b, sizeof b) && ap_st_read_f32(m, "scalar", rc, 0, NULL, err, sizeof err) == 0 && rc[0] == 42,
       "F32 read back bit for bit (incl. a 0-d tensor)");
    size_t wrong[2] = {3, 2};
    ok(ap_st_read_f32(m, "model.embed_tokens.weight", ra, 2, wrong, err, sizeof err) == -1 &&
       strstr(err, "model.embed_tokens.weight") && strstr(err, "[2, 3]") && strstr(err, "expected [3, 2]"),
       "wrong expected shape: error names tensor and both shapes (%s)", err);
    ok(ap_st_read_f32(m, "lm_head.weight", ra, 2, sa, err, sizeof err) == -1 && strstr(err, "lm_head.weight") &&
       strstr(err, "not found") && strstr(err, "model.safetensors"), "missing tensor: error names it (%s)", err);
    ap_st_close(m);

    /* BF16: values come back rounded to bf16. */
    w = ap_st_write(dir, NULL, t, 3, AP_ST_BF16, 0, err, sizeof err);
    o = w ? -1 : ap_st_open(&m, dir, err, sizeof err);
    int good = o == 0 && ap_st_find(m, "scalar")->dtype == AP_ST_BF16 &&
               ap_st_read_f32(m, "model.layers.0.mlp.up_proj.weight", rb, 3, sb, err, sizeof err) == 0;
    for (int i = 0; good && i < 30; i++) good = rb[i] == ap_bf16_to_f32(ap_f32_to_bf16(b[i]));
    ok(good, "BF16 write and read: values rounded to bf16 and widened exactly %s", err);
    if (o == 0) ap_st_close(m);

    /* Sharded: 120 + 24 + 4 bytes with a 100-byte limit: 3 files + index. */
    w = ap_st_write(dir, NULL, t, 3, AP_ST_F32, 100, err, sizeof err);
    char p[256];
    struct stat st;
    path_in(p, sizeof p, "model.safetensors.index.json");
    int has_index = stat(p, &st) == 0;
    path_in(p, sizeof p, "model-00002-of-00003.safetensors");
    int has_shard = stat(p, &st) == 0;
    o = w ? -1 : ap_st_open(&m, dir, err, sizeof err);
    good = o == 0 && ap_st_count(m) == 3 &&
           ap_st_read_f32(m, "model.layers.0.mlp.up_proj.weight", rb, 3, sb, err, sizeof err) == 0 &&
           !memcmp(rb, b, sizeof b) && ap_st_read_f32(m, "scalar", rc, 0, NULL, err, sizeof err) == 0 && rc[0] == 42;
    ok(w == 0 && has_index && has_shard && good, "sharded write (3 shards + index) reads back through the index %s",
       err);
    if (o == 0) {
        ok(strstr(ap_st_file(m, ap_st_find(m, "scalar")->file), "model-00003-of-00003.safetensors") != NULL,
           "a tensor larger than the limit gets its own shard");
        ap_st_close(m);
    }
    /* A later unsharded write removes the index, so the directory means the new file. */
    w = ap_st_write(dir, NULL, t, 1, AP_ST_F32, 0, err, sizeof err);
    o = w ? -1 : ap_st_open(&m, dir, err, sizeof err);
    ok(o == 0 && ap_st_count(m) == 1, "unsharded write replaces a stale index");
    if (o == 0) ap_st_close(m);
    ap_st_out dup[2] = {{"x", 1, {1}, c}, {"x", 1, {1}, c}};
    ok(ap_st_write(dir, "dup", dup, 2, AP_ST_F32, 0, err, sizeof err) == -1 && strstr(err, "twice"),
       "writer rejects a duplicate name");
    ok(ap_st_write(dir, "f16", t, 1, AP_ST_F16, 0, err, sizeof err) == -1 && strstr(err, "F16"),
       "writer rejects dtypes other than F32/BF16");
}

static void test_f16_and_ints(void) {
    uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x3555};
    int64_t ids[3] = {5, -100, 127};
    int64_t big[1] = {(int64_t)1 << 40};
    unsigned char data[8 + 24 + 8];
    memcpy(data, h, 8);
    memcpy(data + 8, ids, 24);
    memcpy(data + 32, big, 8);
    write_file("mixed.safetensors",
               "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,8]},"
               "\"ids\":{\"dtype\":\"I64\",\"shape\":[3],\"data_offsets\":[8,32]},"
               "\"big\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[32,40]},"
               "\"__metadata__\":{\"format\":\"pt\"}}", UINT64_MAX, data, sizeof data);
    char p[256];
    path_in(p, sizeof p, "mixed.safetensors");
    ap_st_model *m;
    int o = ap_st_open(&m, p, err, sizeof err);
    ok(o == 0 && ap_st_count(m) == 3, "open a single file with F16 and I64 tensors %s", err);
    if (o) return;
    float f[4];
    size_t s[2] = {2, 2};
    ok(ap_st_read_f32(m, "h", f, 2, s, err, sizeof err) == 0 && f[0] == 1 && f[1] == -2 &&
       f[2] == ldexpf(1, -24) && fabsf(f[3] - 0.33325195f) < 1e-8f, "F16 converted to fp32 on load");
    int32_t r[3];
    ok(ap_st_read_i32(m, "ids", r, 3, err, sizeof err) == 0 && r[0] == 5 && r[1] == -100 && r[2] == 127,
       "I64 read as int32");
    ok(ap_st_read_i32(m, "big", r, 1, err, sizeof err) == -1 && strstr(err, "32 bits"), "I64 beyond int32 rejected");
    size_t s3[1] = {3};
    ok(ap_st_read_f32(m, "ids", f, 1, s3, err, sizeof err) == -1 && strstr(err, "I64") && strstr(err, "'ids'"),
       "integer tensor read as float: error names dtype and tensor");
    ap_st_close(m);
}

static void test_hostile(void) {
    char p[256];
    path_in(p, sizeof p, "short.safetensors");
    FILE *f = fopen(p, "wb");
    if (f) { fwrite("\x10\0\0", 1, 3, f); fclose(f); }
    open_fails("short.safetensors", "truncated", "file shorter than the length prefix");
    write_file("bad.safetensors", "{}", 1000, NULL, 0);
    open_fails("bad.safetensors", "exceeds the file size", "header length beyond the file");
    write_file("bad.safetensors", "{}", (uint64_t)1 << 62, NULL, 0);
    open_fails("bad.safetensors", "exceeds the limit", "huge header length (2^62)");
    write_file("bad.safetensors", "{}", AP_ST_MAX_HEADER + 1ull, NULL, 0);
    open_fails("bad.safetensors", "exceeds the limit", "header length just above 100 MiB");
    hostile("[1, 2, 3]", 0, "not a JSON object", "non-object JSON header");
    hostile("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]", 4, "not valid JSON",
            "truncated JSON");
    hostile("\"a string\"", 0, "not a JSON object", "string header");
    hostile("{\"w\": [1, 2]}", 0, "'w'", "entry not an object");
    hostile("{\"w\": {\"dtype\": \"F33\", \"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "unknown dtype",
            "unknown dtype");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 6]}}", 6, "need 8",
            "wrong dtype size (F32 x 2 in 6 bytes)");
    hostile("{\"w\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 16, "need 8",
            "BF16 span of F32 size");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]}}", 8, "outside the data",
            "end beyond the data section (truncated data)");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [8, 4]}}", 8, "outside the data",
            "begin after end");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [1e300, 1e300]}}", 8, "data_offsets",
            "offsets beyond 2^53");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [-4, 0]}}", 8, "data_offsets",
            "negative offset");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0.5, 4.5]}}", 8, "data_offsets",
            "fractional offsets");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [\"0\", \"4\"]}}", 8, "data_offsets",
            "offsets as strings");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0]}}", 8, "data_offsets",
            "one offset");
    hostile("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
            " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, "overlaps",
            "overlapping tensors");
    hostile("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
            " \"b\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "overlaps",
            "two tensors on the same bytes");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296],"
            " \"data_offsets\": [0, 0]}}", 0, "overflows", "shape product overflow");
    hostile("{\"w\": {\"dtype\": \"F64\", \"shape\": [1125899906842624, 2048], \"data_offsets\": [0, 0]}}", 0,
            "overflows", "byte size overflow (2^50 x 2^11 x 8)");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 0]}}", 0, "shape[0]",
            "negative dimension");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": 4, \"data_offsets\": [0, 16]}}", 16, "shape", "shape not a list");
    hostile("{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4,
            "dimensions", "nine dimensions");
    hostile("{\"w\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "dtype", "missing dtype");
    hostile("{\"__metadata__\": {\"format\": 3}}", 0, "__metadata__", "metadata value not a string");
    hostile("{\"__metadata__\": [1]}", 0, "__metadata__", "metadata not an object");
    char big[AP_ST_MAX_NAME + 100];
    memset(big, 'x', sizeof big);
    memcpy(big, "{\"", 2);
    snprintf(big + AP_ST_MAX_NAME + 2, 90, "\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}");
    hostile(big, 4, "longer than", "tensor name over 511 bytes");

    /* Parsing with an exact length: bytes past it are never looked at. */
    const char *h = "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}GARBAGE";
    ap_st_tensor *t = NULL;
    int n = 0;
    ok(ap_st_parse_header(h, strlen(h) - 7, 64, 4, 0, "mem", &t, &n, err, sizeof err) == 0 && n == 1 &&
       t[0].offset == 64, "parse_header honours the length (no NUL terminator needed)");
    ap_st_free_tensors(t, n);

    /* Index files. */
    float one = 1;
    ap_st_out o1 = {"a", 1, {1}, &one}, o2 = {"b", 1, {1}, &one};
    ap_st_write(dir, "s1", &o1, 1, AP_ST_F32, 0, err, sizeof err);
    ap_st_write(dir, "s2", &o2, 1, AP_ST_F32, 0, err, sizeof err);
    ap_st_write(dir, "s3", &o1, 1, AP_ST_F32, 0, err, sizeof err);
    struct { const char *json, *needle, *what; } idx[] = {
        {"{\"weight_map\": {\"a\": \"../etc/passwd\"}}", "plain file name", "index path traversal"},
        {"{\"weight_map\": {\"a\": \"/abs.safetensors\"}}", "plain file name", "index absolute path"},
        {"{\"weight_map\": [1]}", "weight_map", "weight_map not an object"},
        {"{\"weight_map\": {\"a\": 1}}", "not a string", "weight_map value not a string"},
        {"{\"weight_map\": {\"a\": \"s2.safetensors\"}}", "no such tensor", "index names the wrong shard"},
        {"{\"weight_map\": {\"a\": \"s1.safetensors\", \"a2\": \"s3.safetensors\"}}", "appears twice",
         "same tensor in two shards"},
        {"{\"weight_map\": {\"a\": \"missing.safetensors\"}}", "missing.safetensors", "index names a missing file"},
        {"not json", "not a JSON object", "index not JSON"},
    };
    for (size_t i = 0; i < sizeof idx / sizeof *idx; i++) {
        path_in(p, sizeof p, "x.safetensors.index.json");
        f = fopen(p, "w");
        if (f) { fputs(idx[i].json, f); fclose(f); }
        ap_st_model *m = NULL;
        int rv = ap_st_open(&m, p, err, sizeof err);
        ok(rv == -1 && strstr(err, idx[i].needle), "hostile index: %s (%s)", idx[i].what, err);
        if (!rv) ap_st_close(m);
    }
    path_in(p, sizeof p, "x.safetensors.index.json");
    f = fopen(p, "w");
    if (f) { fputs("{\"weight_map\": {\"a\": \"s1.safetensors\", \"b\": \"s2.safetensors\"}}", f); fclose(f); }
    ap_st_model *m = NULL;
    ok(ap_st_open(&m, p, err, sizeof err) == 0 && ap_st_count(m) == 2, "a hand-written index over two files %s", err);
    if (m) ap_st_close(m);

    /* The file shrinks after open: the read fails cleanly. */
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = (float)i;
    ap_st_out o3 = {"v", 1, {64}, v};
    ap_st_write(dir, "shrink", &o3, 1, AP_ST_F32, 0, err, sizeof err);
    path_in(p, sizeof p, "shrink.safetensors");
    m = NULL;
    int rv = ap_st_open(&m, p, err, sizeof err);
    size_t s64[1] = {64};
    if (rv == 0 && truncate(p, 100) == 0)
        ok(ap_st_read_f32(m, "v", v, 1, s64, err, sizeof err) == -1 && strstr(err, "'v'"),
           "file truncated after open: read error, no crash (%s)", err);
    else
        ok(0, "setup of the shrinking file");
    if (m) ap_st_close(m);
    path_in(p, sizeof p, "nothing-here");
    mkdir(p, 0755);
    m = NULL;
    ok(ap_st_open(&m, p, err, sizeof err) == -1 && strstr(err, "no model.safetensors"),
       "directory without weights: clear error");
    rmdir(p);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/test-safetensors.XXXXXX");
    if (!mkdtemp(dir)) {
        ok(0, "mkdtemp");
        return tap_done();
    }
    test_conversions();
    test_roundtrip();
    test_f16_and_ints();
    test_hostile();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd)) diag("could not remove %s", dir);
    return tap_done();
}
