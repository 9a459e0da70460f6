#include "runtime/generator.h"

#include "runtime/sampler.h"

#include <algorithm>
#include <chrono>

namespace lowbit {

namespace {

// Position in `text` where a stop string starts, or npos.
size_t findStop(const std::string &text, const std::vector<std::string> &stops) {
    size_t best = std::string::npos;
    for (const std::string &stop : stops)
        if (!stop.empty())
            best = std::min(best, text.find(stop));
    return best;
}

} // namespace

Result<GenerateResult> generate(LanguageModel &model, std::span<const int32_t> prompt,
                                const GenerateOptions &options, std::stop_token stop,
                                const TokenCallback &onToken) {
    if (prompt.empty())
        return makeError(ErrorCode::InvalidArgument, "generate: empty prompt (add BOS at least)");
    if (options.maxTokens < 0)
        return makeError(ErrorCode::InvalidArgument, "generate: maxTokens must be >= 0");
    const Tokenizer *tokenizer = model.tokenizer();
    if (!tokenizer && !options.stopStrings.empty())
        return makeError(ErrorCode::InvalidArgument, "generate: stop strings need a tokenizer");
    std::vector<int32_t> eos = model.config().eosIds;
    if (tokenizer)
        for (int32_t id : tokenizer->eosIds())
            eos.push_back(id);

    const int64_t capacity = int64_t(prompt.size()) + options.maxTokens;
    LOWBIT_TRY(auto cache, model.allocateCache(1, capacity));
    Sampler sampler(options.sampling);
    GenerateResult result;
    result.stopReason = "max_tokens";
    const auto start = std::chrono::steady_clock::now();

    SequenceInput input{0, prompt, LogitsWanted::Last};
    const bool greedy = options.sampling.temperature <= 0.0; // Sampler's own test for argmax
    for (int step = 0; step < options.maxTokens; ++step) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "generate: cancelled");
        int32_t next = 0;
        if (greedy) { // only the argmax: score()'s top-1, reduced on the model's device
            LOWBIT_TRY(TokenScores best, model.score(*cache, {&input, 1}, {{}, 1}));
            next = best.topIds[0];
            if (next < 0)
                return makeError(ErrorCode::Internal, "generate: the model's logits are all NaN");
        } else {
            LOWBIT_TRY(Logits logits, model.forward(*cache, {&input, 1}));
            next = sampler.sample({logits.row(0), size_t(logits.vocab)});
        }
        if (options.stopAtEos && std::find(eos.begin(), eos.end(), next) != eos.end()) {
            result.stopReason = "eos";
            break;
        }
        result.tokens.push_back(next);
        if (tokenizer) {
            result.text = tokenizer->decode(result.tokens);
            if (const size_t at = findStop(result.text, options.stopStrings); at != std::string::npos) {
                result.text.resize(at);
                result.stopReason = "stop_string";
                break;
            }
        }
        if (onToken && !onToken(next, result.text)) {
            result.stopReason = "callback";
            break;
        }
        input.tokens = {&result.tokens.back(), 1};
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.tokensPerSecond = seconds > 0 ? double(result.tokens.size()) / seconds : 0;
    return result;
}

} // namespace lowbit
