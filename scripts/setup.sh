#!/usr/bin/env bash
# Installs every Debian package that building and testing lowbit needs (Debian 12 "bookworm").
# Idempotent: asks dpkg first and touches apt only when something is missing.
#   scripts/setup.sh           install what is missing
#   scripts/setup.sh --check   exit 0 when everything is installed, 1 otherwise (installs nothing)
set -euo pipefail

packages=(
    # toolchain
    build-essential cmake ninja-build ccache pkg-config git
    # Qt 6 (Widgets, Concurrent, Test come with qt6-base-dev; Qt6Gui's config wants libgl-dev)
    qt6-base-dev qt6-base-dev-tools qt6-svg-dev libgl-dev
    # charts: QCustomPlot; the -dev package ships the Qt 6 build (CMake package QCustomPlotQt6)
    libqcustomplot-dev libqcustomplot2.1-qt6
    # engine, storage
    libpcre2-dev libopenblas-dev liblapack-dev nlohmann-json3-dev libsqlite3-dev
    # evaluators: HellaSwag ships bzip2-compressed
    libbz2-dev
    # fuzz targets (libFuzzer runtime)
    clang libclang-rt-14-dev
    # GUI tests and screenshots under a virtual display
    xvfb xauth
    # helper scripts
    python3
    # Slurm sweeps: the single-node test cluster of scripts/slurm-up.sh (slurm-wlm 22.05)
    slurmctld slurmd slurm-client munge
)

missingPackages() {
    local pkg status
    for pkg in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        if [[ "$status" != "install ok installed" ]]; then
            echo "$pkg"
        fi
    done
}

mapfile -t missing < <(missingPackages)

if [[ "${1:-}" == "--check" ]]; then
    if ((${#missing[@]})); then
        echo "setup: missing packages: ${missing[*]}" >&2
        exit 1
    fi
    exit 0
fi

if ((${#missing[@]} == 0)); then
    echo "setup: all ${#packages[@]} packages already installed"
    exit 0
fi

echo "setup: installing ${missing[*]}"
sudoCmd=()
if [[ $(id -u) -ne 0 ]]; then
    sudoCmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudoCmd[@]}" apt-get update
"${sudoCmd[@]}" apt-get install -y --no-install-recommends "${missing[@]}"

mapfile -t missing < <(missingPackages)
if ((${#missing[@]})); then
    echo "setup: still missing after install: ${missing[*]}" >&2
    exit 1
fi
echo "setup: done"
