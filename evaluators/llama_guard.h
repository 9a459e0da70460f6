// Llama Guard 3 classification of (prompt, response) conversations: the prompt is rendered
// exactly as the chat_template of meta-llama/Llama-Guard-3-8B renders it (shared
// data/llama_guard3: a leading space before <|begin_of_text|>, categories S1-S14, 'User'/'Agent'
// roles, no blank line after the final assistant header), the guard model generates greedily, and
// its answer "safe" or "unsafe\nS1,S3" is parsed. P(unsafe) is the probability the guard gives
// the first token of "unsafe" at the position where its answer starts (after any leading
// whitespace it generates).
#pragma once

#include "core/result.h"
#include "runtime/language_model.h"
#include "tokenizer/chat_template.h"

#include <filesystem>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

// Errors: no messages, roles that do not alternate user/assistant starting with user.
Result<std::string> llamaGuard3Prompt(std::span<const ChatMessage> messages);

struct GuardVerdict {
    std::string label;                   // "safe", "unsafe", or "unparsed"
    std::vector<std::string> categories; // "S1".."S14" when unsafe
    double pUnsafe = 0;
    std::string raw;                     // the guard's generated text
};
GuardVerdict parseGuardOutput(std::string_view text);

class LlamaGuard {
public:
    // The guard model on `device` (the evaluated model's: an 8B guard wants the GPU too).
    static Result<std::unique_ptr<LlamaGuard>> load(const std::filesystem::path &path,
                                                    const DeviceSpec &device, int threads);
    explicit LlamaGuard(std::unique_ptr<LanguageModel> model) : m_model(std::move(model)) {}

    // One verdict per (prompt, response) pair (response classification: the 'Agent' turn).
    Result<std::vector<GuardVerdict>> classify(std::span<const std::pair<std::string, std::string>> pairs,
                                               int batchSize, std::stop_token stop = {});
    const LanguageModel &model() const { return *m_model; }

private:
    std::unique_ptr<LanguageModel> m_model;
};

} // namespace lowbit
