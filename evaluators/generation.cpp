#include "generation.h"

#include "runtime/sampler.h"
#include "tokenizer/chat_template.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

namespace lowbit {

Result<EncodedPrompt> encodePrompt(const LanguageModel &model, const GenerationRequest &request, bool addBos) {
    const Tokenizer *tokenizer = model.tokenizer();
    if (!tokenizer)
        return makeError(ErrorCode::InvalidArgument, "generation: the model has no tokenizer");
    EncodedPrompt out;
    if (!request.chat) {
        out.text = request.prompt;
        out.ids = tokenizer->encode(request.prompt, {addBos, request.parseSpecial});
    } else {
        const std::string &source = model.checkpoint().chatTemplate;
        if (source.empty())
            return makeError(ErrorCode::InvalidArgument, "generation: chat requested but the model has no chat template");
        LOWBIT_TRY(ChatTemplate chat, ChatTemplate::fromJinja(source));
        std::vector<ChatMessage> messages;
        if (!request.system.empty())
            messages.push_back({"system", request.system});
        messages.push_back({"user", request.prompt});
        LOWBIT_TRY(out.text, chat.render(messages, {}));
        // The rendered text carries its own BOS; special tokens are parsed, not spelled out.
        out.ids = tokenizer->encode(out.text, {false, true});
    }
    if (out.ids.empty())
        return makeError(ErrorCode::InvalidArgument, "generation: the prompt encodes to no tokens");
    return out;
}

GenerationEngine::GenerationEngine(LanguageModel &model, const GenerationOptions &options)
    : m_model(model), m_options(options) {
    m_options.batchSize = std::max(1, m_options.batchSize);
    if (m_options.maxLength <= 0)
        m_options.maxLength = model.config().maxPositions;
}

namespace {

struct Active {
    size_t request = 0;
    std::vector<int32_t> prompt;
    std::unique_ptr<Sampler> sampler;
    bool started = false;
};

size_t findStop(const std::string &text, const std::vector<std::string> &stops) {
    size_t best = std::string::npos;
    for (const std::string &stop : stops)
        if (!stop.empty())
            best = std::min(best, text.find(stop));
    return best;
}

} // namespace

Result<std::vector<GenerationOutput>> GenerationEngine::run(std::span<const GenerationRequest> requests,
                                                            std::stop_token stop, ProgressSink *progress) {
    const GenerateOptions &gen = m_options.generate;
    const int64_t maxContext = m_options.maxLength - gen.maxTokens;
    if (gen.maxTokens < 1 || maxContext < 1)
        return makeError(ErrorCode::InvalidArgument,
                         "generation: need 1 <= maxTokens < context length (" + std::to_string(m_options.maxLength) + ")");
    const Tokenizer &tokenizer = *m_model.tokenizer(); // encodePrompt checks it exists
    std::vector<GenerationOutput> outputs(requests.size());
    std::vector<std::vector<int32_t>> prompts(requests.size());
    int64_t capacity = 1;
    for (size_t i = 0; i < requests.size(); ++i) {
        LOWBIT_TRY(EncodedPrompt p, encodePrompt(m_model, requests[i], m_options.addBos));
        const size_t keep = std::min(p.ids.size(), size_t(maxContext));
        prompts[i].assign(p.ids.end() - long(keep), p.ids.end());
        outputs[i].promptText = std::move(p.text);
        outputs[i].promptTokens = int64_t(keep);
        outputs[i].promptIds = prompts[i];
        capacity = std::max(capacity, int64_t(keep) + gen.maxTokens);
    }
    std::vector<int32_t> eos = m_model.config().eosIds;
    for (int32_t id : tokenizer.eosIds())
        eos.push_back(id);

    const int slots = int(std::min<size_t>(size_t(m_options.batchSize), std::max<size_t>(1, requests.size())));
    LOWBIT_TRY(auto cache, m_model.allocateCache(slots, capacity));
    std::vector<std::optional<Active>> active(static_cast<size_t>(slots));
    size_t next = 0, finished = 0;
    const bool greedy = gen.sampling.temperature <= 0.0; // Sampler's own test for argmax
    const auto start = std::chrono::steady_clock::now();
    while (finished < requests.size()) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "generation: cancelled");
        std::vector<SequenceInput> inputs;
        std::vector<int> inputSlot;
        for (int s = 0; s < slots; ++s) {
            auto &a = active[size_t(s)];
            if (!a && next < requests.size()) {
                SamplingOptions sampling = gen.sampling;
                sampling.seed = gen.sampling.seed + requests[next].seed;
                a = Active{next, prompts[next], std::make_unique<Sampler>(sampling), false};
                cache->clear(s);
                ++next;
            }
            if (!a)
                continue;
            const auto &generated = outputs[a->request].tokens;
            if (!a->started) {
                inputs.push_back({s, a->prompt, LogitsWanted::Last});
                m_promptTokens += int64_t(a->prompt.size());
            } else {
                inputs.push_back({s, {&generated.back(), 1}, LogitsWanted::Last});
            }
            inputSlot.push_back(s);
        }
        // Greedy decoding reads only each row's argmax (score()'s top-1, on the model's device);
        // sampling at a temperature takes the full rows.
        Logits logits;
        TokenScores best;
        if (greedy) {
            LOWBIT_TRY(best, m_model.score(*cache, inputs, {{}, 1}));
        } else {
            LOWBIT_TRY(logits, m_model.forward(*cache, inputs));
        }
        for (size_t k = 0; k < inputs.size(); ++k) {
            const int s = inputSlot[k];
            Active &a = *active[size_t(s)];
            GenerationOutput &out = outputs[a.request];
            a.started = true;
            const int32_t token = greedy ? best.topIds[k]
                                         : a.sampler->sample({logits.row(int64_t(k)),
                                                              size_t(logits.vocab)});
            if (token < 0)
                return makeError(ErrorCode::Internal, "generation: the model's logits are all NaN");
            std::string reason;
            if (gen.stopAtEos && std::find(eos.begin(), eos.end(), token) != eos.end()) {
                reason = "eos";
            } else {
                out.tokens.push_back(token);
                ++m_tokensGenerated;
                out.text = tokenizer.decode(out.tokens);
                if (const size_t at = findStop(out.text, gen.stopStrings); at != std::string::npos) {
                    out.text.resize(at);
                    reason = "stop_string";
                } else if (int64_t(out.tokens.size()) >= gen.maxTokens) {
                    reason = "max_tokens";
                } else if (cache->length(s) + 1 > cache->capacity()) {
                    reason = "context_full";
                }
            }
            if (!reason.empty()) {
                out.stopReason = reason;
                active[size_t(s)].reset();
                ++finished;
            }
        }
        if (progress) {
            const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            progress->report({"generate", int64_t(finished), int64_t(requests.size()),
                              double(m_tokensGenerated) / std::max(seconds, 1e-9), -1});
        }
    }
    return outputs;
}

} // namespace lowbit
