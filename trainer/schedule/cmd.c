/* cmd.c - `autopipe schedule`: generate, validate, simulate and draw a
 * schedule (AutoPipeline's visualize_current_schedule). */
#include "launcher/commands.h"
#include "trainer/schedule/schedule.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: autopipe schedule --schedule NAME --pp N --microbatches M [--stages-per-rank V]\n"
            "                         [--csv FILE] [--costs F=1,B=2,I=1,W=1,comm=0] [--grid] [--lowered]\n"
            "                         [--forward-only]\n"
            "                         [-o out.png|out.svg|out.csv|out.json]\n\n"
            "Generate a pipeline schedule, prove it complete and deadlock-free, simulate it and print\n"
            "the per-rank timeline with bubble and activation-memory figures.\n\n"
            "  -s, --schedule NAME       gpipe, 1f1b, interleaved_1f1b, looped_bfs, interleaved_zb, zbv\n"
            "                            (or PyTorch's GPipe, 1F1B, Interleaved1F1B, LoopedBFS,\n"
            "                            InterleavedZeroBubble, ZBVZeroBubble)\n"
            "  -p, --pp N                pipeline ranks\n"
            "  -m, --microbatches M      microbatches per step\n"
            "  -v, --stages-per-rank V   stages per rank (default 1 for gpipe/1f1b, 2 otherwise)\n"
            "  -c, --csv FILE            load a schedule CSV (PyTorch's compute_only or compute_comms)\n"
            "  -C, --costs LIST          action costs, default F=1,B=2,I=1,W=1,comm=0;\n"
            "                            TYPE@STAGE=X for one stage (B@3=2.5)\n"
            "  -T, --costs-from TRACE    costs measured in a run: mean F/B/I/W durations (ms) per stage\n"
            "                            from Chrome trace files (repeat for each rank's file);\n"
            "                            --costs applies on top\n"
            "  -g, --grid                also print the step grid (steps down, ranks across)\n"
            "  -l, --lowered             grid and CSV with SEND/RECV actions (compute_comms)\n"
            "  -f, --forward-only        only the forwards, as the validation pass runs them\n"
            "  -o, --output FILE         write a picture (.png, .svg), the schedule (.csv) or the\n"
            "                            simulated timeline as a Chrome trace (.json, for Perfetto)\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage or impossible settings.\n");
}

