/* metrics.c - log lines, progress bar, JSONL metrics (see metrics.h). */
#include "trainer/metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

double ap_peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

double ap_peak_flops(int threads) {
    const char *e = getenv("AUTOPIPE_PEAK_GFLOPS");
    double g = e ? strtod(e, NULL) : 0;
    if (!(g > 0)) g = AP_PEAK_GFLOPS_PER_CORE * (threads > 0 ? threads : 1);
    return g * 1e9;
}

int ap_metrics_open(ap_metrics *m, FILE *out, const char *jsonl_path, int progress, long log_every, char *err,
                    size_t errlen) {
    memset(m, 0, sizeof *m);
    m->out = out;
    m->log_every = log_every > 0 ? log_every : 1;
    m->progress = progress == 1 || (progress == 0 && isatty(fileno(out)));
    if (jsonl_path && !(m->jsonl = fopen(jsonl_path, "w"))) {
        snprintf(err, errlen, "logging.metrics_file %s: cannot create: %s", jsonl_path, strerror(errno));
        return -1;
    }
    return 0;
}

static void clear_bar(ap_metrics *m) {
    if (m->bar_drawn) fputs("\r\033[K", m->out);
    m->bar_drawn = 0;
}

static void draw_bar(ap_metrics *m, const ap_step_metrics *s) {
    const int W = 30;
    long max = s->max_steps > 0 ? s->max_steps : 1;
    int fill = (int)(W * s->step / max);
    if (fill > W) fill = W;
    double eta = s->step_time_s * (double)(s->max_steps - s->step);
    fputs("\r\033[K[", m->out);
    for (int i = 0; i < W; i++) fputc(i < fill ? '#' : '.', m->out);
    fprintf(m->out, "] %ld/%ld loss %.4f ETA %dm%02ds", s->step, s->max_steps, s->loss, (int)(eta / 60),
            (int)fmod(eta, 60));
    fflush(m->out);
    m->bar_drawn = 1;
}

/* JSON has no NaN/Inf: write null for them. */
static void jnum(FILE *f, const char *key, double v, int last) {
    if (isfinite(v)) fprintf(f, "\"%s\": %.9g%s", key, v, last ? "" : ", ");
    else fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

void ap_metrics_step(ap_metrics *m, const ap_step_metrics *s) {
    if (s->step % m->log_every == 0 || s->step == s->max_steps || !isfinite(s->loss)) {
        clear_bar(m);
        char mfu[32];
        if (s->mfu >= 0) snprintf(mfu, sizeof mfu, "%.2f%%", 100 * s->mfu);
        else snprintf(mfu, sizeof mfu, "n/a");
        char bub[32] = "";
        if (s->bubble >= 0) snprintf(bub, sizeof bub, " | bubble %.1f%%", 100 * s->bubble);
        fprintf(m->out, "step %ld/%ld | loss %.4f | grad_norm %.4f | lr %.3e | %.0f tok/s | MFU %s | peak RSS %.0f MiB%s\n",
                s->step, s->max_steps, s->loss, s->grad_norm, s->lr, s->tokens_per_s, mfu, s->peak_rss_mib, bub);
    }
    if (m->jsonl) {
        fprintf(m->jsonl, "{\"step\": %ld, ", s->step);
        jnum(m->jsonl, "loss", s->loss, 0);
        jnum(m->jsonl, "grad_norm", s->grad_norm, 0);
        jnum(m->jsonl, "lr", s->lr, 0);
        jnum(m->jsonl, "tokens_per_s", s->tokens_per_s, 0);
        jnum(m->jsonl, "mfu", s->mfu, 0);
        jnum(m->jsonl, "step_time_s", s->step_time_s, 0);
        fprintf(m->jsonl, "\"label_tokens\": %ld, ", s->label_tokens);
        if (s->bubble >= 0) jnum(m->jsonl, "bubble", s->bubble, 0);
        jnum(m->jsonl, "peak_rss_mib", s->peak_rss_mib, 1);
        fputs("}\n", m->jsonl);
        fflush(m->jsonl);
    }
    if (m->progress) draw_bar(m, s);
    else fflush(m->out);
}

void ap_metrics_val(ap_metrics *m, long step, double val_loss, long n_tokens) {
    clear_bar(m);
    fprintf(m->out, "step %ld | val_loss %.4f (%ld tokens)\n", step, val_loss, n_tokens);
    fflush(m->out);
    if (m->jsonl) {
        fprintf(m->jsonl, "{\"step\": %ld, ", step);
        jnum(m->jsonl, "val_loss", val_loss, 0);
        fprintf(m->jsonl, "\"val_tokens\": %ld}\n", n_tokens);
        fflush(m->jsonl);
    }
}

void ap_metrics_note(ap_metrics *m, const char *fmt, ...) {
    clear_bar(m);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(m->out, fmt, ap);
    va_end(ap);
    fputc('\n', m->out);
    fflush(m->out);
}

void ap_metrics_close(ap_metrics *m) {
    clear_bar(m);
    if (m->jsonl) fclose(m->jsonl);
    m->jsonl = NULL;
}
