#!/bin/sh
# test-train-cli.sh - `autopipe tokenize` and `autopipe train` end to end (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
printf 'hello autopipe\n' > "$dir/in.txt"
t "tokenize writes a shard" '"$AUTOPIPE" tokenize "$dir/in.txt" "$dir/out.bin" | grep -q "17 tokens"'
t "shard: header + 17 uint16 tokens" '[ "$(wc -c < "$dir/out.bin")" -eq $((32 + 2 * 17)) ]'
t "shard starts with the magic" '[ "$(head -c 8 "$dir/out.bin")" = APTOKENS ]'
t "--width 4 doubles the token bytes" '"$AUTOPIPE" tokenize --width 4 "$dir/in.txt" "$dir/out4.bin" >/dev/null && [ "$(wc -c < "$dir/out4.bin")" -eq $((32 + 4 * 17)) ]'
t "--print-builtin prints the built-in text" '"$AUTOPIPE" tokenize --print-builtin | head -c 16 | grep -q "Once upon a time"'
t "--builtin tokenizes it" '"$AUTOPIPE" tokenize --builtin "$dir/b.bin" | grep -q "tokens"'
t "missing input is a runtime error naming the file" 'out=$("$AUTOPIPE" tokenize "$dir/nope.txt" "$dir/x.bin" 2>&1); [ $? -eq 1 ] && echo "$out" | grep -q nope.txt'
t "bad --width is a usage error" '"$AUTOPIPE" tokenize --width 3 "$dir/in.txt" "$dir/x.bin" 2>/dev/null; [ $? -eq 2 ]'
# autopipe train on one process: a tiny Llama on the built-in text
tiny="--distributed.pp_size 1 --model.hidden_size 32 --model.intermediate_size 86 --model.num_hidden_layers 2
 --dataloader.seq_len 32 --dataloader.batch_size 8 --autopipeline.pp_microbatch_size 4 --optimizer.lr 1e-2
 --lr_scheduler.lr_warmup_steps 3 --lr_scheduler.min_lr 1e-3 --step_scheduler.val_every_steps 15
 --runtime.num_threads 1 --checkpoint.enabled false"
"$AUTOPIPE" train $tiny --step_scheduler.max_steps 30 --logging.metrics_file "$dir/m.jsonl" > "$dir/train.log" 2>&1
rc=$?
t "train: 30 steps exit 0" '[ $rc -eq 0 ]'
t "train: one log line per step" '[ "$(grep -c "^step [0-9]*/30 | loss" "$dir/train.log")" -eq 30 ]'
t "train: log line has loss, grad_norm, lr, tok/s, MFU, peak RSS" 'grep "^step 30/30" "$dir/train.log" | grep "grad_norm" | grep "lr " | grep "tok/s" | grep "MFU" | grep -q "peak RSS"'
first=$(sed -n "s/^step 1\/30 | loss \([0-9.]*\).*/\1/p" "$dir/train.log")
last=$(sed -n "s/^step 30\/30 | loss \([0-9.]*\).*/\1/p" "$dir/train.log")
t "train: loss falls by > 2 nats ($first -> $last)" 'awk -v a="$first" -v b="$last" "BEGIN { exit !(a - b > 2) }"'
t "train: validation at steps 15 and 30" '[ "$(grep -c "^step [0-9]* | val_loss" "$dir/train.log")" -eq 2 ]'
t "train: metrics JSONL has 30 step lines + 2 validations" '[ "$(grep -c "\"grad_norm\"" "$dir/m.jsonl")" -eq 30 ] && [ "$(grep -c "\"val_loss\"" "$dir/m.jsonl")" -eq 2 ]'
"$AUTOPIPE" train $tiny --step_scheduler.max_steps 20 --optimizer.lr 1e30 --clip_grad_norm.max_norm null > "$dir/nan.log" 2>&1
rc=$?
t "train: absurd lr stops with exit 1 naming the step" '[ $rc -eq 1 ] && grep -q "step [0-9]*: the .* not finite" "$dir/nan.log"'
printf 'APTOKENSgarbage' > "$dir/bad.bin"
"$AUTOPIPE" train $tiny --dataset.path_or_dataset "$dir/bad.bin" > "$dir/bad.log" 2>&1
rc=$?
t "train: bad data file exits 1 naming it" '[ $rc -eq 1 ] && grep -q "bad.bin" "$dir/bad.log"'
"$AUTOPIPE" train $tiny --distributed.pp_size 2 > "$dir/pp.log" 2>&1
rc=$?
t "train: pp_size 2 on one process is a usage error (2)" '[ $rc -eq 2 ] && grep -q "pp_size" "$dir/pp.log"'
"$AUTOPIPE" train $tiny --dataloader.batch_size 6 > "$dir/mb.log" 2>&1
rc=$?
t "train: batch not a multiple of the microbatch is a usage error" '[ $rc -eq 2 ] && grep -q "pp_microbatch_size" "$dir/mb.log"'
"$AUTOPIPE" train $tiny --step_scheduler.max_steps 3 --logging.progress on > "$dir/bar.log" 2>&1
t "train: --logging.progress on draws a bar with an ETA" 'grep -q "\] 3/3 loss .* ETA" "$dir/bar.log" && grep -q "step 3/3 | loss" "$dir/bar.log"'
t "train --help lists the config keys" '"$AUTOPIPE" train --help | grep -q "optimizer:.*lr="'
echo "1..$n"
exit $fail
