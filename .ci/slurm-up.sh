#!/usr/bin/env bash
# Usage: .ci/slurm-up.sh
#
# Brings up a real single-node Slurm with accounting (munge, MariaDB, slurmdbd, slurmctld,
# slurmd) on a Debian machine without systemd, for the `@pytest.mark.slurm` tests.
# Accounting is not optional: submitit reads job states only through `sacct`, and without
# slurmdbd a job that dies before writing its result leaves submitit waiting forever.
#
# Idempotent: packages are installed only when missing, each daemon is started only when it
# is not already running, and the script returns at once when `sinfo` already says idle.
# Daemon logs, state and spool live under $PSY_SLURM_DIR (default /tmp/psy-slurm).
# Needs root (it writes /etc/slurm and starts daemons).
set -euo pipefail

SCRATCH="${PSY_SLURM_DIR:-/tmp/psy-slurm}"
HOST="$(hostname -s)"
CPUS="$(nproc)"
DB_USER=slurm
# A local-only throwaway password for the CI database user, not a secret of the project.
DB_PASS=slurmci
LOG="$SCRATCH/log"

say() { echo "slurm-up: $*"; }

node_state() { sinfo -h -o %T 2>/dev/null | head -n1 || true; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for _ in $(seq 1 $((limit * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    say "timed out after ${limit}s waiting for $what; logs under $LOG"
    tail -n 20 "$LOG"/*.log 2>/dev/null || true
    exit 1
}

running() { pgrep -x "$1" >/dev/null 2>&1; }

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v mariadbd >/dev/null \
    || ! command -v sbatch >/dev/null; then
    say "installing packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
fi

mkdir -p "$LOG" "$SCRATCH"/{state,spool,run} /etc/slurm

# munge: the key is created by the package; make sure it exists and is owned right.
if [ ! -s /etc/munge/munge.key ]; then
    /usr/sbin/mungekey --create --force
fi
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
chmod 400 /etc/munge/munge.key
if ! running munged; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged -F >"$LOG/munged.log" 2>&1 &
fi
wait_for 20 munge munge -n

# MariaDB: already running on the service machines; start it otherwise.
if ! running mariadbd && ! running mysqld; then
    say "starting mariadbd"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
    if [ ! -d /var/lib/mysql/mysql ]; then
        mariadb-install-db --user=mysql >"$LOG/mariadb-install.log" 2>&1
    fi
    mariadbd --user=mysql --bind-address=127.0.0.1 >"$LOG/mariadbd.log" 2>&1 &
fi
wait_for 30 mariadb mysql -u root -e "SELECT 1"
mysql -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL

# Configs are written to a scratch copy first; a change is applied to running daemons with
# `scontrol reconfigure`, so a second run both converges and leaves a good cluster alone.
cat >"$SCRATCH/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
LogFile=$LOG/slurmdbd.log
PidFile=$SCRATCH/run/slurmdbd.pid
EOF

# DefMemPerCPU keeps a job without --mem from claiming the whole node, so array tasks run
# side by side (one per CPU).
# cred_expire also sets how long a requeued job waits before it may start again (default
# 120 s); sched_interval makes the scheduler notice it soon after.
cat >"$SCRATCH/slurm.conf" <<EOF
ClusterName=ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SCRATCH/state
SlurmdSpoolDir=$SCRATCH/spool
SlurmctldPidFile=$SCRATCH/run/slurmctld.pid
SlurmdPidFile=$SCRATCH/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobRequeue=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
KillWait=5
AuthInfo=cred_expire=10
SchedulerParameters=sched_interval=2
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=4096 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

changed=0
for f in slurm.conf slurmdbd.conf; do
    if ! cmp -s "$SCRATCH/$f" "/etc/slurm/$f"; then
        install -m 600 "$SCRATCH/$f" "/etc/slurm/$f"
        changed=1
    fi
done
chmod 644 /etc/slurm/slurm.conf

# Some settings (cred_expire among them) are read only at start, so a changed config
# restarts the Slurm daemons rather than `scontrol reconfigure`.
if [ "$changed" = 1 ] && running slurmctld; then
    say "config changed: restarting slurmctld and slurmd"
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 80); do
        if ! running slurmctld && ! running slurmd; then break; fi
        sleep 0.25
    done
fi

if ! running slurmdbd; then
    say "starting slurmdbd"
    slurmdbd -D >"$LOG/slurmdbd.out" 2>&1 &
fi
wait_for 30 slurmdbd sacctmgr -n show cluster

if ! running slurmctld; then
    say "starting slurmctld"
    slurmctld -D -i >"$LOG/slurmctld.out" 2>&1 &
fi
wait_for 30 slurmctld scontrol ping

if ! running slurmd; then
    say "starting slurmd"
    slurmd -D >"$LOG/slurmd.out" 2>&1 &
fi

is_idle() { [ "$(node_state)" = "idle" ]; }
# A node left "down" by an earlier run comes back with an explicit resume.
for _ in $(seq 1 120); do
    if is_idle; then break; fi
    case "$(node_state)" in
        down*|drain*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.25
done
wait_for 10 "sinfo to say idle" is_idle
say "up: $(sinfo -h -o '%P %T %c CPUs')"
