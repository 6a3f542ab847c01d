#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the tests of the SLURM launcher (tests/test_slurm.py)
# and for trying sweeps before a real cluster:
#
#   sudo scripts/slurm_cluster.sh start    # install (Debian packages) if needed, configure, start; idempotent
#   scripts/slurm_cluster.sh status        # one line; exit 0 only when jobs can run and sacct works
#   sudo scripts/slurm_cluster.sh stop     # stop every daemon this script starts
#
# What runs: munged (authentication) -> mariadbd (accounting database) -> slurmdbd (accounting daemon)
# -> slurmctld (controller) -> slurmd (the node), in that order because each one talks to the previous.
# Accounting is not optional: without it `sacct` is empty, and submitit (which polls sacct) cannot tell
# that a job died without writing its result, so it would wait forever.
#
# The node is this machine (hostname -s), with its real CPU count and a bit less than its memory, in
# partition `debug`. No cgroups (proctrack/linuxproc, task/none): they are not available in containers.
# Timeouts are short so that killed, timed-out and requeued jobs show up in seconds, not minutes.
#
# Daemons are started directly (no systemd: containers and CI machines often lack it). On machines where
# PID 1 does not reap orphans, a stopped daemon lingers as a zombie, so "is it running" reads each
# process's state (ps) instead of trusting `kill -0` or a pid file.
set -euo pipefail

CLUSTER=compute-optimal          # accounting cluster name (SLURM wants lowercase)
PARTITION=debug
NODE=$(hostname -s)
CONF_DIR=/etc/slurm               # where Debian's slurm commands look for slurm.conf
RUN_DIR=/run/slurm                # pid files
LOG_DIR=/var/log/slurm
STATE_DIR=/var/lib/slurm          # controller state, node spool (created by the Debian package)
DB_NAME=slurm_acct_db
SBIN=/usr/sbin
# Daemons get a clean environment: they outlive whatever shell (or pytest) started them.
CLEAN_ENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8)

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: $*" >&2; exit 1; }

# --- processes ------------------------------------------------------------------------------------

# PIDs of live processes of executable $1 (matched by process name), zombies excluded: state Z.
live_pids() {
    ps -e -o pid=,stat=,comm= | awk -v name="${1##*/}" '$3 == name && $2 !~ /^Z/ {print $1}'
}

running() { [ -n "$(live_pids "$1")" ]; }

# Stop every live process of executable $1: SIGTERM, wait up to 20 s, then SIGKILL.
stop_exe() {
    local exe=$1 name=${1##*/} pids _
    pids=$(live_pids "$exe" | xargs)
    [ -z "$pids" ] && return 0
    say "stopping $name ($pids)"
    # shellcheck disable=SC2086  # one argument per pid
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 1 40); do
        running "$exe" || return 0
        sleep 0.5
    done
    pids=$(live_pids "$exe" | xargs)
    say "$name did not stop on SIGTERM; SIGKILL $pids"
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    sleep 0.5
}

# wait_for SECONDS COMMAND...: retry COMMAND every 0.5 s until it succeeds; fail after SECONDS.
wait_for() {
    local seconds=$1 _
    shift
    for _ in $(seq 1 $((seconds * 2))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

# --- preconditions and packages -----------------------------------------------------------------

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts system daemons); try: sudo $0 $1"
}

BINARIES=("$SBIN/munged" "$SBIN/mariadbd" "$SBIN/slurmdbd" "$SBIN/slurmctld" "$SBIN/slurmd"
          /usr/bin/sbatch /usr/bin/sacct /usr/bin/sacctmgr /usr/bin/mariadb)

install_packages() {
    local missing=() b
    for b in "${BINARIES[@]}"; do [ -x "$b" ] || missing+=("$b"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them (Debian/Ubuntu only)"
    say "installing slurm-wlm slurmdbd munge mariadb-server (missing: ${missing[*]##*/})"
    # policy-rc.d exit 101 keeps the packages' maintainer scripts from starting the daemons with Debian's
    # default configuration: this script starts them itself, with its own.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local log=/tmp/slurm_cluster_apt.log rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 \
        slurm-wlm slurmdbd munge mariadb-server; } >"$log" 2>&1 || rc=$?
    [ "$created_policy" -eq 1 ] && rm -f "$policy"
    [ "$rc" -eq 0 ] || { tail -20 "$log" >&2; die "apt-get install failed (exit $rc, log: $log)"; }
    for b in "${BINARIES[@]}"; do [ -x "$b" ] || die "installed the packages but $b is still missing"; done
}