static int parse_int(const char *flag, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 1 || x > INT_MAX) {
        fprintf(stderr, "autopipe schedule: %s '%s': expected a positive integer\n", flag, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int ap_cmd_schedule(int argc, char **argv) {
    static const struct option opts[] = {
        {"schedule", required_argument, NULL, 's'},
        {"pp", required_argument, NULL, 'p'},
        {"microbatches", required_argument, NULL, 'm'},
        {"stages-per-rank", required_argument, NULL, 'v'},
        {"csv", required_argument, NULL, 'c'},
        {"costs", required_argument, NULL, 'C'},
        {"costs-from", required_argument, NULL, 'T'},
        {"grid", no_argument, NULL, 'g'},
        {"lowered", no_argument, NULL, 'l'},
        {"forward-only", no_argument, NULL, 'f'},
        {"output", required_argument, NULL, 'o'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *name = NULL, *csv = NULL, *costs_s = NULL, *outp = NULL;
    const char *traces[64];
    int n_traces = 0;
    int pp = 0, mb = 0, v = 0, grid = 0, lowered_out = 0, fwd_only = 0, c;
    char err[65536];
    ap_sched_costs costs;
    ap_sched_costs_default(&costs);
    while ((c = getopt_long(argc, argv, "s:p:m:v:c:C:T:glfo:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': name = optarg; break;
        case 'p':
            if (parse_int("--pp", optarg, &pp)) return AP_EXIT_USAGE;
            break;
        case 'm':
            if (parse_int("--microbatches", optarg, &mb)) return AP_EXIT_USAGE;
            break;
        case 'v':
            if (parse_int("--stages-per-rank", optarg, &v)) return AP_EXIT_USAGE;
            break;
        case 'c': csv = optarg; break;
        case 'C': costs_s = optarg; break;
        case 'T':
            if (n_traces == 64) {
                fprintf(stderr, "autopipe schedule: at most 64 --costs-from files\n");
                return AP_EXIT_USAGE;
            }
            traces[n_traces++] = optarg;
            break;
        case 'g': grid = 1; break;
        case 'l': lowered_out = 1; break;
        case 'f': fwd_only = 1; break;
        case 'o': outp = optarg; break;
        case 'h': usage(stdout); return AP_EXIT_OK;
        default: usage(stderr); return AP_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "autopipe schedule: unexpected argument '%s'\n", argv[optind]);
        return AP_EXIT_USAGE;
    }
    if (!csv && !name) {
        fprintf(stderr, "autopipe schedule: --schedule NAME or --csv FILE is required\n");
        usage(stderr);
        return AP_EXIT_USAGE;
    }
    if (!csv && (pp < 1 || mb < 1)) {
        fprintf(stderr, "autopipe schedule: --pp and --microbatches are required with --schedule\n");
        return AP_EXIT_USAGE;
    }
    if (n_traces) {
        int n = ap_sched_costs_from_traces(&costs, traces, n_traces, err, sizeof err);
        if (n < 0) {
            fprintf(stderr, "autopipe schedule: %s\n", err);
            return AP_EXIT_USAGE;
        }
        printf("costs from %d measured actions (ms): F %.4g, B %.4g, I %.4g, W %.4g\n", n,
               costs.cost[AP_ACT_F], costs.cost[AP_ACT_B], costs.cost[AP_ACT_I], costs.cost[AP_ACT_W]);
    }
    if (costs_s && ap_sched_costs_parse(&costs, costs_s, err, sizeof err)) {
        fprintf(stderr, "autopipe schedule: %s\n", err);
        return AP_EXIT_USAGE;
    }
    ap_schedule *s = NULL, *low = NULL;
    ap_sched_sim sim = {0};
    int rv = AP_EXIT_USAGE;
    /* a forward-only CSV is shown as such; the generator only takes training schedules */
    int gen_rc = csv && fwd_only ? ap_schedule_load_csv(&s, csv, pp, mb, err, sizeof err) ||
                                       ap_schedule_validate(s, err, sizeof err)
                                 : ap_schedule_generate(&s, name, csv, pp, v, mb, err, sizeof err);
    if (gen_rc) {
        fprintf(stderr, "autopipe schedule: %s\n", err);
        goto out;
    }
    if (fwd_only && !s->forward_only) {
        ap_schedule *f;
        if (ap_schedule_forward_only(&f, s, err, sizeof err)) {
            fprintf(stderr, "autopipe schedule: %s\n", err);
            goto out;
        }
        ap_schedule_free(s);
        s = f;
    }
    if (ap_schedule_lower(s, &low, err, sizeof err) || ap_schedule_validate(low, err, sizeof err)) {
        fprintf(stderr, "autopipe schedule: lowered schedule invalid: %s\n", err);
        goto out;
    }
    rv = AP_EXIT_FAIL;
    if (ap_schedule_simulate(s, &costs, &sim, err, sizeof err)) {
        fprintf(stderr, "autopipe schedule: %s\n", err);
        goto out;
    }
    ap_schedule_render_text(s, &sim, stdout);
    int nsend = 0, nact = 0;
    for (int r = 0; r < low->pp; r++)
        for (int i = 0; i < low->len[r]; i++) {
            nact++;
            nsend += low->acts[r][i].type == AP_ACT_SEND_F || low->acts[r][i].type == AP_ACT_SEND_B;
        }
    printf("validated: complete and deadlock-free (%d actions with %d send/recv pairs)\n", nact, nsend);
    int strict_s = ap_schedule_validate_ex(low, AP_VALIDATE_BLOCKING_SENDS, err, sizeof err) == 0;
    int strict_r = ap_schedule_validate_ex(low, AP_VALIDATE_BLOCKING_RECVS, err, sizeof err) == 0;
    printf("deadlock-free with blocking sends: %s; with blocking receives: %s\n", strict_s ? "yes" : "no",
           strict_r ? "yes" : "no");
    if (grid) {
        const ap_schedule *g = lowered_out ? low : s;
        size_t need = ap_schedule_format_grid(g, -1, -1, NULL, 0) + 1;
        char *buf = malloc(need);
        if (buf) {
            ap_schedule_format_grid(g, -1, -1, buf, need);
            fputs(buf, stdout);
            free(buf);
        }
    }
    if (outp) {
        const char *dot = strrchr(outp, '.');
        if (dot && !strcasecmp(dot, ".csv")) {
            if (ap_schedule_dump_csv(lowered_out ? low : s, outp, err, sizeof err)) {
                fprintf(stderr, "autopipe schedule: %s\n", err);
                goto out;
            }
        } else if (dot && !strcasecmp(dot, ".json")) {
            FILE *f = fopen(outp, "w");
            int bad = !f || ap_schedule_write_trace(s, &sim, f) < 0;
            if ((f && fclose(f)) || bad) {
                fprintf(stderr, "autopipe schedule: %s: cannot write the trace\n", outp);
                goto out;
            }
        } else if (dot && (!strcasecmp(dot, ".png") || !strcasecmp(dot, ".svg"))) {
            if (ap_schedule_render_image(s, &sim, outp, err, sizeof err)) {
                fprintf(stderr, "autopipe schedule: %s\n", err);
                goto out;
            }
        } else {
            fprintf(stderr, "autopipe schedule: -o %s: expected a .png, .svg, .csv or .json file name\n", outp);
            rv = AP_EXIT_USAGE;
            goto out;
        }
        printf("wrote %s\n", outp);
    }
    rv = AP_EXIT_OK;
out:
    ap_sched_sim_free(&sim);
    ap_schedule_free(s);
    ap_schedule_free(low);
    return rv;
}
