// SentencePiece-style BPE by piece scores, as llama.cpp's SPM tokenizer and llama2.c's encode():
//   added tokens are cut out first; each raw fragment that starts the text or follows an added
//   token gets a dummy-prefix space (addSpacePrefix), spaces become U+2581 "▁", the text is split
//   into UTF-8 characters, and the adjacent pair whose concatenation is a vocabulary piece with
//   the highest score is merged (leftmost on ties) until none is left. Characters that are not
//   pieces become <0xNN> byte tokens (byte fallback), or UNK when the vocabulary has none.
// Only normal and user-defined pieces take part in merging; control, unknown, byte and unused
// pieces never come out of plain text (as SentencePiece).
// Decoding: "▁" -> space, <0xNN> -> that byte, control tokens -> their text; the leading space of
// the first piece (at the start, or right after BOS) is dropped, as SentencePiece does.
// Immutable after create(); thread-safe.
#pragma once

#include "core/result.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace lowbit {

struct SpmSpec {
    std::string sourceName;          // file or "GGUF vocab", for error messages
    std::vector<std::string> pieces; // with "▁" for spaces (GGUF form)
    std::vector<float> scores;       // empty: all 0
    std::vector<int32_t> tokenTypes; // GGUF types (1 normal, 2 unknown, 3 control, 4 user-defined,
                                     // 5 unused, 6 byte); empty: inferred from the pieces
    int32_t bosId = -1, eosId = -1, unkId = -1, padId = -1;
    bool addBos = true;
    bool addSpacePrefix = true;
};

class SpmTokenizer final : public Tokenizer {
public:
    static Result<std::shared_ptr<const SpmTokenizer>> create(SpmSpec spec);

    std::vector<int32_t> encode(std::string_view text, const EncodeOptions &options) const override;
    std::string decode(std::span<const int32_t> ids) const override;
    std::string_view piece(int32_t id) const override;
    int32_t vocabSize() const override { return static_cast<int32_t>(m_pieces.size()); }
    int32_t bosId() const override { return m_bosId; }
    std::vector<int32_t> eosIds() const override;
    bool isSpecial(int32_t id) const override;
    std::string_view kind() const override { return "spm"; }
    VocabExport exportVocab() const override;

private:
    SpmTokenizer() = default;
    void encodeFragment(std::string_view text, std::vector<int32_t> &out) const;
    void emitSymbol(std::string_view symbol, std::vector<int32_t> &out) const;

    std::vector<std::string> m_pieces;
    std::vector<float> m_scores;
    std::vector<int32_t> m_types;
    std::vector<std::string> m_decoded; // bytes per id, with "▁" already turned into spaces
    std::unordered_map<std::string, int32_t, utf8::StringHash, utf8::StringEqual> m_pieceToId;
    std::array<int32_t, 256> m_byteIds{};
    AddedTokenMatcher m_added;
    int32_t m_bosId = -1, m_eosId = -1, m_unkId = -1, m_padId = -1;
    bool m_addBos = true;
    bool m_addSpacePrefix = true;
};

} // namespace lowbit
