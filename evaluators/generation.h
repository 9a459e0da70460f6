// The generation request engine: many prompts generated together, one cache slot each (greedy or
// seeded sampling per request, stop strings, max new tokens), as lm-evaluation-harness's
// generate_until does: the prompt is left-truncated to maxLength - maxTokens tokens, generation
// stops at an end-of-generation id, at maxTokens or at a stop string, and the text is cut before
// the first stop string.
//
// With chat on, the prompt is the user message, rendered through the checkpoint's chat template
// (engine/tokenizer/chat_template.h: Llama 3 / 3.1 / 3.2 instruct) with the generation prompt, and
// encoded with special tokens parsed; with chat off it is encoded as plain text (BOS per addBos).
//
// Thread affinity: one engine per model and thread.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "runtime/generator.h"
#include "runtime/language_model.h"

#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct GenerationRequest {
    std::string prompt{}; // plain text, or the user message when chat
    bool chat = false;
    std::string system{}; // chat only: a system message when non-empty
    bool parseSpecial = false; // plain prompts: match special tokens ("<|eot_id|>") in the text
    uint64_t seed = 0;         // added to the sampling seed (e.g. the document index), so that a
                               // sampled output does not depend on what else runs with it
};

struct GenerationOptions {
    int batchSize = 1;       // requests generated together (cache slots)
    bool addBos = false;     // plain prompts: lm-eval's default for causal models is no BOS
    int64_t maxLength = 0;   // 0: the model's maxPositions
    GenerateOptions generate; // maxTokens, sampling (seed + request.seed), stop strings
};

struct GenerationOutput {
    std::string text;                  // generated text, cut before the first stop string
    std::vector<int32_t> tokens;       // generated ids (an end-of-generation id excluded)
    std::string stopReason;            // "eos", "stop_string", "max_tokens", "context_full"
    int64_t promptTokens = 0;          // after truncation
    std::string promptText;            // the exact text fed to the tokenizer
    std::vector<int32_t> promptIds;    // its ids after truncation
};

// The prompt's text (chat rendered or plain) and its ids, before truncation.
struct EncodedPrompt {
    std::string text;
    std::vector<int32_t> ids;
};
Result<EncodedPrompt> encodePrompt(const LanguageModel &model, const GenerationRequest &request, bool addBos);

class GenerationEngine {
public:
    GenerationEngine(LanguageModel &model, const GenerationOptions &options);

    Result<std::vector<GenerationOutput>> run(std::span<const GenerationRequest> requests,
                                              std::stop_token stop = {}, ProgressSink *progress = nullptr);
    int64_t tokensGenerated() const { return m_tokensGenerated; }
    int64_t promptTokens() const { return m_promptTokens; }

private:
    LanguageModel &m_model;
    GenerationOptions m_options;
    int64_t m_tokensGenerated = 0;
    int64_t m_promptTokens = 0;
};

} // namespace lowbit
