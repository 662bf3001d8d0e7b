/* generate.c - sampling from a model (see generate.h). */
#include "trainer/generate.h"

#include "kernels/kernels.h"
#include "launcher/commands.h"
#include "trainer/hf_config.h"
#include "trainer/hf_load.h"
#include "trainer/llama.h"
#include "trainer/tokenizer.h"

#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ap_param_ref *find_param(const ap_stage *s, const char *name) {
    for (int r = 0; r < s->n_refs; r++)
        if (!strcmp(s->refs[r].name, name)) return &s->refs[r];
    return NULL;
}

void ap_generator_free(ap_generator *g) {
    ap_llama_kv_free(g->kv);
    free(g->kv_tok);
    ap_stage_destroy(g->body);
    ap_stage_destroy(g->head);
    free(g->ctx);
    free(g->hidden);
    free(g->xn);
    free(g->rstd);
    memset(g, 0, sizeof *g);
}

int ap_generator_init(ap_generator *g, const ap_model_config *mc, int T, int use_cache, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    g->mc = *mc;
    g->T = T;
    int L = mc->num_hidden_layers;
    if (ap_llama_stage_create(&g->body, mc, 0, L, 1, 0, 1, T, 1, 0, err, errlen) < 0 ||
        ap_llama_stage_create(&g->head, mc, L, L, 0, 1, 1, T, 1, 0, err, errlen) < 0) {
        ap_generator_free(g);
        return -1;
    }
    size_t C = (size_t)mc->hidden_size;
    g->ctx = malloc((size_t)T * sizeof *g->ctx);
    g->hidden = malloc((size_t)T * C * sizeof *g->hidden);
    g->xn = malloc(C * sizeof *g->xn);
    g->rstd = malloc(sizeof *g->rstd);
    ap_param_ref *nw = find_param(g->head, "model.norm.weight");
    ap_param_ref *lw = find_param(g->head, "lm_head.weight");
    if (!lw) lw = find_param(g->head, "model.embed_tokens.weight"); /* tied */
    if (use_cache) {
        g->kv = ap_llama_kv_create(g->body);
        g->kv_tok = malloc((size_t)T * sizeof *g->kv_tok);
    }
    if (!g->ctx || !g->hidden || !g->xn || !g->rstd || !nw || !lw || (use_cache && (!g->kv || !g->kv_tok))) {
        snprintf(err, errlen, "%s", !nw || !lw ? "the model's head has no model.norm.weight or lm_head.weight"
                                               : "out of memory");
        ap_generator_free(g);
        return -1;
    }
    g->norm_w = nw->param;
    g->lm_w = lw->param;
    return 0;
}

/* ---- model directories: Hugging Face, or what the checkpoint part reads ---- */

static ap_model_dir_reader g_ckpt_reader;

void ap_set_checkpoint_model_reader(const ap_model_dir_reader *r) {
    if (r) g_ckpt_reader = *r;
    else memset(&g_ckpt_reader, 0, sizeof g_ckpt_reader);
}

static int is_checkpoint(const char *dir) { return g_ckpt_reader.is_checkpoint && g_ckpt_reader.is_checkpoint(dir); }

int ap_model_dir_config(const char *dir, ap_model_config *mc, char *err, size_t errlen) {
    if (is_checkpoint(dir)) return g_ckpt_reader.read_config(dir, mc, err, errlen);
    return ap_hf_config_read(mc, dir, err, errlen);
}

int ap_model_dir_load(ap_stage *s, const char *dir, char *err, size_t errlen) {
    if (is_checkpoint(dir)) return g_ckpt_reader.load_weights(s, dir, err, errlen);
    return ap_load_hf_weights(s, dir, err, errlen);
}

int ap_generator_load(ap_generator *g, const char *dir, char *err, size_t errlen) {
    if (ap_model_dir_load(g->body, dir, err, errlen) < 0) return -1;
    return ap_model_dir_load(g->head, dir, err, errlen);
}

int ap_generator_copy_from(ap_generator *g, const ap_stage *full, char *err, size_t errlen) {
    ap_stage *parts[2] = {g->body, g->head};
    for (int p = 0; p < 2; p++) {
        for (int r = 0; r < parts[p]->n_refs; r++) {
            ap_param_ref *dst = &parts[p]->refs[r];
            ap_param_ref *src = find_param(full, dst->name);
            if (!src || src->numel != dst->numel) {
                snprintf(err, errlen, "parameter %s: %s in the source model", dst->name,
                         src ? "another size" : "missing");
                return -1;
            }
            memcpy(dst->param, src->param, dst->numel * sizeof(float));
        }
    }
    return 0;
}

