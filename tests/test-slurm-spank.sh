#!/bin/sh
# test-slurm-spank.sh - the SPANK plugin on a private one-node Slurm cluster
# (munged + slurmctld + slurmd, all in a temporary directory): flags in
# --help, AUTOPIPE_* per task, agreement with `autopipe mesh` under
# srun --mpi=pmix, refusals before launch, #SBATCH, plugstack arguments (TAP).
. "$top_srcdir/tests/slurm/cluster.sh"
cluster_need || exit 0
n=0; fail=0
t() { n=$((n+1)); if eval "$2"; then echo "ok $n - $1"; else echo "not ok $n - $1"; fail=1; fi; }
cluster_start 1 || { echo "Bail out! the local Slurm cluster did not start"; exit 1; }
d=$CLUSTER_DIR
unset AUTOPIPE_PP_SIZE AUTOPIPE_DP_SIZE AUTOPIPE_TP_SIZE AUTOPIPE_PP_RANK AUTOPIPE_DP_RANK \
  AUTOPIPE_TP_RANK AUTOPIPE_LOCAL_RANK
S() { timeout 60 srun --immediate=30 "$@"; }
# The AUTOPIPE_* values of every task, one line per task sorted by task id.
task_env='echo "$SLURM_PROCID pp=$AUTOPIPE_PP_RANK/$AUTOPIPE_PP_SIZE dp=$AUTOPIPE_DP_RANK/$AUTOPIPE_DP_SIZE tp=$AUTOPIPE_TP_RANK/$AUTOPIPE_TP_SIZE local=$AUTOPIPE_LOCAL_RANK"'
expect_env() { awk -v pp="$1" -v dp="$2" -v tp="$3" 'BEGIN { for (r = 0; r < pp*dp*tp; r++)
  printf "%d pp=%d/%d dp=%d/%d tp=%d/%d local=%d\n", r, int(r/(dp*tp)), pp, int(r/tp)%dp, dp, r%tp, tp, r }'; }

# ---- help ----
srun --help >"$d/help" 2>&1
for f in pp-size dp-size tp-size; do
  t "srun --help lists --$f under the plugins' options" 'sed -n "/Options provided by plugins/,\$p" "$d/help" | grep -q -- "--$f=N"'
done
sbatch --help >"$d/help" 2>&1
t "sbatch --help lists --pp-size" 'grep -q -- "--pp-size=N" "$d/help"'

# ---- coordinates per task ----
S --pp-size=2 --dp-size=2 -n 4 sh -c "$task_env" >"$d/out" 2>"$d/err"; rc=$?
sort -n "$d/out" >"$d/env.txt"
t "srun --pp-size=2 --dp-size=2 -n 4: every task gets its coordinates" \
  '[ $rc -eq 0 ] && [ "$(cat "$d/env.txt")" = "$(expect_env 2 2 1)" ]'
S --pp-size=2 -n 4 sh -c "$task_env" 2>"$d/err" | sort -n >"$d/out"
t "--dp-size defaults to tasks / pp (4 / 2)" '[ "$(cat "$d/out")" = "$(expect_env 2 2 1)" ]'
S --tp-size=2 -n 8 sh -c "$task_env" 2>"$d/err" | sort -n >"$d/out"
t "--tp-size=2 alone: pp 1, dp 4 on 8 tasks" '[ "$(cat "$d/out")" = "$(expect_env 1 4 2)" ]'
S --pp-size=2 --dp-size=2 --tp-size=2 -n 8 sh -c "$task_env" 2>"$d/err" | sort -n >"$d/out"
t "2 x 2 x 2 on 8 tasks (tp fastest)" '[ "$(cat "$d/out")" = "$(expect_env 2 2 2)" ]'
S -n 2 sh -c 'env | grep -c "^AUTOPIPE_" || true' >"$d/out" 2>"$d/err"
t "without any flag the tasks get no AUTOPIPE_* variable" '[ "$(sort -u "$d/out")" = "0" ]'

