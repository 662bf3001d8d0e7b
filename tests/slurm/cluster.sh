# cluster.sh - a private Slurm cluster for the tests, sourced by tests/test-slurm-*.sh:
#
#     . "$top_srcdir/tests/slurm/cluster.sh"
#     cluster_need || exit 0          # prints a TAP skip line when Slurm or the plugin is missing
#     cluster_start 1 || exit 1       # 1 node (n1) or 2 nodes (n[1-2], one slurmd each)
#                                     # (CLUSTER_CONF_EXTRA: more slurm.conf lines)
#     srun -n 4 ...                   # SLURM_CONF is exported; the plugin is in plugstack.conf
#
# Everything (munge key/socket, slurm.conf, state, spool, logs) lives in one
# mktemp directory. munged, slurmctld and slurmd run in the foreground under
# this shell and are stopped by PID from an EXIT trap (SIGTERM, then SIGKILL
# after a grace period), so the cluster goes away even when a test fails.
# slurmstepd processes are found by a marker in their environment (they are
# forked by our slurmd and inherit it), never by name.

CLUSTER_DIR=
CLUSTER_PIDS=
CLUSTER_MARK=

# Where the built plugin is; empty when it was not built.
cluster_plugin() {
  for f in "$top_builddir/.libs/spank_autopipe.so"; do
    [ -f "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

# Prints "1..0 # SKIP why" and returns 1 when the cluster cannot run here.
cluster_need() {
  for v in SLURMCTLD SLURMD MUNGED; do
    eval "p=\${$v:-}"
    if [ -z "$p" ] || [ ! -x "$p" ]; then
      echo "1..0 # SKIP $(echo "$v" | tr A-Z a-z) not found (install slurmctld slurmd munge)"; return 1
    fi
  done
  for c in srun sbatch scontrol sinfo; do
    command -v "$c" >/dev/null 2>&1 || { echo "1..0 # SKIP $c not found (install slurm-client)"; return 1; }
  done
  cluster_plugin >/dev/null || { echo "1..0 # SKIP spank_autopipe.so not built (install libslurm-dev)"; return 1; }
  return 0
}

# A TCP port on 127.0.0.1 nobody listens on now (the kernel picks it).
cluster_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $(( 20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000 ))
}

cluster_log() { echo "# cluster: $*"; }

# cluster_start NNODES [PLUGSTACK_ARGS...]
cluster_start() {
  nodes=${1:-1}; shift
  plugin=$(cluster_plugin) || return 1
  # One private cluster at a time on this machine (held until this shell
  # exits): clusters side by side (make check -j2) have crashed each other's
  # Open MPI jobs, and Slurm tests are timing-sensitive under load anyway.
  exec 9>"${TMPDIR:-/tmp}/autopipe-slurm-cluster.lock"
  flock -w 540 9 || { cluster_log "another test's Slurm cluster held the lock for 9 min"; return 1; }
  CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/ap-slurm.XXXXXX") || return 1
  CLUSTER_MARK="AP_TEST_CLUSTER=$CLUSTER_DIR"
  trap cluster_stop EXIT
  trap 'exit 130' INT TERM
  d=$CLUSTER_DIR
  mkdir -p "$d/munge" "$d/munge-run" "$d/state" "$d/spool" "$d/log" "$d/tmp" || return 1
  chmod 0700 "$d/munge"; chmod 0755 "$d/munge-run"
  dd if=/dev/urandom of="$d/munge/munge.key" bs=1024 count=1 2>/dev/null
  chmod 0400 "$d/munge/munge.key"
  sock="$d/munge-run/munge.socket"

  # SLURM_CONF first: without it a Slurm client looks for a controller in DNS.
  SLURM_CONF="$d/slurm.conf"; export SLURM_CONF
  ctld_port=$(cluster_free_port); 
  {
    echo "ClusterName=aptest"
    # Distinct job ids per cluster: Open MPI names its shared-memory segments
    # after the PMIx namespace (slurm.pmix.JOB.STEP); two clusters on one
    # machine (tests run in parallel, other users' tests) both at job 1 made
    # their ranks attach to each other's segments and segfault.
    echo "FirstJobId=$(( 1000 + $(od -An -N4 -tu4 /dev/urandom) % 60000000 ))"
    echo "SlurmctldHost=localhost(127.0.0.1)"
    echo "SlurmctldPort=$ctld_port"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "AuthInfo=socket=$sock"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "StateSaveLocation=$d/state"
    echo "SlurmdSpoolDir=$d/spool/%n"
    echo "SlurmctldPidFile=$d/slurmctld.pid"
    echo "SlurmdPidFile=$d/slurmd.%n.pid"
    echo "SlurmctldLogFile=$d/log/slurmctld.log"
    echo "SlurmdLogFile=$d/log/slurmd.%n.log"
    echo "SlurmctldDebug=info"
    echo "SlurmdDebug=info"
    echo "PlugStackConfig=$d/plugstack.conf"
    echo "ProctrackType=proctrack/pgid"
    echo "TaskPlugin=task/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_CPU"
    echo "MpiDefault=pmix"
    echo "SlurmdParameters=config_overrides"
    echo "ReturnToService=2"
    echo "TmpFS=$d/tmp/%n"
    echo "JobCompType=jobcomp/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "MailProg=/bin/true"
    echo "KillWait=2"
    echo "MinJobAge=2"
    echo "InactiveLimit=0"
    i=1
    while [ "$i" -le "$nodes" ]; do
      echo "NodeName=n$i NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$(cluster_free_port) CPUs=8 RealMemory=1000 State=UNKNOWN"
      i=$((i + 1))
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO"
    # A test's own lines (e.g. SchedulerParameters), one per line.
    [ -n "${CLUSTER_CONF_EXTRA:-}" ] && printf '%s\n' "$CLUSTER_CONF_EXTRA"
  } > "$SLURM_CONF"
  echo "required $plugin${*:+ $*}" > "$d/plugstack.conf"

  env "$CLUSTER_MARK" "$MUNGED" -F --force --key-file="$d/munge/munge.key" --socket="$sock" \
    --pid-file="$d/munge-run/munged.pid" --log-file="$d/log/munged.log" \
    --seed-file="$d/munge/munged.seed" >"$d/log/munged.out" 2>&1 9>&- &
  CLUSTER_PIDS="$!"
  t=0; while [ ! -S "$sock" ] && [ $t -lt 100 ]; do sleep 0.1; t=$((t + 1)); done
  [ -S "$sock" ] || { cluster_log "munged did not start"; cluster_dump; return 1; }

  env "$CLUSTER_MARK" "$SLURMCTLD" -D -i -f "$SLURM_CONF" >"$d/log/slurmctld.out" 2>&1 9>&- &
  CLUSTER_PIDS="$CLUSTER_PIDS $!"
  i=1
  while [ "$i" -le "$nodes" ]; do
    mkdir -p "$d/spool/n$i" "$d/tmp/n$i"
    env "$CLUSTER_MARK" "$SLURMD" -D -N "n$i" -f "$SLURM_CONF" >"$d/log/slurmd.n$i.out" 2>&1 9>&- &
    CLUSTER_PIDS="$CLUSTER_PIDS $!"
    i=$((i + 1))
  done
  # Ready when every node is idle.
  t=0
  while [ $t -lt 300 ]; do
    idle=$(sinfo -h -N -t idle -o %N 2>/dev/null | sort -u | wc -l)
    [ "$idle" -eq "$nodes" ] && return 0
    sleep 0.1; t=$((t + 1))
  done
  cluster_log "cluster did not come up in 30 s"; cluster_dump
  return 1
}

# The PIDs of processes carrying our marker (slurmstepd and what it forked).
cluster_marked_pids() {
  [ -n "$CLUSTER_MARK" ] || return 0
  for e in /proc/[0-9]*/environ; do
    p=${e#/proc/}; p=${p%/environ}
    [ "$p" = "$$" ] && continue
    { tr "\\0" "\\n" < "$e"; } 2>/dev/null | grep -qxF "$CLUSTER_MARK" && echo "$p"
  done
}

cluster_dump() {
  [ -n "$CLUSTER_DIR" ] || return 0
  for f in "$CLUSTER_DIR"/log/*; do
    [ -s "$f" ] || continue
    echo "# ---- $f (tail)"; tail -15 "$f" | sed 's/^/#   /'
  done
}

cluster_stop() {
  [ -n "$CLUSTER_DIR" ] || return 0
  [ -n "${AP_CLUSTER_DUMP:-}" ] && cluster_dump
  pids="$CLUSTER_PIDS $(cluster_marked_pids)"
  for p in $pids; do kill -TERM "$p" 2>/dev/null; done
  t=0
  while [ $t -lt 50 ]; do
    alive=
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && break
    sleep 0.1; t=$((t + 1))
  done
  for p in $alive $(cluster_marked_pids); do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$CLUSTER_DIR"
  CLUSTER_DIR=; CLUSTER_PIDS=
}
