/* split.c - the model split and the stage placement; see split.h. */
#include "trainer/split.h"
#include "trainer/schedule/schedule.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One list of names for the whole program: the schedule module's. */
_Static_assert((int)AP_PP_GPIPE == (int)AP_SCHED_GPIPE && (int)AP_PP_1F1B == (int)AP_SCHED_1F1B &&
                   (int)AP_PP_INTERLEAVED_1F1B == (int)AP_SCHED_INTERLEAVED_1F1B &&
                   (int)AP_PP_LOOPED_BFS == (int)AP_SCHED_LOOPED_BFS &&
                   (int)AP_PP_INTERLEAVED_ZB == (int)AP_SCHED_INTERLEAVED_ZB &&
                   (int)AP_PP_ZBV == (int)AP_SCHED_ZBV && (int)AP_PP_CSV == (int)AP_SCHED_CSV,
               "ap_pp_schedule mirrors ap_sched_kind");

int ap_pp_schedule_parse(const char *name, ap_pp_schedule *out, char *err, size_t errlen) {
    ap_sched_kind k;
    if (name && !ap_schedule_parse_name(name, &k)) {
        *out = (ap_pp_schedule)k;
        return 0;
    }
    snprintf(err, errlen,
             "autopipeline.pp_schedule: unknown schedule '%s' (expected gpipe, 1f1b, interleaved_1f1b, "
             "looped_bfs, interleaved_zb or zbv, or PyTorch's GPipe, 1F1B, Interleaved1F1B, LoopedBFS, "
             "InterleavedZeroBubble, ZBVZeroBubble; csv with autopipeline.pp_schedule_csv)",
             name ? name : "null");
    return -1;
}

const char *ap_pp_schedule_name(ap_pp_schedule s) { return ap_schedule_kind_name((int)s); }

int ap_pp_schedule_is_single(ap_pp_schedule s) { return s == AP_PP_GPIPE || s == AP_PP_1F1B; }

enum ap_stage_style ap_pp_schedule_style(ap_pp_schedule s) {
    return s == AP_PP_ZBV ? AP_STYLE_V : AP_STYLE_LOOP;
}

void ap_split_free(ap_split *s) {
    if (!s || !s->stages) return;
    for (int i = 0; i < s->num_stages; i++) {
        for (int j = 0; j < s->stages[i].fqns.n; j++) free(s->stages[i].fqns.v[j]);
        free(s->stages[i].fqns.v);
    }
    free(s->stages);
    s->stages = NULL;
}

/* Parses "model.layers.N" (N a plain decimal); -1 otherwise. */
static long layer_index(const char *fqn) {
    static const char pre[] = "model.layers.";
    if (strncmp(fqn, pre, sizeof pre - 1)) return -1;
    const char *p = fqn + sizeof pre - 1;
    if (!isdigit((unsigned char)*p) || (p[0] == '0' && p[1])) return -1;
    char *end;
    long v = strtol(p, &end, 10);
    return *end || v > 100000000 ? -1 : v;
}

