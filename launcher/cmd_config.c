/* cmd_config.c - `autopipe config`: print the merged config as YAML, or the
 * markdown reference of every key. */
#include "launcher/commands.h"
#include "launcher/config.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static void config_usage(FILE *f) {
    fprintf(f,
            "usage: autopipe config [--config FILE] [--section.key VALUE]...\n"
            "       autopipe config --reference\n\n"
            "Prints the merged configuration (built-in defaults, then FILE, then the overrides)\n"
            "as YAML that `--config` reads back to the same values. --reference prints the\n"
            "markdown table of every key (the README's configuration reference).\n\n"
            "Options:\n"
            "  --config FILE          YAML recipe (NeMo AutoModel shape)\n"
            "  --section.key VALUE    override one key (also --section.key=VALUE); YAML values\n"
            "  --reference            print the configuration reference (markdown)\n"
            "  -h, --help             this help\n\n");
    ap_config_emit_help(f);
    fprintf(f, "\nExit status: 0 ok, 1 write failure, 2 usage or configuration error.\n");
}

int ap_cmd_config(int argc, char **argv) {
    static const ap_cli_flag flags[] = {{"reference", 0}, {"help", 0}, {"h", 0}, {NULL, 0}};
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    char err[1024];
    int nrest = 0, rc = AP_EXIT_OK;
    ap_config cfg;
    if (!rest) return AP_EXIT_FAIL;
    if (ap_config_from_args(&cfg, argc, argv, flags, rest, &nrest, err, sizeof err)) {
        fprintf(stderr, "autopipe config: %s\n", err);
        free(rest);
        return AP_EXIT_USAGE;
    }
    int reference = 0;
    for (int i = 1; i < nrest; i++) {
        if (!strcmp(rest[i], "-h") || !strcmp(rest[i], "--help")) {
            config_usage(stdout);
            goto out;
        }
        if (!strcmp(rest[i], "--reference")) {
            reference = 1;
            continue;
        }
        fprintf(stderr, "autopipe config: unexpected argument '%s' (see `autopipe config --help`)\n", rest[i]);
        rc = AP_EXIT_USAGE;
        goto out;
    }
    if (reference) ap_config_emit_reference(stdout);
    else if (ap_config_emit_yaml(&cfg, stdout)) rc = AP_EXIT_FAIL;
    if (fflush(stdout)) rc = AP_EXIT_FAIL;
out:
    ap_config_free(&cfg);
    free(rest);
    return rc;
}
