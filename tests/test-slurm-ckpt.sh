#!/bin/sh
# test-slurm-ckpt.sh - checkpoints written by `autopipe train` under Slurm
# (TAP), on the private one-node cluster: srun --mpi=pmix --pp-size=2 -n 2 and
# a pp 2 x dp 2 step write a committed checkpoint that `autopipe ckpt verify`
# accepts; the single-node templates in jobs/ run with sbatch --wait on a tiny
# config (arguments to the script are overrides for autopipe train):
# pretraining, the post-run inspection (and its failure on a damaged
# checkpoint), fine-tuning from a Hugging Face directory with the export.
. "$top_srcdir/tests/slurm/cluster.sh"
. "$top_srcdir/tests/slurm/train-common.sh"
cluster_need || exit 0
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; return 1; fi; }
cluster_start 1 || { echo "Bail out! the local Slurm cluster did not start"; exit 1; }
d=$CLUSTER_DIR
unset AUTOPIPE_PP_SIZE AUTOPIPE_DP_SIZE AUTOPIPE_TP_SIZE AUTOPIPE_PP_RANK AUTOPIPE_DP_RANK \
  AUTOPIPE_TP_RANK AUTOPIPE_LOCAL_RANK
# The templates call `autopipe` from PATH; sbatch passes this environment on.
mkdir -p "$d/bin" && ln -s "$AUTOPIPE" "$d/bin/autopipe" && PATH="$d/bin:$PATH" && export PATH
show() { echo "# $1:"; grep -v "^step \|^  - \|^-----\|NOTE: invoking\|You may or may\|exactly when" "$2" 2>/dev/null | tail -12 | sed "s/^/#   /"; }

# ---- srun steps write committed checkpoints ----
tiny_yaml "$d/tiny.yaml" 1 1
committed() { # DIR: latest -> step_00000003 with its COMMITTED marker, verify accepts it
  [ "$(readlink "$1/latest")" = step_00000003 ] && [ -f "$1/step_00000003/COMMITTED" ] &&
    autopipe ckpt verify "$1/latest" >"$d/verify.out" 2>&1
}
for run in "pp2:--pp-size=2 -n 2" "pp2dp2:--pp-size=2 --dp-size=2 -n 4"; do
  name=${run%%:*}
  # shellcheck disable=SC2086
  (cd "$d" && timeout 120 srun --immediate=30 --mpi=pmix ${run#*:} autopipe train --config "$d/tiny.yaml" \
     --checkpoint.checkpoint_dir "$d/ck-$name") >"$d/$name.out" 2>&1; rc=$?
  t "srun --mpi=pmix ${run#*:} autopipe train completes" '[ $rc -eq 0 ] && grep -q "^step 3/3 " "$d/$name.out"' ||
    show "$name" "$d/$name.out"
  t "... writes a committed checkpoint that autopipe ckpt verify accepts" 'committed "$d/ck-$name"' ||
    show verify "$d/verify.out"
done
autopipe ckpt info "$d/ck-pp2dp2" >"$d/info.out" 2>&1
t "... the 2 x 2 checkpoint has two stage files (one per stage, written by dp rank 0)" \
  '[ "$(ls "$d/ck-pp2dp2/step_00000003/" | grep -c "^stage_.*\.h5$")" = 2 ]' || show info "$d/info.out"

# ---- jobs/pretrain-single-node.sbatch, then jobs/inspect-checkpoint.sbatch ----
sb() { (cd "$d" && timeout 180 sbatch --wait "$@") >"$d/sbatch.out" 2>&1; }
tiny="--model.num_hidden_layers 4 --model.hidden_size 32 --model.intermediate_size 64 --dataloader.seq_len 32
 --dataloader.batch_size 4 --step_scheduler.max_steps 3 --step_scheduler.ckpt_every_steps 3
 --step_scheduler.val_every_steps 3 --lr_scheduler.lr_warmup_steps 1 --logging.log_every_steps 1
 --logging.progress off"
# shellcheck disable=SC2086
sb -o "$d/pre.log" --export=ALL,CONFIG="$top_srcdir/jobs/configs/pretrain-tiny.yaml" \
   "$top_srcdir/jobs/pretrain-single-node.sbatch" $tiny; rc=$?
t "jobs/pretrain-single-node.sbatch (tiny overrides as arguments) completes under sbatch --wait" \
  '[ $rc -eq 0 ] && grep -q "^step 3/3 " "$d/pre.log"' || show pretrain "$d/pre.log"
t "... its srun step took the mesh from #SBATCH --pp-size=2" \
  'grep -q "^autopipe: mesh pp=2 x dp=1 x tp=1 from env" "$d/pre.log"'
t "... wrote its metrics and a checkpoint that its own verify step accepted" \
  '[ "$(cat "$d"/autopipe-pretrain-*.metrics.jsonl | grep -c "\"loss\"")" = 3 ] &&
   [ -f "$d/checkpoints/autopipe-pretrain/step_00000003/COMMITTED" ] && grep -q "^ok: .*/step_00000003: 2 files" "$d/pre.log"' ||
  show pretrain "$d/pre.log"

sb -o "$d/inspect.log" --export=ALL,CKPT="$d/checkpoints/autopipe-pretrain/latest" \
   "$top_srcdir/jobs/inspect-checkpoint.sbatch"; rc=$?
t "jobs/inspect-checkpoint.sbatch on that checkpoint completes (verify, info)" \
  '[ $rc -eq 0 ] && grep -q "step 3\|\"step\": 3" "$d/inspect.log"' || show inspect "$d/inspect.log"

# A damaged copy: one stage file truncated.
cp -r "$d/checkpoints/autopipe-pretrain/step_00000003" "$d/damaged"
f=$(ls "$d/damaged"/stage_*.h5 | head -1)
head -c 4096 "$f" >"$f.tmp" && mv "$f.tmp" "$f"
sb -o "$d/inspect-bad.log" --export=ALL,CKPT="$d/damaged" "$top_srcdir/jobs/inspect-checkpoint.sbatch"; rc=$?
t "... on a damaged checkpoint the job fails (sbatch --wait exit $rc) and the log names the file" \
  '[ -n "$f" ] && [ $rc -ne 0 ] && grep -q "$(basename "$f")" "$d/inspect-bad.log"' || show inspect-bad "$d/inspect-bad.log"

# ---- jobs/finetune-hf.sbatch from tests/fixtures/hf/llama (vocab 64) ----
awk 'BEGIN { s = 7; for (i = 0; i < 24; i++) { n = 12 + i % 9; printf "{\"input_ids\": ["
  for (j = 0; j < n; j++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", j ? ", " : "", 3 + s % 61 }
  print "]}" } }' >"$d/sft.jsonl"
