// Added tokens (HF "added_tokens", GGUF control / user-defined types): strings matched in the raw
// text before the model's own segmentation, as Hugging Face tokenizers and llama.cpp do. Special
// (control) tokens are matched only on request; non-special ones always. At each position the
// longest token wins, leftmost first. Immutable; thread-safe.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

struct AddedToken {
    std::string content;
    int32_t id = -1;
    bool special = false;
};

// A piece of the input: either raw text (tokenId < 0) or one matched added token.
struct TextFragment {
    std::string_view text;
    int32_t tokenId = -1;
};

class AddedTokenMatcher {
public:
    AddedTokenMatcher() = default;
    explicit AddedTokenMatcher(std::vector<AddedToken> tokens);

    // Appends the fragments of `text` to `out` (they cover `text` in order).
    void split(std::string_view text, bool parseSpecial, std::vector<TextFragment> &out) const;
    const std::vector<AddedToken> &tokens() const { return m_tokens; }

private:
    std::vector<AddedToken> m_tokens;
    // Indices into m_tokens by first byte, longest first: a text position only probes the few
    // tokens that can start there.
    std::array<std::vector<uint32_t>, 256> m_byFirstByte;
    bool m_hasNonSpecial = false;
};

} // namespace lowbit
