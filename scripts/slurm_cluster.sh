#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the slow tier's SLURM tests (tests/test_slurm.py).
#
#   bash scripts/slurm_cluster.sh install    # Debian's slurm-wlm, munge, slurmdbd and mariadb-server (as root)
#   eval "$(bash scripts/slurm_cluster.sh start)"   # prints: export SLURM_CONF=<dir>/slurm.conf
#   bash scripts/slurm_cluster.sh stop       # stops every daemon it started, by the PID it recorded
#
# Everything it writes (slurm.conf, slurmdbd.conf, the database, spool, state, logs and PID files) lives in
# $LGM_GCP_SLURM_DIR (default /tmp/lgm-gcp-slurm); the only system state it uses is munge's key, which the
# munge package creates. Accounting runs through slurmdbd with a private MariaDB on 127.0.0.1, because
# submitit polls `sacct` for job states: without it a cancelled job reads UNKNOWN for ever.
# Ports (loopback only): slurmctld 16817, slurmd 16818, slurmdbd 16819, MariaDB 16820.
set -euo pipefail

DIR=${LGM_GCP_SLURM_DIR:-/tmp/lgm-gcp-slurm}
NODE=$(hostname -s)
CLUSTER=lgmgcp

say() { echo "slurm_cluster: $*" >&2; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local limit=$1 what=$2
    shift 2
    for _ in $(seq "$limit"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    say "$what did not come up within ${limit} s; logs in $DIR/log"
    return 1
}

install() {
    if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null; then
        return 0
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge slurmdbd mariadb-server >/dev/null
}

write_configs() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 8 / 10 ))  # MB, leaving 20 % to the system
    mkdir -p "$DIR"/{log,spool,state,run,db}
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/slurmd-%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobRequeue=1
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=16819
JobAcctGatherType=jobacct_gather/none
DefMemPerCPU=$(( mem / cpus ))
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16820
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

start() {
    if [ -f "$DIR/run/started" ]; then
        if kill -0 "$(cat "$DIR/run/slurmctld.pid" 2>/dev/null)" 2>/dev/null; then
            say "already running (stop it first): $DIR"; exit 1
        fi
        rm -f "$DIR/run/daemons" "$DIR/run/started"  # left by a machine that stopped without `stop`
    fi
    install
    write_configs
    export SLURM_CONF=$DIR/slurm.conf
    # munge: the key the package made; its socket at the default path, which SLURM's auth/munge reads
    mkdir -p /run/munge && chown munge:munge /run/munge
    if ! munge -n >/dev/null 2>&1; then
        # munged runs as its own user, so its PID and log files sit in folders that user owns
        mkdir -p /var/log/munge && chown munge:munge /var/log/munge
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/lgm-gcp-munged.pid
        wait_for 20 munged munge -n
        echo "munged /run/munge/lgm-gcp-munged.pid" >> "$DIR/run/daemons"
    fi
    # MariaDB with its own data folder, on loopback only
    if [ ! -d "$DIR/db/mysql" ]; then
        mariadb-install-db --user=root --datadir="$DIR/db" --auth-root-authentication-method=normal \
            --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
    fi
    /usr/sbin/mariadbd --user=root --datadir="$DIR/db" --port=16820 --bind-address=127.0.0.1 \
        --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
        --skip-name-resolve >/dev/null 2>&1 &
    echo "mariadbd $DIR/run/mariadbd.pid" >> "$DIR/run/daemons"
    wait_for 60 MariaDB mariadb --protocol=tcp -h 127.0.0.1 -P 16820 -u root -e "SELECT 1"
    /usr/sbin/slurmdbd
    echo "slurmdbd $DIR/run/slurmdbd.pid" >> "$DIR/run/daemons"
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    /usr/sbin/slurmctld
    echo "slurmctld $DIR/run/slurmctld.pid" >> "$DIR/run/daemons"
    wait_for 60 slurmctld scontrol ping
    /usr/sbin/slurmd
    echo "slurmd $DIR/run/slurmd.pid" >> "$DIR/run/daemons"
    wait_for 60 "the node $NODE" sh -c "sinfo -h -N -o %t | grep -qx idle"
    touch "$DIR/run/started"
    say "one node ($NODE, $(nproc) CPUs) idle in partition debug; state and logs in $DIR"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {
    [ -f "$DIR/run/daemons" ] || { say "nothing started in $DIR"; return 0; }
    local name pidfile pid
    # in the reverse order of their start
    tac "$DIR/run/daemons" | while read -r name pidfile; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid"; fi
        fi
    done
    rm -f "$DIR/run/daemons" "$DIR/run/started"
    say "stopped"
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: bash scripts/slurm_cluster.sh install|start|stop" >&2; exit 2 ;;
esac
