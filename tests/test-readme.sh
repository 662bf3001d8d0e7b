#!/bin/sh
# test-readme.sh - README.md's configuration reference is exactly what the
# schema table generates (`autopipe config --reference`), and the README
# names the two quick-start commands (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
readme="$top_srcdir/README.md"
"$AUTOPIPE" config --reference > "$tmp/gen.md"
awk '/<!-- END CONFIG REFERENCE/ { on = 0 } on { print } /<!-- BEGIN CONFIG REFERENCE/ { on = 1 }' "$readme" > "$tmp/readme.md"
t "README has the reference markers" 'grep -q "<!-- BEGIN CONFIG REFERENCE" "$readme" && grep -q "<!-- END CONFIG REFERENCE" "$readme"'
t "README's config reference matches the schema (sh scripts/update-readme.sh regenerates it)" 'diff -u "$tmp/gen.md" "$tmp/readme.md" > "$tmp/diff" || { head -20 "$tmp/diff" | sed "s/^/# /"; false; }'
t "README quick start: run-main.sh then run-tests.sh" 'grep -q "^    sh scripts/run-main.sh$" "$readme" && grep -q "^    sh scripts/run-tests.sh$" "$readme"'
t "the quick-start scripts exist" '[ -f "$top_srcdir/scripts/run-main.sh" ] && [ -f "$top_srcdir/scripts/run-tests.sh" ] && [ -f "$top_srcdir/scripts/install-deps.sh" ]'
echo "1..$n"
exit $fail
