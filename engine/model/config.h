// ModelConfig: the hyper-parameters of a LLaMA-architecture decoder, independent of file format.
// Conventions are Hugging Face's: rotate-half RoPE over the first/second half of each head.
#pragma once

#include "core/result.h"

#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

struct RopeScaling {
    enum class Type { None, Llama3, Linear };
    Type type = Type::None;
    double factor = 1.0;
    double lowFreqFactor = 1.0;          // llama3 only
    double highFreqFactor = 4.0;         // llama3 only
    int64_t originalMaxPositions = 8192; // llama3 only
};

struct ModelConfig {
    int64_t vocabSize = 0;
    int64_t hiddenSize = 0;
    int64_t intermediateSize = 0;
    int64_t numLayers = 0;
    int64_t numHeads = 0;
    int64_t numKvHeads = 0;
    int64_t headDim = 0; // hiddenSize / numHeads unless the checkpoint says otherwise
    int64_t maxPositions = 0;
    double rmsNormEps = 1e-5;
    double ropeTheta = 10000.0;
    RopeScaling ropeScaling;
    bool tieWordEmbeddings = false;
    int32_t bosId = -1;              // -1: none
    std::vector<int32_t> eosIds;     // any of them ends generation

    // Checks the invariants the forward pass relies on (positive sizes, heads divide, even head
    // dim); the message names `source` and the offending field.
    Status validate(const std::string &source) const;

    int64_t parameterCount() const; // all weights incl. embeddings and (untied) head
    // RoPE inverse frequencies (headDim/2 of them) after rope scaling, in float64.
    std::vector<double> ropeInverseFrequencies() const;
};

} // namespace lowbit
