#!/bin/sh
# test-mesh.sh - `autopipe mesh` under mpirun: rank order, axis communicators,
# the AUTOPIPE_* source and its checks against MPI (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
unset AUTOPIPE_PP_SIZE AUTOPIPE_DP_SIZE AUTOPIPE_TP_SIZE AUTOPIPE_PP_RANK AUTOPIPE_DP_RANK \
  AUTOPIPE_TP_RANK AUTOPIPE_LOCAL_RANK
run() { np=$1; shift; timeout 120 "$MPIRUN" -np "$np" "$AUTOPIPE" mesh "$@" >"$tmp/out" 2>"$tmp/err"; }
# expected lines: rank r pp=.. dp=.. tp=.. (pp slowest, tp fastest)
expect() { awk -v pp="$1" -v dp="$2" -v tp="$3" -v src="$4" 'BEGIN { for (r = 0; r < pp*dp*tp; r++)
  printf "rank %d pp=%d dp=%d tp=%d source=%s\n", r, int(r/(dp*tp)), int(r/tp)%dp, r%tp, src }'; }
strip_local() { sed 's/ local=[0-9]*//' "$tmp/out"; }

run 4 --pp 2; rc=$?
t "mpirun -np 4 mesh --pp 2 succeeds" '[ $rc -eq 0 ]'
t "pp=2 (dp derived 2): one line per rank in rank order" '[ "$(strip_local)" = "$(expect 2 2 1 flags)" ]'
t "local ranks 0..3 on one node" '[ "$(sed -n "s/.* local=\([0-9]*\) .*/\1/p" "$tmp/out" | tr "\n" " ")" = "0 1 2 3 " ]'
t "rank 0 logs the source" 'grep -q "mesh pp=2 x dp=2 x tp=1 from flags" "$tmp/err"'

run 8 --pp 2 --tp 2; rc=$?
t "pp=2 x dp=2 x tp=2 on 8 ranks matches the topology (groups checked)" \
  '[ $rc -eq 0 ] && [ "$(strip_local)" = "$(expect 2 2 2 flags)" ]'
run 6 --pp 3 --dp 2; rc=$?
t "pp=3 x dp=2 on 6 ranks" '[ $rc -eq 0 ] && [ "$(strip_local)" = "$(expect 3 2 1 flags)" ]'

run 4 --pp 3; rc=$?
t "pp=3 on 4 ranks fails with a message" '[ $rc -eq 1 ] && grep -q "pp=3 x tp=1 does not divide the 4 MPI ranks" "$tmp/err"'
run 4 --pp 2 --dp 3; rc=$?
t "pp=2 x dp=3 on 4 ranks fails naming both counts" '[ $rc -eq 1 ] && grep -q "= 6 ranks, but MPI has 4" "$tmp/err"'

"$AUTOPIPE" mesh --pp 0 >/dev/null 2>"$tmp/err"; rc=$?
t "--pp 0 is a usage error (2)" '[ $rc -eq 2 ] && grep -q -- "--pp needs a positive integer" "$tmp/err"'
"$AUTOPIPE" mesh --tp 2x >/dev/null 2>"$tmp/err"; rc=$?
t "--tp 2x is a usage error (2)" '[ $rc -eq 2 ]'
"$AUTOPIPE" mesh --help >"$tmp/out" 2>&1; rc=$?
t "mesh --help" '[ $rc -eq 0 ] && grep -q "usage: autopipe mesh" "$tmp/out"'

# The Slurm plugin's variables win over the flags and are checked against MPI.
export AUTOPIPE_PP_SIZE=1 AUTOPIPE_DP_SIZE=1 AUTOPIPE_TP_SIZE=1 AUTOPIPE_PP_RANK=0 \
  AUTOPIPE_DP_RANK=0 AUTOPIPE_TP_RANK=0 AUTOPIPE_LOCAL_RANK=0
run 1 --pp 4; rc=$?
t "env wins over --pp 4 (source=env)" '[ $rc -eq 0 ] && grep -qx "rank 0 pp=0 dp=0 tp=0 local=0 source=env" "$tmp/out"'
t "the log says the flags were ignored" 'grep -q "from env (AUTOPIPE_\* set by the Slurm plugin); ignoring the sizes from flags" "$tmp/err"'
run 2; rc=$?
t "env world 1 on 2 MPI ranks fails before work" '[ $rc -eq 1 ] && grep -q "describe pp=1 x dp=1 x tp=1 = 1 ranks, but MPI has 2" "$tmp/err"'
export AUTOPIPE_PP_SIZE=2
run 2; rc=$?
t "every rank claiming rank 0: rank 1 is named" '[ $rc -eq 1 ] && grep -q "rank 1: AUTOPIPE_\* places this task at pp=0 dp=0 tp=0 (rank 0 of pp=2 x dp=1 x tp=1), but MPI says it is rank 1" "$tmp/err"'
export AUTOPIPE_DP_RANK=x
run 1; rc=$?
t "malformed AUTOPIPE_DP_RANK fails naming it" '[ $rc -eq 1 ] && grep -q "AUTOPIPE_DP_RANK=.x. is not an integer" "$tmp/err"'
unset AUTOPIPE_DP_RANK
run 1; rc=$?
t "a partial set fails naming the missing variable" '[ $rc -eq 1 ] && grep -q "AUTOPIPE_DP_RANK is not set" "$tmp/err"'
echo "1..$n"
exit $fail
