#!/bin/sh
# The main job on the built-in default config, from a fresh Debian 12 machine (as root):
#     sh scripts/run-main.sh [--section.key VALUE]...
# installs the packages (scripts/install-deps.sh), builds out of tree in build/, prints the
# plan of the built-in config (a tiny Llama-shaped model on 2 pipeline stages, 1F1B) and
# trains it on the built-in text with 2 MPI ranks (one per stage), writing per-stage HDF5
# checkpoints under build/main-run-DATE/; then it inspects the last checkpoint and lets the
# model write a few lines. Extra arguments are config overrides for both plan and train.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/install-deps.sh" || exit 1
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ]; then
  ./autogen.sh >/dev/null 2>&1 || { ./autogen.sh; exit 1; }
fi
mkdir -p build && cd build
if [ ! -f Makefile ] || [ "$top/configure" -nt config.status ]; then
  "$top/configure" --quiet || exit 1
fi
make -j"$(nproc 2>/dev/null || echo 2)" >/dev/null || { make 2>&1 | tail -40; exit 1; }
./autopipe plan "$@" || exit $?
run="$top/build/main-run-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$run" && cd "$run" || exit 1
echo
echo "== training with 2 pipeline stages (mpirun -np 2) in $run"
# Loopback only; root and oversubscription allowed so this works in a fresh container.
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo \
  OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
mpirun -np 2 "$top/build/autopipe" train --logging.metrics_file metrics.jsonl "$@" || exit $?
echo
echo "== the last checkpoint"
"$top/build/autopipe" ckpt info checkpoints/latest || exit $?
echo
echo "== a sample from the trained model"
exec "$top/build/autopipe" generate --model checkpoints/latest --prompt "The " --max-new-tokens 120 --temperature 0
