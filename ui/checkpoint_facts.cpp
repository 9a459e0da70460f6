#include "checkpoint_facts.h"

#include <algorithm>
#include <cstdio>
#include <set>

namespace lowbit::ui {
namespace {

std::string formatNumber(double value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", value);
    return buf;
}

// Three significant digits without switching to exponent notation ("1.50", "12.3", "1023").
std::string threeDigits(double value) {
    char buf[32];
    std::snprintf(buf, sizeof buf, value < 10 ? "%.2f" : value < 100 ? "%.1f" : "%.0f", value);
    return buf;
}

std::string joinIds(const std::vector<int32_t> &ids) {
    if (ids.empty())
        return "none";
    std::string out;
    for (int32_t id : ids)
        out += (out.empty() ? "" : ", ") + std::to_string(id);
    return out;
}

std::string describeRopeScaling(const RopeScaling &scaling) {
    switch (scaling.type) {
    case RopeScaling::Type::None: return "none";
    case RopeScaling::Type::Linear: return "linear, factor " + formatNumber(scaling.factor);
    case RopeScaling::Type::Llama3:
        return "llama3, factor " + formatNumber(scaling.factor) + ", low/high freq factor " +
               formatNumber(scaling.lowFreqFactor) + "/" + formatNumber(scaling.highFreqFactor) +
               ", original context " + std::to_string(scaling.originalMaxPositions);
    }
    return "?";
}

FactGroup architectureGroup(const ModelConfig &c) {
    return {"Architecture",
            {{"Vocabulary size", std::to_string(c.vocabSize)},
             {"Hidden size", std::to_string(c.hiddenSize)},
             {"Intermediate size", std::to_string(c.intermediateSize)},
             {"Layers", std::to_string(c.numLayers)},
             {"Attention heads", std::to_string(c.numHeads)},
             {"KV heads", std::to_string(c.numKvHeads)},
             {"Head dim", std::to_string(c.headDim)},
             {"Max positions", std::to_string(c.maxPositions)},
             {"RMSNorm eps", formatNumber(c.rmsNormEps)},
             {"RoPE theta", formatNumber(c.ropeTheta)},
             {"RoPE scaling", describeRopeScaling(c.ropeScaling)},
             {"Tied embeddings", c.tieWordEmbeddings ? "yes" : "no"},
             {"BOS id", c.bosId < 0 ? "none" : std::to_string(c.bosId)},
             {"EOS ids", joinIds(c.eosIds)},
             {"Parameters", formatCount(c.parameterCount())}}};
}

FactGroup storageGroup(const Checkpoint &checkpoint) {
    FactGroup group{"Stored tensors", {}};
    uint64_t total = 0;
    for (const auto &[type, bytes] : checkpoint.bytesByStoredType) {
        group.facts.push_back({type, formatBytes(bytes)});
        total += bytes;
    }
    group.facts.push_back(
        {"Total", checkpoint.bytesByStoredType.empty() ? "unknown" : formatBytes(total)});
    return group;
}

FactGroup memoryGroup(const Checkpoint &checkpoint) {
    const uint64_t weights = weightBytesInMemory(checkpoint.weights);
    const int64_t context = checkpoint.config.maxPositions > 0
                                ? std::min(checkpoint.config.maxPositions, kMemoryEstimateContext)
                                : kMemoryEstimateContext;
    const uint64_t kv = kvCacheBytes(checkpoint.config, context);
    const std::string ctx = std::to_string(context);
    return {"Memory estimate",
            {{"Weights in memory", formatBytes(weights)},
             {"KV cache (" + ctx + " tokens, f32)", formatBytes(kv)},
             {"Total (one sequence of " + ctx + ")", formatBytes(weights + kv)}}};
}

FactGroup tokenizerGroup(const Checkpoint &checkpoint) {
    FactGroup group{"Tokenizer", {}};
    if (const Tokenizer *tok = checkpoint.tokenizer.get()) {
        group.facts.push_back({"Kind", std::string(tok->kind())});
        group.facts.push_back({"Vocabulary size", std::to_string(tok->vocabSize())});
    } else {
        group.facts.push_back({"Kind", "none in this checkpoint"});
    }
    group.facts.push_back(
        {"Chat template",
         checkpoint.chatTemplate.empty()
             ? "none"
             : "present (" + std::to_string(checkpoint.chatTemplate.size()) + " bytes)"});
    return group;
}

} // namespace

std::vector<FactGroup> describeCheckpoint(const Checkpoint &checkpoint) {
    std::vector<FactGroup> groups;
    groups.push_back({"Checkpoint",
                      {{"Path", checkpoint.path.string()},
                       {"Format", checkpointFormatName(checkpoint.format)}}});
    groups.push_back(architectureGroup(checkpoint.config));
    groups.push_back(storageGroup(checkpoint));
    groups.push_back(memoryGroup(checkpoint));
    groups.push_back(tokenizerGroup(checkpoint));
    if (!checkpoint.metadata.empty()) {
        FactGroup metadata{"File metadata", {}};
        for (const auto &[key, value] : checkpoint.metadata)
            metadata.facts.push_back({key, value});
        groups.push_back(std::move(metadata));
    }
    return groups;
}

uint64_t weightBytesInMemory(const ModelWeights &weights) {
    std::set<const std::byte *> seen;
    uint64_t total = 0;
    auto add = [&](const Tensor &t) {
        if (!t.empty() && seen.insert(t.data).second)
            total += t.bytes();
    };
    add(weights.tokenEmbedding);
    for (const LayerWeights &layer : weights.layers) {
        for (const Tensor *t : {&layer.attnNorm, &layer.wq, &layer.wk, &layer.wv, &layer.wo,
                                &layer.ffnNorm, &layer.wGate, &layer.wUp, &layer.wDown})
            add(*t);
    }
    add(weights.finalNorm);
    add(weights.output);
    return total;
}

uint64_t kvCacheBytes(const ModelConfig &config, int64_t tokens) {
    // Keys and values: layers x tokens x kvHeads*headDim floats each.
    return 2ull * uint64_t(config.numLayers) * uint64_t(tokens) * uint64_t(config.numKvHeads) *
           uint64_t(config.headDim) * sizeof(float);
}

std::string formatBytes(uint64_t bytes) {
    static const char *const kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024)
        return std::to_string(bytes) + " B";
    double value = double(bytes) / 1024.0;
    int unit = 0;
    while (value >= 1024.0 && unit < 3) {
        value /= 1024.0;
        ++unit;
    }
    return threeDigits(value) + " " + kUnits[unit];
}

std::string formatCount(int64_t count) {
    static const char *const kUnits[] = {"", " K", " M", " B", " T"};
    double value = double(count);
    int unit = 0;
    while (value >= 1000.0 && unit < 4) {
        value /= 1000.0;
        ++unit;
    }
    if (unit == 0)
        return std::to_string(count);
    return threeDigits(value) + kUnits[unit] + " (" + std::to_string(count) + ")";
}

} // namespace lowbit::ui
