#!/usr/bin/env bash
# Stops the test cluster that scripts/slurm-up.sh started in STATE_DIR: cancels its jobs, then
# stops slurmd, slurmctld and munged by their pid files and waits for them to exit (SIGKILL after
# 10 s). Safe to run twice, or after a half-finished slurm-up.sh. STATE_DIR itself is kept.
#
#   scripts/slurm-down.sh STATE_DIR
set -uo pipefail

if (($# != 1)); then
    echo "usage: $0 STATE_DIR" >&2
    exit 2
fi
stateDir="$1"
if [[ ! -d "$stateDir" ]]; then
    echo "slurm-down: $stateDir is not a folder" >&2
    exit 1
fi

pidOf() { # pidOf FILE: the pid in FILE when that process is alive
    local pid
    [[ -f "$1" ]] || return 1
    pid="$(tr -dc '0-9' <"$1")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

conf="$(cd "$stateDir" && pwd)/slurm.conf"

# Job steps of this cluster: slurmstepd processes started by its slurmd, which inherited the
# SLURM_CONF that slurm-up.sh exported (so clusters side by side are told apart).
ourSteps() {
    local dir
    for dir in /proc/[0-9]*; do
        [[ "$({ tr -d '\0' <"$dir/cmdline"; } 2>/dev/null)" == slurmstepd* ]] || continue
        { tr '\0' '\n' <"$dir/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$conf" &&
            echo "${dir#/proc/}"
    done
}

# Cancel jobs first so no job step outlives the cluster (only while slurmctld answers), and give
# the steps time to report back to slurmd before it goes.
if [[ -f "$conf" ]] && pidOf "$stateDir/slurmctld.pid" >/dev/null; then
    export SLURM_CONF="$conf"
    mapfile -t jobs < <(timeout 10 squeue -h -o '%A' 2>/dev/null | sort -u)
    if ((${#jobs[@]})); then
        timeout 10 scancel "${jobs[@]}" 2>/dev/null
    fi
    for _ in $(seq 100); do
        [[ -z "$(ourSteps)" ]] && break
        sleep 0.1
    done
fi

stopDaemons() { # stopDaemons PIDFILE...: SIGTERM all, wait for all, SIGKILL the stubborn
    local pids=() pid file
    for file in "$@"; do
        pid="$(pidOf "$file")" && pids+=("$pid")
    done
    ((${#pids[@]})) || return 0
    kill -TERM "${pids[@]}" 2>/dev/null
    for _ in $(seq 200); do
        local alive=0
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || return 0
        sleep 0.05
    done
    echo "slurm-down: pids ${pids[*]} ignored SIGTERM for 10 s; killing them" >&2
    kill -KILL "${pids[@]}" 2>/dev/null
    sleep 0.2
}

# slurmd and slurmctld together, munged last (they authenticate through it while stopping).
stopDaemons "$stateDir/slurmd.pid" "$stateDir/slurmctld.pid"
mapfile -t steps < <(ourSteps)
if ((${#steps[@]})); then
    kill -KILL "${steps[@]}" 2>/dev/null
fi
stopDaemons "$stateDir/munge/munged.pid"
rm -f "$stateDir/slurmd.pid" "$stateDir/slurmctld.pid" "$stateDir/munge/munged.pid"
echo "slurm-down: stopped the cluster in $stateDir"
