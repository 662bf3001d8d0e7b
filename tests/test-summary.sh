#!/bin/sh
# test-summary.sh - the debug summary (AutoPipeline's debug_summary): printed
# by `autopipe plan`, first by `autopipe train`, and alone by
# `autopipe train --dry-run`; activation memory per rank from the schedule
# simulator's peak live microbatches; the custom model's names (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
A="$AUTOPIPE"
has() { grep -qF -- "$1" "$tmp/out"; }
live() { grep "^pp rank $1 " "$tmp/out" | sed -n "s/.*stage $2: \([0-9]*\) live.*/\1/p"; }
C="--model._target_ examples.custom_model.CustomModel"

"$A" plan --distributed.pp_size 2 --dataloader.batch_size 8 > "$tmp/out" 2>&1; rc=$?
t "plan: pp degree, schedule, microbatches, per-stage params and %" '[ $rc -eq 0 ] && has "mesh: pp 2" && has "schedule: 1f1b" && has "= 8 per step per dp rank" && has "Stage 0 (first): layers 0-1, params=107,456 (50.0%)"'
t "plan: activation memory of every rank" 'has "activations: estimated per rank" && [ $(grep -c "^pp rank [01] .*; activations ~[0-9.]* [KMG]*i*B" "$tmp/out") -eq 2 ]'
t "1f1b on pp 2, 8 microbatches: the first rank holds 2 live microbatches (p), the last 1" '[ "$(live 0 0)" = 2 ] && [ "$(live 1 1)" = 1 ]'
"$A" plan --distributed.pp_size 2 --dataloader.batch_size 8 --autopipeline.pp_schedule gpipe > "$tmp/out" 2>&1
t "gpipe: every rank holds all 8 microbatches" '[ "$(live 0 0)" = 8 ] && [ "$(live 1 1)" = 8 ]'
g0=$(grep "^pp rank 0 " "$tmp/out" | sed "s/.*(stage 0: 8 live x \([^)]*\)).*/\1/")
"$A" plan --distributed.pp_size 2 --dataloader.batch_size 8 --autopipeline.pp_schedule gpipe --model.activation_checkpointing true > "$tmp/out" 2>&1
c0=$(grep "^pp rank 0 " "$tmp/out" | sed "s/.*(stage 0: 8 live x \([^)]*\)).*/\1/")
t "activation checkpointing lowers the per-microbatch estimate ($g0 -> $c0)" '[ -n "$g0" ] && [ -n "$c0" ] && [ "$g0" != "$c0" ] && has "(activation checkpointing)"'
"$A" plan --distributed.pp_size 2 --autopipeline.pp_schedule interleaved_1f1b --model.num_hidden_layers 8 > "$tmp/out" 2>&1
t "multi-stage: each rank's line sums its stages" 'grep -q "^pp rank 0 (global rank 0): stages 0 2; activations ~.* (stage 0: [0-9]* live x .*, stage 2: [0-9]* live x .*)" "$tmp/out"'
"$A" plan --distributed.pp_size 4 --dataloader.batch_size 2 > "$tmp/out" 2>&1; rc=$?
t "no estimate when the schedule cannot run, with the reason; plan still exits 0" '[ $rc -eq 0 ] && has "activations: not estimated: 1f1b needs at least as many microbatches as pp ranks"'

"$A" plan $C --model.num_hidden_layers 3 --model.hidden_size 16 --model.num_attention_heads 2 --max-modules 0 > "$tmp/out" 2>&1; rc=$?
t "custom model: its family, PyTorch module names, parameter shares" '[ $rc -eq 0 ] && has "model: custom, 3 layers" && has "  - embedding" && has "  - layers.2" && has "  - output_proj" && ! has "model.embed_tokens" && [ "$(grep -o "([0-9.]*%)" "$tmp/out" | tr -d "(%)" | awk "{s+=\$1} END {printf \"%.0f\", s}")" = 100 ]'
t "custom model: 3 layers of 16: 2VC + V + 3 (12C^2 + 13C) = 18,387 parameters" 'has ": 18,387 parameters"'

"$A" train $C --distributed.pp_size 1 --model.tie_word_embeddings true --checkpoint.enabled false > "$tmp/out" 2>&1; rc=$?
t "custom model with tied embeddings: a failure naming the key" '[ $rc -ne 0 ] && has "model.tie_word_embeddings" && ! grep -q "^step " "$tmp/out"'

# train --dry-run: the same summary as plan, then stops
"$A" plan --distributed.pp_size 2 --autopipeline.pp_schedule zbv --max-modules 8 > "$tmp/plan" 2>&1
"$A" train --dry-run --distributed.pp_size 2 --autopipeline.pp_schedule zbv > "$tmp/out" 2>&1; rc=$?
t "train --dry-run: exit 0 without mpirun although pp_size is 2" '[ $rc -eq 0 ] && has "dry run: stopping before building the model"'
t "train --dry-run prints exactly what plan prints (one function)" 'sed "\$d" "$tmp/out" | cmp -s - "$tmp/plan"'
t "train --dry-run trains nothing" '! grep -q "^step \|^done:" "$tmp/out"'
"$A" train --dry-run --model.hidden_size 30 > "$tmp/out" 2>&1; rc=$?
t "train --dry-run with a bad config: exit 2 naming the key" '[ $rc -eq 2 ] && has "hidden_size"'

# train: the summary first, then training
"$A" train $C --distributed.pp_size 1 --model.num_hidden_layers 2 --model.hidden_size 16 --model.num_attention_heads 2 \
    --dataloader.seq_len 16 --dataloader.batch_size 2 --step_scheduler.max_steps 2 --step_scheduler.val_every_steps 0 \
    --logging.progress off --checkpoint.checkpoint_dir "$tmp/ck1" > "$tmp/out" 2>&1; rc=$?
t "train (one process) prints the summary before step 1 and trains the custom model" '[ $rc -eq 0 ] && [ $(grep -n "^activations: estimated" "$tmp/out" | cut -d: -f1) -lt $(grep -n "^step 1/2" "$tmp/out" | cut -d: -f1) ] && has "model: custom, 2 layers" && has "done: 2 steps"'

if [ -n "$MPIRUN" ]; then
    $MPIRUN -np 2 "$A" train --dry-run > "$tmp/out" 2>&1; rc=$?
    t "mpirun -np 2 train --dry-run: one summary, exit 0" '[ $rc -eq 0 ] && [ $(grep -c "^mesh: pp 2" "$tmp/out") -eq 1 ] && [ $(grep -c "^pp rank" "$tmp/out") -eq 2 ]'
    $MPIRUN -np 2 "$A" train $C --model.num_hidden_layers 2 --model.hidden_size 16 --model.num_attention_heads 2 \
        --dataloader.seq_len 16 --dataloader.batch_size 4 --step_scheduler.max_steps 2 --step_scheduler.val_every_steps 0 \
        --logging.progress off --checkpoint.checkpoint_dir "$tmp/ck2" > "$tmp/out" 2>&1; rc=$?
    t "mpirun -np 2 train of the custom model: summary once (rank 0), then 2 steps" '[ $rc -eq 0 ] && [ $(grep -c "^activations: estimated" "$tmp/out") -eq 1 ] && has "  - output_proj" && has "done: 2 steps"'
fi
echo "1..$n"
exit $fail
