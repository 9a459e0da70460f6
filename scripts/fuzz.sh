#!/usr/bin/env bash
# Builds the libFuzzer targets (`fuzz` preset, clang) and runs each over its corpus.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s, every tests/fuzz/fuzz_*.cpp)
# New inputs that add coverage are merged back into tests/fuzz/corpus/<name>/ (minimised), so
# commit the corpus afterwards. A crash leaves crash-* in build/fuzz/artifacts/ and a non-zero exit:
# add that file to the corpus once fixed, and ctest replays it from then on.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! scripts/setup.sh --check 2>/dev/null; then
    scripts/setup.sh
fi

seconds="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    for source in tests/fuzz/fuzz_*.cpp; do
        [[ -e "$source" ]] || continue
        targets+=("$(basename "$source" .cpp)")
    done
fi
if ((${#targets[@]} == 0)); then
    echo "fuzz: no tests/fuzz/fuzz_*.cpp targets yet"
    exit 0
fi

jobs="${LOWBIT_JOBS:-$(nproc)}"
# Coverage instrumentation for the whole engine, not only the fuzz target's own file: without it
# libFuzzer is blind to the parsers it drives. ASan/UBSan everywhere (LOWBIT_SANITIZE).
if [[ ! -f build/fuzz/CMakeCache.txt ]]; then
    cmake --preset fuzz -DLOWBIT_SANITIZE=ON -DCMAKE_CXX_FLAGS=-fsanitize=fuzzer-no-link \
        -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link
fi
cmake --build --preset fuzz -j "$jobs" --target "${targets[@]}"

artifacts="$root/build/fuzz/artifacts"
mkdir -p "$artifacts"
failed=()
for target in "${targets[@]}"; do
    corpus="tests/fuzz/corpus/${target#fuzz_}"
    fresh="build/fuzz/new-corpus/${target#fuzz_}"
    mkdir -p "$corpus" "$fresh"
    echo "==> $target for ${seconds}s over $corpus"
    if ! "build/fuzz/tests/fuzz/$target" -max_total_time="$seconds" -artifact_prefix="$artifacts/" \
        -print_final_stats=1 "$fresh" "$corpus"; then
        failed+=("$target")
        continue
    fi
    # Keep only inputs that add coverage to what the committed corpus already reaches.
    "build/fuzz/tests/fuzz/$target" -merge=1 "$corpus" "$fresh" 2>/dev/null || true
    rm -rf "$fresh"
done

if ((${#failed[@]})); then
    echo "fuzz: crashes in ${failed[*]} (inputs in $artifacts)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
