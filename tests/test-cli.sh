#!/bin/sh
# test-cli.sh - the `autopipe` command's help, version and exit codes (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
t "--version prints the version" '"$AUTOPIPE" --version | grep -q "^autopipe [0-9]"'
t "help lists commands" '"$AUTOPIPE" help | grep -q "Commands:"'
t "no command is a usage error (2)" '"$AUTOPIPE" >/dev/null 2>&1; [ $? -eq 2 ]'
t "unknown command exits 2 and names it" '"$AUTOPIPE" frobnicate 2>&1 | grep -q "frobnicate"; "$AUTOPIPE" frobnicate 2>/dev/null; [ $? -eq 2 ]'
t "unknown global option exits 2" '"$AUTOPIPE" --bogus 2>/dev/null; [ $? -eq 2 ]'
echo "1..$n"
exit $fail