int ap_generator_logits(ap_generator *g, const int32_t *tokens, size_t n, float *logits, char *err, size_t errlen) {
    if (n == 0) {
        snprintf(err, errlen, "generate: empty prompt");
        return -1;
    }
    size_t T = (size_t)g->T, C = (size_t)g->mc.hidden_size;
    int shifted = n > T;
    if (shifted) {
        tokens += n - T;
        n = T;
    }
    const float *x;
    if (g->kv && shifted) ap_llama_kv_reset(g->kv); /* positions moved: rerun the window whole */
    if (g->kv && !shifted) {
        /* the cached prefix, if it is one, plus the new tokens one at a time */
        size_t have = (size_t)ap_llama_kv_len(g->kv);
        if (have >= n || memcmp(tokens, g->kv_tok, have * sizeof *tokens) != 0) {
            ap_llama_kv_reset(g->kv);
            have = 0;
        }
        for (size_t t = have; t < n; t++) {
            if (ap_llama_decode(g->body, g->kv, tokens[t], g->hidden) != 0) {
                snprintf(err, errlen, "generate: %s", ap_llama_stage_error(g->body));
                ap_llama_kv_reset(g->kv);
                return -1;
            }
            g->kv_tok[t] = tokens[t];
        }
        x = g->hidden;
    } else {
        /* causal attention: positions after n cannot change position n-1, so
         * the window is padded with a valid id and only row n-1 is read */
        for (size_t t = 0; t < T; t++) g->ctx[t] = t < n ? tokens[t] : tokens[n - 1];
        if (g->body->ops->forward(g->body, -1, g->ctx, NULL, NULL, g->hidden, NULL, NULL, NULL) != 0) {
            snprintf(err, errlen, "generate: forward failed: %s", ap_llama_stage_error(g->body));
            return -1;
        }
        x = g->hidden + (n - 1) * C;
    }
    ap_rmsnorm_forward(g->xn, g->rstd, x, g->norm_w, 1, C, (float)g->mc.rms_norm_eps, g->mc.norm_plus_one);
    ap_matmul_forward(logits, g->xn, g->lm_w, NULL, 1, C, (size_t)g->mc.vocab_size, 0);
    return 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Greedy (temperature 0) or a draw from softmax(logits / temperature). */
static int32_t sample(const float *logits, int V, double temperature, uint64_t *rng) {
    int best = 0;
    for (int v = 1; v < V; v++)
        if (logits[v] > logits[best]) best = v;
    if (temperature <= 0) return best;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp(((double)logits[v] - logits[best]) / temperature);
    double u = (double)(splitmix64(rng) >> 11) * 0x1.0p-53 * sum, acc = 0;
    for (int v = 0; v < V; v++) {
        acc += exp(((double)logits[v] - logits[best]) / temperature);
        if (u < acc) return v;
    }
    return best;
}

int ap_generate(ap_generator *g, int32_t *buf, size_t n, int max_new, double temperature, uint64_t seed,
                size_t *n_out, char *err, size_t errlen) {
    int V = g->mc.vocab_size;
    float *logits = malloc((size_t)V * sizeof *logits);
    if (!logits) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int eos = V == AP_BYTE_VOCAB ? AP_BYTE_EOS : g->mc.eos_token_id;
    uint64_t rng = seed;
    int rv = 0;
    for (int k = 0; k < max_new; k++) {
        if ((rv = ap_generator_logits(g, buf, n, logits, err, errlen)) < 0) break;
        buf[n++] = sample(logits, V, temperature, &rng);
        if (buf[n - 1] == eos) break;
    }
    free(logits);
    *n_out = n;
    return rv;
}

static void generate_usage(FILE *f) {
    fprintf(f,
            "usage: autopipe generate --model DIR (--prompt TEXT | --tokens 1,2,3) [--max-new-tokens N]\n"
            "                         [--temperature T] [--seed S] [--context N] [--threads N] [--no-kv-cache]\n\n"
            "Samples a continuation from a Hugging Face model directory (config.json + safetensors).\n"
            "Models with vocab_size 259 use the byte tokenizer: --prompt is text and the output is text.\n"
            "Other models take --tokens and print token ids. --temperature 0 is greedy (default 0.8);\n"
            "--context is the window in tokens (default min(max_position_embeddings, 256)).\n"
            "--no-kv-cache reruns the window for every token (the reference the cache is measured against).\n");
}

int ap_cmd_generate(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, NULL, 'm'},
                                         {"prompt", required_argument, NULL, 'p'},
                                         {"tokens", required_argument, NULL, 'k'},
                                         {"max-new-tokens", required_argument, NULL, 'n'},
                                         {"temperature", required_argument, NULL, 't'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"context", required_argument, NULL, 'c'},
                                         {"threads", required_argument, NULL, 'j'},
                                         {"no-kv-cache", no_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *model = NULL, *prompt = NULL, *tokens = NULL;
    long max_new = 64, ctx = 0, threads = 0;
    int use_cache = 1;
    double temperature = 0.8;
    unsigned long long seed = 1234;
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'k': tokens = optarg; break;
        case 'n': max_new = strtol(optarg, &end, 10); if (*end || max_new < 0 || max_new > 1 << 20) goto bad; break;
        case 't': temperature = strtod(optarg, &end); if (*end || !(temperature >= 0)) goto bad; break;
        case 's': seed = strtoull(optarg, &end, 10); if (*end) goto bad; break;
        case 'c': ctx = strtol(optarg, &end, 10); if (*end || ctx < 1 || ctx > 1 << 20) goto bad; break;
        case 'j': threads = strtol(optarg, &end, 10); if (*end || threads < 0) goto bad; break;
        case 'r': use_cache = 0; break;
        case 'h': generate_usage(stdout); return AP_EXIT_OK;
        default: generate_usage(stderr); return AP_EXIT_USAGE;
        }
    }
    if (optind != argc || !model || !!prompt == !!tokens) {
        fprintf(stderr, "autopipe generate: needs --model and exactly one of --prompt or --tokens\n");
        generate_usage(stderr);
        return AP_EXIT_USAGE;
    }
    char err[1024];
    ap_model_config mc;
    if (ap_model_dir_config(model, &mc, err, sizeof err) < 0) {
        fprintf(stderr, "autopipe generate: %s\n", err);
        return AP_EXIT_USAGE;
    }
    int byte_level = mc.vocab_size == AP_BYTE_VOCAB;
    if (prompt && !byte_level) {
        fprintf(stderr, "autopipe generate: --prompt needs the byte tokenizer (vocab_size %d); this model has "
                        "vocab_size %d: give --tokens\n", AP_BYTE_VOCAB, mc.vocab_size);
        return AP_EXIT_USAGE;
    }
    size_t n;
    int32_t *ids = NULL;
    if (tokens) {
        if (ap_parse_token_list(tokens, &ids, &n, err, sizeof err) < 0) {
            fprintf(stderr, "autopipe generate: --tokens: %s\n", err);
            return AP_EXIT_USAGE;
        }
        for (size_t i = 0; i < n; i++)
            if (ids[i] >= mc.vocab_size) {
                fprintf(stderr, "autopipe generate: --tokens: token %d at position %zu is not below vocab_size %d\n",
                        ids[i], i + 1, mc.vocab_size);
                free(ids);
                return AP_EXIT_USAGE;
            }
    } else {
        n = strlen(prompt);
        ids = malloc((n + 1) * sizeof *ids);
        if (ids) n = ap_byte_encode(prompt, n, 1, 0, ids);
    }
    int32_t *buf = ids ? realloc(ids, (n + (size_t)max_new) * sizeof *buf) : NULL;
    if (!buf) {
        free(ids);
        fprintf(stderr, "autopipe generate: out of memory\n");
        return AP_EXIT_FAIL;
    }
    if (!ctx) ctx = mc.max_position_embeddings < 256 ? mc.max_position_embeddings : 256;
    if (threads) ap_kernels_set_threads((int)threads);
    ap_generator g;
    size_t n_prompt = n, n_out = n;
    int rv = AP_EXIT_FAIL;
    if (ap_generator_init(&g, &mc, (int)ctx, use_cache, err, sizeof err) < 0) goto fail;
    if (ap_generator_load(&g, model, err, sizeof err) < 0 ||
        ap_generate(&g, buf, n, (int)max_new, temperature, seed, &n_out, err, sizeof err) < 0) {
        ap_generator_free(&g);
        goto fail;
    }
    ap_generator_free(&g);
    if (byte_level) {
        char *text = malloc(n_out + 1);
        if (!text || ap_byte_decode(buf, n_out, text) < 0) {
            free(text);
            snprintf(err, sizeof err, "cannot decode the output");
            goto fail;
        }
        fputs(text, stdout);
        fputc('\n', stdout);
        free(text);
    } else {
        for (size_t i = n_prompt; i < n_out; i++) printf("%s%d", i > n_prompt ? "," : "", buf[i]);
        printf("\n");
    }
    free(buf);
    return AP_EXIT_OK;
fail:
    fprintf(stderr, "autopipe generate: %s\n", err);
    free(buf);
    return rv;
bad:
    fprintf(stderr, "autopipe generate: bad value '%s' (see `autopipe generate --help`)\n", optarg);
    return AP_EXIT_USAGE;
}
