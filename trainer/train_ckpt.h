/* train_ckpt.h - checkpoints of a training run (checkpoint/ckpt.h wired to
 * trainer/train.h's hooks), preemption, and checkpoint directories as model
 * directories for eval/generate/pretrained starts.
 *
 * Save: every step_scheduler.ckpt_every_steps and after the last step, dp
 * rank 0 of each stage writes its stages through ap_ckpt_save (collective
 * over the world). Resume (checkpoint.resume): auto = the latest committed
 * checkpoint of checkpoint_dir if any; a path; false = fresh (a non-empty
 * checkpoint_dir is refused unless checkpoint.overwrite). Tensors are looked
 * up by FQN, so any layout loads into any other.
 *
 * Preemption: SIGTERM and SIGUSR1 only set a flag; after each step every
 * rank takes the MAX of the flags over the world, and if one is set the
 * loop saves and stops; `autopipe train` then exits AP_EXIT_REQUEUE. */
#ifndef AP_TRAIN_CKPT_H
#define AP_TRAIN_CKPT_H

#include <mpi.h>
#include <stddef.h>

#include "trainer/model_config.h"
#include "trainer/train.h"

struct ap_config;

/* Exit status of `autopipe train` after a signal-triggered checkpoint
 * (EX_TEMPFAIL of sysexits.h): jobs/preemptible.sbatch requeues on it. */
#define AP_EXIT_REQUEUE 75

typedef struct {
    const struct ap_config *cfg;
    MPI_Comm comm;         /* every rank of the run; MPI_COMM_NULL: no MPI (no checkpoints) */
    int rank;
    int pp, dp, dp_rank, stages_per_rank;
    char schedule[64];
    long rows_per_step;    /* samples of one optimizer step, all dp ranks */
    int seq_len;
    int tied;              /* tie_word_embeddings: the non-first stages' copy is not saved */
    int save;              /* checkpoint.enabled */
    char resume_from[4096];/* the checkpoint to resume from ("" = fresh) */
    /* counters at the resumed checkpoint: later steps add this run's batch
     * shape to them (an earlier run may have used another dp or seq_len) */
    long base_step;
    int64_t base_samples, base_tokens;
    char *config_json, *config_yaml;
} ap_train_ckpt;

/* Decides where to resume from (collective over comm: every rank gets the
 * same verdict) and, for resume: false with checkpoint.overwrite, removes the
 * old checkpoints. Returns 0, or -1 with err set (*usage set for
 * configuration errors such as resume: false on a non-empty directory). */
int ap_train_ckpt_init(ap_train_ckpt *c, const struct ap_config *cfg, const ap_model_config *mc, MPI_Comm comm,
                       int pp, int dp, int dp_rank, int stages_per_rank, int *usage, char *err, size_t errlen);
/* Installs c as the loop's checkpoint hooks (save, resume, stop). */
void ap_train_ckpt_install(ap_train_ckpt *c);
void ap_train_ckpt_free(ap_train_ckpt *c);

/* 1 when checkpoint.enabled or checkpoint.resume names a path: the run needs MPI for the library. */
int ap_train_ckpt_wanted(const struct ap_config *cfg);

/* SIGTERM and SIGUSR1 set the stop flag. With AUTOPIPE_PID_DIR set and
 * world_rank >= 0, writes DIR/rank_%05d.pid once the handlers are in place
 * (train installs them first thing with -1: a signal during start-up is
 * kept, not fatal, and stops the run after its first step). */
void ap_preempt_install(int world_rank);
/* The local flag (set by a signal or AUTOPIPE_PREEMPT_AT_STEP). */
int ap_preempt_flag(void);

/* eval/generate/pretrained: checkpoint directories as model directories
 * (installed by a constructor; this re-installs it). */
void ap_train_ckpt_install_model_reader(void);

#endif
