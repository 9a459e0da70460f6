#!/usr/bin/env bash
# Brings up a throw-away single-node Slurm cluster on this machine, without systemd, for tests
# and for trying `lowbit sweep submit` by hand. Uses the Debian 12 packages (slurm-wlm 22.05:
# slurmctld, slurmd, slurm-client, munge; scripts/setup.sh installs them).
#
#   scripts/slurm-up.sh STATE_DIR     start munged, slurmctld, slurmd; wait for an idle node
#   source STATE_DIR/env.sh           point sbatch/squeue/scontrol/scancel at this cluster
#   scripts/slurm-down.sh STATE_DIR   stop the daemons (STATE_DIR itself is left to the caller)
#
# Everything the cluster writes (munge key and socket, slurm.conf, state, spool, logs, pid files)
# lives under STATE_DIR, so several clusters can run side by side; their ports are picked free at
# start (override with LOWBIT_SLURMCTLD_PORT / LOWBIT_SLURMD_PORT). Must run as root: the daemons
# run as SlurmUser=root, and slurmd must be root to start job steps as the submitting user.
# On failure it prints the daemons' log tails, stops what it started and exits non-zero.
set -euo pipefail

usage() {
    echo "usage: $0 STATE_DIR" >&2
    exit 2
}
(($# == 1)) || usage
stateDir="$1"
timeoutSeconds="${LOWBIT_SLURM_UP_TIMEOUT:-60}"
scriptDir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

fail() {
    echo "slurm-up: $*" >&2
    exit 1
}

if [[ $(id -u) -ne 0 ]]; then
    fail "must run as root (slurmctld/slurmd run as SlurmUser=root here, and slurmd needs root" \
        "to start jobs); run it under sudo or in a root container"
fi
for tool in munged mungekey slurmctld slurmd sbatch sinfo scontrol; do
    command -v "$tool" >/dev/null 2>&1 ||
        fail "$tool not found; install the Debian packages: apt-get install slurmctld slurmd" \
            "slurm-client munge (or run scripts/setup.sh)"
done

mkdir -p "$stateDir"
stateDir="$(cd "$stateDir" && pwd)"
if [[ -f "$stateDir/slurmctld.pid" ]] && kill -0 "$(cat "$stateDir/slurmctld.pid")" 2>/dev/null; then
    fail "a cluster is already running in $stateDir (slurm-down.sh $stateDir first)"
fi
# munged refuses keys and sockets in group/world-writable folders; 0755 lets non-root users
# reach the socket (the key itself is 0400).
chmod 0755 "$stateDir"
mkdir -p "$stateDir"/{munge,state,spool,log}
chmod 0755 "$stateDir/munge"

# A port nobody listens on now (the kernel's pick for port 0).
freePort() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

onError() {
    local status=$?
    echo "slurm-up: failed; log tails follow" >&2
    local log
    for log in "$stateDir"/log/*.log; do
        [[ -f "$log" ]] || continue
        echo "---- $log" >&2
        tail -n 20 "$log" >&2
    done
    "$scriptDir/slurm-down.sh" "$stateDir" >&2 || true
    exit "$status"
}
trap onError ERR

# --- munge ----------------------------------------------------------------------------------
mungeKey="$stateDir/munge/munge.key"
mungeSocket="$stateDir/munge/munge.socket"
if [[ ! -f "$mungeKey" ]]; then
    mungekey --create --keyfile="$mungeKey" >/dev/null
fi
chmod 0400 "$mungeKey"
munged --key-file="$mungeKey" --socket="$mungeSocket" --pid-file="$stateDir/munge/munged.pid" \
    --log-file="$stateDir/log/munged.log" --seed-file="$stateDir/munge/munged.seed" --force

# --- slurm.conf -----------------------------------------------------------------------------
host="$(hostname -s)"
ctldPort="${LOWBIT_SLURMCTLD_PORT:-$(freePort)}"
slurmdPort="${LOWBIT_SLURMD_PORT:-$(freePort)}"
while [[ "$slurmdPort" == "$ctldPort" ]]; do
    slurmdPort="$(freePort)"
done
# The node's real shape (CPUs, sockets, cores, memory), minus the UpTime line.
nodeLine="$(slurmd -C | grep '^NodeName=')"
[[ -n "$nodeLine" ]] || fail "slurmd -C printed no NodeName line"
clusterName="lowbit$(tr -dc 'a-z0-9' <<<"$(basename "$stateDir")" | head -c 20)"
[[ "$clusterName" != lowbit ]] || clusterName=lowbittest

cat >"$stateDir/slurm.conf" <<EOF
# Written by scripts/slurm-up.sh: a single-node test cluster; all state under $stateDir.
ClusterName=${clusterName}
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctldPort}
SlurmdPort=${slurmdPort}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${mungeSocket}
StateSaveLocation=${stateDir}/state
SlurmdSpoolDir=${stateDir}/spool
SlurmctldPidFile=${stateDir}/slurmctld.pid
SlurmdPidFile=${stateDir}/slurmd.pid
SlurmctldLogFile=${stateDir}/log/slurmctld.log
SlurmdLogFile=${stateDir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
# Finished jobs stay visible to scontrol for an hour (there is no accounting database).
MinJobAge=3600
# Schedule promptly: tests wait on dependencies between short jobs.
SchedulerParameters=sched_interval=1,bf_interval=1
SlurmctldTimeout=30
SlurmdTimeout=30
${nodeLine} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF

cat >"$stateDir/env.sh" <<EOF
# Source this to use the test cluster in $stateDir (written by scripts/slurm-up.sh).
export SLURM_CONF='${stateDir}/slurm.conf'
EOF
export SLURM_CONF="$stateDir/slurm.conf"

# --- daemons --------------------------------------------------------------------------------
# Both daemonize and write their pid files; -i ignores any state a previous run left behind.
slurmctld -i -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"

deadline=$((SECONDS + timeoutSeconds))
while :; do
    state="$(sinfo -h -N -n "$host" -o '%t' 2>/dev/null | head -n 1 || true)"
    if [[ "$state" == idle ]]; then
        break
    fi
    if ((SECONDS >= deadline)); then
        echo "slurm-up: node $host not idle after ${timeoutSeconds} s (state: '${state:-none}')" >&2
        false
    fi
    sleep 0.2
done
trap - ERR
echo "slurm-up: cluster ${clusterName} up (node ${host} idle, slurmctld port ${ctldPort});" \
    "source $stateDir/env.sh"
