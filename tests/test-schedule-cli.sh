#!/bin/sh
# test-schedule-cli.sh - `autopipe schedule`: timeline, figures, pictures,
# CSV export and reload, exit codes (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
A="$AUTOPIPE"
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
fix="$top_srcdir/tests/data/schedule"

t "help describes the command" '"$A" schedule --help | grep -q -- "--stages-per-rank"'
t "autopipe help lists schedule" '"$A" help | grep -q "^  schedule "'
"$A" schedule --schedule 1f1b --pp 4 --microbatches 8 >"$tmp/1f1b.txt" 2>&1; rc=$?
t "1f1b pp4 m8 runs" '[ $rc -eq 0 ]'
t "timeline has one line per rank" '[ $(grep -c "^rank [0-3] *|" "$tmp/1f1b.txt") -eq 4 ]'
t "rank 3 line starts idle then F0" 'grep -q "^rank 3  |\.\.\.\.\.\.\.\.\.F0 B0" "$tmp/1f1b.txt"'
t "bubble 3/11 = 27.3% printed" 'grep -q "mean bubble 27.3%" "$tmp/1f1b.txt"'
t "rank 0 peak live activations 4 (= pp)" 'grep -q "^rank 0 .*peak live activations 4$" "$tmp/1f1b.txt"'
t "validated line printed" 'grep -q "validated: complete and deadlock-free" "$tmp/1f1b.txt"'
t "GPipe spelling accepted, peak m" '"$A" schedule -s GPipe -p 2 -m 6 | grep -q "^rank 0 .*peak live activations 6$"'
t "costs change the figures" '"$A" schedule -s gpipe -p 2 -m 4 --costs F=2,B=3,comm=0.5 | grep -q "^makespan 26,"'
t "grid printed with --grid" '"$A" schedule -s 1f1b -p 2 -m 2 --grid | grep -q "^Step 0: 0F0"'
t "lowered grid has sends" '"$A" schedule -s 1f1b -p 2 -m 2 --grid --lowered | grep -q "0SEND_F0"'

"$A" schedule -s zbv -p 4 -m 8 -o "$tmp/zbv.png" >/dev/null 2>&1; rc=$?
t "zbv PNG written" '[ $rc -eq 0 ] && [ -s "$tmp/zbv.png" ]'
t "PNG has the PNG signature" 'head -c 8 "$tmp/zbv.png" | od -An -c | grep -q "P   N   G"'
"$A" schedule -s interleaved_1f1b -p 4 -m 8 -v 2 -o "$tmp/i.svg" >/dev/null 2>&1; rc=$?
t "interleaved SVG written" '[ $rc -eq 0 ] && grep -q "<svg" "$tmp/i.svg"'

"$A" schedule -s interleaved_zb -p 3 -m 6 -o "$tmp/zb.csv" >/dev/null 2>&1; rc=$?
t "CSV export" '[ $rc -eq 0 ] && [ $(wc -l <"$tmp/zb.csv") -eq 3 ] && grep -q "0I0" "$tmp/zb.csv"'
t "exported CSV reloads with --csv, same figures" \
  '[ "$("$A" schedule --csv "$tmp/zb.csv" | grep "^makespan")" = "$("$A" schedule -s interleaved_zb -p 3 -m 6 | grep "^makespan")" ]'
