#!/bin/sh
# test-train-resume.sh - checkpoints of real training runs (TAP):
# exact resume (6 steps straight == 3 steps, stop, resume, 3 steps: same
# per-step losses, parameters and AdamW moments bit for bit) for pp=1, pp=2
# 1f1b and pp x dp = 2 x 2 interleaved_1f1b; resharding resume (a pp=2
# checkpoint continued at pp=1 and at 2 stages per rank); preemption by
# SIGUSR1 to ONE rank under mpirun (exit 75, then resume to the same end);
# an interrupted save left behind; resume: false refusals; checkpoints as
# model directories for generate, eval, export and a pretrained start.
A=${AUTOPIPE:-$top_builddir/autopipe}
MP=${MPIRUN:-mpirun}
T=$(mktemp -d) || exit 1
BG=
trap '[ -n "$BG" ] && kill -9 $BG 2>/dev/null; rm -rf "$T"' EXIT
n=0; fail=0
t() { n=$((n+1)); if eval "$2" >"$T/out" 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; sed 's/^/# /' "$T/out" | tail -20; fail=1; fi; }
cd "$T" || exit 1

# tiny runs: the built-in model and text, 32-token samples, 6 steps
C="--step_scheduler.max_steps 6 --dataloader.seq_len 32 --logging.progress off"
P1="$C --distributed.pp_size 1"
P2="$C --distributed.pp_size 2 --autopipeline.pp_schedule 1f1b"
P22="$C --distributed.pp_size 2 --distributed.dp_size 2 --autopipeline.pp_schedule interleaved_1f1b"
run() { # NP NAME ARGS...: run into checkpoint dir NAME, metrics NAME.N.jsonl (N = attempt); exit status kept
    np=$1; name=$2; shift 2
    k=1; while [ -e "$name.$k.jsonl" ]; do k=$((k+1)); done
    if [ "$np" = 1 ]; then "$A" train "$@" --checkpoint.checkpoint_dir "$name" --logging.metrics_file "$name.$k.jsonl"
    else $MP -np "$np" "$A" train "$@" --checkpoint.checkpoint_dir "$name" --logging.metrics_file "$name.$k.jsonl"; fi
}
losses() { cat "$@" | grep '"loss"' | sed 's/.*"step": \([0-9]*\), "loss": \([^,]*\),.*/\1 \2/'; }
# same_losses A B: per-step losses of A's runs (concatenated) == B's
same_losses() { losses $1.*.jsonl >"$T/la"; losses $2.*.jsonl >"$T/lb"; [ "$(wc -l <"$T/la")" -eq 6 ] && cmp "$T/la" "$T/lb"; }
# close_losses A B FROM: steps FROM.. of B within 1e-5 of A's
close_losses() {
    losses $1.*.jsonl >"$T/la"; losses $2.*.jsonl >"$T/lb"
    awk -v from="$3" 'NR==FNR {a[$1]=$2; next} $1 >= from {c++; d=$2-a[$1]; if (d<0) d=-d; if (d>1e-5) bad=1}
        END {exit !(c == 7 - from && !bad)}' "$T/la" "$T/lb"
}
stop3() { st=0; AUTOPIPE_PREEMPT_AT_STEP=3 run "$@" || st=$?; [ "$st" -eq 75 ]; }
stop3mp() { np=$1; shift; st=0; run_env "$np" "$@" || st=$?; [ "$st" -eq 75 ]; }
run_env() { np=$1; name=$2; shift 2
    k=1; while [ -e "$name.$k.jsonl" ]; do k=$((k+1)); done
    $MP -np "$np" -x AUTOPIPE_PREEMPT_AT_STEP=3 "$A" train "$@" --checkpoint.checkpoint_dir "$name" --logging.metrics_file "$name.$k.jsonl"
}

