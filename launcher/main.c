/* main.c - the `autopipe` command: git-style subcommands.
 * Exit codes: 0 ok, 1 runtime failure, 2 usage or config error. */
#include "config.h"
#include "launcher/commands.h"
#include "launcher/config.h"
#include "trainer/plan.h"
#include "launcher/mesh.h"
#include "trainer/schedule/schedule.h"
#include "checkpoint/ckpt.h"
#include "trainer/data.h"
#include "trainer/generate.h"
#include "trainer/train.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

/* One line per subcommand; each part registers its own here. */
const ap_command ap_commands[] = {
    {"help", cmd_help, "show this help, or a subcommand's with `autopipe help CMD`"},
    {"version", cmd_version, "print the version"},
    {"plan", ap_cmd_plan, "show the mesh, stage placement and per-stage modules of a config (no MPI)"},
    {"config", ap_cmd_config, "print the merged config as YAML (--reference: every key)"},
    {"mesh", ap_cmd_mesh, "print each MPI rank's (pp, dp, tp) place and check the mesh"},
    {"schedule", ap_cmd_schedule, "generate, validate, simulate and draw a pipeline schedule"},
    {"ckpt", ap_cmd_ckpt, "inspect, verify, compare and export checkpoints"},
    {"train", ap_cmd_train, "train a model (one process: pp_size 1; built-in tiny Llama and text by default)"},
    {"eval", ap_cmd_eval, "mean loss of a model directory over a data file"},
    {"generate", ap_cmd_generate, "sample a continuation from a model directory"},
    {"tokenize", ap_cmd_tokenize, "byte-tokenize a text file into a token shard (.bin)"},
    {NULL, NULL, NULL},
};

static const ap_command *find_command(const char *name) {
    for (const ap_command *c = ap_commands; c->name; c++)
        if (!strcmp(c->name, name)) return c;
    return NULL;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: autopipe [--version] [--help] COMMAND [ARGS]\n\n"
            "Pipeline-parallel training of Hugging Face decoder-only models on Slurm clusters.\n\n"
            "Commands:\n");
    for (const ap_command *c = ap_commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f,
            "\n`autopipe COMMAND --help` describes one command.\n"
            "Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.\n");
}

static int cmd_help(int argc, char **argv) {
    if (argc < 2) {
        usage(stdout);
        return AP_EXIT_OK;
    }
    const ap_command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "autopipe: unknown command '%s' (see `autopipe help`)\n", argv[1]);
        return AP_EXIT_USAGE;
    }
    if (c->fn == cmd_help || c->fn == cmd_version) {
        usage(stdout);
        return AP_EXIT_OK;
    }
    char *help_argv[] = {argv[1], "--help", NULL};
    return c->fn(2, help_argv);
}

static int cmd_version(int argc, char **argv) {
    printf("autopipe %s\n", PACKAGE_VERSION);
    return AP_EXIT_OK;
}

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    /* Only options before the subcommand belong to us ("+" stops at the first non-option). */
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+hV", opts, NULL)) != -1) {
        switch (c) {
        case 'h': usage(stdout); return AP_EXIT_OK;
        case 'V': return cmd_version(0, NULL);
        default:
            fprintf(stderr, "autopipe: unknown option '%s' (see `autopipe --help`)\n", argv[optind - 1]);
            return AP_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return AP_EXIT_USAGE;
    }
    const ap_command *cmd = find_command(argv[optind]);
    if (!cmd) {
        fprintf(stderr, "autopipe: unknown command '%s' (see `autopipe help`)\n", argv[optind]);
        return AP_EXIT_USAGE;
    }
    int sub = optind;
    optind = 0; /* subcommands parse their own options from a fresh getopt state */
    opterr = 1;
    return cmd->fn(argc - sub, argv + sub);
}
