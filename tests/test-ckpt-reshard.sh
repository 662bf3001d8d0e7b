#!/bin/sh
# test-ckpt-reshard.sh - checkpoints written with one pipeline layout load
# into another (pp 4 -> 2 -> 1 and back, stages per rank, dp), parameters and
# AdamW moments bit-identical; every rank checks its own tensors (TAP).
H="$top_builddir/tests/ckpt-helper"
T=$(mktemp -d) || exit 1
trap 'rm -rf "$T"' EXIT
n=0; fail=0
t() { n=$((n+1)); if eval "$2" >"$T/out" 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; sed 's/^/# /' "$T/out"; fail=1; fi; }
run() { np=$1; shift; $MPIRUN -np "$np" "$H" "$@"; }

t "save pp=4 dp=2 (8 ranks, dp rank 0 writes)" 'run 8 save $T/a --pp 4 --dp 2 --step 10'
t "one file per stage" '[ "$(ls $T/a/latest/stage_*.h5 | wc -l)" -eq 4 ]'
t "4 -> 4 same layout" 'run 4 load $T/a --pp 4 --expect-step 10'
t "4 -> 2 (2 ranks)" 'run 2 reshard $T/a $T/b --pp 2 --expect-step 10'
t "2 -> 1 (1 rank)" 'run 1 reshard $T/b $T/c --pp 1 --expect-step 10'
t "1 -> 2 with dp=2" 'run 4 reshard $T/c $T/d --pp 2 --dp 2 --expect-step 10'
t "2 -> 4 with 2 stages per rank (pp=2 x spr=2)" 'run 2 reshard $T/d $T/e --pp 2 --spr 2 --expect-step 10'
t "4 stages (pp=2 spr=2) -> pp=4 spr=1 dp=2" 'run 8 load $T/e --pp 4 --dp 2 --expect-step 10'
t "4 -> 1 directly" 'run 1 load $T/a --pp 1'
t "1 -> 4 directly" 'run 4 load $T/c --pp 4'
t "4 -> 8 stages (pp=4 spr=2, one layer each)" 'run 4 load $T/a --pp 4 --spr 2'
t "1 -> 3 stages (uneven split of 8 layers)" 'run 3 load $T/c --pp 3'
t "pp=3 layout written from pp=1 reloads in pp=2" 'run 3 reshard $T/c $T/f --pp 3 && run 2 load $T/f --pp 2'
t "8 layers as 8 stages over pp=2 spr=4" 'run 2 load $T/a --pp 2 --spr 4'
t "4 stage files, 2 stage files, 1 stage file" '[ "$(ls $T/b/latest/stage_*.h5 | wc -l)" -eq 2 ] && [ "$(ls $T/c/latest/stage_*.h5 | wc -l)" -eq 1 ]'
t "manifest topology records the writer (pp 2, stages_per_rank 2)" 'grep -q "\"stages_per_rank\":.*2" $T/e/latest/manifest.json && grep -q "\"num_stages\":.*4" $T/e/latest/manifest.json'
t "a different seed is detected as different values" '! run 1 load $T/a --pp 1 --seed 2'
t "ckpt diff: pp=4 and pp=1 layouts match" '"$AUTOPIPE" ckpt diff $T/a $T/c'
t "ckpt diff: seed 1 vs seed 2 differ (exit 1)" 'run 2 save $T/g --pp 2 --seed 2 --step 10 && { "$AUTOPIPE" ckpt diff $T/a $T/g; [ $? -eq 1 ]; }'
echo "1..$n"
exit $fail
