/* safetensors.h - read and write Hugging Face safetensors model files.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 *   {"NAME": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"k": "v"}}
 * then the data section; offsets are relative to its start. A sharded model
 * has model.safetensors.index.json {"weight_map": {"NAME": "model-00001-of-00002.safetensors"}}.
 *
 * Everything in a header is untrusted: the header length is bounded
 * (AP_ST_MAX_HEADER), names are bounded (AP_ST_MAX_NAME), every shape product
 * is overflow-checked, every byte range must match dtype size x element count,
 * lie inside the file and not overlap another tensor, all before any data is
 * read. Errors name the file and the tensor.
 *
 * Depends on nothing of autopipe's: the model hands it names, shapes and
 * float pointers. */
#ifndef AP_SAFETENSORS_H
#define AP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define AP_ST_MAX_HEADER (100u << 20) /* bytes of JSON header accepted */
#define AP_ST_MAX_NAME 512            /* bytes in a tensor name */
#define AP_ST_MAX_DIMS 8
#define AP_ST_MAX_SHARDS 4096

typedef enum {
    AP_ST_BOOL, AP_ST_U8, AP_ST_I8, AP_ST_F8_E5M2, AP_ST_F8_E4M3, AP_ST_I16, AP_ST_U16,
    AP_ST_F16, AP_ST_BF16, AP_ST_I32, AP_ST_U32, AP_ST_F32, AP_ST_F64, AP_ST_I64, AP_ST_U64,
    AP_ST_NDTYPES
} ap_st_dtype;

const char *ap_st_dtype_name(ap_st_dtype d);
size_t ap_st_dtype_size(ap_st_dtype d);

typedef struct {
    char *name;
    ap_st_dtype dtype;
    int ndim;
    uint64_t shape[AP_ST_MAX_DIMS];
    uint64_t numel;
    uint64_t offset; /* absolute byte offset in its file */
    uint64_t nbytes;
    int file;        /* index into the model's shard files */
} ap_st_tensor;

typedef struct ap_st_model ap_st_model;

/* Parses one file's header: `hdr` (len bytes, not NUL-terminated) whose data
 * section is data_len bytes long. Appends the tensors to *tensors (realloc'd;
 * *n counts them), with offsets made absolute by adding data_start and the
 * `file` index set. `fname` is used in messages. 0 or -1 with err set; on
 * error the already appended entries stay owned by the caller
 * (ap_st_free_tensors). Exposed for tests and the fuzzer. */
int ap_st_parse_header(const char *hdr, size_t len, uint64_t data_start, uint64_t data_len, int file,
                       const char *fname, ap_st_tensor **tensors, int *n, char *err, size_t errlen);
void ap_st_free_tensors(ap_st_tensor *t, int n);

/* Opens `path`: a model directory (model.safetensors.index.json if present,
 * else model.safetensors) or a single .safetensors / .index.json file.
 * Reads and checks every header; tensor data is read only on request. */
int ap_st_open(ap_st_model **out, const char *path, char *err, size_t errlen);
void ap_st_close(ap_st_model *m);

int ap_st_count(const ap_st_model *m);
const ap_st_tensor *ap_st_at(const ap_st_model *m, int i);
const ap_st_tensor *ap_st_find(const ap_st_model *m, const char *name);
/* The file a tensor lives in (for messages). */
const char *ap_st_file(const ap_st_model *m, int file);

/* Reads tensor `name` into dst as fp32 (F32, BF16 and F16 converted), after
 * checking that it exists and its shape is exactly shape[0..ndim-1]. */
int ap_st_read_f32(ap_st_model *m, const char *name, float *dst, int ndim, const size_t *shape,
                   char *err, size_t errlen);
/* Reads an integer tensor (I32 or I64, values must fit int32) of numel elements. */
int ap_st_read_i32(ap_st_model *m, const char *name, int32_t *dst, size_t numel, char *err,
                   size_t errlen);

/* One tensor to write: fp32 data in row-major order. */
typedef struct {
    const char *name;
    int ndim;
    size_t shape[AP_ST_MAX_DIMS];
    const float *data;
} ap_st_out;

/* Writes tensors into directory `dir` as `dtype` (AP_ST_F32 or AP_ST_BF16,
 * round to nearest even). If the data exceeds shard_bytes (0: never shard),
 * writes model-0000K-of-0000N.safetensors files of at most shard_bytes each
 * (a tensor larger than that gets its own file) plus
 * model.safetensors.index.json; else model.safetensors. `basename` replaces
 * "model" (NULL: "model"). Files go through a temporary name and rename. */
int ap_st_write(const char *dir, const char *basename, const ap_st_out *t, int n, ap_st_dtype dtype,
                uint64_t shard_bytes, char *err, size_t errlen);

/* fp32 <-> 16-bit float conversions (exposed for tests). */
float ap_bf16_to_f32(uint16_t h);
uint16_t ap_f32_to_bf16(float f);
float ap_f16_to_f32(uint16_t h);

#endif