# shellcheck disable=SC2086
sb -o "$d/ft.log" --export=ALL,MODEL="$top_srcdir/tests/fixtures/hf/llama",DATA="$d/sft.jsonl",OUT="$d/ft-export",CKPT="$d/ck-ft",CONFIG="$top_srcdir/jobs/configs/finetune-hf.yaml" \
   "$top_srcdir/jobs/finetune-hf.sbatch" --dataset.val_path "$d/sft.jsonl" --dataloader.seq_len 32 \
   --dataloader.batch_size 4 --step_scheduler.max_steps 3 --step_scheduler.ckpt_every_steps 3 \
   --step_scheduler.val_every_steps 3 --lr_scheduler.lr_warmup_steps 1 --logging.log_every_steps 1 \
   --logging.progress off --logging.metrics_file "$d/ft.jsonl"; rc=$?
t "jobs/finetune-hf.sbatch (HF llama fixture, SFT JSONL) completes under sbatch --wait" \
  '[ $rc -eq 0 ] && grep -q "^step 3/3 " "$d/ft.log" && grep -q "exported to $d/ft-export" "$d/ft.log"' ||
  show finetune "$d/ft.log"
t "... started from the HF directory's weights (the log names it), not a random init" \
  'grep -q "^model: llama, 2 layers, hidden 32, vocab 64, .*(.*/tests/fixtures/hf/llama)\$" "$d/ft.log"'
t "... exported a Hugging Face directory: config.json (llama, hidden 32) and model.safetensors" \
  '[ -s "$d/ft-export/model.safetensors" ] && grep -q "\"model_type\":[[:space:]]*\"llama\"" "$d/ft-export/config.json" &&
   grep -q "\"hidden_size\":[[:space:]]*32," "$d/ft-export/config.json"'
autopipe eval --model "$d/ft-export" --data "$d/sft.jsonl" --seq-len 32 >"$d/eval.out" 2>&1; rc=$?
t "... which autopipe eval loads (finite loss)" '[ $rc -eq 0 ] && grep -q "^loss [0-9]" "$d/eval.out"' ||
  show eval "$d/eval.out"

[ $fail -eq 0 ] || cluster_dump
echo "1..$n"
exit $fail
