/* ckpt.h - sharded per-stage HDF5 checkpoints: atomic save, load with
 * resharding, and the `autopipe ckpt` inspection command.
 *
 * The library sees a model only as a table of named tensors (HF FQNs with
 * global layer indices) with their AdamW moments; it never includes trainer
 * headers. Layout (docs/checkpoint.md):
 *
 *   checkpoint_dir/
 *     latest -> step_00001000          symlink, repointed atomically (rename)
 *     step_00001000/
 *       stage_000.h5 ... stage_NNN.h5  one per pipeline stage (tp > 1: stage_%03d_tp%02d.h5)
 *       manifest.json                  files, tensors in each, shapes, crc32s, state
 *       COMMITTED                      written last; without it the directory is never loaded
 *
 * Save: every rank of `comm` calls ap_ckpt_save(); each rank passes the stages
 * it writes (dp rank 0 of the stage's ranks; others pass none). Load: every
 * rank asks for the tensors it holds, by FQN, whatever layout wrote them. */
#ifndef AP_CKPT_H
#define AP_CKPT_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#define AP_CKPT_FORMAT_VERSION 1
#define AP_CKPT_MAX_DATA_POS 16

/* One named tensor: fp32 parameter and its AdamW moments (contiguous,
 * row-major). exp_avg/exp_avg_sq may be NULL: nothing saved (save) or
 * moments not wanted (load). On load the buffers are filled in place. */
typedef struct {
    const char *name; /* HF FQN, global layer index: model.layers.17.mlp.down_proj.weight */
    int ndim;         /* 1..4 */
    size_t shape[4];
    float *param;
    float *exp_avg;
    float *exp_avg_sq;
} ap_ckpt_tensor;

/* Training state common to the whole checkpoint. Strings and the RNG bytes
 * are borrowed on save; on load they are allocated (ap_ckpt_state_free). */
typedef struct {
    int format_version;         /* set by save; read back on load */
    int64_t step;               /* optimizer steps done */
    int64_t tokens_consumed;
    int64_t samples_consumed;
    uint64_t data_pos[AP_CKPT_MAX_DATA_POS]; /* data-loader position, opaque */
    int n_data_pos;
    unsigned char *rng_state;   /* opaque bytes */
    size_t rng_len;
    int64_t lr_step;            /* LR-schedule position */
    /* topology of the writing run */
    int pp, dp, tp;
    int stages_per_rank;
    char schedule[64];
    char *config_yaml;          /* merged run config (YAML text), may be NULL */
    char *model_config_json;    /* the model's config.json text, may be NULL */
} ap_ckpt_state;

/* One pipeline stage (per tp rank) this rank writes. */
typedef struct {
    int stage_id;
    int tp_rank;                   /* 0 until tensor parallelism exists */
    int first_layer, last_layer;   /* global layer range [first, last) */
    const ap_ckpt_tensor *tensors;
    int n_tensors;
} ap_ckpt_stage;

/* Where a save is; a progress callback sees each phase (logging; the
 * crash tests stop a process at a chosen phase and kill it). */
enum ap_ckpt_phase {
    AP_CKPT_PHASE_TENSOR,       /* one tensor of a stage file written (detail: FQN) */
    AP_CKPT_PHASE_FILE,         /* one stage file renamed into place (detail: file) */
    AP_CKPT_PHASE_FILES_DONE,   /* rank 0: all stage files exist, manifest next */
    AP_CKPT_PHASE_MANIFEST,     /* rank 0: manifest in place, marker next */
    AP_CKPT_PHASE_COMMITTED,    /* rank 0: marker in place, `latest` next */
    AP_CKPT_PHASE_DONE,         /* rank 0: latest repointed, old checkpoints pruned */
};

typedef struct {
    int keep_last;  /* > 0: keep this many committed checkpoints (after committing the new one) */
    void (*progress)(void *ctx, enum ap_ckpt_phase phase, const char *detail);
    void *progress_ctx;
} ap_ckpt_save_opts;

/* Collective over comm. Returns 0 (also when step_N is already committed:
 * nothing rewritten), negative on error on any rank (message in err, the
 * same verdict on every rank). The previous checkpoints stay loadable
 * whatever happens. */
