/* render.c - draw a simulated schedule: text timeline, PNG and SVG (cairo). */
#include "trainer/schedule/schedule.h"

#include <cairo-svg.h>
#include <cairo.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int local_chunk(const ap_schedule *s, int stage) {
    int k = 0;
    for (int st = 0; st < stage; st++) k += s->stage_to_rank[st] == s->stage_to_rank[stage];
    return k;
}

static int label_of(const ap_schedule *s, ap_action a, char *buf, size_t len) {
    if (s->stages_per_rank > 1)
        return snprintf(buf, len, "%d%s%d", a.stage, ap_act_type_name(a.type), a.mb);
    return snprintf(buf, len, "%s%d", ap_act_type_name(a.type), a.mb);
}

void ap_schedule_render_text(const ap_schedule *s, const ap_sched_sim *r, FILE *f) {
    double unit = 0;
    int w = 2;
    for (int e = 0; e < r->n_ev; e++) {
        double d = r->ev[e].end - r->ev[e].start;
        if (d > 1e-12 && (unit == 0 || d < unit)) unit = d;
        char l[64];
        int n = label_of(s, r->ev[e].a, l, sizeof l);
        if (n + 1 > w) w = n + 1;
    }
    if (unit == 0) unit = 1;
    if (r->makespan / unit > 400) unit = r->makespan / 400; /* keep lines printable */
    int cols = (int)ceil(r->makespan / unit - 1e-9);
    char *line = malloc((size_t)cols * (size_t)w + 1);
    if (!line) return;
    fprintf(f, "schedule %s: pp %d, %d stages (%d per rank, %s placement), %d microbatches%s%s\n",
            ap_schedule_kind_name(s->kind), s->pp, s->num_stages, s->stages_per_rank,
            s->style == AP_STYLE_V ? "v" : s->style == AP_STYLE_LOOP ? "loop" : "custom", s->microbatches,
            s->lowered ? " (with send/recv)" : "", s->forward_only ? ", forward only" : "");
    fprintf(f, "one column = %g time units; '.' = idle\n", unit);
    for (int rk = 0; rk < s->pp; rk++) {
        memset(line, '.', (size_t)cols * (size_t)w);
        line[(size_t)cols * (size_t)w] = '\0';
        for (int e = 0; e < r->n_ev; e++) {
            if (r->ev[e].rank != rk) continue;
            int c0 = (int)floor(r->ev[e].start / unit + 1e-9);
            int c1 = (int)ceil(r->ev[e].end / unit - 1e-9);
            if (c1 <= c0) c1 = c0 + 1;
            if (c1 > cols) c1 = cols;
            if (c0 >= cols) continue;
            size_t a = (size_t)c0 * (size_t)w, b = (size_t)c1 * (size_t)w;
            memset(line + a, ' ', b - a);
            char l[64];
            int n = label_of(s, r->ev[e].a, l, sizeof l);
            if ((size_t)n > b - a - 1) n = (int)(b - a - 1);
            memcpy(line + a, l, (size_t)(n > 0 ? n : 0));
        }
        fprintf(f, "rank %-3d|%s|\n", rk, line);
    }
    free(line);
    fprintf(f, "makespan %g, mean bubble %.1f%%\n", r->makespan, 100 * r->bubble_mean);
    for (int rk = 0; rk < s->pp; rk++)
        fprintf(f, "rank %-3d busy %-8g bubble %5.1f%%  peak live activations %d\n", rk, r->busy[rk],
                100 * r->bubble[rk], r->peak_live[rk]);
}

