#!/bin/sh
# Regenerates README.md's configuration reference (between the CONFIG REFERENCE
# markers) from the schema table: sh scripts/update-readme.sh [path/to/autopipe]
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
ap=${1:-$top/build/autopipe}
ref=$(mktemp)
trap 'rm -f "$ref" "$ref.md"' EXIT
"$ap" config --reference > "$ref"
awk -v ref="$ref" '
  /<!-- BEGIN CONFIG REFERENCE/ { print; while ((getline line < ref) > 0) print line; skip = 1; next }
  /<!-- END CONFIG REFERENCE/   { skip = 0 }
  !skip { print }' "$top/README.md" > "$ref.md"
cat "$ref.md" > "$top/README.md"
