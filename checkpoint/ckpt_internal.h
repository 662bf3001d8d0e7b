/* ckpt_internal.h - helpers shared by the checkpoint sources (not public). */
#ifndef AP_CKPT_INTERNAL_H
#define AP_CKPT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

void ap_ckpt_seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *ap_ckpt_h5err(void);   /* innermost message of the HDF5 error stack; clears it */
void ap_ckpt_h5init(void);         /* silence HDF5's own error printing */
size_t ap_ckpt_numel(int ndim, const size_t *shape);
void ap_ckpt_stage_file_name(char *buf, size_t n, int stage_id, int tp_rank, int tp);
int ap_ckpt_parse_step_name(const char *name); /* step_%08d -> step, else -1 */
int ap_ckpt_is_committed(const char *stepdir);

#endif
