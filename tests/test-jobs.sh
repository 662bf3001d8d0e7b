#!/bin/sh
# test-jobs.sh - the sbatch templates and example configs in jobs/: shell
# syntax, the header a user reads first, and that every config key and
# --section.key override they use is in the key contract (docs/config-keys.md).
# Submitting them (sbatch --test-only) is in tests/test-slurm-*.sh (TAP).
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
keys="$top_srcdir/docs/config-keys.md"
known=$(sed -n 's/^| \([a-z_]*\.[a-z_]*\) |.*/\1/p' "$keys")
t "the key contract lists keys" '[ $(echo "$known" | wc -l) -gt 40 ]'
is_key() { echo "$known" | grep -qxF "$1"; }

for f in "$top_srcdir"/jobs/*.sbatch; do
  b=$(basename "$f")
  t "$b: bash -n" 'bash -n "$f"'
  t "$b: header names the file and says what to change" \
    'sed -n 2p "$f" | grep -q "^# $b - " && grep -q "^# Change:" "$f"'
  t "$b: has #SBATCH lines before the first command" \
    '[ "$(grep -n "^#SBATCH" "$f" | tail -1 | cut -d: -f1)" -lt "$(grep -n "^[a-z]" "$f" | head -1 | cut -d: -f1)" ]'
  bad=
  for k in $(grep -v '^#' "$f" | grep -o -E -- '--[a-z_]+\.[a-z_]+' | sed 's/^--//' | sort -u); do
    is_key "$k" || bad="$bad $k"
  done
  t "$b: every --section.key override is a known key${bad:+ (unknown:$bad)}" '[ -z "$bad" ]'
  if grep -q "autopipe train" "$f"; then
    t "$b: MPI steps use srun --mpi=pmix" '! grep "srun" "$f" | grep "autopipe \(train\|mesh\)" | grep -v -q -- "--mpi=pmix"'
    # so a template runs unedited on a tiny config (tests/test-slurm-ckpt.sh does)
    t "$b: the script's arguments go to autopipe train" \
      'sed -e :a -e "/\\\\\$/N; s/\\\\\n//; ta" "$f" | grep "autopipe train" | grep -q "\"\\\$@\""'
  fi
done
t "the preemptible template asks for USR1 90 s ahead and requeue" \
  'grep -qx "#SBATCH --signal=USR1@90" "$top_srcdir/jobs/preemptible.sbatch" && grep -qx "#SBATCH --requeue" "$top_srcdir/jobs/preemptible.sbatch"'

for f in "$top_srcdir"/jobs/configs/*.yaml; do
  b=$(basename "$f")
  # section: an unindented "name:"; key: "  name:" under it (these files are flat)
  used=$(awk '/^[a-z_]+:/ { s = $1; sub(":", "", s); next }
              /^  [a-z_]+:/ { k = $1; sub(":", "", k); print s "." k }' "$f")
  bad=
  for k in $used; do is_key "$k" || bad="$bad $k"; done
  t "$b: every key is a known key${bad:+ (unknown:$bad)}" '[ -n "$used" ] && [ -z "$bad" ]'
  t "$b: starts with a comment saying what it is for" 'head -1 "$f" | grep -q "^# $b - "'
  t "$b: loads with the real parser (autopipe config)" '"$AUTOPIPE" config --config "$f" >/dev/null'
  if ! grep -q "from_pretrained" "$f"; then  # from_pretrained needs the HF directory itself
    t "$b: autopipe plan places its stages" '"$AUTOPIPE" plan --config "$f" | grep -q "^mesh: pp"'
  fi
done
echo "1..$n"
exit $fail
