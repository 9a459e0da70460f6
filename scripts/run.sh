#!/usr/bin/env bash
# Builds the `release` preset and starts lowbit. No arguments: the workbench window; otherwise a
# headless subcommand (`scripts/run.sh --help` lists them, e.g. `scripts/run.sh info MODEL`).
# Build output goes to stderr so that `--json` output on stdout stays clean.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! scripts/setup.sh --check 2>/dev/null; then
    scripts/setup.sh >&2
fi

jobs="${LOWBIT_JOBS:-$(nproc)}"
if [[ ! -f build/release/CMakeCache.txt ]]; then
    cmake --preset release >&2
fi
cmake --build --preset release -j "$jobs" >&2

exec build/release/app/lowbit "$@"
