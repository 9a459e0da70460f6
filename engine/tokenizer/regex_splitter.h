// Pre-tokenizer: splits text with a regular expression the way Hugging Face's Split pre-tokenizer
// does with behavior "Isolated" (every match is a piece, and so is every gap between matches).
// PCRE2 with UTF + UCP semantics (\p{L}, \s are Unicode-aware) and JIT when the library has it.
// Invalid UTF-8 in the text is allowed: such bytes never match and end up in gap pieces.
// Immutable after compile(); split() may be called from several threads at once.
#pragma once

#include "core/result.h"

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class RegexSplitter {
public:
    // `sourceName` (a file name, "GGUF vocab") prefixes the error message of a bad pattern.
    static Result<std::shared_ptr<const RegexSplitter>> compile(std::string_view pattern,
                                                                std::string_view sourceName);
    ~RegexSplitter();
    RegexSplitter(const RegexSplitter &) = delete;
    RegexSplitter &operator=(const RegexSplitter &) = delete;

    // Appends the pieces of `text` (views into it, in order, covering it exactly) to `out`.
    void split(std::string_view text, std::vector<std::string_view> &out) const;
    const std::string &pattern() const { return m_pattern; }
    bool usesJit() const { return m_jit; }

private:
    RegexSplitter() = default;

    std::string m_pattern;
    void *m_code = nullptr; // pcre2_code_8, kept opaque so that users need not see pcre2.h
    bool m_jit = false;
};

// The pre-tokenizer patterns llama.cpp names in GGUF (tokenizer.ggml.pre).
inline constexpr std::string_view kLlama3SplitPattern =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
inline constexpr std::string_view kGpt2SplitPattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

} // namespace lowbit
