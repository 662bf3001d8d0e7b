/* metrics.h - what a training run reports: one log line per step (or every
 * log_every_steps), a progress bar when stdout is a terminal, and a JSONL
 * metrics file with one object per step and per validation. */
#ifndef AP_METRICS_H
#define AP_METRICS_H

#include <stddef.h>
#include <stdio.h>

/* fp32 FMA peak of one core of the reference machine (Sapphire Rapids,
 * AVX-512, ~3.7 GHz; docs/train.md): MFU's denominator is this times the
 * thread count unless AUTOPIPE_PEAK_GFLOPS gives the machine's peak. */
#define AP_PEAK_GFLOPS_PER_CORE 235.0

typedef struct {
    long step, max_steps;     /* step counts from 1 in logs */
    double loss, grad_norm, lr;
    double tokens_per_s, mfu; /* mfu in [0, 1]; < 0 when unknown */
    double step_time_s;
    double peak_rss_mib;
    long label_tokens;        /* label tokens of the step (the loss's denominator) */
    double bubble;            /* measured pipeline bubble fraction; < 0 when not measured */
} ap_step_metrics;

typedef struct {
    FILE *jsonl;
    FILE *out;      /* log lines (stdout) */
    int progress;   /* draw the bar */
    int bar_drawn;
    long log_every;
} ap_metrics;

/* progress: 0 auto (when `out` is a terminal), 1 on, 2 off (config's enum order). */
int ap_metrics_open(ap_metrics *m, FILE *out, const char *jsonl_path, int progress, long log_every, char *err,
                    size_t errlen);
void ap_metrics_step(ap_metrics *m, const ap_step_metrics *s);
void ap_metrics_val(ap_metrics *m, long step, double val_loss, long n_tokens);
/* A free-form line (notes, errors) that does not garble the bar. */
void ap_metrics_note(ap_metrics *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ap_metrics_close(ap_metrics *m);

/* Peak resident set size of this process in MiB (getrusage). */
double ap_peak_rss_mib(void);
/* Peak FLOP/s for MFU with `threads` threads (AUTOPIPE_PEAK_GFLOPS or the per-core constant). */
double ap_peak_flops(int threads);

#endif
