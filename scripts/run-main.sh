#!/bin/sh
# The main job on the built-in default config, from a fresh Debian 12 machine (as root):
#     sh scripts/run-main.sh [--section.key VALUE]...
# installs the packages (scripts/install-deps.sh), builds out of tree in build/, and runs
# the built-in config (a tiny Llama-shaped model on 2 pipeline stages). For now that is
# `autopipe plan`: the mesh, which stages each rank runs, each stage's modules and
# parameter counts. Once the trainer lands, this script trains the model instead.
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
exec ./autopipe plan "$@"
