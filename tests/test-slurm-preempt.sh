#!/bin/sh
# test-slurm-preempt.sh - jobs/preemptible.sbatch on the private one-node
# cluster (TAP): while its training step runs, `scancel --signal=USR1 JOB`
# signals the job's steps, as --signal=USR1@90 does (not the batch shell);
# autopipe train checkpoints, exits with the requeue status (75), the script
# requeues the job, and the second run resumes from `latest` to the end with
# the losses of an uninterrupted run (the budget is raised for the first run
# so the signal always lands mid-run, then lowered: see below).
. "$top_srcdir/tests/slurm/cluster.sh"
. "$top_srcdir/tests/slurm/train-common.sh"
cluster_need || exit 0
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; return 1; fi; }
# A released requeued job would wait for the main scheduler's next pass (60 s by default).
CLUSTER_CONF_EXTRA="SchedulerParameters=sched_interval=1"
cluster_start 1 || { echo "Bail out! the local Slurm cluster did not start"; exit 1; }
d=$CLUSTER_DIR
unset AUTOPIPE_PP_SIZE AUTOPIPE_DP_SIZE AUTOPIPE_TP_SIZE AUTOPIPE_PP_RANK AUTOPIPE_DP_RANK \
  AUTOPIPE_TP_RANK AUTOPIPE_LOCAL_RANK
mkdir -p "$d/bin" && ln -s "$AUTOPIPE" "$d/bin/autopipe" && PATH="$d/bin:$PATH" && export PATH
show() { echo "# $1:"; grep -v "^step \|^  - \|^-----\|NOTE: invoking\|You may or may\|exactly when" "$2" 2>/dev/null | tail -15 | sed "s/^/#   /"; }
# The template's config with a budget the first run cannot finish (so the
# signal always lands mid-run, however fast the machine); once it has been
# stopped, the budget becomes N (10 past the stop) for the rerun and the straight run. A constant
# LR after warmup keeps the schedule independent of max_steps. Checkpoints
# only at the signal and the end.
conf="$d/preemptible.yaml"
sed 's/^  max_steps: .*/  max_steps: 1000000/' "$top_srcdir/jobs/configs/preemptible.yaml" >"$conf"
args="--model.num_hidden_layers 4 --model.hidden_size 32 --model.intermediate_size 64 --dataloader.seq_len 32
 --dataloader.batch_size 4 --step_scheduler.ckpt_every_steps 100000 --step_scheduler.val_every_steps 100000
 --lr_scheduler.lr_warmup_steps 1 --lr_scheduler.lr_decay_style constant --logging.log_every_steps 1
 --logging.progress off --checkpoint.checkpoint_dir $d/ck"

# The job, waited for in the background: sbatch --wait follows it through the requeue.
# shellcheck disable=SC2086
(cd "$d" && timeout 300 sbatch --wait --parsable -o "$d/job.log" --export=ALL,CONFIG="$conf" \
   "$top_srcdir/jobs/preemptible.sbatch" $args >"$d/sbatch.out" 2>&1; echo $? >"$d/sbatch.rc") &
bg=$!
# Its id, then its training under way (a step line in the log).
i=0; while [ $i -lt 300 ] && ! grep -q '^[0-9]' "$d/sbatch.out" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
job=$(grep -m1 -o '^[0-9]*' "$d/sbatch.out")
i=0; while [ $i -lt 600 ] && ! grep -q '^step [3-9]/' "$d/job.log" 2>/dev/null; do sleep 0.1; i=$((i+1)); done
scancel --signal=USR1 "$job"; rc=$?
t "scancel --signal=USR1 reaches job $job while it trains" '[ -n "$job" ] && [ $rc -eq 0 ]' || show job "$d/job.log"
# Slurm holds a requeued batch job for 120 s (BeginTime); release it as an admin would.
i=0; while [ $i -lt 600 ] && ! scontrol -o show job "$job" 2>/dev/null | grep -q "JobState=PENDING.*Restarts=1"; do
  sleep 0.1; i=$((i+1)); done
scontrol -o show job "$job" >"$d/pending" 2>&1
t "the job was requeued (pending, 1 restart)" 'grep -q "Restarts=1" "$d/pending"' || show pending "$d/pending"
# The rerun's budget: 10 steps past where the first run stopped (the machine's
# speed decides how far it got before the signal landed).
k=$(sed -n 's/^stopped by a signal after step \([0-9]*\) with a checkpoint: exit status 75.*/\1/p' "$d/job.log")
N=$(( ${k:-30} + 10 ))
sed -i "s/^  max_steps: .*/  max_steps: $N/" "$conf"
t0=$(date +%s)
scontrol update JobId="$job" StartTime=now
wait $bg
echo "# requeued job released to its end: $(( $(date +%s) - t0 )) s"; grep "^run \|^done" "$d/job.log" | sed 's/^/# /'
rc=$(cat "$d/sbatch.rc")
k=$(sed -n 's/^stopped by a signal after step \([0-9]*\) with a checkpoint: exit status 75.*/\1/p' "$d/job.log")
t "the first run stopped after step $k with a checkpoint and exit status 75" \
  '[ -n "$k" ] && [ "$k" -lt $N ] && grep -q "exited with exit code 75\|Exited with exit code 75" "$d/job.log"' || show job "$d/job.log"
t "... and the script requeued the job" 'grep -q "^checkpointed after a signal: requeueing job $job" "$d/job.log"'
t "the second run (SLURM_RESTART_COUNT 1) resumed at step $k" \
  'grep -q "^run 2 of job $job" "$d/job.log" && grep -q "resumed at step $k" "$d/job.log"'
t "... and trained to step $N; sbatch --wait saw the job succeed" \
  '[ "$rc" = 0 ] && grep -q "^step $N/$N " "$d/job.log"' || show job "$d/job.log"
t "steps 1..$N each logged once across the two runs" \
  '[ "$(sed -n "s|^step \([0-9]*\)/[0-9]* .*|\1|p" "$d/job.log" | tr "\n" " ")" = "$(seq 1 $N | tr "\n" " ")" ]'
t "checkpoints of step $k (the signal) and $N (the end), both verified" \
  '[ -f "$d/ck/step_$(printf %08d "$k")/COMMITTED" ] && [ "$(readlink "$d/ck/latest")" = "step_$(printf %08d $N)" ] &&
   autopipe ckpt verify "$d/ck/step_$(printf %08d "$k")" >/dev/null && autopipe ckpt verify "$d/ck" >/dev/null'

# The same run without the interruption: the same losses at every step.
# shellcheck disable=SC2086
(cd "$d" && timeout 120 srun --immediate=30 --mpi=pmix --pp-size=2 -n 2 autopipe train --config "$conf" $args \
   --checkpoint.checkpoint_dir "$d/ck-straight") >"$d/straight.log" 2>&1; rc=$?
t "an uninterrupted srun of the same config gives the same loss at every step" \
  '[ $rc -eq 0 ] && [ "$(grep "^step [0-9]*/$N " "$d/straight.log" | cut -d"|" -f2)" = "$(grep "^step [0-9]*/[0-9]* " "$d/job.log" | cut -d"|" -f2)" ]' ||
  { echo "# straight:"; tail -6 "$d/straight.log" | sed "s/^/#   /"; }
t "... and bitwise the same final parameters and moments (ckpt diff --rtol 0)" \
  'autopipe ckpt diff "$d/ck-straight" "$d/ck" --rtol 0 >"$d/diff.out" 2>&1' || show diff "$d/diff.out"

[ $fail -eq 0 ] || cluster_dump
echo "1..$n"
exit $fail
