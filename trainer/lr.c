/* lr.c - warmup + decay schedule (see lr.h). */
#include "trainer/lr.h"

#include <math.h>
#include <stdio.h>

int ap_lr_check(const ap_lr_schedule *s, char *err, size_t errlen) {
    if (!(s->max_lr >= 0) || !(s->min_lr >= 0) || !(s->init_lr >= 0) || !isfinite(s->max_lr)) {
        snprintf(err, errlen, "learning rates must be finite and >= 0 (lr %g, min_lr %g)", s->max_lr, s->min_lr);
        return -1;
    }
    if (s->min_lr > s->max_lr) {
        snprintf(err, errlen, "lr_scheduler.min_lr (%g) is above optimizer.lr (%g)", s->min_lr, s->max_lr);
        return -1;
    }
    if (s->warmup_steps < 0) {
        snprintf(err, errlen, "lr_scheduler.lr_warmup_steps must be >= 0, got %ld", s->warmup_steps);
        return -1;
    }
    return 0;
}

double ap_lr_at(const ap_lr_schedule *s, long step) {
    if (s->warmup_steps > 0 && step <= s->warmup_steps)
        return s->init_lr + (s->max_lr - s->init_lr) * (double)step / (double)s->warmup_steps;
    if (s->style == AP_LR_CONSTANT) return s->max_lr;
    if (step > s->decay_steps) return s->min_lr;
    double ratio = (double)(step - s->warmup_steps) / (double)(s->decay_steps - s->warmup_steps);
    double coeff = s->style == AP_LR_LINEAR ? 1.0 - ratio : 0.5 * (cos(M_PI * ratio) + 1.0);
    return s->min_lr + coeff * (s->max_lr - s->min_lr);
}
