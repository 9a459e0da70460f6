// CheckpointFacts: what the workbench shows about a loaded checkpoint, as labelled text rows in
// groups (format, architecture, storage, memory, tokenizer). Pure formatting, no widgets, so the
// model panel only renders it and tests can check it without a display.
#pragma once

#include "model/checkpoint.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lowbit::ui {

struct Fact {
    std::string label; // "Hidden size"
    std::string value; // "4096"
};

struct FactGroup {
    std::string title; // "Architecture"
    std::vector<Fact> facts;
};

// Context length the memory estimate assumes for the KV cache (one sequence).
inline constexpr int64_t kMemoryEstimateContext = 2048;

std::vector<FactGroup> describeCheckpoint(const Checkpoint &checkpoint);

// Bytes of weight data held in memory: every distinct tensor buffer once (a tied output head that
// views the embedding is not counted twice).
uint64_t weightBytesInMemory(const ModelWeights &weights);
// Float32 keys and values of one sequence of `tokens` positions (see runtime/kv_cache.h).
uint64_t kvCacheBytes(const ModelConfig &config, int64_t tokens);

// "1.50 GiB", "512 B": binary units, three significant digits.
std::string formatBytes(uint64_t bytes);
// "8.03 B (8030261248)", "260 K (260224)": decimal units with the exact count.
std::string formatCount(int64_t count);

} // namespace lowbit::ui
