#include "perplexity.h"


#include <algorithm>
#include <chrono>
#include <cmath>

namespace lowbit {

namespace {

// Which predictions a chunk scores: logits at positions [firstScored, ctx-1) predict the next token.
int64_t firstScoredPosition(const PerplexityOptions &options) {
    return options.protocol == PerplexityProtocol::LlamaCpp ? options.contextTokens / 2 : 0;
}

} // namespace

Result<PerplexityReport> evaluatePerplexity(LanguageModel &model, std::span<const int32_t> tokens,
                                            const PerplexityOptions &options,
                                            ProgressSink &progress, std::stop_token stop) {
    const int64_t ctx = options.contextTokens;
    if (ctx < 2)
        return makeError(ErrorCode::InvalidArgument, "perplexity: context must be at least 2 tokens");
    int64_t chunks = int64_t(tokens.size()) / ctx;
    if (options.maxChunks > 0)
        chunks = std::min(chunks, options.maxChunks);
    if (chunks == 0)
        return makeError(ErrorCode::InvalidArgument,
                         "perplexity: text has " + std::to_string(tokens.size()) +
                             " tokens, fewer than one context of " + std::to_string(ctx));
    int32_t bos = model.config().bosId;
    if (model.tokenizer() && model.tokenizer()->bosId() >= 0)
        bos = model.tokenizer()->bosId();
    if (options.protocol == PerplexityProtocol::LlamaCpp && bos < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "perplexity: the llama.cpp protocol needs a BOS token, the model has none");

    const int64_t vocab = model.config().vocabSize;
    const int64_t firstScored = firstScoredPosition(options);
    const int64_t scoredPerChunk = ctx - 1 - firstScored;
    // Chunks per forward: up to batchTokens, and at most ~256 MiB of logits (what the CPU's
    // score() holds on the host; unchanged for the GPU, so both devices batch alike).
    const int64_t byTokens = std::max<int64_t>(1, options.batchTokens / ctx);
    const int64_t byMemory = std::max<int64_t>(1, (int64_t(256) << 20) / (scoredPerChunk * vocab * 4));
    const int64_t perBatch = std::min({byTokens, byMemory, chunks});

    LOWBIT_TRY(auto cache, model.allocateCache(int(perBatch), ctx));
    std::vector<double> nll(static_cast<size_t>(chunks * scoredPerChunk));
    std::vector<std::vector<int32_t>> chunkTokens(static_cast<size_t>(perBatch));
    std::vector<TokenTarget> targets;
    const auto start = std::chrono::steady_clock::now();
    for (int64_t c0 = 0; c0 < chunks; c0 += perBatch) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "perplexity: cancelled");
        const int64_t count = std::min(perBatch, chunks - c0);
        std::vector<SequenceInput> inputs;
        for (int64_t b = 0; b < count; ++b) {
            auto &chunk = chunkTokens[size_t(b)];
            chunk.assign(tokens.begin() + (c0 + b) * ctx, tokens.begin() + (c0 + b + 1) * ctx);
            if (options.protocol == PerplexityProtocol::LlamaCpp)
                chunk[0] = bos;
            cache->clear(int(b));
            inputs.push_back({int(b), chunk, LogitsWanted::All, firstScored});
        }
        // Row b*(ctx-firstScored) + t holds position firstScored+t of chunk b; the last row
        // of each chunk predicts past the chunk and has no target. score() reduces the rows
        // where they are (on a GPU only the log-probabilities come back).
        targets.clear();
        for (int64_t b = 0; b < count; ++b)
            for (int64_t t = 0; t < scoredPerChunk; ++t)
                targets.push_back({b * (ctx - firstScored) + t,
                                   chunkTokens[size_t(b)][size_t(firstScored + t + 1)]});
        LOWBIT_TRY(TokenScores scores, model.score(*cache, inputs, {targets, 0}));
        for (size_t i = 0; i < targets.size(); ++i)
            nll[size_t(c0 * scoredPerChunk) + i] = -scores.logProbs[i];
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const int64_t done = c0 + count;
        const double rate = double(done * ctx) / std::max(seconds, 1e-9);
        progress.report({"ppl", done, chunks, rate, double((chunks - done) * ctx) / rate});
    }
    PerplexityReport report;
    report.chunks = chunks;
    report.predictedTokens = int64_t(nll.size());
    double sum = 0, sumSquares = 0;
    for (double v : nll) {
        sum += v;
        sumSquares += v * v;
    }
    const double n = double(nll.size());
    report.meanNll = sum / n;
    const double variance = std::max(0.0, sumSquares / n - report.meanNll * report.meanNll);
    report.nllStandardError = n > 1 ? std::sqrt(variance / (n - 1)) : 0;
    report.perplexity = std::exp(report.meanNll);
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    report.tokensPerSecond = double(chunks * ctx) / std::max(report.seconds, 1e-9);
    return report;
}

} // namespace lowbit
