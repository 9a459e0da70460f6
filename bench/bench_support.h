// Small helpers shared by the benchmark programs: where ../shared and the bench output live,
// wall-clock timing, and the Llama-3-shaped presets of the random benchmark models.
#pragma once

#include "model/config.h"

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

namespace lowbit::bench {

// LOWBIT_SHARED_DIR, else ../shared next to the source tree (as the tests look for it).
inline std::filesystem::path sharedDir() {
    if (const char *env = std::getenv("LOWBIT_SHARED_DIR"); env && *env)
        return env;
    return std::filesystem::path(LOWBIT_SOURCE_DIR).parent_path() / "shared";
}

// Where make_random_model writes and bench_ppl looks for the random models (ignored by git).
inline std::filesystem::path defaultModelsDir() {
    return std::filesystem::path(LOWBIT_SOURCE_DIR) / "build" / "bench-models";
}

inline double secondsSince(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// A random-weight model shape. All presets keep LLaMA-3's conventions: head_dim 64, GQA 4:1,
// rope theta 500000 with Llama 3.1 frequency scaling, untied head, vocab 128256.
struct ModelPreset {
    std::string_view name;
    int64_t hidden, layers, heads, kvHeads, ffn;
};

// With an untied 128256-token vocabulary the two embedding matrices alone hold 2*128256*hidden
// weights (131M at hidden 512), so "about 100M" has to be narrow: hidden 256 and 32 layers.
// "about 1B" is Llama-3.2-1B's width (2048, 32 heads, 8 kv heads, ffn 8192) with 8 of its 16
// layers, which puts the untied total at ~1.0B.
inline constexpr ModelPreset kPresets[] = {
    {"100m", 256, 32, 4, 1, 1024},
    {"1b", 2048, 8, 32, 8, 8192},
};

inline const ModelPreset *findPreset(std::string_view name) {
    for (const ModelPreset &p : kPresets)
        if (p.name == name)
            return &p;
    return nullptr;
}

inline ModelConfig presetConfig(const ModelPreset &p) {
    ModelConfig c;
    c.vocabSize = 128256;
    c.hiddenSize = p.hidden;
    c.intermediateSize = p.ffn;
    c.numLayers = p.layers;
    c.numHeads = p.heads;
    c.numKvHeads = p.kvHeads;
    c.headDim = 64;
    c.maxPositions = 131072;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = 500000.0;
    c.ropeScaling.type = RopeScaling::Type::Llama3; // Llama 3.1's rope_scaling block
    c.ropeScaling.factor = 8.0;
    c.ropeScaling.lowFreqFactor = 1.0;
    c.ropeScaling.highFreqFactor = 4.0;
    c.ropeScaling.originalMaxPositions = 8192;
    c.tieWordEmbeddings = false;
    return c;
}

} // namespace lowbit::bench
