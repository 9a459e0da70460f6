// Paper-protocol perplexity of a checkpoint over pre-tokenized text, for the integration tests
// that compare methods. A failure prints its error and gives NaN: NaN fails every comparison,
// where a 0 would silently pass the "below X" checks these tests make.
#pragma once

#include "perplexity.h"
#include "runtime/model.h"

#include <QtTest>

#include <cmath>
#include <limits>
#include <memory>
#include <span>

namespace lowbit::test {

inline double paperPerplexity(std::shared_ptr<const Checkpoint> checkpoint,
                              std::span<const int32_t> tokens, int64_t contextTokens,
                              int64_t maxChunks, int threads = 2) {
    const double failed = std::numeric_limits<double>::quiet_NaN();
    if (!checkpoint) {
        qWarning("perplexity: no checkpoint (its construction failed)");
        return failed;
    }
    auto model = Model::create(checkpoint, {threads});
    if (!model.ok()) {
        qWarning("perplexity: %s", model.error().message.c_str());
        return failed;
    }
    PerplexityOptions options;
    options.contextTokens = contextTokens;
    options.maxChunks = maxChunks;
    NullProgress progress;
    auto report = evaluatePerplexity(**model, tokens, options, progress);
    if (!report.ok()) {
        qWarning("perplexity: %s", report.error().message.c_str());
        return failed;
    }
    return report->perplexity;
}

} // namespace lowbit::test
