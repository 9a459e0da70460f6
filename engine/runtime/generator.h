// Text generation over a LanguageModel (cpu or cuda): greedy or sampled (temperature, top-k, top-p, seeded), stop at
// an end-of-generation id, a stop string or maxTokens.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "runtime/language_model.h"

#include <functional>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct SamplingOptions {
    double temperature = 0.0; // 0: greedy (argmax)
    int topK = 0;             // 0: off
    double topP = 1.0;        // 1: off
    uint64_t seed = 0;
};

struct GenerateOptions {
    int maxTokens = 128;
    SamplingOptions sampling;
    std::vector<std::string> stopStrings; // matched against the decoded text
    bool stopAtEos = true;
};

struct GenerateResult {
    std::vector<int32_t> tokens; // generated ids (prompt excluded; a stop id is not included)
    std::string text;            // decoded generated text, cut before a matched stop string
    std::string stopReason;      // "eos", "stop_string", "max_tokens", "context_full"
    double tokensPerSecond = 0;
};

// Called with each new token id and the text decoded so far; return false to stop.
using TokenCallback = std::function<bool(int32_t id, const std::string &textSoFar)>;

Result<GenerateResult> generate(LanguageModel &model, std::span<const int32_t> prompt,
                                const GenerateOptions &options, std::stop_token stop = {},
                                const TokenCallback &onToken = {});

} // namespace lowbit
