#include "tokenizer/added_tokens.h"

#include <algorithm>

namespace lowbit {

AddedTokenMatcher::AddedTokenMatcher(std::vector<AddedToken> tokens) : m_tokens(std::move(tokens)) {
    for (uint32_t i = 0; i < m_tokens.size(); ++i) {
        if (m_tokens[i].content.empty())
            continue;
        m_byFirstByte[static_cast<unsigned char>(m_tokens[i].content[0])].push_back(i);
        m_hasNonSpecial = m_hasNonSpecial || !m_tokens[i].special;
    }
    for (auto &bucket : m_byFirstByte) {
        std::stable_sort(bucket.begin(), bucket.end(), [&](uint32_t a, uint32_t b) {
            return m_tokens[a].content.size() > m_tokens[b].content.size();
        });
    }
}

void AddedTokenMatcher::split(std::string_view text, bool parseSpecial,
                              std::vector<TextFragment> &out) const {
    if (!parseSpecial && !m_hasNonSpecial) {
        if (!text.empty())
            out.push_back({text, -1});
        return;
    }
    size_t rawStart = 0;
    size_t pos = 0;
    while (pos < text.size()) {
        const AddedToken *found = nullptr;
        for (uint32_t index : m_byFirstByte[static_cast<unsigned char>(text[pos])]) {
            const AddedToken &token = m_tokens[index];
            if ((parseSpecial || !token.special) &&
                text.compare(pos, token.content.size(), token.content) == 0) {
                found = &token;
                break;
            }
        }
        if (!found) {
            ++pos;
            continue;
        }
        if (pos > rawStart)
            out.push_back({text.substr(rawStart, pos - rawStart), -1});
        out.push_back({text.substr(pos, found->content.size()), found->id});
        pos += found->content.size();
        rawStart = pos;
    }
    if (rawStart < text.size())
        out.push_back({text.substr(rawStart), -1});
}

} // namespace lowbit
