#!/bin/sh
# `autopipe train` under mpirun equals `autopipe train` on one process: the
# same seed and global batch (batch_size x dp) give the same per-step loss and
# grad norm (metrics JSONL, 9 significant digits) to 1e-5 relative; a tied
# 5-layer Llama (5 divides no stage count used). Also: per-rank Chrome traces
# from logging.trace_dir, and a world that does not match pp x dp is a usage
# error (exit 2) naming the sizes.
AUTOPIPE=${AUTOPIPE:-./autopipe}
MPIRUN=${MPIRUN:-mpirun}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
n=0
check() { n=$((n + 1)); if [ "$1" = 0 ]; then echo "ok $n - $2"; else echo "not ok $n - $2"; fi; }

common="--step_scheduler.max_steps 3 --dataloader.seq_len 32 --logging.progress off --checkpoint.enabled false
 --step_scheduler.val_every_steps 3 --model.tie_word_embeddings true --model.num_hidden_layers 5"

# same: reference file, candidate file -> 0 when loss and grad_norm agree to 1e-5 on 3 steps
. "${top_srcdir:-.}/tests/metrics_compare.sh"
same() { same_metrics "$1" "$2" 1e-5; }

$AUTOPIPE train $common --dataloader.batch_size 8 --distributed.pp_size 1 --logging.metrics_file "$tmp/ref.jsonl" \
    >"$tmp/ref.out" 2>&1
check $? "one process trains (reference)"

$MPIRUN -np 2 $AUTOPIPE train $common --dataloader.batch_size 8 --distributed.pp_size 2 \
    --autopipeline.pp_schedule 1f1b --logging.metrics_file "$tmp/pp2.jsonl" >"$tmp/pp2.out" 2>&1
check $? "mpirun -np 2 autopipe train (pp 2, 1f1b) runs"
same "$tmp/ref.jsonl" "$tmp/pp2.jsonl"
check $? "pp 2 1f1b: per-step loss, grad norm and val loss equal one process"
[ "$(grep -c '^step 1/3' "$tmp/pp2.out")" = 1 ]
check $? "pp 2: one rank prints the log"
[ "$(grep -c '^step [0-9]*/3 .*| bubble [0-9.]*%$' "$tmp/pp2.out")" = 3 ] &&
    awk -F'"bubble": ' 'NF > 1 { split($2, a, ","); if (a[1] < 0 || a[1] > 1) bad = 1; k++ } END { exit bad || k != 3 }' \
        "$tmp/pp2.jsonl"
check $? "pp 2: every step's log line and metrics record carry the measured bubble fraction (in [0, 1])"
! grep -q bubble "$tmp/ref.out"
check $? "one process: no bubble figure"

$MPIRUN -np 4 $AUTOPIPE train $common --dataloader.batch_size 4 --distributed.pp_size 2 --distributed.dp_size 2 \
    --autopipeline.pp_schedule zbv --logging.metrics_file "$tmp/zbv.jsonl" --logging.trace_dir "$tmp/trace" \
    >"$tmp/zbv.out" 2>&1
check $? "mpirun -np 4 autopipe train (pp 2 x dp 2, zbv) runs"
same "$tmp/ref.jsonl" "$tmp/zbv.jsonl"
check $? "pp 2 x dp 2 zbv, batch 4 per dp rank: loss, grad norm and val loss equal one process with batch 8"
ntr=0
for r in 0 1 2 3; do
    f="$tmp/trace/trace_rank0000$r.json"
    [ -s "$f" ] && grep -q '"traceEvents"' "$f" && grep -q '"cat":"F"' "$f" && ntr=$((ntr + 1))
done
[ "$ntr" = 4 ]
check $? "logging.trace_dir: a Chrome trace per rank with F events"

# autopipeline.scale_grads_in_schedule: SFT examples of 3..31 tokens, so microbatches differ in label count
awk 'BEGIN { for (i = 0; i < 160; i++) { n = 3 + (i * 7) % 29; s = "{\"input_ids\": [";
             for (t = 0; t < n; t++) s = s (t ? ", " : "") 32 + (i * 31 + t * 17) % 90; print s "]}" } }' \
    >"$tmp/sft.jsonl"
sft="--dataset.path_or_dataset $tmp/sft.jsonl --dataloader.batch_size 8 --autopipeline.pp_microbatch_size 2"
$AUTOPIPE train $common $sft --distributed.pp_size 1 --logging.metrics_file "$tmp/sft_tok.jsonl" \
    >"$tmp/sft_tok.out" 2>&1
rc_tok=$?
$AUTOPIPE train $common $sft --distributed.pp_size 1 --autopipeline.scale_grads_in_schedule true \
    --logging.metrics_file "$tmp/sft_ref.jsonl" >"$tmp/sft_ref.out" 2>&1
check $? "one process trains SFT data with scale_grads_in_schedule (reference)"
$MPIRUN -np 2 $AUTOPIPE train $common $sft --distributed.pp_size 2 --autopipeline.pp_schedule 1f1b \
    --autopipeline.scale_grads_in_schedule true --logging.metrics_file "$tmp/sft_pp2.jsonl" >"$tmp/sft_pp2.out" 2>&1
check $? "mpirun -np 2 autopipe train with scale_grads_in_schedule runs"
same "$tmp/sft_ref.jsonl" "$tmp/sft_pp2.jsonl" && ! grep -q "note: autopipeline.scale_grads_in_schedule" "$tmp/sft_pp2.out"
check $? "pp 2 1f1b, scale_grads_in_schedule: per-step loss, grad norm and val loss equal one process"
[ "$rc_tok" = 0 ] && ! same "$tmp/sft_tok.jsonl" "$tmp/sft_ref.jsonl" >/dev/null
check $? "scale_grads_in_schedule trains differently from the default token-count scaling on such data"

# dataset.packed: position ids restart at each example and every stage keeps
# attention within it, so the second stage needs them too
$AUTOPIPE train $common $sft --dataset.packed true --distributed.pp_size 1 \
    --logging.metrics_file "$tmp/pk_ref.jsonl" >"$tmp/pk_ref.out" 2>&1
check $? "one process trains packed SFT data (reference)"
$MPIRUN -np 2 $AUTOPIPE train $common $sft --dataset.packed true --distributed.pp_size 2 \
    --autopipeline.pp_schedule 1f1b --logging.metrics_file "$tmp/pk_pp2.jsonl" >"$tmp/pk_pp2.out" 2>&1
check $? "mpirun -np 2 autopipe train on packed SFT data runs"
same "$tmp/pk_ref.jsonl" "$tmp/pk_pp2.jsonl"
check $? "pp 2 1f1b on packed SFT: per-step loss, grad norm and val loss equal one process"

$MPIRUN -np 3 $AUTOPIPE train $common --distributed.pp_size 2 >"$tmp/bad.out" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "pp" "$tmp/bad.out"
check $? "3 processes for pp 2 x dp 1: exit 2 with a message (got $rc)"
[ $n -gt 0 ] && echo "1..$n"
