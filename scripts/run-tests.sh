#!/bin/sh
# The whole test suite from a fresh Debian 12 machine (as root):
#     sh scripts/run-tests.sh
# installs the packages, builds out of tree in build/ with warnings as errors,
# runs `make check` and ends with the line "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/install-deps.sh" || exit 1
cd "$top"
./autogen.sh >/dev/null 2>&1 || { ./autogen.sh; exit 1; }
mkdir -p build && cd build
if [ ! -f Makefile ] || [ "$top/configure" -nt config.status ]; then
  "$top/configure" --enable-werror --quiet || exit 1
fi
jobs=$(nproc 2>/dev/null || echo 2)
make -j"$jobs" >/dev/null || { make 2>&1 | tail -40; exit 1; }
find . -name '*.trs' -delete
make -k check -j"$jobs" 2>&1 | grep -E '^(PASS|FAIL|ERROR|XPASS|SKIP|# )' | grep -v '^PASS'
for log in $(grep -l -E '^:test-result: (FAIL|ERROR|XPASS)' $(find . -name '*.trs') 2>/dev/null); do
  echo "---- ${log%.trs}.log (tail) ----"; tail -30 "${log%.trs}.log"
done
sh "$top/scripts/test-summary.sh" .