"$A" schedule -s 1f1b -p 2 -m 4 --lowered -o "$tmp/cc.csv" >/dev/null 2>&1; rc=$?
t "compute_comms CSV export reloads" '"$A" schedule --csv "$tmp/cc.csv" >/dev/null 2>&1'
"$A" schedule -s zbv -p 2 -m 4 --forward-only -o "$tmp/fo.csv" >/dev/null 2>&1; rc=$?
t "forward-only CSV export has only forwards" '[ $rc -eq 0 ] && ! grep -q "[BIW]" "$tmp/fo.csv" && grep -q "3F3" "$tmp/fo.csv"'
t "forward-only CSV shown with --forward-only" '"$A" schedule --csv "$tmp/fo.csv" --forward-only | grep -q "forward only"'
t "forward-only CSV refused as a training schedule (2)" '"$A" schedule --csv "$tmp/fo.csv" 2>&1 | grep -q "cannot train"; "$A" schedule --csv "$tmp/fo.csv" >/dev/null 2>&1; [ $? -eq 2 ]'
if command -v python3 >/dev/null 2>&1; then
t "Chrome trace of the simulation is JSON with one event per compute" \
  '"$A" schedule -s 1f1b -p 2 -m 3 -o "$tmp/t.json" >/dev/null && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); x=[e for e in d[\"traceEvents\"] if e[\"ph\"]==\"X\"]; sys.exit(0 if len(x)==12 and any(e[\"name\"]==\"1B2\" for e in x) else 1)" "$tmp/t.json"'
else n=$((n+1)); echo "ok $n # SKIP python3 not found (JSON check)"; fi
"$A" schedule -s interleaved_zb -p 2 -m 4 --costs F=1.5,I@2=3 -o "$tmp/sim.json" >"$tmp/sim.txt" 2>&1
t "costs measured from a trace predict the same makespan" \
  '"$A" schedule -s interleaved_zb -p 2 -m 4 --costs-from "$tmp/sim.json" | grep "^makespan" | cmp -s - "$(grep "^makespan" "$tmp/sim.txt" >"$tmp/m1"; echo "$tmp/m1")"'
t "bad trace exits 2" '"$A" schedule -s 1f1b -p 2 -m 2 --costs-from "$tmp/bad.csv" >/dev/null 2>&1; [ $? -eq 2 ]'
t "PyTorch compute_only CSV runs" '"$A" schedule --csv "$fix/torch_1f1b_pp2_m4_compute_only.csv" | grep -q "mean bubble 20.0%"'

printf '0F0,0B0,0F1\n' >"$tmp/bad.csv"
"$A" schedule --csv "$tmp/bad.csv" >/dev/null 2>"$tmp/bad.err"; rc=$?
t "incomplete CSV exits 2 with reason" '[ $rc -eq 2 ] && grep -q "never runs a backward for microbatch 1" "$tmp/bad.err"'
t "no schedule is a usage error (2)" '"$A" schedule --pp 2 -m 2 >/dev/null 2>&1; [ $? -eq 2 ]'
t "missing --pp is a usage error (2)" '"$A" schedule -s 1f1b -m 2 >/dev/null 2>&1; [ $? -eq 2 ]'
t "bad number is a usage error (2)" '"$A" schedule -s 1f1b -p two -m 2 >/dev/null 2>&1; [ $? -eq 2 ]'
t "unknown option is a usage error (2)" '"$A" schedule --bogus >/dev/null 2>&1; [ $? -eq 2 ]'
t "1f1b with m < pp exits 2 and says why" \
  '"$A" schedule -s 1f1b -p 4 -m 2 2>&1 | grep -q "2 microbatches < pp 4"; "$A" schedule -s 1f1b -p 4 -m 2 >/dev/null 2>&1; [ $? -eq 2 ]'
t "zbv with 3 stages per rank exits 2" '"$A" schedule -s zbv -p 2 -m 4 -v 3 >/dev/null 2>&1; [ $? -eq 2 ]'
t "bad output extension exits 2" '"$A" schedule -s 1f1b -p 2 -m 2 -o "$tmp/x.gif" >/dev/null 2>&1; [ $? -eq 2 ]'
t "bad costs exit 2" '"$A" schedule -s 1f1b -p 2 -m 2 --costs F=x >/dev/null 2>&1; [ $? -eq 2 ]'
t "unwritable output exits 1" '"$A" schedule -s 1f1b -p 2 -m 2 -o /nonexistent/dir/x.png >/dev/null 2>&1; [ $? -eq 1 ]'
echo "1..$n"
exit $fail
