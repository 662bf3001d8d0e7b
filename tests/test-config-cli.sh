#!/bin/sh
# test-config-cli.sh - `autopipe config`: merged YAML, round trip, exit codes (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
A="$AUTOPIPE"
printf 'distributed:\n  pp_size: 4\nautopipeline:\n  pp_schedule: zbv\n' > "$tmp/in.yaml"
t "config prints the merged YAML" '"$A" config --config "$tmp/in.yaml" --distributed.dp_size 2 > "$tmp/out.yaml" && grep -q "^  pp_size: 4" "$tmp/out.yaml" && grep -q "^  dp_size: 2" "$tmp/out.yaml" && grep -q "pp_schedule: zbv" "$tmp/out.yaml"'
t "the printed YAML reads back to the same config" '"$A" config --config "$tmp/out.yaml" > "$tmp/out2.yaml" && cmp -s "$tmp/out.yaml" "$tmp/out2.yaml"'
t "override forms: --k v and --k=v" '"$A" config --optimizer.lr 0.5 --rng.seed=7 | grep -q "^  lr: 0.5" && "$A" config --rng.seed=7 | grep -q "^  seed: 7"'
t "list override in YAML flow form" '"$A" config --autopipeline.module_fqns_per_model_part "[[model.embed_tokens, model.layers.0], [model.layers.1, model.norm, lm_head]]" | grep -q "module_fqns_per_model_part: \[\[model.embed_tokens, model.layers.0\], \[model.layers.1, model.norm, lm_head\]\]"'
t "bad value exits 2 with one line naming key, value and expectation" '"$A" config --distributed.pp_size 0 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && [ $(wc -l < "$tmp/err") -eq 1 ] && grep -q "distributed.pp_size: 0 is out of range (expected an integer in \[1, 16777216\])" "$tmp/err"'
t "unknown key exits 2 with a suggestion" '"$A" config --distributed.pp_sise 2 >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "did you mean distributed.pp_size" "$tmp/err"'
t "missing file exits 2 naming it" '"$A" config --config "$tmp/none.yaml" >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "none.yaml" "$tmp/err"'
printf 'model:\n  hidden_size: [64\n' > "$tmp/bad.yaml"
t "syntax error exits 2 with file:line:column" '"$A" config --config "$tmp/bad.yaml" >/dev/null 2>"$tmp/err"; [ $? -eq 2 ] && grep -q "bad.yaml:[0-9]*:[0-9]*: YAML syntax error" "$tmp/err"'
t "unknown option exits 2" '"$A" config --frobnicate >/dev/null 2>&1; [ $? -eq 2 ]'
t "--help lists config keys and exits 0" '"$A" config --help | grep -q "pp_size=1"'
t "autopipe help config works" '"$A" help config | grep -q "usage: autopipe config"'
t "--reference prints a markdown table" '"$A" config --reference | grep -q "^| \`distributed.pp_size\` | int"'
echo "1..$n"
exit $fail