int ap_schedule_write_trace(const ap_schedule *s, const ap_sched_sim *r, FILE *f) {
    static const char *const cname[AP_ACT_NTYPES] = {"", "thread_state_running", "good", "yellow",
                                                     "olive", "", "", "", ""};
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [");
    for (int rk = 0; rk < s->pp; rk++)
        fprintf(f, "%s\n{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": %d, "
                   "\"args\": {\"name\": \"rank %d\"}}", rk ? "," : "", rk, rk);
    for (int e = 0; e < r->n_ev; e++) {
        const ap_sched_event *ev = &r->ev[e];
        char l[64];
        ap_action_format(l, sizeof l, ev->a);
        fprintf(f, ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"pid\": 0, \"tid\": %d, "
                   "\"ts\": %.3f, \"dur\": %.3f, \"cname\": \"%s\", \"args\": {\"stage\": %d, "
                   "\"microbatch\": %d}}",
                l, ap_act_type_name(ev->a.type), ev->rank, ev->start * 1000, (ev->end - ev->start) * 1000,
                cname[ev->a.type], ev->a.stage, ev->a.mb);
    }
    return fprintf(f, "\n]}\n") < 0 ? -1 : 0;
}

/* Tableau colours: F blue, B green, I orange, W purple. */
static void type_rgb(int type, double rgb[3]) {
    static const double c[AP_ACT_NTYPES][3] = {
        {0.8, 0.8, 0.8}, {0.30, 0.47, 0.66}, {0.35, 0.63, 0.31}, {0.95, 0.56, 0.17}, {0.69, 0.48, 0.63},
        {0.5, 0.5, 0.5}, {0.5, 0.5, 0.5},    {0.5, 0.5, 0.5},    {0.5, 0.5, 0.5},
    };
    memcpy(rgb, c[type >= 0 && type < AP_ACT_NTYPES ? type : 0], sizeof c[0]);
}

static void draw(cairo_t *cr, const ap_schedule *s, const ap_sched_sim *r, double left, double top,
                 double row_h, double scale, double W) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
    cairo_set_font_size(cr, 15);
    cairo_set_source_rgb(cr, 0, 0, 0);
    char t[256];
    snprintf(t, sizeof t, "%s: pp %d, %d stages (%d/rank, %s), %d microbatches - makespan %g, bubble %.1f%%",
             ap_schedule_kind_name(s->kind), s->pp, s->num_stages, s->stages_per_rank,
             s->style == AP_STYLE_V ? "v" : s->style == AP_STYLE_LOOP ? "loop" : "custom", s->microbatches,
             r->makespan, 100 * r->bubble_mean);
    cairo_move_to(cr, 10, 22);
    cairo_show_text(cr, t);
    /* legend */
    cairo_set_font_size(cr, 12);
    const int types[4] = {AP_ACT_F, AP_ACT_B, AP_ACT_I, AP_ACT_W};
    const char *names[4] = {"F forward", "B backward", "I input grad", "W weight grad"};
    double lx = 10;
    for (int k = 0; k < 4; k++) {
        double rgb[3];
        type_rgb(types[k], rgb);
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, lx, 32, 14, 14);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_move_to(cr, lx + 18, 44);
        cairo_show_text(cr, names[k]);
        lx += 135;
    }
    cairo_set_source_rgb(cr, 0.45, 0.45, 0.45);
    cairo_move_to(cr, lx + 10, 44);
    cairo_show_text(cr, s->stages_per_rank > 1 ? "grey = idle; label stage:microbatch, lighter = later stage"
                                               : "grey = idle; label = microbatch");
    double plot_w = r->makespan * scale;
    for (int rk = 0; rk < s->pp; rk++) {
        double y = top + rk * row_h;
        /* the row background shows idle time */
        cairo_set_source_rgb(cr, 0.90, 0.90, 0.90);
        cairo_rectangle(cr, left, y + 2, plot_w, row_h - 4);
        cairo_fill(cr);
        cairo_set_source_rgb(cr, 0, 0, 0);
        cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_BOLD);
        cairo_set_font_size(cr, 13);
        snprintf(t, sizeof t, "rank %d", rk);
        cairo_move_to(cr, 8, y + row_h / 2 + 5);
        cairo_show_text(cr, t);
        cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
        cairo_set_font_size(cr, 11);
        snprintf(t, sizeof t, "bubble %.1f%%, peak %d act.", 100 * r->bubble[rk], r->peak_live[rk]);
        cairo_move_to(cr, left + plot_w + 8, y + row_h / 2 + 4);
        cairo_show_text(cr, t);
    }
    for (int e = 0; e < r->n_ev; e++) {
        const ap_sched_event *ev = &r->ev[e];
        double x0 = left + ev->start * scale, x1 = left + ev->end * scale;
        double y = top + ev->rank * row_h + 3, h = row_h - 6;
        double rgb[3];
        type_rgb(ev->a.type, rgb);
        if (s->stages_per_rank > 1) { /* later local stages lighter */
            double f = 0.45 * local_chunk(s, ev->a.stage) / (s->stages_per_rank - 1);
            for (int k = 0; k < 3; k++) rgb[k] += (1 - rgb[k]) * f;
        }
        cairo_set_source_rgb(cr, rgb[0], rgb[1], rgb[2]);
        cairo_rectangle(cr, x0, y, x1 - x0, h);
        cairo_fill_preserve(cr);
        cairo_set_source_rgb(cr, 0.15, 0.15, 0.15);
        cairo_set_line_width(cr, 1);
        cairo_stroke(cr);
        char l[64];
        if (s->stages_per_rank > 1)
            snprintf(l, sizeof l, "%d:%d", ev->a.stage, ev->a.mb);
        else
            snprintf(l, sizeof l, "%d", ev->a.mb);
        double fs = fmin(13, (x1 - x0) / (0.62 * (double)strlen(l) + 0.2));
        if (fs >= 6) {
            cairo_text_extents_t te;
            cairo_set_font_size(cr, fs);
            cairo_text_extents(cr, l, &te);
            cairo_set_source_rgb(cr, 1, 1, 1);
            cairo_move_to(cr, (x0 + x1) / 2 - te.width / 2 - te.x_bearing, y + h / 2 + te.height / 2);
            cairo_show_text(cr, l);
        }
    }
    /* time axis */
    double ty = top + s->pp * row_h + 4;
    cairo_set_source_rgb(cr, 0, 0, 0);
    cairo_set_line_width(cr, 1);
    cairo_move_to(cr, left, ty);
    cairo_line_to(cr, left + plot_w, ty);
    cairo_stroke(cr);
    double step = pow(10, floor(log10(fmax(r->makespan, 1e-9) / 10)));
    if (r->makespan / step > 25) step *= 2;
    if (r->makespan / step > 25) step *= 2.5;
    cairo_set_font_size(cr, 10);
    for (double x = 0; x <= r->makespan + 1e-9; x += step) {
        cairo_move_to(cr, left + x * scale, ty);
        cairo_line_to(cr, left + x * scale, ty + 4);
        cairo_stroke(cr);
        snprintf(t, sizeof t, "%g", x);
        cairo_move_to(cr, left + x * scale - 3, ty + 15);
        cairo_show_text(cr, t);
    }
    cairo_move_to(cr, left + plot_w + 8, ty + 15);
    cairo_show_text(cr, "time");
    (void)W;
}

