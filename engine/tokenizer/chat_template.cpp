#include "tokenizer/chat_template.h"

#include "tokenizer/utf8.h"

#include <cstdio>
#include <ctime>

namespace lowbit {
namespace {

constexpr std::string_view kStartHeader = "<|start_header_id|>";
constexpr std::string_view kEndHeader = "<|end_header_id|>\n\n";
constexpr std::string_view kEot = "<|eot_id|>";
// The message line both templates share (whitespace exactly as in the HF files).
constexpr std::string_view kMessageSignature = "message['content'] | trim + '<|eot_id|>'";

bool contains(std::string_view text, std::string_view needle) {
    return text.find(needle) != std::string_view::npos;
}

// Python str.isspace(): Unicode White_Space plus the ASCII information separators 0x1C..0x1F.
bool isPythonSpace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
           cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

void appendHeader(std::string &out, std::string_view role) {
    out += kStartHeader;
    out += role;
    out += kEndHeader;
}

std::string todayString() {
    const std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[32];
    const size_t length = std::strftime(buffer, sizeof(buffer), "%d %b %Y", &local);
    return std::string(buffer, length);
}

} // namespace

std::string_view trimPythonWhitespace(std::string_view text) {
    size_t begin = 0;
    while (begin < text.size()) {
        const size_t length = utf8::charLength(text, begin);
        if (length == 1 && static_cast<unsigned char>(text[begin]) >= 0x80)
            break; // an invalid byte is not whitespace
        if (!isPythonSpace(utf8::decodeAt(text, begin, length)))
            break;
        begin += length;
    }
    // Scan forward to find where the trailing whitespace run starts (UTF-8 is not reversible
    // byte by byte on invalid input).
    size_t end = begin;
    for (size_t pos = begin; pos < text.size();) {
        const size_t length = utf8::charLength(text, pos);
        const bool invalid = length == 1 && static_cast<unsigned char>(text[pos]) >= 0x80;
        pos += length;
        if (invalid || !isPythonSpace(utf8::decodeAt(text, pos - length, length)))
            end = pos;
    }
    return text.substr(begin, end - begin);
}

std::string jsonQuote(std::string_view text) {
    std::string out = "\"";
    for (char c : text) {
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
            if (static_cast<unsigned char>(c) < 0x20) {
                char escaped[8];
                std::snprintf(escaped, sizeof(escaped), "\\u%04x", static_cast<unsigned>(c));
                out += escaped;
            } else {
                out += c;
            }
        }
    }
    out += '"';
    return out;
}

Result<ChatTemplate> ChatTemplate::fromJinja(std::string_view source) {
    const bool llama3Family = contains(source, "<|start_header_id|>") &&
                              contains(source, "<|end_header_id|>") &&
                              contains(source, kMessageSignature);
    if (llama3Family && contains(source, "Cutting Knowledge Date: December 2023")) {
        if (contains(source, "strftime_now"))
            return ChatTemplate(ChatTemplateKind::Llama32);
        if (contains(source, "builtin_tools") && contains(source, "26 Jul 2024"))
            return ChatTemplate(ChatTemplateKind::Llama31);
    } else if (llama3Family && contains(source, "loop.index0 == 0") &&
               contains(source, "bos_token + content")) {
        return ChatTemplate(ChatTemplateKind::Llama3, !contains(source, "add_generation_prompt"));
    }
    return makeError(ErrorCode::Unsupported,
                     "chat template not recognised (supported: Llama 3, 3.1, 3.2 instruct)");
}

std::string_view ChatTemplate::name() const {
    switch (m_kind) {
    case ChatTemplateKind::Llama3: return "llama3";
    case ChatTemplateKind::Llama31: return "llama3.1";
    case ChatTemplateKind::Llama32: return "llama3.2";
    }
    return "unknown";
}

Result<std::string> ChatTemplate::render(std::span<const ChatMessage> messages,
                                         const ChatRenderOptions &options) const {
    if (m_kind == ChatTemplateKind::Llama3)
        return renderLlama3(messages, options);
    return renderLlama31(messages, options);
}

std::string ChatTemplate::renderLlama3(std::span<const ChatMessage> messages,
                                       const ChatRenderOptions &options) const {
    std::string out;
    for (size_t i = 0; i < messages.size(); ++i) {
        if (i == 0)
            out += options.bosToken; // bos only with a first message, as the template does
        appendHeader(out, messages[i].role);
        out += trimPythonWhitespace(messages[i].content);
        out += kEot;
    }
    if (options.addGenerationPrompt || m_alwaysGenerationPrompt)
        appendHeader(out, "assistant");
    return out;
}

Result<std::string> ChatTemplate::renderLlama31(std::span<const ChatMessage> messages,
                                                const ChatRenderOptions &options) const {
    if (messages.empty())
        return makeError(ErrorCode::InvalidArgument,
                         "the " + std::string(name()) +
                             " chat template needs at least one message");
    std::string date = options.dateString;
    if (date.empty())
        date = m_kind == ChatTemplateKind::Llama32 ? todayString() : "26 Jul 2024";
    std::string_view system;
    if (messages[0].role == "system") {
        system = trimPythonWhitespace(messages[0].content);
        messages = messages.subspan(1);
    }
    std::string out = options.bosToken;
    appendHeader(out, "system");
    out += "Cutting Knowledge Date: December 2023\n";
    out += "Today Date: " + date + "\n\n";
    out += system;
    out += kEot;
    for (const ChatMessage &message : messages) {
        if (message.role == "tool" || message.role == "ipython") {
            appendHeader(out, "ipython");
            out += jsonQuote(message.content);
        } else {
            appendHeader(out, message.role);
            out += trimPythonWhitespace(message.content);
        }
        out += kEot;
    }
    if (options.addGenerationPrompt)
        appendHeader(out, "assistant");
    return out;
}

} // namespace lowbit
