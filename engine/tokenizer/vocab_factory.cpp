// makeTokenizerFromVocab: a vocabulary as GGUF stores it (tokenizer.ggml.*) -> a Tokenizer.
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <algorithm>

namespace lowbit {
namespace {

constexpr std::string_view kSource = "GGUF vocab";

int32_t findPiece(const std::vector<std::string> &tokens, std::string_view piece) {
    const auto it = std::find(tokens.begin(), tokens.end(), piece);
    return it == tokens.end() ? -1 : static_cast<int32_t>(it - tokens.begin());
}

// tokenizer.ggml.pre -> split regex. llama.cpp knows many more names; each needs its own regex
// and its own test vectors before it can be trusted, so unknown names are refused.
Result<std::string> splitPatternFor(std::string_view pre) {
    if (pre == "llama-bpe" || pre == "llama3")
        return std::string(kLlama3SplitPattern);
    if (pre.empty() || pre == "default" || pre == "gpt2" || pre == "gpt-2")
        return std::string(kGpt2SplitPattern);
    return makeError(ErrorCode::Unsupported,
                     std::string(kSource) + ": pre-tokenizer '" + std::string(pre) +
                         "' is not supported (supported: llama-bpe, gpt2, default)");
}

Result<std::shared_ptr<const Tokenizer>> makeBpe(VocabExport vocab) {
    BpeSpec spec;
    spec.sourceName = std::string(kSource);
    LOWBIT_TRY(spec.splitPattern, splitPatternFor(vocab.pre));
    spec.pre = vocab.pre.empty() ? "default" : vocab.pre;
    spec.ignoreMerges = spec.splitPattern == kLlama3SplitPattern; // llama.cpp does the same
    spec.merges.reserve(vocab.merges.size());
    for (size_t rank = 0; rank < vocab.merges.size(); ++rank) {
        const std::string &merge = vocab.merges[rank];
        const size_t space = merge.find(' ');
        if (space == std::string::npos || merge.find(' ', space + 1) != std::string::npos)
            return makeError(ErrorCode::Format, std::string(kSource) + ": merge " +
                                                    std::to_string(rank) + " '" + merge +
                                                    "' is not of the form \"a b\"");
        spec.merges.emplace_back(merge.substr(0, space), merge.substr(space + 1));
    }
    for (const char *name : {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"})
        spec.extraEosIds.push_back(findPiece(vocab.tokens, name));
    spec.pieces = std::move(vocab.tokens);
    spec.tokenTypes = std::move(vocab.tokenTypes);
    spec.bosId = vocab.bosId;
    spec.eosId = vocab.eosId;
    spec.unkId = vocab.unkId;
    spec.padId = vocab.padId;
    spec.addBos = vocab.addBos;
    LOWBIT_TRY(auto tokenizer, BpeTokenizer::create(std::move(spec)));
    return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
}

Result<std::shared_ptr<const Tokenizer>> makeSpm(VocabExport vocab) {
    SpmSpec spec;
    spec.sourceName = std::string(kSource);
    spec.pieces = std::move(vocab.tokens);
    spec.scores = std::move(vocab.scores);
    spec.tokenTypes = std::move(vocab.tokenTypes);
    spec.bosId = vocab.bosId;
    spec.eosId = vocab.eosId;
    spec.unkId = vocab.unkId;
    spec.padId = vocab.padId;
    spec.addBos = vocab.addBos;
    spec.addSpacePrefix = vocab.addSpacePrefix;
    LOWBIT_TRY(auto tokenizer, SpmTokenizer::create(std::move(spec)));
    return std::shared_ptr<const Tokenizer>(std::move(tokenizer));
}

} // namespace

Result<std::shared_ptr<const Tokenizer>> makeTokenizerFromVocab(VocabExport vocab) {
    if (vocab.model == "gpt2")
        return makeBpe(std::move(vocab));
    if (vocab.model == "llama")
        return makeSpm(std::move(vocab));
    return makeError(ErrorCode::Unsupported, std::string(kSource) + ": tokenizer model '" +
                                                 vocab.model + "' (supported: llama, gpt2)");
}

} // namespace lowbit
