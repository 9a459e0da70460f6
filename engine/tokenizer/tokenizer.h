// Tokenizer: text <-> token ids. Implementations: BpeTokenizer (byte-level BPE from a Hugging Face
// tokenizer.json, Llama 3) and SpmTokenizer (SentencePiece-style BPE by piece scores: llama2.c
// tokenizer .bin, GGUF "llama" vocab). Immutable after construction; safe to share across threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

struct EncodeOptions {
    bool addBos = false;       // prepend bosId() when the tokenizer has one
    bool parseSpecial = false; // match special/added tokens ("<|eot_id|>") in the text
};

class Tokenizer {
public:
    virtual ~Tokenizer() = default;

    virtual std::vector<int32_t> encode(std::string_view text, const EncodeOptions &options) const = 0;
    // The bytes the ids stand for (special tokens rendered as their text; a leading-space marker
    // of SentencePiece decoded to a space, except right after BOS as SentencePiece does).
    virtual std::string decode(std::span<const int32_t> ids) const = 0;
    // The raw vocabulary entry of `id` (as stored: "Ġhello", "▁hello", "<0x0A>").
    virtual std::string_view piece(int32_t id) const = 0;
    virtual int32_t vocabSize() const = 0;
    virtual int32_t bosId() const = 0;                  // -1: none
    virtual std::vector<int32_t> eosIds() const = 0;    // end-of-generation ids (EOS, EOT)
    virtual bool isSpecial(int32_t id) const = 0;       // control/added special token
    virtual std::string_view kind() const = 0;          // "bpe" or "spm"
};

} // namespace lowbit
