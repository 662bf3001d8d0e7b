#!/bin/sh
# test-nccl-comm.sh - NCCL communicators per mesh axis under mpirun (TAP).
# Skips without a CUDA device. NCCL allows one rank per GPU inside a
# communicator, so the mesh sizes follow the device count.
prog="$top_builddir/tests/test-nccl-comm"
ndev=$("$prog" --devices 2>/dev/null) || ndev=0
case "$ndev" in ''|*[!0-9]*) ndev=0 ;; esac
if [ "$ndev" -lt 1 ]; then echo "1..0 # SKIP no CUDA device"; exit 0; fi
n=0; fail=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
run() { # name np args...
  name=$1; np=$2; shift 2; n=$((n+1))
  if timeout 300 "$MPIRUN" -np "$np" "$prog" "$@" >"$tmp/out" 2>"$tmp/err" &&
     ! grep -q '^not ok' "$tmp/out"; then
    echo "ok $n - $name ($(grep -c '^ok' "$tmp/out") checks)"
  else
    echo "not ok $n - $name"; sed 's/^/# /' "$tmp/out" "$tmp/err"; fail=1
  fi
}
run "1 rank: pp, dp, tp communicators of size 1" 1
if [ "$ndev" -ge 2 ]; then run "2 ranks, pp=2" 2 --pp 2; run "2 ranks, dp=2" 2 --dp 2; fi
if [ "$ndev" -ge 4 ]; then run "4 ranks, pp=2 x tp=2" 4 --pp 2 --tp 2; fi
if [ "$ndev" -ge 8 ]; then run "8 ranks, pp=2 x dp=2 x tp=2" 8 --pp 2 --dp 2 --tp 2; fi
echo "1..$n"
exit $fail
