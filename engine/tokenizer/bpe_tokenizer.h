// Byte-level BPE (GPT-2 / Llama 3 style), as Hugging Face tokenizers runs a tokenizer.json with a
// ByteLevel pre-tokenizer and a BPE model:
//   added tokens are cut out of the text first (AddedTokenMatcher), the rest is split by the
//   pre-tokenizer regex (RegexSplitter), each piece's bytes are mapped to the GPT-2 byte->unicode
//   alphabet and merged by merge rank (lowest rank first, leftmost first on ties).
// With ignoreMerges (Llama 3) a piece that is itself a vocabulary entry is emitted whole.
// Immutable after create(), except for an internal word cache guarded by a mutex; all methods are
// safe to call from several threads.
#pragma once

#include "core/result.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/regex_splitter.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

#include <array>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace lowbit {

// Everything a BpeTokenizer is built from, in the GGUF shape (ids index every vector).
struct BpeSpec {
    std::string sourceName;          // file or "GGUF vocab", for error messages
    std::vector<std::string> pieces; // byte-level strings; added tokens as plain text;
                                     // "" for an id nothing defines
    std::vector<int32_t> tokenTypes; // GGUF types; 3 (control) = special added token,
                                     // 4 (user-defined) = non-special added token
    std::vector<std::pair<std::string, std::string>> merges; // in rank order
    std::string splitPattern;                                // pre-tokenizer regex (PCRE2 syntax)
    std::string pre; // GGUF pre-tokenizer name for export ("llama-bpe")
    bool ignoreMerges = false;
    int32_t bosId = -1, eosId = -1, unkId = -1, padId = -1;
    std::vector<int32_t> extraEosIds; // other end-of-generation ids (<|eot_id|>)
    bool addBos = false;
};

class BpeTokenizer final : public Tokenizer {
public:
    // Validates the spec (every merge names known tokens and produces one, ids in range, the
    // regex compiles); errors name spec.sourceName.
    static Result<std::shared_ptr<const BpeTokenizer>> create(BpeSpec spec);

    std::vector<int32_t> encode(std::string_view text, const EncodeOptions &options) const override;
    std::string decode(std::span<const int32_t> ids) const override;
    std::string_view piece(int32_t id) const override;
    int32_t vocabSize() const override { return static_cast<int32_t>(m_pieces.size()); }
    int32_t bosId() const override { return m_bosId; }
    std::vector<int32_t> eosIds() const override { return m_eosIds; }
    bool isSpecial(int32_t id) const override;
    std::string_view kind() const override { return "bpe"; }
    VocabExport exportVocab() const override;

private:
    BpeTokenizer() = default;
    Status buildMerges(const BpeSpec &spec);
    void encodeWord(std::string_view word, std::vector<int32_t> &out) const;
    std::vector<int32_t> mergeWord(std::string_view word) const;

    struct Merge {
        int32_t rank;
        int32_t result;
    };

    std::vector<std::string> m_pieces;
    std::vector<int32_t> m_types;
    std::vector<std::string> m_decoded; // the bytes each id stands for
    std::unordered_map<std::string, int32_t, utf8::StringHash, utf8::StringEqual> m_pieceToId;
    std::array<int32_t, 256> m_byteIds{};
    std::unordered_map<uint64_t, Merge> m_merges; // key: (left id << 32) | right id
    std::vector<std::pair<int32_t, int32_t>> m_mergeList;
    std::shared_ptr<const RegexSplitter> m_splitter;
    AddedTokenMatcher m_added;
    std::string m_pre;
    bool m_ignoreMerges = false;
    int32_t m_bosId = -1, m_eosId = -1, m_unkId = -1, m_padId = -1;
    std::vector<int32_t> m_eosIds;
    bool m_addBos = false;

    mutable std::mutex m_cacheMutex;
    mutable std::unordered_map<std::string, std::vector<int32_t>, utf8::StringHash,
                               utf8::StringEqual>
        m_cache;
};

// The GPT-2 byte -> unicode alphabet: printable Latin-1 bytes map to themselves, the other 68 to
// U+0100.. in byte order (so that no piece contains whitespace or control characters).
const std::array<uint32_t, 256> &byteToUnicode();

// Loads a tokenizer.json held in memory (the fuzzing entry point; loadHfTokenizer reads files and
// calls this). `configJson` may be empty. Names are used in error messages only.
Result<std::shared_ptr<const Tokenizer>> loadHfTokenizerFromJson(std::string_view json,
                                                                 std::string_view sourceName,
                                                                 std::string_view configJson = {},
                                                                 std::string_view configName = {});

} // namespace lowbit
