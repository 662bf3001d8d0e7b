/* ckpt_internal.h - helpers shared by the checkpoint sources (not public). */
#ifndef AP_CKPT_INTERNAL_H
#define AP_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"
const char *ap_ckpt_h5err(void);   /* innermost message of the HDF5 error stack; clears it */
void ap_ckpt_h5capture(void);     /* keep the current HDF5 error for ap_ckpt_h5err */
void ap_ckpt_h5init(void);         /* silence HDF5's own error printing */
size_t ap_ckpt_numel(int ndim, const size_t *shape);
void ap_ckpt_stage_file_name(char *buf, size_t n, int stage_id, int tp_rank, int tp);
int ap_ckpt_parse_step_name(const char *name); /* step_%08d -> step, else -1 */
int ap_ckpt_is_committed(const char *stepdir);

uint32_t ap_ckpt_fletcher32(const void *p, size_t nbytes); /* = HDF5's filter checksum */
void ap_ckpt_chunk_buffer_free(void); /* the save path's chunk buffer */
void ap_ckpt_read_buffer_free(void);  /* the load path's */

typedef struct ap_ckpt ap_ckpt;
/* ap_ckpt_open, optionally without checking that the stage files exist
 * with their sizes (verify reports each problem itself). */
int ap_ckpt_open_ex(const char *path, int check_files, ap_ckpt **out, char *err, size_t errlen);
int64_t ap_ckpt_step(const ap_ckpt *ck);
const void *ap_ckpt_manifest(const ap_ckpt *ck); /* the parsed cJSON manifest */
int64_t ap_ckpt_file_hid(ap_ckpt *ck, int fi, char *err, size_t errlen); /* HDF5 file id, opened once */

#endif
