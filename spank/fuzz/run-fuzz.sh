#!/bin/sh
# run-fuzz.sh SRCDIR OUTDIR [SECONDS] - build the libFuzzer harness for
# spank/args.c with clang (-fsanitize=fuzzer,address,undefined) and run it.
# Not part of `make check`; `make fuzz-spank FUZZ_SECONDS=N` calls it.
set -eu
src=${1:?usage: run-fuzz.sh SRCDIR OUTDIR [SECONDS]}
out=${2:?usage: run-fuzz.sh SRCDIR OUTDIR [SECONDS]}
secs=${3:-60}
CLANG=${CLANG:-clang}
command -v "$CLANG" >/dev/null || { echo "run-fuzz.sh: $CLANG not found (apt-get install clang)"; exit 1; }
mkdir -p "$out/corpus"
"$CLANG" -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -I"$src" -o "$out/fuzz_args" "$src/spank/fuzz/fuzz_args.c" "$src/spank/args.c" "$src/launcher/topology.c"
# Seeds: 4 bytes of task count, then pp\0dp\0tp\0plugstack args...
seed() { printf "$1" > "$out/corpus/$2"; }
seed '\010\000\000\000'"4"'\000'"2"'\000\000'"max_pp=8" s1
seed '\006\000\000\000'"4"'\000'"2"'\000'"1" s2
seed '\004\000\000\000'"abc"'\000\000\000'"bogus=1" s3
seed '\377\377\377\377'"99999999999999999999"'\000'"-1"'\000'"0x2"'\000'"default_tp=2"'\000'"max_dp=2" s4
seed '\010\000\000\000\000\000'"2"'\000'"default_pp=2"'\000'"max_tp=4" s5
# -print_final_stats=1: the log ends with stat::number_of_executed_units.
"$out/fuzz_args" -max_total_time="$secs" -max_len=256 -print_final_stats=1 "$out/corpus" 2>&1 | tail -25
