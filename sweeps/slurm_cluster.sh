#!/usr/bin/env bash
# A single-node Slurm cluster on this (Debian) machine, for tests and trying sweeps locally.
#
#   sweeps/slurm_cluster.sh up      # install (root + apt) and start munged/slurmctld/slurmd
#   sweeps/slurm_cluster.sh down [munged,slurmctld,slurmd]   # stop daemons `up` started
#   sweeps/slurm_cluster.sh status
#
# `up` is idempotent: daemons already running (ours from an earlier `up`, or the machine's own
# munged) are reused and not recorded as started by this call. On success it prints
#   SLURM_CONF=<dir>/slurm.conf      (export it: clients and sweeps use this cluster)
#   STARTED=<daemons this call started, comma-separated, maybe empty>
# and exits 0; it exits 2 with one line on stderr when the cluster cannot be started here
# (not root, no apt, not Debian-like), 1 on an unexpected failure.
# The cluster is tuned for tests: KillWait=3 s, fast scheduling, no accounting, no cgroups.
# Settings: HNETBENCH_SLURM_DIR (state, default /tmp/hnetbench-slurm), HNETBENCH_SLURM_CPUS
# (CPUs the node advertises, default max(4, nproc), so a few 1-CPU test jobs run at once),
# HNETBENCH_SLURM_PORT (slurmctld port, default 6917; slurmd uses the next one).
set -euo pipefail

DIR=${HNETBENCH_SLURM_DIR:-/tmp/hnetbench-slurm}
PORT=${HNETBENCH_SLURM_PORT:-6917}
CONF=$DIR/slurm.conf
PIDS=$DIR/started          # pid files of the daemons started by this script
HOST=$(hostname -s)

say() { echo "slurm_cluster: $*" >&2; }
cannot() { echo "slurm_cluster: cannot start a cluster here: $*" >&2; exit 2; }

alive() {  # alive PIDFILE NAME: the recorded pid runs a process called NAME
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

install_packages() {
  local missing=()
  for tool in slurmctld slurmd sbatch munged; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || cannot "${missing[*]} not installed and not root"
  command -v apt-get >/dev/null 2>&1 || cannot "${missing[*]} not installed and no apt-get"
  say "installing slurmctld slurmd slurm-client munge (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || cannot "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >&2 \
    || cannot "apt-get install slurmctld slurmd slurm-client munge failed"
}

start_munge() {
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0  # the machine's munged (or ours from an earlier `up`) answers
  fi
  local key=/etc/munge/munge.key
  if [ ! -s "$key" ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge && chmod 0700 /etc/munge && chmod 0400 "$key"
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  runuser -u munge -- /usr/sbin/munged --force
  for _ in $(seq 50); do
    [ -s /run/munge/munged.pid ] && break
    sleep 0.1
  done
  cp /run/munge/munged.pid "$PIDS/munged.pid"
  STARTED+=(munged)
}

write_conf() {
  local cpus mem
  cpus=${HNETBENCH_SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
  mem=$(( mem * 9 / 10 ))
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
  cat >"$CONF.tmp" <<EOF
# written by sweeps/slurm_cluster.sh: a one-node test cluster (no cgroups, no accounting)
ClusterName=hnetbench
SlurmctldHost=$HOST
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=3
MinJobAge=600
SchedulerParameters=sched_interval=2,bf_interval=2
MessageTimeout=20
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$CONF.tmp" "$CONF"
}

up() {
  if alive "$PIDS/slurmctld.pid" slurmctld && alive "$PIDS/slurmd.pid" slurmd; then
    echo "SLURM_CONF=$CONF"  # already up (any user may use it)
    echo "STARTED="
    return 0
  fi
  install_packages
  [ "$(id -u)" -eq 0 ] || cannot "slurmd must run as root (run as root, or use a real cluster)"
  mkdir -p "$DIR" "$PIDS"
  STARTED=()
  start_munge
  if ! alive "$PIDS/slurmctld.pid" slurmctld; then
    write_conf
    slurmctld -f "$CONF" -c  # -c: a fresh job table (a leftover state dir is from a dead cluster)
    cp "$DIR/slurmctld.pid" "$PIDS/slurmctld.pid" 2>/dev/null || sleep 1
    cp "$DIR/slurmctld.pid" "$PIDS/slurmctld.pid"
    STARTED+=(slurmctld)
  fi
  if ! alive "$PIDS/slurmd.pid" slurmd; then
    slurmd -f "$CONF"
    cp "$DIR/slurmd.pid" "$PIDS/slurmd.pid" 2>/dev/null || sleep 1
    cp "$DIR/slurmd.pid" "$PIDS/slurmd.pid"
    STARTED+=(slurmd)
  fi
  export SLURM_CONF=$CONF
  local state=""
  for _ in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    case $state in
      idle|mix|alloc) break ;;
      down*|drain*|drng*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case $state in
    idle|mix|alloc) ;;
    *) say "node $HOST did not become idle (state '$state'); see $DIR/log"; exit 1 ;;
  esac
  echo "SLURM_CONF=$CONF"
  echo "STARTED=$(IFS=,; echo "${STARTED[*]}")"
}

stop_one() {  # stop_one NAME: SIGTERM the daemon we started, wait, then SIGKILL
  local f=$PIDS/$1.pid pid
  alive "$f" "$1" || { rm -f "$f"; return 0; }
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
  [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
  say "stopped $1 ($pid)"
}

down() {  # down [DAEMONS]: the comma-separated list `up` printed as STARTED (default: all ours)
  local which=",${1:-munged,slurmctld,slurmd},"
  if [[ $which == *,slurmctld,* ]] && alive "$PIDS/slurmctld.pid" slurmctld; then
    # end our cluster's jobs before its daemons (KillWait is 3 s here)
    SLURM_CONF=$CONF scancel --user="$(id -un)" 2>/dev/null || true
    sleep 4
  fi
  for d in slurmd slurmctld munged; do
    [[ $which == *,$d,* ]] && stop_one "$d"
  done
  return 0
}

status() {
  for d in munged slurmctld slurmd; do
    if alive "$PIDS/$d.pid" "$d"; then echo "$d: running (started here, pid $(cat "$PIDS/$d.pid"))"
    else echo "$d: not started by this script"; fi
  done
  [ -f "$CONF" ] && SLURM_CONF=$CONF sinfo 2>/dev/null || true
}

case ${1:-} in
  up) up ;;
  down) down "${2:-}" ;;
  status) status ;;
  *) echo "usage: $0 up | down [DAEMONS] | status" >&2; exit 2 ;;
esac
