/* lr.h - learning-rate schedule with NeMo's OptimizerParamScheduler
 * semantics: linear warmup from init_lr to max_lr over warmup_steps
 * (inclusive: step == warmup_steps gives max_lr), then cosine, linear or
 * constant decay to min_lr at decay_steps, min_lr after it.
 * `step` counts optimizer steps already taken: the first update uses
 * ap_lr_at(s, 0) (init_lr when there is a warmup). */
#ifndef AP_LR_H
#define AP_LR_H

#include <stddef.h>

enum ap_lr_decay { AP_LR_COSINE, AP_LR_LINEAR, AP_LR_CONSTANT };

typedef struct {
    double init_lr, max_lr, min_lr;
    long warmup_steps, decay_steps;
    enum ap_lr_decay style;
} ap_lr_schedule;

/* Checks the schedule; 0 or -1 with a message. */
int ap_lr_check(const ap_lr_schedule *s, char *err, size_t errlen);
double ap_lr_at(const ap_lr_schedule *s, long step);

#endif