# ---- pp = 1 ----
t "pp=1: 6 steps straight" 'run 1 a1 $P1'
t "pp=1: stop after step 3 (exit 75, checkpoint step 3)" 'stop3 1 b1 $P1 && [ "$(readlink b1/latest)" = step_00000003 ]'
t "pp=1: resume (auto) runs steps 4..6" 'run 1 b1 $P1 && grep -q "resumed at step 3" "$T/out"'
t "pp=1: per-step losses identical" 'same_losses a1 b1'
t "pp=1: final parameters and moments bitwise identical (ckpt diff --rtol 0)" '"$A" ckpt diff a1/latest b1/latest --rtol 0'
t "pp=1: checkpoint state: step 6, samples 48, tokens 1536, data position, lr step" \
  '"$A" ckpt info b1 --json | tr -d " \t\n" >i.json && grep -q "\"step\":6," i.json && grep -q "\"samples_consumed\":48," i.json && grep -q "\"tokens_consumed\":1536," i.json && grep -q "\"lr_step\":6," i.json && tr -d " \t\n" <b1/latest/manifest.json | grep -q "\"data_position\":\[\"1234\",\"0\",\"48\"\]"'
t "resume with another batch shape: samples and tokens count each run's own (3 x 8 + 3 x 4 samples of 32)" \
  '"$A" train $P1 --dataloader.batch_size 4 --checkpoint.checkpoint_dir bs4 --checkpoint.resume $T/b1/step_00000003 &&
   "$A" ckpt info bs4 --json | tr -d " \t\n" >i4.json && grep -q "\"step\":6," i4.json && grep -q "\"samples_consumed\":36," i4.json && grep -q "\"tokens_consumed\":1152," i4.json'
t "pp=1: a resumed run appends to its logging.metrics_file (steps 1..6 in one file, as straight)" \
  'AUTOPIPE_PREEMPT_AT_STEP=3 "$A" train $P1 --checkpoint.checkpoint_dir m1 --logging.metrics_file m1.jsonl; "$A" train $P1 --checkpoint.checkpoint_dir m1 --logging.metrics_file m1.jsonl && losses m1.jsonl >lm && losses a1.1.jsonl >la1 && cmp lm la1'

# ---- pp = 2, 1f1b ----
t "pp=2 1f1b: 6 steps straight" 'run 2 a2 $P2'
t "pp=2 1f1b: stop after step 3 on the last rank only (exit 75)" 'stop3mp 2 b2 $P2 && [ "$(readlink b2/latest)" = step_00000003 ]'
t "pp=2 1f1b: resume" 'run 2 b2 $P2'
t "pp=2 1f1b: per-step losses identical" 'same_losses a2 b2'
t "pp=2 1f1b: final parameters and moments bitwise identical" '"$A" ckpt diff a2/latest b2/latest --rtol 0 && "$A" ckpt verify b2'

# ---- pp x dp = 2 x 2, interleaved_1f1b (2 stages per rank) ----
t "2x2 interleaved: 6 steps straight" 'run 4 a4 $P22'
t "2x2 interleaved: stop after step 3 (exit 75)" 'stop3mp 4 b4 $P22'
t "2x2 interleaved: resume" 'run 4 b4 $P22'
t "2x2 interleaved: per-step losses identical" 'same_losses a4 b4'
t "2x2 interleaved: final parameters and moments bitwise identical" '"$A" ckpt diff a4/latest b4/latest --rtol 0'
t "2x2 interleaved: checkpoint has 4 stage files, topology pp 2 dp 2" \
  '"$A" ckpt info a4 --json | tr -d " \t\n" >i.json && [ "$(ls a4/latest/stage_*.h5 | wc -l)" -eq 4 ] && grep -q "\"pp\":2,\"dp\":2,\"tp\":1,\"stages_per_rank\":2,\"schedule\":\"interleaved_1f1b\"" i.json'

# ---- resharding resume: the pp=2 checkpoint of step 3 continued at pp=1 and at 2 stages per rank ----
mkdir -p r1 r4
t "reshard: pp=2 step 3 -> pp=1 (resume: PATH)" 'cp b2.1.jsonl r1.1.jsonl && run 1 r1 $P1 --checkpoint.resume $T/b2/step_00000003'
t "reshard: pp=1 continues with the same losses (1e-5)" 'close_losses a2 r1 4'
t "reshard: pp=2 step 3 -> pp=2 x 2 stages per rank interleaved" \
  'cp b2.1.jsonl r4.1.jsonl && run 2 r4 $C --distributed.pp_size 2 --autopipeline.pp_schedule interleaved_1f1b --checkpoint.resume $T/b2/step_00000003'