int ap_split_from_fqns(const ap_strlistlist *parts, int num_layers, ap_split *out, char *err,
                       size_t errlen) {
    static const char key[] = "autopipeline.module_fqns_per_model_part";
    int ns = parts->n, rc = -1, next = 0;
    int embed_at = -1, norm_at = -1, head_at = -1;
    out->stages = NULL;
    out->num_stages = ns;
    if (ns < 1) {
        snprintf(err, errlen, "%s: needs at least one stage", key);
        return -1;
    }
    out->stages = calloc((size_t)ns, sizeof *out->stages);
    if (!out->stages) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int s = 0; s < ns; s++) {
        const ap_strlist *l = &parts->v[s];
        ap_split_stage *st = &out->stages[s];
        st->first_layer = st->last_layer = next;
        st->fqns.v = calloc((size_t)(l->n ? l->n : 1), sizeof *st->fqns.v);
        if (!st->fqns.v) { snprintf(err, errlen, "out of memory"); goto done; }
        for (int i = 0; i < l->n; i++) {
            const char *f = l->v[i];
            long li = layer_index(f);
            if (li >= 0) {
                if (li >= num_layers) {
                    snprintf(err, errlen, "%s: stage %d: %s does not exist (the model has %d layers: 0..%d)",
                             key, s, f, num_layers, num_layers - 1);
                    goto done;
                }
                if (li < next) {
                    snprintf(err, errlen,
                             "%s: stage %d: %s is %s (layers must appear once each, in order, "
                             "contiguous across stages)",
                             key, s, f, li < st->first_layer ? "already on an earlier stage" : "listed twice or out of order");
                    goto done;
                }
                if (li > next) {
                    snprintf(err, errlen,
                             "%s: stage %d: %s comes before model.layers.%d (layers must be contiguous and "
                             "in order)",
                             key, s, f, next);
                    goto done;
                }
                next++;
                st->last_layer = next;
            } else if (!strcmp(f, "model.embed_tokens")) {
                if (embed_at >= 0) {
                    snprintf(err, errlen, "%s: stage %d: model.embed_tokens is already on stage %d", key, s, embed_at);
                    goto done;
                }
                if (s != 0) {
                    snprintf(err, errlen, "%s: model.embed_tokens must be on the first stage, found on stage %d", key, s);
                    goto done;
                }
                embed_at = s;
                st->has_embed = 1;
            } else if (!strcmp(f, "model.norm") || !strcmp(f, "lm_head")) {
                int *at = f[0] == 'l' ? &head_at : &norm_at;
                if (*at >= 0) {
                    snprintf(err, errlen, "%s: stage %d: %s is already on stage %d", key, s, f, *at);
                    goto done;
                }
                if (s != ns - 1) {
                    snprintf(err, errlen, "%s: %s must be on the last stage (%d), found on stage %d", key, f, ns - 1, s);
                    goto done;
                }
                *at = s;
            } else if (!strcmp(f, "model.rotary_emb")) {
                if (st->has_rotary) {
                    snprintf(err, errlen, "%s: stage %d: model.rotary_emb listed twice", key, s);
                    goto done;
                }
                st->has_rotary = 1;
            } else {
                snprintf(err, errlen,
                         "%s: stage %d: unknown module '%s' (expected model.embed_tokens, model.layers.N, "
                         "model.norm, lm_head or model.rotary_emb)",
                         key, s, f);
                goto done;
            }
            if (!(st->fqns.v[st->fqns.n] = strdup(f))) { snprintf(err, errlen, "out of memory"); goto done; }
            st->fqns.n++;
        }
        if (st->last_layer == st->first_layer) {
            snprintf(err, errlen, "%s: stage %d holds no transformer layer (every stage needs at least one)", key, s);
            goto done;
        }
    }
    if (next != num_layers) {
        snprintf(err, errlen, "%s: model.layers.%d..%d are on no stage (every layer exactly once)", key, next,
                 num_layers - 1);
        goto done;
    }
    if (embed_at < 0 || norm_at < 0 || head_at < 0) {
        snprintf(err, errlen, "%s: %s is on no stage (embed_tokens goes on the first stage, norm and lm_head on the last)",
                 key, embed_at < 0 ? "model.embed_tokens" : norm_at < 0 ? "model.norm" : "lm_head");
        goto done;
    }
    out->stages[ns - 1].has_head = 1;
    rc = 0;
done:
    if (rc) ap_split_free(out);
    return rc;
}

/* Fills the stages from generate_hf_model_fqn_per_model_part. */
static int split_auto(ap_split *out, int num_layers, char *err, size_t errlen) {
    int ns = out->num_stages, rc = -1;
    char e[256];
    if (ns > num_layers) { /* before allocating: ns may come from a huge pp_size */
        generate_hf_model_fqn_per_model_part(ns, num_layers, 1, 1, 1, "model.", NULL, 0, e, sizeof e);
        snprintf(err, errlen, "cannot split model.num_hidden_layers %d over %d stages (pp_size %d x %d per rank): %s",
                 num_layers, ns, out->pp_size, out->stages_per_rank, e);
        return -1;
    }
    ap_stage_modules *m = calloc((size_t)ns, sizeof *m);
    out->stages = calloc((size_t)ns, sizeof *out->stages);
    if (!m || !out->stages) {
        snprintf(err, errlen, "out of memory");
        goto done;
    }
    if (generate_hf_model_fqn_per_model_part(ns, num_layers, 1, 1, 1, "model.", m, (size_t)ns, e, sizeof e) < 0) {
        snprintf(err, errlen, "cannot split model.num_hidden_layers %d over %d stages (pp_size %d x %d per rank): %s",
                 num_layers, ns, out->pp_size, out->stages_per_rank, e);
        goto done;
    }
    for (int s = 0; s < ns; s++) {
        ap_split_stage *st = &out->stages[s];
        int n = ap_stage_modules_count(&m[s]);
        st->first_layer = m[s].first_layer;
        st->last_layer = m[s].last_layer;
        st->has_embed = m[s].has_embed;
        st->has_head = m[s].has_lm_head;
        st->has_rotary = m[s].has_rotary;
        if (!(st->fqns.v = calloc((size_t)n, sizeof *st->fqns.v))) { snprintf(err, errlen, "out of memory"); goto done; }
        for (int i = 0; i < n; i++) {
            char name[64];
            ap_stage_modules_fqn(&m[s], i, name, sizeof name);
            if (!(st->fqns.v[i] = strdup(name))) { snprintf(err, errlen, "out of memory"); goto done; }
            st->fqns.n = i + 1;
        }
    }
    rc = 0;
done:
    free(m);
    if (rc) ap_split_free(out);
    return rc;
}