# ---- the launcher agrees ----
S --mpi=pmix --pp-size=2 --dp-size=2 -n 4 "$AUTOPIPE" mesh >"$d/out" 2>"$d/err"; rc=$?
t "srun --mpi=pmix --pp-size=2 --dp-size=2 -n 4 autopipe mesh succeeds" '[ $rc -eq 0 ]'
t "the launcher's mesh is the plugin's (source=env, same coordinates)" \
  '[ "$(sed "s/^rank //; s/ source=env\$//; s/pp=\([0-9]\) dp=\([0-9]\) tp=\([0-9]\)/pp=\1\/2 dp=\2\/2 tp=\3\/1/" "$d/out")" = "$(cat "$d/env.txt")" ] && [ $(grep -c "source=env\$" "$d/out") -eq 4 ]'
t "the launcher logs the env source" 'grep -q "from env (AUTOPIPE_\* set by the Slurm plugin)" "$d/err"'
S --mpi=none --pp-size=2 -n 2 "$AUTOPIPE" mesh >"$d/out" 2>&1; rc=$?
t "srun --mpi=none: the launcher fails with the hint" '[ $rc -ne 0 ] && grep -q "use srun --mpi=pmix" "$d/out"'

# ---- refusals before any task starts ----
S --pp-size=4 --dp-size=2 -n 6 touch "$d/ran" >"$d/out" 2>&1; rc=$?
t "4 x 2 on 6 tasks fails with the one-line reason" \
  '[ $rc -ne 0 ] && grep -q "autopipe: --pp-size=4 x --dp-size=2 x --tp-size=1 = 8 ranks, but this step has 6 tasks" "$d/out"'
t "... and no task started" '[ ! -e "$d/ran" ]'
S --pp-size=4 -n 6 touch "$d/ran" >"$d/out" 2>&1; rc=$?
t "pp 4 not dividing 6 tasks fails before launch" '[ $rc -ne 0 ] && grep -q "does not divide this step.s 6 tasks" "$d/out" && [ ! -e "$d/ran" ]'
for v in abc 0 -1 2x +2 0x2 1.5 99999999999999999999 ' 2'; do
  S --pp-size="$v" -n 2 touch "$d/ran" >"$d/out" 2>&1; rc=$?
  t "--pp-size='$v' fails before launch with a message" '[ $rc -ne 0 ] && grep -q "autopipe: --pp-size=" "$d/out" && [ ! -e "$d/ran" ]'
done
S --tp-size= -n 2 touch "$d/ran" >"$d/out" 2>&1; rc=$?
t "--tp-size= (empty) fails before launch" '[ $rc -ne 0 ] && [ ! -e "$d/ran" ]'
S --dp-size=3 -n 2 touch "$d/ran" >"$d/out" 2>&1; rc=$?
t "--dp-size=3 on 2 tasks fails" '[ $rc -ne 0 ] && grep -q "= 3 ranks, but this step has 2 tasks" "$d/out" && [ ! -e "$d/ran" ]'

# ---- batch jobs ----
cat >"$d/job.sh" <<JOB
#!/bin/sh
#SBATCH --pp-size=2
#SBATCH -n 4
#SBATCH -o $d/job.out
echo "batch step: \${AUTOPIPE_PP_RANK:-unset}"
srun sh -c '$task_env' | sort -n
srun --pp-size=4 printenv AUTOPIPE_PP_SIZE | sort -u | sed 's/^/override: /'
JOB
(cd "$d" && timeout 120 sbatch --wait "$d/job.sh" >"$d/out" 2>&1); rc=$?
t "sbatch --wait of a script with #SBATCH --pp-size=2 completes" '[ $rc -eq 0 ]'
t "an srun inside it gets pp=2 (dp 2) on each task" '[ "$(grep "^[0-9]" "$d/job.out")" = "$(expect_env 2 2 1)" ]'
t "an explicit srun flag overrides #SBATCH" 'grep -qx "override: 4" "$d/job.out"'
t "the batch script itself is not a rank (no AUTOPIPE_* set)" 'grep -qx "batch step: unset" "$d/job.out"'
(cd "$d" && timeout 60 sbatch --pp-size=x -n 2 --wrap true >"$d/out" 2>&1); rc=$?
t "sbatch --pp-size=x is refused at submission" '[ $rc -ne 0 ] && grep -q "autopipe: --pp-size=.x. is not a positive integer" "$d/out"'
timeout 60 salloc --immediate=30 --pp-size=2 -n 4 srun printenv AUTOPIPE_DP_SIZE >"$d/out" 2>"$d/err"; rc=$?
t "salloc --pp-size=2 -n 4 srun ...: dp 2" '[ $rc -eq 0 ] && [ "$(sort -u "$d/out")" = "2" ]'

