/* stage.h - what the pipeline engine knows about a model part.
 *
 * The executor, the single-process trainer, the checkpoints and the planner
 * see a stage only through this interface: forward and backward of one
 * microbatch, its named parameters, its input/output sizes. The Llama family
 * (trainer/llama.c) is one implementation; examples/custom_model.c another.
 *
 * Activations of in-flight microbatches live in `slots` (0..max_slots-1): a
 * pipeline schedule may run several forwards before the matching backwards.
 * Backward comes whole (B) or split for zero-bubble schedules into I (input
 * gradient; keeps what W needs) then W (weight gradients). B == I then W,
 * bit for bit. */
#ifndef AP_STAGE_H
#define AP_STAGE_H

#include <stddef.h>
#include <stdint.h>

typedef struct ap_stage ap_stage;

/* One named parameter: HF FQN with its global layer index. */
typedef struct {
    char name[128];
    int ndim;
    size_t shape[4];
    size_t numel;
    float *param; /* into stage->params */
    float *grad;  /* into stage->grads */
    int no_decay; /* 1: norms and biases, excluded from weight decay */
} ap_param_ref;

typedef struct {
    /* Forward one microbatch of B x T into activation slot `slot`
     * (slot < 0: no-grad forward for validation, keeps nothing).
     * First stage reads tokens (B,T); others read in (B,T,C).
     * pos (B,T), read by every stage: position ids that restart at each
     * example of a packed row (HF's position_ids); a token attends only
     * within its example. NULL: positions 0..T-1 in every row. A stage keeps
     * what its backward needs.
     * Last stage reads labels (B,T) (-100 ignored) and adds the summed loss
     * and the label-token count to *loss_sum / *n_tokens; others write out (B,T,C). */
    int (*forward)(ap_stage *s, int slot, const int32_t *tokens, const int32_t *pos, const float *in, float *out,
                   const int32_t *labels, double *loss_sum, long *n_tokens);
    /* Backward of the microbatch in `slot`. Last stage: the gradient of the
     * loss w.r.t. its summed value is dloss (1/N for a mean over N label tokens);
     * others read dout (B,T,C). Writes din (B,T,C) unless first stage.
     * Accumulates (+=) into the parameter grads and frees the slot. */
    int (*backward)(ap_stage *s, int slot, const float *dout, float dloss, float *din);
    int (*backward_input)(ap_stage *s, int slot, const float *dout, float dloss, float *din);
    int (*backward_weight)(ap_stage *s, int slot);
    void (*destroy)(ap_stage *s);
} ap_stage_ops;

struct ap_stage {
    const ap_stage_ops *ops;
    int stage_id, num_stages;
    int is_first, is_last;
    int first_layer, last_layer; /* global layer range [first, last) */
    int B, T;                    /* microbatch size and sequence length */
    size_t act_numel;            /* B*T*C: size of in/out/dout/din */
    int max_slots;
    float *params, *grads;       /* one allocation each, carved by `refs` */
    size_t n_params;
    ap_param_ref *refs;
    int n_refs;
    void *impl;
};

static inline void ap_stage_destroy(ap_stage *s) {
    if (s) s->ops->destroy(s);
}

#endif