# --- configuration ------------------------------------------------------------------------------

# The node line from slurmd itself (sockets, cores, threads as slurmd will report them, so the node is
# not drained for a mismatch), with RealMemory lowered: SLURM drains a node whose memory is below
# RealMemory, and the OS keeps some for itself.
node_line() {
    local line mem
    line=$("$SBIN/slurmd" -C | head -1)
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$line")
    mem=$((mem > 2048 ? mem - 1024 : mem * 3 / 4))
    # NodeAddr: this node is always reached on the loopback interface, whatever DNS says.
    sed -e "s/RealMemory=[0-9]*/RealMemory=$mem/" -e "s/^NodeName=[^ ]*/NodeName=$NODE NodeAddr=127.0.0.1/" <<<"$line"
}

write_slurm_conf() {
    cat <<EOF
# Written by scripts/slurm_cluster.sh: a one-node test cluster. Edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=slurm
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s): a job
# requeued by submitit on its time limit restarts after ~15 s instead of ~2.5 min.
AuthInfo=cred_expire=10
CredType=cred/munge
MpiDefault=none
# No mail on this test cluster (the default /bin/mail is absent and logs an error at every start).
MailProg=/bin/true
# No cgroups in containers: track processes by parent pid, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# Cores and memory are consumable, so jobs of an array share the node as their requests allow.
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SchedulerType=sched/backfill
# A job whose begin time has passed (a requeued one) starts at the next scheduling pass: every 5 s here
# (defaults: 60 s main loop, 30 s backfill).
SchedulerParameters=sched_interval=5,bf_interval=5
# Jobs that die with their node, are preempted, or call "scontrol requeue" (submitit) go back to the queue.
JobRequeue=1
ReturnToService=2
# Fast tests: a node is declared dead after 30 s, a timed-out job gets SIGKILL 5 s after SIGTERM,
# finished jobs leave slurmctld's memory after 60 s (sacct still has them).
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
KillWait=5
OverTimeLimit=0
InactiveLimit=0
MinJobAge=60
# Accounting through slurmdbd: sacct must see every job, finished or killed.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
StateSaveLocation=$STATE_DIR/slurmctld
SlurmdSpoolDir=$STATE_DIR/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$(node_line) State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

write_slurmdbd_conf() {
    cat <<EOF
# Written by scripts/slurm_cluster.sh. The database user authenticates through MariaDB's unix socket
# (it is the slurm system user), so no password is stored anywhere.
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$RUN_DIR/slurmdbd.pid
LogFile=$LOG_DIR/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StorageLoc=$DB_NAME
EOF
}

# install_file TARGET MODE OWNER < content: replace TARGET only when the content changed; returns 0 if changed.
install_file() {
    local target=$1 mode=$2 owner=$3 tmp
    tmp=$(mktemp)
    cat >"$tmp"
    if [ -f "$target" ] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        return 1
    fi
    install -m "$mode" -o "$owner" -g "$owner" "$tmp" "$target"
    rm -f "$tmp"
    return 0
}

# --- daemons ------------------------------------------------------------------------------------

start_munge() {
    install -d -m 0755 -o munge -g munge /run/munge
    [ -s /etc/munge/munge.key ] || "$SBIN/mungekey" --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
    if ! running "$SBIN/munged"; then
        say "starting munged"
        # --force: start even if a dead munged left its socket behind.
        "${CLEAN_ENV[@]}" runuser -u munge -- "$SBIN/munged" --force
    fi
    wait_for 15 bash -c 'munge -n | unmunge' || die "munged does not answer (log: /var/log/munge/munged.log)"
}

mariadb_ping() { mariadb-admin --protocol=socket ping; }

start_mariadb() {
    install -d -m 0755 -o mysql -g root /run/mysqld
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    if ! running "$SBIN/mariadbd"; then
        say "starting mariadbd"
        install -d -m 0750 -o mysql -g adm /var/log/mysql
        # mariadbd does not daemonize: setsid + background, detached from this shell's session.
        "${CLEAN_ENV[@]}" setsid "$SBIN/mariadbd" --user=mysql \
            </dev/null >>/var/log/mysql/slurm_cluster.log 2>&1 &
    fi
    wait_for 60 mariadb_ping || die "mariadbd does not answer (log: /var/log/mysql/slurm_cluster.log)"
    # Idempotent: the database and a socket-authenticated user for slurmdbd (which runs as `slurm`).
    mariadb --protocol=socket -e "
        CREATE DATABASE IF NOT EXISTS $DB_NAME;
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED VIA unix_socket;
        GRANT ALL ON $DB_NAME.* TO 'slurm'@'localhost';" \
        || die "could not create the accounting database $DB_NAME"
}