t "reshard: 2 stages per rank continues with the same losses (1e-5)" 'close_losses a2 r4 4'
t "reshard: final parameters within 1e-5" '"$A" ckpt diff a2/latest r4/latest --rtol 1e-5'

# ---- preemption: SIGUSR1 to one rank's PID under mpirun ----
# 300 steps (about 3 s here), so the signal, sent as soon as the PID file exists, lands well
# before the end: 20 steps took 0.2 s once the executor got faster, and the signal came too late
P2L="$P2 --step_scheduler.max_steps 300"
mkdir -p pid
startsig() {
    AUTOPIPE_PID_DIR=$T/pid $MP -np 2 -x AUTOPIPE_PID_DIR "$A" train $P2L --checkpoint.checkpoint_dir s2 \
        --logging.metrics_file s2.1.jsonl >s2.out 2>&1 &
    BG=$!
    i=0; while [ ! -s pid/rank_00001.pid ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    [ -s pid/rank_00001.pid ] && kill -USR1 "$(cat pid/rank_00001.pid)"
    st=0; wait $BG || st=$?; BG=
    [ "$st" -eq 75 ] || { cat s2.out; echo "exit status $st"; return 1; }
}
t "pp=2 1f1b: 300 steps straight" 'run 2 along $P2L'
t "SIGUSR1 to rank 1 only: every rank saves and mpirun exits 75" 'startsig'
t "the signal checkpoint is committed before the last step" 'grep -q "stopped by a signal" s2.out && [ "$(readlink s2/latest)" != step_00000300 ] && "$A" ckpt verify s2'
t "resume after the signal ends where the uninterrupted run ended (bitwise)" 'run 2 s2 $P2L && "$A" ckpt diff along/latest s2/latest --rtol 0'

# ---- an interrupted save (what kill -9 leaves: no COMMITTED, a half file) is skipped, then removed ----
t "interrupted step_00000004 left in a checkpoint_dir holding step 3" \
  'mkdir k && cp -r b1/step_00000003 k/ && ln -s step_00000003 k/latest && cp -r b1/step_00000006 k/step_00000004 && rm k/step_00000004/COMMITTED && head -c 1000 b1/step_00000006/stage_000.h5 >k/step_00000004/stage_000.h5'
t "resume auto takes step 3 and ends bitwise equal; the partial directory is gone" \
  'cp b1.1.jsonl k.1.jsonl && run 1 k $P1 && same_losses a1 k && "$A" ckpt diff a1/latest k/latest --rtol 0 && [ ! -e k/step_00000004 ]'

# ---- kill -9 of a rank in the middle of a save, then resume ----
t "pp=2: rank 1 killed (SIGKILL) while writing its stage file of step 4 (checkpoints every 2 steps)" \
  'st=0; $MP -np 2 -x AUTOPIPE_TEST_KILL_IN_SAVE=4 "$A" train $P2 --step_scheduler.ckpt_every_steps 2 --checkpoint.checkpoint_dir k9 --logging.metrics_file k9.1.jsonl || st=$?; [ $st -ne 0 ] && [ -e k9/step_00000004 ] && [ ! -e k9/step_00000004/COMMITTED ]'
t "after the kill: latest is step 2 and verifies" '[ "$(readlink k9/latest)" = step_00000002 ] && "$A" ckpt verify k9'
t "resume after the kill ends bitwise equal to the uninterrupted run" \
  'head -2 k9.1.jsonl >k9.tmp && mv k9.tmp k9.1.jsonl && run 2 k9 $P2 --step_scheduler.ckpt_every_steps 2 && same_losses a2 k9 && "$A" ckpt diff a2/latest k9/latest --rtol 0 && [ ! -e k9/step_00000004/stage_001.h5.tmp ]'

# ---- a tied embedding (its head copy saved once) across layouts ----
TI="--step_scheduler.max_steps 4 --dataloader.seq_len 32 --logging.progress off --model.tie_word_embeddings true"
t "tied embeddings: pp=2 stopped at step 2 -> resumed at pp=1 and at pp=2 agree (1e-5)" \
  'st=0; $MP -np 2 -x AUTOPIPE_PREEMPT_AT_STEP=2 "$A" train $TI --distributed.pp_size 2 --checkpoint.checkpoint_dir ti || st=$?; [ $st -eq 75 ] &&
   "$A" train $TI --distributed.pp_size 1 --checkpoint.checkpoint_dir ti1 --checkpoint.resume $T/ti &&
   $MP -np 2 "$A" train $TI --distributed.pp_size 2 --checkpoint.checkpoint_dir ti && "$A" ckpt diff ti ti1 --rtol 1e-5'

# ---- a checkpoint of another model under mpirun: every rank agrees, rank 0 says it once, no abort ----
t "pp=2: resuming a checkpoint of another model exits 1 with one message naming the key, nothing changed" \
  'before=$(readlink a2/latest); st=0; $MP -np 2 "$A" train $P2 --model.hidden_size 32 --checkpoint.checkpoint_dir a2 >mm.out 2>&1 || st=$?;
   [ $st -eq 1 ] && [ "$(grep -c "checkpoint of another model: config.json key hidden_size" mm.out)" = 1 ] &&
   ! grep -q MPI_ABORT mm.out && [ "$(readlink a2/latest)" = "$before" ] && "$A" ckpt verify a2 >/dev/null || { cat mm.out; false; }'

# ---- resume: false ----
t "resume: false on a non-empty checkpoint_dir is refused (exit 2, says why)" \
  'st=0; "$A" train $P1 --checkpoint.checkpoint_dir a1 --checkpoint.resume false || st=$?; [ $st -eq 2 ] && grep -q "not empty" "$T/out" && "$A" ckpt verify a1'
t "resume: false with overwrite: true starts fresh" \
  '"$A" train $P1 --step_scheduler.max_steps 2 --checkpoint.checkpoint_dir a1 --checkpoint.resume false --checkpoint.overwrite true && [ "$(ls a1 | tr "\n" " ")" = "latest step_00000002 " ]'
t "resume: PATH that is not a checkpoint is refused (exit 2)" \
  'st=0; "$A" train $P1 --checkpoint.checkpoint_dir x --checkpoint.resume $T/pid || st=$?; [ $st -eq 2 ] && grep -q "not a committed checkpoint" "$T/out"'

# ---- checkpoints as model directories ----
t "generate --model CHECKPOINT_DIR" '"$A" generate --model b1 --prompt "Once" --max-new-tokens 8 --temperature 0 >g1.txt && [ -s g1.txt ]'
t "ckpt export to an HF directory; generate from it gives the same text" \
  '"$A" ckpt export b1 --to hf && "$A" generate --model hf --prompt "Once" --max-new-tokens 8 --temperature 0 >g2.txt && cmp g1.txt g2.txt'
"$A" tokenize --print-builtin 2>/dev/null | head -c 4000 >val.txt
t "eval of the checkpoint and of its export agree" \
  '"$A" eval --model b1 --data val.txt --seq-len 32 >e1.txt && "$A" eval --model hf --data val.txt --seq-len 32 >e2.txt && cmp e1.txt e2.txt'
t "pretrained start from the export at pp=2, then export back" \
  'run 2 ft $C --distributed.pp_size 2 --step_scheduler.max_steps 2 --model.pretrained_model_name_or_path $T/hf && "$A" ckpt export ft --to hf2 && "$A" eval --model hf2 --data val.txt --seq-len 32 >e3.txt'
t "the fine-tune started from the pretrained weights (first loss = the export's eval level, not ln 259)" \
  'l=$(losses ft.1.jsonl | head -1 | cut -d" " -f2); awk -v l="$l" "BEGIN{exit !(l < 5.3)}"'
t "jobs/preemptible.sbatch requeues on the status autopipe train --help lists (75)" \
  'grep -q "REQUEUE_STATUS=\${REQUEUE_STATUS:-75}" "$top_srcdir/jobs/preemptible.sbatch" && "$A" train --help | grep -q "^75 stopped by SIGTERM/SIGUSR1"'
echo "1..$n"
exit $fail
