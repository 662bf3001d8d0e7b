/* tokenizer.h - the byte-level tokenizer: every byte is its own token
 * (ids 0..255), plus BOS, EOS and PAD, so any text file trains a model with
 * vocab_size 259 and no tokenizer files. */
#ifndef AP_TOKENIZER_H
#define AP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

enum { AP_BYTE_BOS = 256, AP_BYTE_EOS = 257, AP_BYTE_PAD = 258, AP_BYTE_VOCAB = 259 };

/* Encodes n bytes into out (capacity n + 2): BOS, the bytes, EOS when
 * add_bos/add_eos. Returns the number of tokens written. */
size_t ap_byte_encode(const char *text, size_t n, int add_bos, int add_eos, int32_t *out);

/* Decodes tokens into out (capacity n + 1, NUL-terminated). Special tokens
 * are dropped; ids outside 0..258 are an error (returns -1). Returns the
 * number of bytes written otherwise. */
long ap_byte_decode(const int32_t *tokens, size_t n, char *out);

/* Parses "1,2,3" (spaces allowed) into a malloc'd array. Returns 0 or -1
 * with a message naming the bad position. */
int ap_parse_token_list(const char *s, int32_t **out, size_t *n, char *err, size_t errlen);

#endif
