#!/usr/bin/env bash
# Renders the workbench's main views under Xvfb after a small real run (stories260K, tinystories)
# into docs/screenshots/*.png. Regenerate and commit them when the UI changes.
#   scripts/screenshots.sh [BUILD_DIR]     (default: build/release, configured with the GUI)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${1:-build/release}"

if [[ ! -f "$build/CMakeCache.txt" ]]; then
    cmake --preset release
fi
cmake --build "$build" -j "${LOWBIT_JOBS:-$(nproc)}" --target test_screenshots

out="$root/docs/screenshots"
mkdir -p "$out"
# A real X server (Xvfb) rather than the offscreen platform: fonts, styles and DPI as on a desktop.
LOWBIT_SCREENSHOT_DIR="$out" QT_QPA_PLATFORM=xcb \
    xvfb-run -a -s "-screen 0 1600x1000x24" "$build/tests/test_screenshots"
ls -l "$out"
