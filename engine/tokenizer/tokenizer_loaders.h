// Factories for every tokenizer source the checkpoint loaders meet. Each returns a Format error
// naming the file (or "GGUF vocab") and the problem on bad input; none throws.
#pragma once

#include "core/result.h"
#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <memory>

namespace lowbit {

// Hugging Face tokenizer.json (byte-level BPE, Llama 3). tokenizer_config.json, when given, adds
// special-token flags, bos/eos names and add_bos_token.
Result<std::shared_ptr<const Tokenizer>> loadHfTokenizer(const std::filesystem::path &tokenizerJson,
                                                         const std::filesystem::path &tokenizerConfigJson = {});
// llama2.c tokenizer .bin (int32 max_token_length; per token: float32 score, int32 len, bytes).
// `vocabSize` is the model's (the file does not store it); 0 reads tokens up to the end of the
// file. BOS=1, EOS=2, UNK=0 as llama2.c.
Result<std::shared_ptr<const Tokenizer>> loadLlama2cTokenizer(const std::filesystem::path &file,
                                                              int32_t vocabSize);
// From a vocabulary as GGUF stores it: model "llama" -> SentencePiece-style BPE by scores,
// "gpt2" -> byte-level BPE with merges (pre-tokenizer chosen from `pre`).
Result<std::shared_ptr<const Tokenizer>> makeTokenizerFromVocab(VocabExport vocab);

} // namespace lowbit
