// Perplexity of a model over a token stream, under two protocols:
//  - Paper (GPTQ / the LLaMA3 low-bit study): non-overlapping windows of `contextTokens` over the
//    whole tokenized text (the remainder dropped), every position after the first predicted,
//    PPL = exp(mean NLL over all predicted tokens).
//  - LlamaCpp (llama-perplexity): floor(n/ctx) chunks, the first token of each chunk replaced by
//    BOS, only the second half of each chunk scored (positions ctx/2 .. ctx-2 predict ctx/2+1 ..
//    ctx-1), so the figure can be put next to llama.cpp's on the same GGUF.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "runtime/language_model.h"

#include <stop_token>
#include <vector>

namespace lowbit {

enum class PerplexityProtocol { Paper, LlamaCpp };

struct PerplexityOptions {
    int64_t contextTokens = 2048;
    PerplexityProtocol protocol = PerplexityProtocol::Paper;
    int64_t maxChunks = 0;        // 0: all
    int64_t batchTokens = 2048;   // chunks run together in one forward, up to this many tokens
};

struct PerplexityReport {
    double perplexity = 0;
    double meanNll = 0;           // nats per predicted token
    double nllStandardError = 0;  // of the mean, over predicted tokens
    int64_t predictedTokens = 0;
    int64_t chunks = 0;
    double seconds = 0;
    double tokensPerSecond = 0;   // tokens processed (chunks * ctx) per second
};

Result<PerplexityReport> evaluatePerplexity(LanguageModel &model, std::span<const int32_t> tokens,
                                            const PerplexityOptions &options,
                                            ProgressSink &progress, std::stop_token stop = {});

} // namespace lowbit
