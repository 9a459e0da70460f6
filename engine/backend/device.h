// Where a job runs ("cpu", "cuda", "cuda:N") and whether a model fits a device's memory before
// anything is loaded there. Compiled into every build: without CUDA, cudaDeviceCount() is 0 and
// says why.
#pragma once

#include "core/result.h"
#include "model/config.h"

#include <cstdint>
#include <string>
#include <string_view>

namespace lowbit {

struct DeviceSpec {
    enum class Kind { Cpu, Cuda };
    Kind kind = Kind::Cpu;
    int index = 0; // CUDA device ordinal
    bool isCuda() const { return kind == Kind::Cuda; }
    std::string toString() const;
};

// "cpu", "cuda" (= cuda:0) or "cuda:N" (N in 0..999); anything else is InvalidArgument naming it.
Result<DeviceSpec> parseDevice(std::string_view text);

// True when this build contains the CUDA backend (LOWBIT_HAVE_CUDA).
bool cudaBuilt();
// Usable CUDA devices: 0 when built without CUDA, without a driver, or without a GPU; `why`
// (optional) then receives the reason, e.g. "cuda: cudaGetDeviceCount: cudaErrorNoDevice (...)".
int cudaDeviceCount(std::string *why = nullptr);

// Device memory a CUDA job needs, in bytes. Weights at `weightBitsPerValue` (16 for bf16/f16, 32
// for float32, ~4.25 for 4-bit groups with fp16 scales), embedding and head included (the head
// shares the embedding when tied); the float32 KV cache of `slots` x `capacityTokens`; the
// activations of `batchTokens` rows, the logits of `logitRows` rows, and a fixed allowance for
// cuBLAS/attention scratch.
struct MemoryEstimate {
    uint64_t weightBytes = 0;
    uint64_t kvCacheBytes = 0;
    uint64_t workspaceBytes = 0;
    uint64_t total() const { return weightBytes + kvCacheBytes + workspaceBytes; }
};
MemoryEstimate estimateDeviceMemory(const ModelConfig &config, double weightBitsPerValue, int slots,
                                    int64_t capacityTokens, int64_t batchTokens, int64_t logitRows);

// OutOfMemory "<device>: the job needs X (weights A, KV cache B, workspace C) but only Y is free"
// when estimate.total() > freeBytes (after a 5% margin for fragmentation and the CUDA context).
Status checkFits(const MemoryEstimate &estimate, uint64_t freeBytes, std::string_view device);

std::string formatBytes(uint64_t bytes); // "1.5 GiB", "12.0 MiB"

} // namespace lowbit
