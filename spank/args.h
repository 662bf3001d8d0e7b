/* args.h - the SPANK plugin's pure parsers: option values, plugstack.conf
 * arguments and the step's topology. No Slurm, no MPI, no allocation, so a
 * fuzzer and a unit test can drive them directly.
 *
 * Every function writes a one-line message the user can act on into err
 * (never longer than errlen, always terminated when errlen > 0). */
#ifndef AP_SPANK_ARGS_H
#define AP_SPANK_ARGS_H

#include <stddef.h>

#include "launcher/topology.h"

/* Longest option value or plugstack argument looked at; longer is an error. */
#define AP_SPANK_ARG_MAX 64

/* Site policy from plugstack.conf. max_*: largest accepted size per axis;
 * default_pp/default_tp: used when a job gives some flag but not that one. */
typedef struct {
    int max[AP_NAXES];
    int default_size[AP_NAXES]; /* dp entry unused: dp derives from the task count */
} ap_spank_conf;

/* The sizes a job asked for; 0 = flag not given. */
typedef struct {
    int size[AP_NAXES];
} ap_spank_request;

void ap_spank_conf_init(ap_spank_conf *c);

/* Strict decimal parse of a positive int: digits only (no sign, space,
 * prefix or trailing characters), value in [1, max]. `what` names the
 * source in the message (e.g. "--pp-size"). Returns 0 or -1. */
int ap_spank_parse_size(const char *s, int max, const char *what, int *out, char *err,
                        size_t errlen);

/* One plugstack.conf argument "key=value" (max_pp, max_dp, max_tp,
 * default_pp, default_tp). Unknown keys and malformed values are errors. */
int ap_spank_conf_arg(ap_spank_conf *c, const char *arg, char *err, size_t errlen);

/* All arguments in order, then a consistency check (defaults within maxima). */
int ap_spank_conf_parse(ap_spank_conf *c, int argc, char *const *argv, char *err, size_t errlen);

/* Parse the raw option strings (NULL = not given) against the policy. */
int ap_spank_request_parse(const ap_spank_conf *c, const char *const raw[AP_NAXES],
                           ap_spank_request *r, char *err, size_t errlen);

/* 1 when any flag was given (the plugin acts), else 0. */
int ap_spank_request_active(const ap_spank_request *r);

/* The mesh for a step of ntasks: pp/tp default to the site default (1),
 * dp to ntasks / (pp * tp); the product must equal ntasks. Returns 0 or -1
 * with e.g. "--pp-size=4 x --dp-size=2 x --tp-size=1 = 8 ranks, but this
 * step has 6 tasks". */
int ap_spank_resolve(const ap_spank_conf *c, const ap_spank_request *r, long long ntasks,
                     ap_mesh *out, char *err, size_t errlen);

#endif
