#!/usr/bin/env bash
# Configure and start a one-node Slurm cluster on this machine (munged, slurmctld,
# slurmd), for tests and CI. Needs root and Debian's packages:
#
#   apt-get install -y slurm-wlm munge
#   benchmark/slurm/start_local_slurm.sh          # start what is not running yet
#   benchmark/slurm/start_local_slurm.sh --stop   # stop only what this script started
#
# Idempotent: daemons already running are left alone. The node line is this host's
# own (slurmd -C), so Slurm schedules as many 1-CPU tasks as there are cores.
# An existing slurm.conf that this script did not write is never overwritten.
set -euo pipefail

# The daemons live in sbin, which a non-login root shell may not have on PATH.
PATH=$PATH:/usr/sbin:/sbin
CONF=/etc/slurm/slurm.conf
MARK="# written by benchmark/slurm/start_local_slurm.sh"
STATE=/run/local-slurm.started # the daemons this script started, for --stop
LOGDIR=/var/log/slurm

die() {
    echo "start_local_slurm.sh: error: $*" >&2
    exit 1
}

alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [[ ${1:-} == --stop ]]; then
    [[ -f $STATE ]] || { echo "nothing to stop (this script started no daemon)"; exit 0; }
    # Reverse start order; by pid file, so nothing else is touched.
    for d in slurmd slurmctld munged; do
        grep -qx "$d" "$STATE" || continue
        case $d in
            munged) pidfile=/run/munge/munged.pid ;;
            *) pidfile=/run/$d.pid ;;
        esac
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid"
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            echo "stopped $d (pid $pid)"
        fi
    done
    rm -f "$STATE"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--stop]"

[[ $(id -u) == 0 ]] || die "must run as root (it writes /etc/slurm and starts daemons)"
for b in munged slurmctld slurmd scontrol sinfo; do
    command -v "$b" >/dev/null || die "$b not found; install with: apt-get install -y slurm-wlm munge"
done

started() { echo "$1" >>"$STATE"; }

# ---- munge: shared-secret authentication between Slurm's daemons and clients.
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    if [[ ! -s /etc/munge/munge.key ]]; then
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    # munged refuses to run as root; Debian's package creates the munge user.
    runuser -u munge -- munged
    started munged
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.2; done
    munge -n | unmunge >/dev/null || die "munged does not answer"
    echo "started munged"
fi

# ---- slurm.conf: this host as the only node, with its real CPUs and memory.
host=$(hostname -s)
node_line=$(slurmd -C | head -n 1) # NodeName=<host> CPUs=... RealMemory=...
[[ $node_line == NodeName=* ]] || die "slurmd -C gave no node line: $node_line"
conf=$(
    cat <<EOF
$MARK
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# Job credentials live 10 s instead of 120 s: Slurm holds a requeued job back that long,
# and one local node launches a job within a second.
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
# No cgroups: containers often lack a writable cgroup tree. linuxproc tracks a job's
# processes through their parent ids, which is enough for one trusted node.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
# Cores are the consumable resource: one 1-CPU array task per core at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Look for startable jobs (e.g. requeued ones) every 5 s rather than every 30-60 s.
SchedulerParameters=bf_interval=5,sched_interval=5
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
# Keep finished jobs in squeue/scontrol for 5 minutes (there is no accounting DB).
MinJobAge=300
KillWait=30
$node_line NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
if [[ -f $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it"
fi
changed=""
if [[ ! -f $CONF ]] || [[ $(cat "$CONF") != "$conf" ]]; then
    mkdir -p /etc/slurm
    printf '%s\n' "$conf" >"$CONF"
    changed=1
fi
mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOGDIR"

# ---- daemons
if ! alive /run/slurmctld.pid; then
    slurmctld # daemonizes; writes /run/slurmctld.pid
    started slurmctld
    echo "started slurmctld"
elif [[ -n $changed ]]; then
    scontrol reconfigure
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
scontrol ping | grep -q UP || die "slurmctld does not answer; see $LOGDIR/slurmctld.log"

if ! alive /run/slurmd.pid; then
    slurmd
    started slurmd
    echo "started slurmd"
fi

# ---- wait until the node takes jobs
state=""
for _ in $(seq 150); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1)
    case $state in
        idle* | mixed* | allocated* | completing*) break ;;
        down* | drain* | drained*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.2
done
case $state in
    idle* | mixed* | allocated* | completing*) ;;
    *) die "node $host is '$state', not ready; see $LOGDIR/slurmd.log" ;;
esac
echo "one-node Slurm is up: $(sinfo -h -o '%P %D %c %m %T' | head -n 1) (partition nodes cpus memory state)"