for j in pretrain-single-node finetune-hf preemptible inspect-checkpoint; do
  (cd "$d" && timeout 60 sbatch --test-only "$top_srcdir/jobs/$j.sbatch" >"$d/out" 2>&1); rc=$?
  t "jobs/$j.sbatch: its #SBATCH lines are accepted (sbatch --test-only)" '[ $rc -eq 0 ] && grep -q "to start at" "$d/out"'
done

# ---- plugstack.conf arguments (read by every srun) ----
plugin=$(cluster_plugin)
echo "required $plugin max_pp=2 default_tp=2" >"$d/plugstack.conf"
S --pp-size=4 -n 4 true >"$d/out" 2>&1; rc=$?
t "max_pp=2 refuses --pp-size=4 naming the limit" '[ $rc -ne 0 ] && grep -q "exceeds this cluster.s limit max_pp=2" "$d/out"'
# stdout alone: srun may add "job N queued and waiting for resources" to
# stderr while the refused step's allocation is still completing.
S --pp-size=2 -n 4 printenv AUTOPIPE_TP_SIZE >"$d/out" 2>"$d/err"; rc=$?
t "default_tp=2 applies when --tp-size is not given" \
  '[ $rc -eq 0 ] && [ "$(sort -u "$d/out")" = "2" ] || { echo "# rc=$rc"; sed "s/^/#   /" "$d/out" "$d/err"; false; }'
for a in bogus=1 max_pp=0 max_pp=x max_pp; do
  echo "required $plugin $a" >"$d/plugstack.conf"
  S -n 1 true >"$d/out" 2>&1; rc=$?
  t "plugstack argument '$a' makes the plugin refuse to load" '[ $rc -ne 0 ] && grep -q "autopipe: .*; the plugin is not loaded" "$d/out"'
done
# srun sees good arguments, the node bad ones (a site half-way through an
# edit): tasks using the flags fail with a message, others run, no drain.
echo "required $plugin" >"$d/plugstack.good"
sed "s|^PlugStackConfig=.*|PlugStackConfig=$d/plugstack.good|" "$SLURM_CONF" >"$d/client.conf"
echo "required $plugin bogus=1" >"$d/plugstack.conf"
SLURM_CONF="$d/client.conf" S --pp-size=1 -n 1 touch "$d/ran" >"$d/out" 2>&1; rc=$?
t "bad arguments on the node only: the task fails in task_init with the reason" \
  '[ $rc -ne 0 ] && grep -q "autopipe: this node.s plugstack.conf arguments for spank_autopipe.so are invalid" "$d/out" && [ ! -e "$d/ran" ]'
SLURM_CONF="$d/client.conf" S -n 1 echo noflags >"$d/out" 2>&1; rc=$?
t "... a step without the flags still runs there" '[ $rc -eq 0 ] && grep -qx noflags "$d/out"'
t "... and the node is not drained" '! sinfo -h -N -o %T | grep -q -i drain'

echo "required $plugin" >"$d/plugstack.conf"
S --pp-size=2 -n 2 true >"$d/out" 2>&1; rc=$?
t "restored plugstack.conf works again" '[ $rc -eq 0 ]'

[ $fail -eq 0 ] || { cluster_dump; echo "# last stderr:"; sed "s/^/#   /" "$d/err" | tail -20; }
echo "1..$n"
exit $fail
