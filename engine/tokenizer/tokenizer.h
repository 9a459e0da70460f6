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

// The whole vocabulary in the shape GGUF stores it (tokenizer.ggml.*), for writers and `info`.
struct VocabExport {
    std::string model;                // "llama" (SentencePiece-style) or "gpt2" (byte-level BPE)
    std::string pre;                  // GGUF pre-tokenizer name ("llama-bpe"); empty for llama
    std::vector<std::string> tokens;  // pieces as stored
    std::vector<float> scores;        // SPM scores; empty for gpt2
    std::vector<int32_t> tokenTypes;  // GGUF token types: 1 normal, 2 unknown, 3 control,
                                      // 4 user-defined, 5 unused, 6 byte
    std::vector<std::string> merges;  // "a b" merge rules in rank order; empty for llama
    int32_t bosId = -1, eosId = -1, unkId = -1, padId = -1;
    bool addBos = false;
    bool addSpacePrefix = true;       // SPM: tokenizer.ggml.add_space_prefix (dummy prefix space)
};

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
    virtual VocabExport exportVocab() const = 0;
};

} // namespace lowbit
