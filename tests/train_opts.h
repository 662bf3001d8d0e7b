/* train_opts.h - the training-loop options the loop tests start from:
 * 30 steps of batch 8 in microbatches of 2, AdamW, warmup + cosine from
 * lr0 up to lr_max and back, clipping at 1, silent. */
#ifndef AP_TESTS_TRAIN_OPTS_H
#define AP_TESTS_TRAIN_OPTS_H

#include "trainer/train.h"

static inline ap_train_opts test_train_opts(int T, double lr0, double lr_max) {
    ap_train_opts o = {0};
    o.max_steps = 30;
    o.grad_acc_steps = 1;
    o.batch_size = 8;
    o.micro_batch_size = 2;
    o.seq_len = T;
    o.dp_size = 1;
    o.lr = (ap_lr_schedule){.init_lr = lr0, .max_lr = lr_max, .min_lr = lr0, .warmup_steps = 3,
                            .decay_steps = 30, .style = AP_LR_COSINE};
    o.beta1 = 0.9;
    o.beta2 = 0.95;
    o.eps = 1e-8;
    o.weight_decay = 0.01;
    o.max_norm = 1.0;
    o.log_every_steps = 1;
    o.progress = 2;
    o.quiet = 1;
    o.is_log_rank = 1;
    return o;
}

#endif
