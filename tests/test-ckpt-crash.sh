#!/bin/sh
# test-ckpt-crash.sh - kill -9 one rank in the middle of a save, at each
# phase (rank 1 with its stage file half written, rank 0 before the marker,
# before `latest` moves) and once at an unplanned moment: the previous checkpoint stays the one
# loaded, intact; the interrupted directory is never loaded and the next save
# removes it (TAP).
H="$top_builddir/tests/ckpt-helper"
T=$(mktemp -d) || exit 1
MP=
trap '[ -n "$MP" ] && kill -9 $MP 2>/dev/null; rm -rf "$T"' EXIT
n=0; fail=0
t() { n=$((n+1)); if eval "$2" >"$T/out" 2>&1; then echo "ok $n - $1"; else echo "not ok $n - $1"; sed 's/^/# /' "$T/out"; fail=1; fi; }

# crash PHASE RANK: start a pp=2 save of step 2 that stops at PHASE on RANK; kill that rank by PID
crash() {
    rm -f "$T/pid"
    $MPIRUN -np 2 "$H" save "$D" --pp 2 --step 2 --stop "$1" --stop-rank "$2" --stop-file "$T/pid" >"$T/mp.out" 2>&1 &
    MP=$!
    i=0; while [ ! -s "$T/pid" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
    [ -s "$T/pid" ] || return 1
    kill -9 "$(cat "$T/pid")"
    i=0; while kill -0 $MP 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
    kill -9 $MP 2>/dev/null; wait $MP 2>/dev/null; MP=
    return 0
}

for spec in tensor:1 manifest:0 committed:0; do
    ph=${spec%:*}; rk=${spec#*:}; D="$T/ck_$ph$rk"
    t "[$ph rank $rk] first checkpoint (step 1) saved" '$MPIRUN -np 2 $H save $D --pp 2 --step 1'
    t "[$ph rank $rk] rank $rk killed (SIGKILL) during the save of step 2" 'crash $ph $rk'
    t "[$ph rank $rk] latest still loads as step 1, values intact" '$MPIRUN -np 1 $H load $D --pp 1 --expect-step 1'
    t "[$ph rank $rk] verify of checkpoint_dir passes" '"$AUTOPIPE" ckpt verify $D'
    if [ "$ph" != committed ]; then
        t "[$ph rank $rk] the interrupted step_00000002 is refused as uncommitted" '! "$AUTOPIPE" ckpt info $D/step_00000002 && grep -q "uncommitted" $T/out'
    else
        t "[$ph rank $rk] step 2 is committed but latest was not moved yet" '[ "$(readlink $D/latest)" = step_00000001 ] && "$AUTOPIPE" ckpt verify $D/step_00000002'
    fi
    t "[$ph rank $rk] next save (step 3, keep_last 1) succeeds" '$MPIRUN -np 2 $H save $D --pp 2 --step 3 --keep 1'
    t "[$ph rank $rk] only step 3 remains, no temporaries" '[ "$(cd $D && ls | tr "\n" " ")" = "latest step_00000003 " ] && ! ls $D/step_00000003 | grep -q tmp'
    t "[$ph rank $rk] latest is step 3 and verifies" '"$AUTOPIPE" ckpt verify $D/latest && "$AUTOPIPE" ckpt info $D | grep -q "^step  *3 "'
done
# An unplanned moment: rank 1 saving 3 x 24 MiB arrays is killed as soon as
# its step-2 file exists, wherever it is (HDF5 write, fsync, rename, ...).
D="$T/ck_any"
t "[any moment] first checkpoint (step 1, 24 MiB tensors) saved" '$MPIRUN -np 2 $H save $D --pp 2 --step 1 --big-mb 24'
rm -f "$T/pids".*
$MPIRUN -np 2 "$H" save "$D" --pp 2 --step 2 --big-mb 24 --pid-file "$T/pids" >"$T/mp.out" 2>&1 &
MP=$!
i=0; while [ ! -s "$T/pids.1" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
i=0; while ! ls "$D/step_00000002/" 2>/dev/null | grep -q "stage_001" && [ $i -lt 600 ] && kill -0 $MP 2>/dev/null; do sleep 0.02; i=$((i+1)); done
[ -s "$T/pids.1" ] && kill -9 "$(cat "$T/pids.1")" 2>/dev/null
i=0; while kill -0 $MP 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
kill -9 $MP 2>/dev/null; wait $MP 2>/dev/null; MP=
echo "# step_00000002 after the kill: $(ls $D/step_00000002 2>/dev/null | tr '\n' ' ')"
t "[any moment] latest loads (step 1, or 2 if the save had completed) and verifies" '$MPIRUN -np 1 $H load $D --pp 1 && "$AUTOPIPE" ckpt verify $D'
t "[any moment] next save succeeds and leaves only committed checkpoints" '$MPIRUN -np 2 $H save $D --pp 2 --step 3 --keep 1 && [ "$(cd $D && ls | tr "\n" " ")" = "latest step_00000003 " ]'
echo "1..$n"
exit $fail