int ap_schedule_render_image(const ap_schedule *s, const ap_sched_sim *r, const char *path, char *err,
                             size_t errlen) {
    const char *dot = strrchr(path, '.');
    int svg = dot && !strcasecmp(dot, ".svg"), png = dot && !strcasecmp(dot, ".png");
    if (!svg && !png) {
        snprintf(err, errlen, "%s: expected a .png or .svg file name", path);
        return -1;
    }
    double left = 70, top = 60, row_h = 34, right = 170;
    double span = r->makespan > 0 ? r->makespan : 1;
    /* wide enough that the shortest box can hold a label, within 8000 px */
    double dmin = 0;
    for (int e = 0; e < r->n_ev; e++) {
        double d = r->ev[e].end - r->ev[e].start;
        if (d > 1e-12 && (dmin == 0 || d < dmin)) dmin = d;
    }
    double want = s->stages_per_rank > 1 ? 30 : 20;
    double scale = fmin(60, fmax(1400 / span, dmin > 0 ? want / dmin : 4));
    if (span * scale > 8000) scale = 8000 / span;
    double W = ceil(left + span * scale + right), H = ceil(top + s->pp * row_h + 30);
    cairo_surface_t *surf = svg ? cairo_svg_surface_create(path, W, H)
                                : cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)W, (int)H);
    if (cairo_surface_status(surf) != CAIRO_STATUS_SUCCESS) {
        snprintf(err, errlen, "%s: cannot create the image: %s", path,
                 cairo_status_to_string(cairo_surface_status(surf)));
        cairo_surface_destroy(surf);
        return -1;
    }
    cairo_t *cr = cairo_create(surf);
    draw(cr, s, r, left, top, row_h, scale, W);
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st == CAIRO_STATUS_SUCCESS && png) st = cairo_surface_write_to_png(surf, path);
    cairo_surface_finish(surf);
    if (st == CAIRO_STATUS_SUCCESS) st = cairo_surface_status(surf);
    cairo_surface_destroy(surf);
    if (st != CAIRO_STATUS_SUCCESS) {
        snprintf(err, errlen, "%s: drawing failed: %s", path, cairo_status_to_string(st));
        return -1;
    }
    return 0;
}
