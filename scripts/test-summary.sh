#!/bin/sh
# Prints the suite's closing line "N passed, N failed" from automake's .trs
# files (one :test-result: line per TAP case) under the build directory $1.
# Exit status 1 when anything failed or nothing ran.
dir="${1:-.}"
files=$(find "$dir" -name '*.trs' 2>/dev/null)
if [ -z "$files" ]; then echo "0 passed, 1 failed"; exit 1; fi
# shellcheck disable=SC2086
cat $files | awk '
  /^:test-result: (PASS|XFAIL)/ { p++ }
  /^:test-result: SKIP/         { s++ }
  /^:test-result: (FAIL|XPASS|ERROR)/ { f++ }
  END {
    if (f > 0 || p + s == 0) { rc = 1 } else { rc = 0 }
    if (p + f + s == 0) f = 1
    if (s > 0) printf "%d passed, %d failed, %d skipped\n", p, f, s
    else printf "%d passed, %d failed\n", p, f
    exit rc
  }'
