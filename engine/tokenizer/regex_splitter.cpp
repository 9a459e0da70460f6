#include "tokenizer/regex_splitter.h"

#include "tokenizer/utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

namespace lowbit {
namespace {

// Bounds on one match attempt, so that a pathological pattern from a bad file cannot hang encode():
// on hitting them the rest of the text becomes one piece.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr uint32_t kDepthLimit = 100'000;
constexpr size_t kJitStackStartBytes = 32 * 1024;
constexpr size_t kJitStackMaxBytes = 4 * 1024 * 1024;

pcre2_code *code(void *opaque) {
    return static_cast<pcre2_code *>(opaque);
}

// The per-call matching state (match data, limits, JIT stack): owned by one split() call, which is
// what keeps split() thread-safe.
class MatchState {
public:
    explicit MatchState(pcre2_code *compiled, bool jit)
        : m_data(pcre2_match_data_create_from_pattern(compiled, nullptr)),
          m_context(pcre2_match_context_create(nullptr)) {
        if (m_context) {
            pcre2_set_match_limit(m_context, kMatchLimit);
            pcre2_set_depth_limit(m_context, kDepthLimit);
            if (jit) {
                m_stack = pcre2_jit_stack_create(kJitStackStartBytes, kJitStackMaxBytes, nullptr);
                if (m_stack)
                    pcre2_jit_stack_assign(m_context, nullptr, m_stack);
            }
        }
    }
    ~MatchState() {
        pcre2_jit_stack_free(m_stack);
        pcre2_match_context_free(m_context);
        pcre2_match_data_free(m_data);
    }
    MatchState(const MatchState &) = delete;
    MatchState &operator=(const MatchState &) = delete;

    bool ok() const { return m_data && m_context; }
    pcre2_match_data *data() { return m_data; }
    pcre2_match_context *context() { return m_context; }

private:
    pcre2_match_data *m_data = nullptr;
    pcre2_match_context *m_context = nullptr;
    pcre2_jit_stack *m_stack = nullptr;
};

} // namespace

Result<std::shared_ptr<const RegexSplitter>> RegexSplitter::compile(std::string_view pattern,
                                                                    std::string_view sourceName) {
    int errorCode = 0;
    PCRE2_SIZE errorOffset = 0;
    // MATCH_INVALID_UTF: arbitrary bytes may reach encode(); they must not make matching fail.
    const uint32_t options = PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF;
    pcre2_code *compiled =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options,
                      &errorCode, &errorOffset, nullptr);
    if (!compiled) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(errorCode, message, sizeof(message));
        return makeError(ErrorCode::Format, std::string(sourceName) +
                                                ": bad pre-tokenizer regex at offset " +
                                                std::to_string(errorOffset) + ": " +
                                                reinterpret_cast<char *>(message));
    }
    std::shared_ptr<RegexSplitter> splitter(new RegexSplitter());
    splitter->m_pattern = std::string(pattern);
    splitter->m_code = compiled;
    splitter->m_jit = pcre2_jit_compile(compiled, PCRE2_JIT_COMPLETE) == 0;
    return std::shared_ptr<const RegexSplitter>(std::move(splitter));
}

RegexSplitter::~RegexSplitter() {
    pcre2_code_free(code(m_code));
}

void RegexSplitter::split(std::string_view text, std::vector<std::string_view> &out) const {
    MatchState state(code(m_code), m_jit);
    const auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    size_t pos = 0;
    size_t gapStart = 0;
    while (state.ok() && pos < text.size()) {
        const int rc =
            pcre2_match(code(m_code), subject, text.size(), pos, 0, state.data(), state.context());
        if (rc < 0)
            break; // no further match, or a limit was hit: the rest is one gap piece
        const PCRE2_SIZE *ovector = pcre2_get_ovector_pointer(state.data());
        const size_t start = ovector[0];
        const size_t end = ovector[1];
        if (end <= start) {
            if (start >= text.size())
                break;
            // An empty match splits nothing (as in HF); step over one character and go on.
            pos = start + utf8::charLength(text, start);
            continue;
        }
        if (start > gapStart)
            out.push_back(text.substr(gapStart, start - gapStart));
        out.push_back(text.substr(start, end - start));
        pos = gapStart = end;
    }
    if (gapStart < text.size())
        out.push_back(text.substr(gapStart));
}

} // namespace lowbit
