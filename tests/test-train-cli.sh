#!/bin/sh
# test-train-cli.sh - `autopipe tokenize` end to end (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
printf 'hello autopipe\n' > "$dir/in.txt"
t "tokenize writes a shard" '"$AUTOPIPE" tokenize "$dir/in.txt" "$dir/out.bin" | grep -q "17 tokens"'
t "shard: header + 17 uint16 tokens" '[ "$(wc -c < "$dir/out.bin")" -eq $((32 + 2 * 17)) ]'
t "shard starts with the magic" '[ "$(head -c 8 "$dir/out.bin")" = APTOKENS ]'
t "--width 4 doubles the token bytes" '"$AUTOPIPE" tokenize --width 4 "$dir/in.txt" "$dir/out4.bin" >/dev/null && [ "$(wc -c < "$dir/out4.bin")" -eq $((32 + 4 * 17)) ]'
t "--print-builtin prints the built-in text" '"$AUTOPIPE" tokenize --print-builtin | head -c 16 | grep -q "Once upon a time"'
t "--builtin tokenizes it" '"$AUTOPIPE" tokenize --builtin "$dir/b.bin" | grep -q "tokens"'
t "missing input is a runtime error naming the file" 'out=$("$AUTOPIPE" tokenize "$dir/nope.txt" "$dir/x.bin" 2>&1); [ $? -eq 1 ] && echo "$out" | grep -q nope.txt'
t "bad --width is a usage error" '"$AUTOPIPE" tokenize --width 3 "$dir/in.txt" "$dir/x.bin" 2>/dev/null; [ $? -eq 2 ]'
echo "1..$n"
exit $fail
