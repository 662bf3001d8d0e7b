/* file.h - read a whole file into memory, bounded. */
#ifndef AP_COMMON_FILE_H
#define AP_COMMON_FILE_H

#include <stddef.h>

/* The bytes of `path` (NUL-terminated, *len of them), at most `max` bytes:
 * a larger file is an error, so a hostile or mistaken path cannot exhaust
 * memory. NULL with a message naming the path on failure (free() the result). */
char *ap_read_file(const char *path, size_t max, size_t *len, char *err, size_t errlen);

#endif
