/* commands.h - the `autopipe` subcommands. Each takes the arguments after
 * its name (argv[0] is the subcommand) and returns the process exit status:
 * AP_EXIT_OK, AP_EXIT_FAIL (runtime failure) or AP_EXIT_USAGE (usage/config). */
#ifndef AP_COMMANDS_H
#define AP_COMMANDS_H

enum { AP_EXIT_OK = 0, AP_EXIT_FAIL = 1, AP_EXIT_USAGE = 2 };

typedef int (*ap_command_fn)(int argc, char **argv);

typedef struct {
    const char *name;
    ap_command_fn fn;
    const char *summary; /* one line for `autopipe help` */
} ap_command;

/* Defined in launcher/main.c; NULL-terminated. */
extern const ap_command ap_commands[];

#endif
