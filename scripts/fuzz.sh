#!/bin/sh
# Fuzz the safetensors header parser (and the config.json parser) with
# libFuzzer. Outside `make check` (needs clang with libFuzzer: Debian's clang).
#     sh scripts/fuzz.sh [SECONDS] [safetensors|hf_config]     (or make fuzz-safetensors)
# Builds into ${FUZZ_DIR:-/tmp/autopipe-fuzz}, seeds the corpus with the test
# fixtures' headers and config.json files, runs SECONDS (default 60), prints
# libFuzzer's final stats (exec count). Exit status non-zero on a crash.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
secs=${1:-60}
what=${2:-safetensors}
out=${FUZZ_DIR:-/tmp/autopipe-fuzz}
CC=${CLANG:-clang}
mkdir -p "$out/corpus-$what"
flags="-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -D_GNU_SOURCE"
[ "$what" = hf_config ] && flags="$flags -DFUZZ_HF_CONFIG"
# launcher/config.h (included by hf_config.c for the reader hook) wants the
# autoconf config.h: an empty one will do; the hook's setter is a stub.
: > "$out/config.h"
cat > "$out/hook_stub.c" <<'STUB'
#include "launcher/config.h"
void ap_config_set_pretrained_reader(ap_pretrained_reader_fn fn) { (void)fn; }
STUB
$CC $flags -I"$top" -I"$out" $(pkg-config --cflags libcjson) \
  "$top/tests/fuzz/fuzz-safetensors.c" "$top/checkpoint/safetensors.c" "$top/trainer/hf_config.c" \
  "$out/hook_stub.c" $(pkg-config --libs libcjson) -lm -o "$out/fuzz-$what"
# seeds: 8-byte data length + header of each fixture file / each config.json
python3 - "$top" "$out/corpus-$what" "$what" <<'PY'
import glob, os, struct, sys
top, corpus, what = sys.argv[1:4]
for i, f in enumerate(sorted(glob.glob(top + "/tests/fixtures/hf/*/*"))):
    b = open(f, "rb").read()
    if what == "hf_config" and f.endswith("config.json"):
        open(f"{corpus}/seed{i}", "wb").write(b)
    elif what == "safetensors" and f.endswith(".safetensors"):
        n = struct.unpack("<Q", b[:8])[0]
        open(f"{corpus}/seed{i}", "wb").write(struct.pack("<Q", len(b) - 8 - n) + b[8:8 + n])
PY
cd "$out"
"./fuzz-$what" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 -rss_limit_mb=2048 \
  "corpus-$what" 2>&1 | grep -E "stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|ERROR|SUMMARY|Done|#[0-9]+.*DONE" || true
ls crash-* leak-* timeout-* oom-* 2>/dev/null && { echo "fuzz.sh: findings in $out"; exit 1; }
exit 0
