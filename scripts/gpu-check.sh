#!/bin/sh
# gpu-check.sh - the device check of the CUDA backend, in one go. Run from
# anywhere on a machine with an NVIDIA GPU (H100/H200: sm_90):
#     sh scripts/gpu-check.sh
# 1. records nvidia-smi and nvcc versions;
# 2. full build: autogen, configure --with-cuda --enable-werror in
#    build-gpu/, make, then the CUDA tests (tests/test-cuda-kernels,
#    tests/test-nccl-comm.sh) and the CPU kernel test through make check;
# 3. when configure cannot run (a machine without MPI, HDF5, ...), a
#    standalone build of just the kernels and their harness with nvcc and cc
#    (needs OpenBLAS for the CPU reference) in build-gpu/standalone/;
#    GPU_CHECK_MODE=standalone goes there directly.
# Ends with "gpu-check: N passed, N failed, N skipped (MODE)". Exit 0 only
# when something ran, nothing failed and nothing was skipped (a skip here
# means the GPU was not seen). Logs go to $OUT/gpu-check/ when $OUT is set.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cuda=${CUDA_HOME:-/usr/local/cuda}
export PATH="$cuda/bin:$PATH"
logdir=${OUT:+$OUT/gpu-check}
logdir=${logdir:-$top/build-gpu/logs}
mkdir -p "$logdir"
jobs=$(nproc 2>/dev/null || echo 2)
say() { echo "gpu-check: $*"; }

{ nvidia-smi 2>&1 || echo "nvidia-smi failed"; nvcc --version 2>&1; } >"$logdir/device.txt"
say "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1 || true)"

# TAP counts of the given logs: "pass fail skip"
count() { cat "$@" 2>/dev/null | awk '
  /^ok [0-9]+ .*# SKIP/ { s++; next } /^ok [0-9]+/ { p++ } /^not ok [0-9]+/ { f++ }
  /^1\.\.0 # SKIP/ { s++ } END { printf "%d %d %d\n", p, f, s }'; }

full_build() {
  cd "$top" || return 1
  ./autogen.sh >"$logdir/autogen.log" 2>&1 || return 1
  mkdir -p build-gpu && cd build-gpu || return 1
  ../configure --with-cuda="$cuda" --enable-werror --quiet >"$logdir/configure.log" 2>&1 || return 1
  make -j"$jobs" >"$logdir/make.log" 2>&1 || { say "make failed (see make.log)"; tail -30 "$logdir/make.log"; return 2; }
  rm -f tests/test-cuda-kernels.trs tests/test-nccl-comm.sh.trs tests/test-kernels.trs
  make check -j"$jobs" TESTS="tests/test-cuda-kernels tests/test-nccl-comm.sh tests/test-kernels" \
    >"$logdir/check.log" 2>&1
  for t in test-cuda-kernels test-nccl-comm.sh test-kernels; do cp "tests/$t.log" "$logdir/" 2>/dev/null; done
  return 0
}

standalone_build() {
  b="$top/build-gpu/standalone"; mkdir -p "$b"; cd "$top" || return 2
  blas_c=$(pkg-config --cflags openblas 2>/dev/null); blas_l=$(pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
  {
    nvcc -std=c++17 -O2 -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
      -I. -c kernels/cuda/kernels_cuda.cu -o "$b/kernels_cuda.o" &&
    cc -std=gnu11 -O2 -fopenmp -I. -I"$cuda/include" $blas_c -c kernels/cpu/kernels.c -o "$b/kernels_cpu.o" &&
    cc -std=gnu11 -O2 -fopenmp -I. -I"$cuda/include" $blas_c tests/test-cuda-kernels.c \
      "$b/kernels_cuda.o" "$b/kernels_cpu.o" -o "$b/test-cuda-kernels" \
      -L"$cuda/lib64" -Wl,-rpath,"$cuda/lib64" -lcublas -lcudart -lstdc++ $blas_l -lm
  } >"$logdir/standalone-build.log" 2>&1 || { say "standalone build failed:"; tail -20 "$logdir/standalone-build.log"; return 2; }
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 600 "$b/test-cuda-kernels" >"$logdir/test-cuda-kernels.log" 2>&1
  say "NCCL test not run in standalone mode (needs the full build with MPI)"
  return 0
}

# GPU_CHECK_MODE=standalone skips the full build
mode=full; rc=1
[ "${GPU_CHECK_MODE:-full}" = standalone ] || { full_build; rc=$?; }
if [ $rc -eq 1 ]; then
  [ "$mode" = full ] && [ "${GPU_CHECK_MODE:-full}" != standalone ] &&
    say "full build could not be configured (see $logdir/configure.log); trying the standalone kernel build"
  mode=standalone
  standalone_build; rc=$?
fi
[ $rc -eq 0 ] || { say "0 passed, 1 failed, 0 skipped ($mode: build failed)"; exit 1; }

grep -h -E '^(not ok|ok [0-9]+ .*SKIP|1\.\.0)' "$logdir"/test-*.log 2>/dev/null | sed 's/^/  /'
grep -h -E 'normalised error' "$logdir/test-cuda-kernels.log" 2>/dev/null |
  awk '{ for (i = 1; i <= NF; i++) if ($i == "error") e = $(i+1); if (e + 0 > m) { m = e + 0; w = $0 } }
       END { if (w != "") print "gpu-check: largest normalised error: " w }'
set -- $(count "$logdir"/test-*.log)
say "$1 passed, $2 failed, $3 skipped ($mode)"
[ "$1" -gt 0 ] && [ "$2" -eq 0 ] && [ "$3" -eq 0 ]
