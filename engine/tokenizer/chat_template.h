// Chat templates of the Llama 3 instruct models, rendered natively (no Jinja engine): a
// checkpoint's chat_template is recognised by signature substrings and rendered byte-exactly as
// Hugging Face transformers renders it (jinja2, trim_blocks + lstrip_blocks). Supported:
//   Llama 3   (Meta-Llama-3-*-Instruct): bos + per message
//             "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>";
//             some copies append the assistant header unconditionally, others only with
//             add_generation_prompt (detected).
//   Llama 3.1 / 3.2 (Llama-3.1-*-Instruct, Llama-3.2-*-Instruct): an always-present system block
//             with "Cutting Knowledge Date: December 2023\nToday Date: {date}\n\n" before the
//             (trimmed) system message; roles "tool"/"ipython" render as "ipython" with the content
//             JSON-encoded (jinja's `is iterable` holds for strings). Tool definitions and tool
//             calls are not modelled.
// Anything else (Llama Guard, other families) is an Unsupported error.
#pragma once

#include "core/result.h"

#include <span>
#include <string>
#include <string_view>

namespace lowbit {

struct ChatMessage {
    std::string role; // "system", "user", "assistant", "tool"/"ipython"
    std::string content;
};

struct ChatRenderOptions {
    bool addGenerationPrompt = true; // end with the assistant header
    std::string bosToken = "<|begin_of_text|>";
    // 3.1/3.2 "Today Date:". Empty: the template's own default; 3.1 hard-codes "26 Jul 2024",
    // 3.2 asks strftime_now("%d %b %Y"), i.e. today's local date.
    std::string dateString;
};

enum class ChatTemplateKind { Llama3, Llama31, Llama32 };

class ChatTemplate {
public:
    // Recognises a Jinja chat_template (tokenizer_config.json, GGUF tokenizer.chat_template).
    static Result<ChatTemplate> fromJinja(std::string_view source);
    explicit ChatTemplate(ChatTemplateKind kind, bool alwaysGenerationPrompt = false)
        : m_kind(kind), m_alwaysGenerationPrompt(alwaysGenerationPrompt) {}

    ChatTemplateKind kind() const { return m_kind; }
    std::string_view name() const; // "llama3", "llama3.1", "llama3.2"
    // Errors: an empty conversation for 3.1/3.2 (the template indexes messages[0]).
    Result<std::string> render(std::span<const ChatMessage> messages,
                               const ChatRenderOptions &options) const;

private:
    std::string renderLlama3(std::span<const ChatMessage> messages,
                             const ChatRenderOptions &options) const;
    Result<std::string> renderLlama31(std::span<const ChatMessage> messages,
                                      const ChatRenderOptions &options) const;

    ChatTemplateKind m_kind;
    bool m_alwaysGenerationPrompt = false;
};

// Python's str.strip() (what jinja's `trim` calls): strips the characters str.isspace() accepts.
std::string_view trimPythonWhitespace(std::string_view text);
// Python's json.dumps(text, ensure_ascii=False) for a string (transformers' tojson filter).
std::string jsonQuote(std::string_view text);

} // namespace lowbit
