/* test-lr.c - warmup + cosine/linear/constant schedule, NeMo semantics. */
#include "tests/tap.h"
#include "trainer/lr.h"

static int near(double a, double b) { return fabs(a - b) <= 1e-12 * (1 + fabs(b)); }

int main(void) {
    char err[256];
    ap_lr_schedule s = {.init_lr = 1e-4, .max_lr = 1e-3, .min_lr = 1e-5, .warmup_steps = 10, .decay_steps = 110,
                        .style = AP_LR_COSINE};
    ok(ap_lr_check(&s, err, sizeof err) == 0, "valid schedule accepted");
    ok(near(ap_lr_at(&s, 0), 1e-4), "step 0 is init_lr");
    ok(near(ap_lr_at(&s, 5), 1e-4 + 0.5 * 9e-4), "warmup is linear (half way)");
    ok(near(ap_lr_at(&s, 10), 1e-3), "end of warmup (inclusive) is max_lr");
    ok(near(ap_lr_at(&s, 60), 1e-5 + 0.5 * (1e-3 - 1e-5)), "cosine midpoint is the mean of max and min");
    ok(near(ap_lr_at(&s, 110), 1e-5), "decay end is min_lr");
    ok(near(ap_lr_at(&s, 500), 1e-5), "after decay: min_lr");
    int mono = 1;
    for (long k = 11; k <= 110; k++) mono &= ap_lr_at(&s, k) <= ap_lr_at(&s, k - 1);
    ok(mono, "cosine decay is monotone");
    double c35 = 1e-5 + 0.5 * (cos(M_PI * 0.25) + 1) * (1e-3 - 1e-5);
    ok(near(ap_lr_at(&s, 35), c35), "cosine at a quarter of the decay");

    s.style = AP_LR_LINEAR;
    ok(near(ap_lr_at(&s, 35), 1e-5 + 0.75 * (1e-3 - 1e-5)), "linear at a quarter of the decay");
    ok(near(ap_lr_at(&s, 110), 1e-5), "linear ends at min_lr");
    s.style = AP_LR_CONSTANT;
    ok(near(ap_lr_at(&s, 3), 1e-4 + 0.3 * 9e-4) && near(ap_lr_at(&s, 90), 1e-3) && near(ap_lr_at(&s, 1000), 1e-3),
       "constant: warmup then max_lr forever");
    s.style = AP_LR_COSINE;
    s.warmup_steps = 0;
    ok(near(ap_lr_at(&s, 0), 1e-3), "no warmup: step 0 is max_lr");
    s.warmup_steps = 200; /* run shorter than its warmup: never divides by zero */
    ok(near(ap_lr_at(&s, 100), 1e-4 + 0.5 * 9e-4) && isfinite(ap_lr_at(&s, 200)) && near(ap_lr_at(&s, 201), 1e-5),
       "warmup longer than the decay stays finite");

    ap_lr_schedule bad = s;
    bad.min_lr = 1;
    ok(ap_lr_check(&bad, err, sizeof err) < 0 && strstr(err, "min_lr"), "min_lr above lr rejected: %s", err);
    bad = s;
    bad.warmup_steps = -1;
    ok(ap_lr_check(&bad, err, sizeof err) < 0 && strstr(err, "warmup"), "negative warmup rejected");
    return tap_done();
}
