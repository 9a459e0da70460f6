// A vocabulary (VocabExport, the shape GGUF stores) as a JSON document, so that a checkpoint
// directory written from a GGUF or llama2.c source carries its tokenizer without a tokenizer.json
// (the quantizer writes it as lowbit_vocab.json; the Hugging Face loader reads it when
// tokenizer.json is absent).
//
//   {"format": "lowbit-vocab", "version": 1, "model": "llama" | "gpt2", "pre": "...",
//    "tokens": [piece, ...], "scores": [...], "token_types": [...], "merges": [...],
//    "bos_id", "eos_id", "unk_id", "pad_id", "add_bos", "add_space_prefix"}
//
// A piece that is not valid UTF-8 is written as {"hex": "e29c"} instead of a string.
#pragma once

#include "core/result.h"
#include "tokenizer/tokenizer.h"

#include <string>

namespace lowbit {

std::string vocabToJson(const VocabExport &vocab);
// Errors name `source` and the offending field.
Result<VocabExport> vocabFromJson(std::string_view text, const std::string &source);

} // namespace lowbit