start_slurmdbd() {
    if ! running "$SBIN/slurmdbd"; then
        say "starting slurmdbd"
        "${CLEAN_ENV[@]}" "$SBIN/slurmdbd"
    fi
    # slurmdbd creates its tables on first start (a few seconds); sacctmgr answers once it is up.
    wait_for 60 sacctmgr -n show cluster \
        || die "slurmdbd does not answer (log: $LOG_DIR/slurmdbd.log)"
    # The cluster must be registered before slurmctld starts, or jobs are not recorded.
    if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
        say "registering cluster $CLUSTER in accounting"
        sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster $CLUSTER failed"
    fi
}

start_slurm() {
    if ! running "$SBIN/slurmctld"; then
        say "starting slurmctld"
        "${CLEAN_ENV[@]}" "$SBIN/slurmctld"
    fi
    wait_for 30 scontrol ping || die "slurmctld does not answer (log: $LOG_DIR/slurmctld.log)"
    if ! running "$SBIN/slurmd"; then
        say "starting slurmd"
        "${CLEAN_ENV[@]}" "$SBIN/slurmd"
    fi
}

# The node's state as sinfo shows it, e.g. idle, mixed, allocated, down*, drained.
node_state() { sinfo -h -n "$NODE" -p "$PARTITION" -o %T 2>/dev/null | head -1; }

node_usable() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

wait_node_ready() {
    local _ state
    for _ in $(seq 1 60); do
        node_usable && return 0
        state=$(node_state)
        # A node left down/drained by an earlier run (e.g. a slurmd killed while jobs ran) comes back
        # once its slurmd answers again; tell slurmctld so instead of waiting for an administrator.
        case "$state" in
            down*|drain*|fail*) scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "node $NODE is '$(node_state)', not idle (logs: $LOG_DIR/slurmctld.log, $LOG_DIR/slurmd.log)"
}

# --- commands -----------------------------------------------------------------------------------

cmd_start() {
    need_root start
    install_packages
    install -d -m 0755 -o slurm -g slurm "$RUN_DIR" "$LOG_DIR" "$STATE_DIR" \
        "$STATE_DIR/slurmctld" "$STATE_DIR/slurmd"
    local changed=0
    write_slurm_conf | install_file "$CONF_DIR/slurm.conf" 0644 root && changed=1
    write_slurmdbd_conf | install_file "$CONF_DIR/slurmdbd.conf" 0600 slurm && changed=1
    if [ "$changed" -eq 1 ] && { running "$SBIN/slurmctld" || running "$SBIN/slurmdbd"; }; then
        say "configuration changed: restarting the SLURM daemons"
        stop_exe "$SBIN/slurmd"; stop_exe "$SBIN/slurmctld"; stop_exe "$SBIN/slurmdbd"
    fi
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurm
    wait_node_ready
    cmd_status
}

cmd_stop() {
    need_root stop
    # Reverse order of start; each step tolerates a daemon that is already gone (or a zombie).
    stop_exe "$SBIN/slurmd"
    stop_exe "$SBIN/slurmctld"
    stop_exe "$SBIN/slurmdbd"
    stop_exe "$SBIN/mariadbd"
    stop_exe "$SBIN/munged"
    # Pid files of dead daemons would only mislead the next reader.
    rm -f "$RUN_DIR"/slurmctld.pid "$RUN_DIR"/slurmd.pid "$RUN_DIR"/slurmdbd.pid
    say "stopped"
}

cmd_status() {
    local exe down=()
    for exe in munged mariadbd slurmdbd slurmctld slurmd; do
        running "$SBIN/$exe" || down+=("$exe")
    done
    if [ ${#down[@]} -gt 0 ]; then
        echo "slurm_cluster: not running (down: ${down[*]})"
        return 1
    fi
    if ! node_usable; then
        echo "slurm_cluster: not usable: node $NODE is '$(node_state)'"
        return 1
    fi
    if ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
        echo "slurm_cluster: not usable: cluster $CLUSTER is not registered in accounting"
        return 1
    fi
    echo "slurm_cluster: running: node $NODE $(node_state) in partition $PARTITION, cluster $CLUSTER with accounting"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
