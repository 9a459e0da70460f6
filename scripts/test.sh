#!/usr/bin/env bash
# Builds and runs every test: all ctest labels of the `release` preset, then the `unit` suites
# again under AddressSanitizer + UndefinedBehaviorSanitizer (`asan` preset, no GUI, no bench).
# Shared data is looked up in $LOWBIT_SHARED_DIR (default ../shared); with LOWBIT_REQUIRE_SHARED=1
# a missing shared file fails instead of skipping. Exits non-zero when any step fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! scripts/setup.sh --check 2>/dev/null; then
    scripts/setup.sh
fi

export QT_QPA_PLATFORM=offscreen
jobs="${LOWBIT_JOBS:-$(nproc)}"
testJobs="${LOWBIT_TEST_JOBS:-2}"
logDir="$root/build/test-logs"
mkdir -p "$logDir"

failedSteps=()
totalPassed=0
totalFailed=0
summaryLines=()

step() { # step NAME COMMAND...: runs a command, records a failure instead of stopping
    local name="$1"
    shift
    echo "==> $name: $*"
    if "$@"; then
        return 0
    fi
    failedSteps+=("$name")
    return 1
}

# Runs ctest for a preset, keeps its log and adds its counts to the totals.
runTests() {
    local preset="$1" log="$logDir/ctest-$1.log" status=0
    echo "==> ctest $preset"
    ctest --preset "$preset" --output-on-failure -j "$testJobs" 2>&1 | tee "$log" || status=1
    local line
    line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
    if [[ -z "$line" ]]; then
        failedSteps+=("ctest-$preset (no test result line)")
        summaryLines+=("$preset: no tests ran")
        return
    fi
    local failed total
    failed=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")
    total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$line")
    totalPassed=$((totalPassed + total - failed))
    totalFailed=$((totalFailed + failed))
    summaryLines+=("$preset: $((total - failed)) of $total suites passed")
    if ((status != 0 || failed != 0)); then
        failedSteps+=("ctest-$preset")
    fi
}

buildAndTest() {
    local preset="$1"
    if [[ ! -f "build/$preset/CMakeCache.txt" ]]; then
        step "configure-$preset" cmake --preset "$preset" || return 0
    fi
    step "build-$preset" cmake --build --preset "$preset" -j "$jobs" || return 0
    runTests "$preset"
}

start=$SECONDS
buildAndTest release
buildAndTest asan

echo
echo "==> summary ($((SECONDS - start)) s)"
for line in "${summaryLines[@]}"; do
    echo "    $line"
done
if ((${#failedSteps[@]})); then
    echo "    failed steps: ${failedSteps[*]}"
fi
echo "tests: $totalPassed passed, $totalFailed failed"
if ((${#failedSteps[@]})); then
    exit 1
fi
