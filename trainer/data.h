/* data.h - training data: token shards, SFT JSONL and plain text, cut into
 * samples of seq_len, split into train/validation, shuffled with a seed.
 *
 * A sample is (tokens, labels), both seq_len long, with labels already
 * shifted: labels[t] is the token that follows tokens[t], -100 where no loss
 * is taken (padding, SFT prompts). The stage's loss sums over labels != -100.
 *
 * Token shard format (`.bin`, little-endian), written by `autopipe tokenize`:
 *   offset  0: char[8]  magic "APTOKENS"
 *   offset  8: uint32   version (1)
 *   offset 12: uint32   token width in bytes (2: uint16, 4: uint32)
 *   offset 16: uint64   token count N
 *   offset 24: uint32   vocab size the tokens were made for (0: unknown)
 *   offset 28: uint32   reserved (0)
 *   offset 32: N tokens of the given width
 * Token streams (shards and text) are cut into consecutive windows of
 * seq_len + 1 tokens overlapping by one; the last partial window is padded. */
#ifndef AP_DATA_H
#define AP_DATA_H

#include <stddef.h>
#include <stdint.h>

#define AP_IGNORE_INDEX (-100)
#define AP_SHARD_MAGIC "APTOKENS"
#define AP_SHARD_VERSION 1u
#define AP_SHARD_HEADER_BYTES 32

enum ap_data_format { AP_DATA_AUTO, AP_DATA_TEXT, AP_DATA_TOKENS, AP_DATA_SFT_JSONL };

typedef struct {
    const char *path;           /* NULL: the built-in training text */
    enum ap_data_format format; /* AUTO: .bin tokens, .jsonl SFT, anything else text */
    int seq_len;
    int vocab_size;             /* every token id must be below it */
    int pad_id;                 /* input id used for padding (its label is -100) */
    int packed;                 /* SFT: pack examples back to back instead of one per sample */
} ap_data_opts;

typedef struct ap_dataset ap_dataset;

/* Opens and validates a data file; every token id is checked against
 * vocab_size. Errors name the file and the position (byte offset, token
 * index or line). */
int ap_dataset_open(ap_dataset **out, const ap_data_opts *o, char *err, size_t errlen);
/* Samples [begin, end) of d as a new dataset sharing d's storage. */
int ap_dataset_slice(ap_dataset **out, ap_dataset *d, size_t begin, size_t end, char *err, size_t errlen);
/* Splits d into its first part and its last val_fraction of samples (at
 * least one when val_fraction > 0 and d has two samples or more). */
int ap_dataset_split(ap_dataset *d, double val_fraction, ap_dataset **train, ap_dataset **val, char *err,
                     size_t errlen);
void ap_dataset_free(ap_dataset *d);
size_t ap_dataset_len(const ap_dataset *d);
int ap_dataset_seq_len(const ap_dataset *d);
const char *ap_dataset_path(const ap_dataset *d);
/* Copies sample i (0 <= i < len) into tokens (T) and labels (T), and, when
 * pos is not NULL, its position ids (T): 0..T-1, or for packed SFT ids that
 * restart at each example (HF's position_ids), which keep attention within
 * the example. */
void ap_dataset_get(const ap_dataset *d, size_t i, int32_t *tokens, int32_t *labels, int32_t *pos);
/* 1 when the samples hold several examples (packed SFT): train with positions. */
int ap_dataset_has_positions(const ap_dataset *d);

/* The loader's position: all a checkpoint needs to resume the exact order.
 * The epoch's permutation is derived from (seed, epoch). */
typedef struct {
    uint64_t seed;
    int64_t epoch;
    int64_t index; /* next sample within the epoch's order */
} ap_loader_state;

typedef struct {
    const ap_dataset *ds;
    int shuffle;
    ap_loader_state st;
    size_t *perm;       /* order of the current epoch (NULL when not shuffled) */
    int64_t perm_epoch; /* epoch perm was made for */
} ap_loader;

int ap_loader_init(ap_loader *l, const ap_dataset *ds, int shuffle, uint64_t seed, char *err, size_t errlen);
/* Restores a saved position (checkpoint resume). */
int ap_loader_set_state(ap_loader *l, const ap_loader_state *st, char *err, size_t errlen);
/* Fills n samples: tokens (n, T), labels (n, T), and pos (n, T) unless NULL.
 * Wraps to the next epoch (with a new order) when the data runs out. */
int ap_loader_next(ap_loader *l, int n, int32_t *tokens, int32_t *labels, int32_t *pos, char *err,
                   size_t errlen);
void ap_loader_free(ap_loader *l);

/* Writes a token shard. width 2 needs every token < 65536. */
int ap_shard_write(const char *path, const int32_t *tokens, size_t n, int width, uint32_t vocab_size, char *err,
                   size_t errlen);

/* The built-in training text (deterministic, ~200 KB, English-like short
 * stories and arithmetic facts): malloc'd, NUL-terminated, length in *n. */
char *ap_builtin_text(size_t *n);

/* `autopipe tokenize IN.txt OUT.bin`: byte-tokenizes a text file into a shard. */
int ap_cmd_tokenize(int argc, char **argv);

#endif
