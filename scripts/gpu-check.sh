#!/usr/bin/env bash
# One-shot check of the CUDA backend on a machine with an NVIDIA GPU (issue 7), under 6 minutes:
#   1. configure + build Release (-j16) for this GPU's architecture only (LOWBIT_CUDA_ARCHS);
#   2. the cuda-labelled suites: test_cuda_backend (every op vs the CPU backend, NaN-poisoned
#      outputs, normalized MSE), test_cuda_model (fixture logits, device NLL, stories260K greedy
#      on the GPU), test_cuda_score (LanguageModel::score's device log-probabilities and top-K vs
#      the CPU) and test_cuda_eval_stories260k (the evaluation pipeline on --device cuda vs cpu:
#      perplexity, multiple choice, decode); device from LOWBIT_TEST_DEVICE; then test_device and
#      the device-choice suites (test_language_model, test_device_refusals) with a GPU present;
#      test_cuda_quantize_stories260k: GPTQ with --device cuda vs the CPU path (Hessians, codes,
#      layer loss, PPL) on the fixture and stories260K, and the device facts of other methods;
#      test_cuda_train_ops / test_cuda_train_model (the training kernels and CudaTrainModel's
#      gradients vs the CPU in double) and test_cuda_finetune_stories260k (qlora and irqlora
#      with --device cuda vs the CPU run);
#   3. bench_cuda on a random LLaMA-3-8B-shaped model (2 layers): prefill vs cuBLAS, decode bf16 and
#      4-bit vs copy bandwidth, GPTQ of one layer.
#   4. bench_cuda_train: one QLoRA step on the 8B shape, all 32 layers NF4: peak memory, tokens/s.
# Writes gpu-check.log, bench_cuda.md and bench_cuda_train.md to $OUT (the device tool's folder)
# or build/gpu-check.
#
# Usage: scripts/gpu-check.sh [--build-only] [--archs "80"] [--device cuda:0]
#   --build-only  configure and compile only (works without a GPU: proves the script's build part)
# Shared test data: LOWBIT_SHARED_DIR, else ./shared inside the checkout when present (the device
# tool carries a shared/ folder of the checkout), else ../shared next to it. The GPU model tests need
# fixtures/tiny-llama3-a and data/llama2c/{stories260K.bin,tok512.bin,stories260K.greedy_reference.json};
# without them they skip, and the log says so.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${OUT:-$ROOT/build/gpu-check}
BUILD=${LOWBIT_GPU_BUILD:-$ROOT/build/gpu-check-build}
DEVICE=cuda:0
BUILD_ONLY=0
ARCHS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build-only) BUILD_ONLY=1 ;;
    --archs) ARCHS=$2; shift ;;
    --device) DEVICE=$2; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu-check.log
: > "$LOG"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG"; }
run() { # run <seconds> <command...>: output into the log, status returned
  local limit=$1; shift
  log "\$ $*"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && log "TIMEOUT after ${limit}s: $*"
  return "$rc"
}
START=$(date +%s)
FAILED=()
if [ -z "${LOWBIT_SHARED_DIR:-}" ] && [ -d "$ROOT/shared" ]; then
  export LOWBIT_SHARED_DIR=$ROOT/shared
fi
log "shared data: ${LOWBIT_SHARED_DIR:-../shared next to the repository}"

if command -v nvidia-smi >/dev/null; then
  run 30 nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv
  if [ -z "$ARCHS" ]; then # this GPU only: a quarter of the nvcc time of the default list
    ARCHS=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  fi
else
  log "nvidia-smi not found"
fi
ARCHS=${ARCHS:-80}
JOBS=$(( $(nproc) < 16 ? $(nproc) : 16 ))
log "architectures: $ARCHS, jobs: $JOBS, build: $BUILD"

run 120 cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_GUI=OFF \
  -DLOWBIT_BUILD_BENCH=ON -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_ENABLE_CUDA=ON "-DLOWBIT_CUDA_ARCHS=$ARCHS" \
  || { log "configure failed"; exit 1; }
grep -q "define LOWBIT_HAVE_CUDA 1" "$BUILD/generated/core/build_info.h" \
  || { log "the build has no CUDA backend (nvcc or CUDA toolkit not found)"; exit 1; }
run 420 cmake --build "$BUILD" -j "$JOBS" --target test_cuda_backend test_cuda_model test_cuda_score test_cuda_quantize_stories260k test_cuda_eval_stories260k \
  test_device test_language_model test_device_refusals bench_cuda \
  test_cuda_train_model test_cuda_train_ops test_cuda_finetune_stories260k bench_cuda_train \
  || { log "build failed"; exit 1; }
log "build done in $(( $(date +%s) - START ))s"
[ "$BUILD_ONLY" -eq 1 ] && { log "--build-only: stopping here"; exit 0; }

export LOWBIT_TEST_DEVICE=$DEVICE
run 200 ctest --test-dir "$BUILD" -L cuda --output-on-failure -j1 || FAILED+=("cuda tests")
run 30 "$BUILD/tests/test_device" || FAILED+=("test_device")
run 60 "$BUILD/tests/test_language_model" || FAILED+=("test_language_model")
run 60 "$BUILD/tests/test_device_refusals" || FAILED+=("test_device_refusals")
run 180 "$BUILD/bench/bench_cuda" --device "$DEVICE" --layers 2 --ctx 2048 --decode 32 \
  --out "$OUT_DIR/bench_cuda.md" || FAILED+=("bench_cuda")
# One QLoRA step, all 32 NF4 layers of the 8B shape, batch 16 x 512, r 64 (issue 8): ~1 min.
run 150 "$BUILD/bench/bench_cuda_train" --device "$DEVICE" --out "$OUT_DIR/bench_cuda_train.md" \
  || FAILED+=("bench_cuda_train")

log "total $(( $(date +%s) - START ))s"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "FAILED: ${FAILED[*]}"
  exit 1
fi
log "all GPU checks passed; table in $OUT_DIR/bench_cuda.md"