int ap_ckpt_save(const char *checkpoint_dir, const ap_ckpt_state *st, const ap_ckpt_stage *stages,
                 int n_stages, const ap_ckpt_save_opts *opts, MPI_Comm comm, char *err, size_t errlen);

/* An opened committed checkpoint (manifest parsed, files present). */
typedef struct ap_ckpt ap_ckpt;

/* path: a step directory, checkpoint_dir/latest, or checkpoint_dir (uses
 * its `latest`). Checks the commit marker, the manifest and that each stage
 * file exists with its recorded size. Reads nothing big; modifies nothing. */
int ap_ckpt_open(const char *path, ap_ckpt **out, char *err, size_t errlen);
void ap_ckpt_close(ap_ckpt *ck);

/* The state recorded in the manifest (allocates; free with ap_ckpt_state_free). */
int ap_ckpt_get_state(const ap_ckpt *ck, ap_ckpt_state *st, char *err, size_t errlen);
void ap_ckpt_state_free(ap_ckpt_state *st);

/* 0 when the checkpoint's config.json agrees with `config_json` on every key
 * that shapes tensors (model_type, sizes, layers, heads, tying); else an
 * error naming the key and both values. */
int ap_ckpt_check_model_config(const ap_ckpt *ck, const char *config_json, char *err, size_t errlen);

/* Fill the given tensors from whichever stage files hold them: shapes must
 * match exactly; a tensor not in the checkpoint, a shape mismatch, a
 * checksum mismatch or an HDF5 read error (fletcher32) is an error naming
 * the tensor and the file. Wanted moments that were not saved are an error. */
int ap_ckpt_load_tensors(ap_ckpt *ck, ap_ckpt_tensor *tensors, int n, char *err, size_t errlen);

/* Collective convenience for the trainer: open `path`, check the model
 * config (when config_json is not NULL), read the state and the tensors.
 * Every rank gets the same verdict; err names the first failing rank. */
int ap_ckpt_load(const char *path, const char *config_json, ap_ckpt_state *st, ap_ckpt_tensor *tensors,
                 int n, MPI_Comm comm, char *err, size_t errlen);

/* 1 if checkpoint_dir holds a committed checkpoint to resume from
 * (resume: auto), 0 if none, negative on error. */
int ap_ckpt_find_latest(const char *checkpoint_dir, char *path, size_t pathlen, char *err, size_t errlen);

/* For `autopipe eval/generate --model DIR`: 1 if path is (or holds) a
 * committed checkpoint; the config.json text it recorded (malloc'd; NULL
 * with err set when there is none). */
int ap_ckpt_is_checkpoint(const char *path);
char *ap_ckpt_read_config_json(const char *path, char *err, size_t errlen);

/* ---- read-only views for tools (autopipe ckpt) ---- */
typedef struct {
    const char *name;
    int ndim;
    size_t shape[4];
    size_t numel;
    int has_moments;
    uint32_t crc[3]; /* crc32 of param, exp_avg, exp_avg_sq raw little-endian bytes */
    int file;        /* index into the files */
} ap_ckpt_entry;

typedef struct {
    const char *name;   /* stage_000.h5 */
    int stage_id, tp_rank;
    int first_layer, last_layer;
    uint64_t size;      /* bytes on disk */
    int n_tensors;
} ap_ckpt_file;

const char *ap_ckpt_dir(const ap_ckpt *ck); /* the resolved step directory */
int ap_ckpt_n_files(const ap_ckpt *ck);
const ap_ckpt_file *ap_ckpt_file_at(const ap_ckpt *ck, int i);
int ap_ckpt_n_entries(const ap_ckpt *ck);
const ap_ckpt_entry *ap_ckpt_entry_at(const ap_ckpt *ck, int i);
const ap_ckpt_entry *ap_ckpt_find(const ap_ckpt *ck, const char *fqn);
/* Read one entry's arrays (any may be NULL) of e->numel floats each. */
int ap_ckpt_read_entry(ap_ckpt *ck, const ap_ckpt_entry *e, float *param, float *exp_avg, float *exp_avg_sq,
                       char *err, size_t errlen);

/* crc32 (zlib) of n bytes. */
uint32_t ap_ckpt_crc32(const void *p, size_t n);

/* `autopipe ckpt`: info, ls, verify, diff, export. */
int ap_cmd_ckpt(int argc, char **argv);

#endif
