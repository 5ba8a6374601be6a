#!/usr/bin/env bash
# A single-node Slurm cluster from the installed Debian packages (slurm-wlm, munge, slurmdbd,
# mariadb-server), for the Slurm test. It installs nothing and touches nothing outside $PETL_SLURM_DIR.
#
#   .ci/slurm_up.sh [start]          configure and start munged, mariadbd, slurmdbd, slurmctld,
#                                    slurmd (no systemd: each daemon is started in the background)
#   .ci/slurm_up.sh start --no-accounting    the same without mariadb/slurmdbd (sacct fails)
#   .ci/slurm_up.sh stop             stop every daemon it started (by its pid file)
#   .ci/slurm_up.sh status           sinfo, or exit 1 when the cluster is down
#
# Clients need SLURM_CONF=$PETL_SLURM_DIR/etc/slurm.conf (printed at the end of `start`).
# Idempotent: `start` on a running cluster only checks it; `start` after `stop` reuses the state.
# One partition, `debug` (the default), holding this node with all its CPUs; KillWait is 5 s so a
# cancelled job is gone within seconds. Processes are tracked by proctrack/linuxproc: no cgroups.
set -euo pipefail

DIR=${PETL_SLURM_DIR:-/var/lib/petl-slurm}
ACTION=${1:-start}
ACCOUNTING=1
[[ "${2:-}" == "--no-accounting" ]] && ACCOUNTING=0
DB_PORT=${PETL_SLURM_DB_PORT:-3316}
export SLURM_CONF=$DIR/etc/slurm.conf
MUNGE_SOCKET=$DIR/run/munge.socket
DB_SOCKET=$DIR/mysql/mysqld.sock
NODE=$(hostname -s)

say() { echo "slurm_up: $*"; }
die() { echo "slurm_up: error: $*" >&2; exit 1; }

alive() {  # alive NAME: the daemon's pid file names a live process
  local pid_file=$DIR/run/$1.pid
  [[ -s $pid_file ]] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

wait_for() {  # wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds
  local what=$1 seconds=$2 deadline=$((SECONDS + $2))
  shift 2
  while ((SECONDS < deadline)); do
    timeout 10 "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  die "$what did not come up within $seconds s; logs in $DIR/log"
}

stop_one() {  # stop_one NAME: TERM, then KILL after 10 s
  local pid_file=$DIR/run/$1.pid pid
  [[ -s $pid_file ]] || return 0
  pid=$(cat "$pid_file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    say "stopped $1 ($pid)"
  fi
  rm -f "$pid_file"
}

check_installed() {
  local missing=()
  for cmd in munged slurmctld slurmd sbatch; do command -v $cmd >/dev/null || missing+=($cmd); done
  if ((ACCOUNTING)); then
    for cmd in slurmdbd mariadbd mariadb-install-db mariadb sacctmgr; do
      command -v $cmd >/dev/null || missing+=($cmd)
    done
  fi
  ((${#missing[@]} == 0)) || die "not installed: ${missing[*]} (apt-get install -y slurm-wlm \
munge slurmdbd mariadb-server)"
}

configure() {
  mkdir -p "$DIR"/{etc,munge,run,log,state,spool,mysql}
  chmod 0755 "$DIR" "$DIR"/{etc,run,log,state,spool}
  chmod 0700 "$DIR/munge"
  if [[ ! -s $DIR/munge/munge.key ]]; then  # a key of our own: never the machine's
    dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
  fi
  chmod 0400 "$DIR/munge/munge.key"
  local cpus mem
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # nproc alone obeys OMP_NUM_THREADS
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
  local acct="AccountingStorageType=accounting_storage/none"
  if ((ACCOUNTING)); then
    acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStoragePass=$MUNGE_SOCKET"
  fi
  cat >"$DIR/etc/slurm.conf" <<EOF
# written by .ci/slurm_up.sh
ClusterName=petl
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$acct
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/cgroup.conf" <<EOF
# slurmd 22.05 loads a cgroup plugin at start even when nothing uses it: processes are tracked
# by proctrack/linuxproc and task/none constrains nothing; no systemd scope is asked for
CgroupPlugin=autodetect
IgnoreSystemd=yes
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF
  if ((ACCOUNTING)); then
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
# written by .ci/slurm_up.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=petl-slurm
StorageLoc=slurm_acct_db
EOF
    chmod 0600 "$DIR/etc/slurmdbd.conf"
  fi
}

start_munge() {
  alive munged && return 0
  munged --force --key-file="$DIR/munge/munge.key" --socket="$MUNGE_SOCKET" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$DIR/munge/munged.seed"
  wait_for munged 10 munge -n -S "$MUNGE_SOCKET"
  say "munged up"
}

sql() { mariadb --socket="$DB_SOCKET" -u root "$@"; }

start_db() {
  if ! alive mariadbd; then
    if [[ ! -d $DIR/mysql/mysql ]]; then
      mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
        >"$DIR/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $DIR/log"
    fi
    mariadbd --user=root --datadir="$DIR/mysql" --socket="$DB_SOCKET" --port="$DB_PORT" \
      --bind-address=127.0.0.1 --pid-file="$DIR/run/mariadbd.pid" \
      --log-error="$DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M \
      --skip-log-bin >/dev/null 2>&1 &
    wait_for mariadbd 60 mariadb --socket="$DB_SOCKET" -u root -e "SELECT 1"
  fi
  sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'petl-slurm';
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'petl-slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  say "mariadbd up (port $DB_PORT)"
  if ! alive slurmdbd; then
    slurmdbd -D >>"$DIR/log/slurmdbd.out" 2>&1 &
    echo $! >"$DIR/run/slurmdbd.pid"
  fi
  # slurmdbd reads slurmdbd.conf beside $SLURM_CONF
  wait_for slurmdbd 60 sacctmgr -n list cluster
  if [[ -z $(sacctmgr -n -P list cluster petl format=cluster) ]]; then
    sacctmgr -i add cluster petl >/dev/null
  fi
  say "slurmdbd up"
}

start_slurm() {
  if ! alive slurmctld; then
    slurmctld -D -f "$SLURM_CONF" >>"$DIR/log/slurmctld.out" 2>&1 &
    echo $! >"$DIR/run/slurmctld.pid"
  fi
  wait_for slurmctld 60 scontrol ping
  if ! alive slurmd; then
    slurmd -D -f "$SLURM_CONF" -N "$NODE" >>"$DIR/log/slurmd.out" 2>&1 &
    echo $! >"$DIR/run/slurmd.pid"
  fi
  wait_for "the node $NODE" 60 bash -c "sinfo -h -N -o %t | grep -qE '^(idle|mix|alloc)'"
  say "slurmctld and slurmd up; node $NODE: $(sinfo -h -N -o '%t %c CPUs')"
}

case $ACTION in
  start)
    check_installed
    configure
    start_munge
    ((ACCOUNTING)) && start_db
    start_slurm
    say "ready: export SLURM_CONF=$SLURM_CONF"
    ;;
  stop)
    for name in slurmd slurmctld slurmdbd mariadbd munged; do stop_one $name; done
    ;;
  status)
    alive slurmctld && sinfo || { say "down"; exit 1; }
    ;;
  *)
    die "unknown action '$ACTION'; valid: start [--no-accounting], stop, status"
    ;;
esac
