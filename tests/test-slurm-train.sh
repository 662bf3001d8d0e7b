#!/bin/sh
# test-slurm-train.sh - `autopipe train` as a Slurm step on the private
# one-node cluster: srun --mpi=pmix with the plugin's flags runs the pipeline
# engine (pp 2, and pp 2 x dp 2), the flags win over the YAML's `distributed`
# section and the start-up log says which source decided; without the flags
# the YAML does (TAP). Checkpoints of these runs: tests/test-slurm-ckpt.sh.
. "$top_srcdir/tests/slurm/cluster.sh"
. "$top_srcdir/tests/slurm/train-common.sh"
cluster_need || exit 0
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
cluster_start 1 || { echo "Bail out! the local Slurm cluster did not start"; exit 1; }
d=$CLUSTER_DIR
unset AUTOPIPE_PP_SIZE AUTOPIPE_DP_SIZE AUTOPIPE_TP_SIZE AUTOPIPE_PP_RANK AUTOPIPE_DP_RANK \
  AUTOPIPE_TP_RANK AUTOPIPE_LOCAL_RANK
S() { timeout 120 srun --immediate=30 --mpi=pmix "$@"; }
last=
# train NAME SRUN-ARGS... -- TRAIN-ARGS...: one srun step, output in $d/NAME.{out,err,jsonl}
train() {
  name=$1; shift; a=
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do a="$a $1"; shift; done; shift
  # shellcheck disable=SC2086
  (cd "$d" && S $a "$AUTOPIPE" train "$@" --checkpoint.checkpoint_dir "$d/ck-$name" \
     --logging.metrics_file "$d/$name.jsonl") >"$d/$name.out" 2>"$d/$name.err"
  rc=$?; last=$name
  [ $rc -eq 0 ] || { echo "# $name: exit $rc"; tail -5 "$d/$name.err" | sed 's/^/#   /'; }
  return $rc
}
steps3() { [ "$(grep -c '^step [123]/3 | loss' "$d/$1.out")" = 3 ] && [ "$(grep -c '"loss"' "$d/$1.jsonl")" = 3 ]; }

# pp 2 from the flags; the YAML says pp 4 x dp 1 (4 ranks): overridden.
tiny_yaml "$d/pp4.yaml" 4 1
train pp2 --pp-size=2 -n 2 -- --config "$d/pp4.yaml"; rc=$?
t "srun --mpi=pmix --pp-size=2 -n 2 autopipe train (YAML says pp 4) completes" '[ $rc -eq 0 ]'
t "... trains 3 steps (log lines and metrics JSONL on rank 0 only)" 'steps3 pp2'
t "... start-up log: mesh pp=2 x dp=1 from env, the YAML's sizes ignored" \
  'grep -qx "autopipe: mesh pp=2 x dp=1 x tp=1 from env (AUTOPIPE_\* set by the Slurm plugin); ignoring the sizes from config" "$d/pp2.out"'
t "... the log line appears once" '[ "$(grep -c "^autopipe: mesh " "$d/pp2.out")" = 1 ]'

# Command-line overrides of distributed.* lose to the flags too.
train pp2o --pp-size=2 -n 2 -- --config "$d/pp4.yaml" --distributed.pp_size 1 --distributed.dp_size 2; rc=$?
t "--distributed.pp_size 1 --distributed.dp_size 2 overrides lose to --pp-size=2" \
  '[ $rc -eq 0 ] && grep -q "^autopipe: mesh pp=2 x dp=1 x tp=1 from env" "$d/pp2o.out" && same_losses "$d/pp2.jsonl" "$d/pp2o.jsonl"'

# Without the plugin's flags the YAML decides (and says so).
tiny_yaml "$d/pp2.yaml" 2 1
train yaml -n 2 -- --config "$d/pp2.yaml"; rc=$?
t "srun --mpi=pmix -n 2 without the flags: mesh pp=2 x dp=1 from config" \
  '[ $rc -eq 0 ] && grep -qx "autopipe: mesh pp=2 x dp=1 x tp=1 from config" "$d/yaml.out"'
t "... same losses as the flags' run" 'same_losses "$d/pp2.jsonl" "$d/yaml.jsonl"'
train yamlbad -n 2 -- --config "$d/pp4.yaml"; rc=$?
t "without the flags a YAML mesh of 4 ranks on a 2-task step fails, naming the sizes" \
  '[ $rc -ne 0 ] && grep -q "pp=4 x dp=1 x tp=1 = 4 ranks, but MPI has 2" "$d/yamlbad.out" "$d/yamlbad.err"'

# pp 2 x dp 2: 2 samples per dp rank = the pp 2 run's global batch of 4.
train pp2dp2 --pp-size=2 --dp-size=2 -n 4 -- --config "$d/pp4.yaml" --dataloader.batch_size 2; rc=$?
t "srun --mpi=pmix --pp-size=2 --dp-size=2 -n 4 autopipe train completes" '[ $rc -eq 0 ] && steps3 pp2dp2'
t "... start-up log: mesh pp=2 x dp=2 from env" \
  'grep -q "^autopipe: mesh pp=2 x dp=2 x tp=1 from env (AUTOPIPE_\* set by the Slurm plugin)" "$d/pp2dp2.out"'
t "... same per-step loss, grad norm and val loss as pp 2 with the same global batch" \
  'same_losses "$d/pp2.jsonl" "$d/pp2dp2.jsonl"'

[ $fail -eq 0 ] || cluster_dump
echo "1..$n"
exit $fail