int ap_split_plan(const ap_config *cfg, const ap_model_config *mc, ap_split *out, char *err,
                  size_t errlen) {
    const struct ap_config_autopipeline *a = &cfg->autopipeline;
    memset(out, 0, sizeof *out);
    out->pp_size = cfg->distributed.pp_size;
    out->num_layers = mc->num_hidden_layers;
    if (ap_pp_schedule_parse(a->pp_schedule, &out->schedule, err, errlen)) return -1;
    out->single_stage = ap_pp_schedule_is_single(out->schedule);
    out->style = ap_pp_schedule_style(out->schedule);
    if (out->schedule == AP_PP_CSV && !a->pp_schedule_csv) {
        snprintf(err, errlen, "autopipeline.pp_schedule %s needs autopipeline.pp_schedule_csv (a CSV file)",
                 a->pp_schedule);
        return -1;
    }
    if (a->pp_schedule_csv || out->schedule == AP_PP_CSV) { /* the CSV decides the order */
        out->single_stage = !a->has_stages_per_rank || a->stages_per_rank == 1;
        out->style = AP_STYLE_LOOP;
    }
    if (a->module_fqns_per_model_part.n) {
        if (a->has_layers_per_stage || a->has_stages_per_rank) {
            snprintf(err, errlen,
                     "autopipeline.module_fqns_per_model_part is set together with autopipeline.%s: "
                     "give either the manual split or the automatic one",
                     a->has_layers_per_stage ? "layers_per_stage" : "stages_per_rank");
            return -1;
        }
        if (ap_split_from_fqns(&a->module_fqns_per_model_part, out->num_layers, out, err, errlen)) return -1;
        out->manual = 1;
        if (out->num_stages % out->pp_size) {
            snprintf(err, errlen,
                     "autopipeline.module_fqns_per_model_part: %d stages is not a multiple of "
                     "distributed.pp_size %d",
                     out->num_stages, out->pp_size);
            goto fail;
        }
        out->stages_per_rank = out->num_stages / out->pp_size;
    } else if (a->has_layers_per_stage) {
        if (a->has_stages_per_rank) {
            snprintf(err, errlen,
                     "autopipeline.layers_per_stage and autopipeline.stages_per_rank are both set: give one");
            return -1;
        }
        char e[400];
        if (calculate_virtual_stages(out->num_layers, a->layers_per_stage, out->pp_size, out->single_stage,
                                     (enum ap_round_mode)a->round_virtual_stages_to_pp_multiple,
                                     &out->num_stages, &out->stages_per_rank, e, sizeof e)) {
            snprintf(err, errlen, "autopipeline.layers_per_stage %d with pp_schedule %s: %s", a->layers_per_stage,
                     a->pp_schedule, e);
            return -1;
        }
    } else {
        char e[400];
        if (calculate_virtual_stages(out->num_layers, -1, out->pp_size, out->single_stage, AP_ROUND_NONE,
                                     &out->num_stages, &out->stages_per_rank, e, sizeof e)) {
            snprintf(err, errlen, "distributed.pp_size %d: %s", out->pp_size, e);
            return -1;
        }
        if (a->has_stages_per_rank) {
            if ((long long)a->stages_per_rank * out->pp_size > AP_MESH_MAX_RANKS) {
                snprintf(err, errlen, "autopipeline.stages_per_rank %d is too large", a->stages_per_rank);
                return -1;
            }
            out->stages_per_rank = a->stages_per_rank;
            out->num_stages = a->stages_per_rank * out->pp_size;
        }
    }
    /* The placement rules of the schedule, for every way of splitting. */
    if (out->single_stage && out->stages_per_rank != 1) {
        snprintf(err, errlen,
                 "autopipeline.pp_schedule %s runs exactly 1 stage per rank, but the split gives %d stages "
                 "for pp_size %d (%d per rank); use a multi-stage schedule (interleaved_1f1b, looped_bfs, "
                 "interleaved_zb, zbv) or 1 stage per rank",
                 a->pp_schedule, out->num_stages, out->pp_size, out->stages_per_rank);
        goto fail;
    }
    if (!out->single_stage && out->style == AP_STYLE_V && out->stages_per_rank != 2) {
        snprintf(err, errlen,
                 "autopipeline.pp_schedule %s needs exactly 2 stages per rank (V placement), but the split "
                 "gives %d stages for pp_size %d",
                 a->pp_schedule, out->num_stages, out->pp_size);
        goto fail;
    }
    if (!out->single_stage && !a->pp_schedule_csv && out->stages_per_rank < 2) {
        snprintf(err, errlen,
                 "autopipeline.pp_schedule %s needs at least 2 stages per rank, but the split gives %d stages "
                 "for pp_size %d",
                 a->pp_schedule, out->num_stages, out->pp_size);
        goto fail;
    }
    if (!out->manual && split_auto(out, out->num_layers, err, errlen)) return -1;
    return 0;
fail:
    ap_split_free(out);
    return -1;
}

int ap_split_rank_stages(const ap_split *s, int pp_rank, int *ids, size_t cap, char *err,
                         size_t errlen) {
    return stage_ids_this_rank(pp_rank, s->pp_size, s->num_stages, s->style, ids, cap, err, errlen);
}
