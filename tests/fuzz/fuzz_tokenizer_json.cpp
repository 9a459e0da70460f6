// libFuzzer target: arbitrary bytes as tokenizer.json content. An input may carry text to encode
// after a NUL byte ("<json>\0<text>"), so the pre-tokenizer regex and the added-token matcher see
// hostile text too. An accepted tokenizer encodes and decodes a few strings, and its exported
// vocabulary must load again through the GGUF path.
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace {

void exercise(const lowbit::Tokenizer &tokenizer, std::string_view text) {
    for (bool parseSpecial : {false, true}) {
        const auto ids = tokenizer.encode(text, {.addBos = true, .parseSpecial = parseSpecial});
        volatile size_t sink = tokenizer.decode(ids).size();
        for (int32_t id : ids)
            sink = sink + tokenizer.piece(id).size();
        (void)sink;
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    const size_t nul = input.find('\0');
    const std::string_view json = input.substr(0, nul);
    auto loaded = lowbit::loadHfTokenizerFromJson(json, "fuzz/tokenizer.json");
    if (!loaded.ok())
        return 0;
    const lowbit::Tokenizer &tokenizer = **loaded;
    if (nul != std::string_view::npos)
        exercise(tokenizer, input.substr(nul + 1));
    for (std::string_view text :
         {"Hello world, it's 2024!", "  \n\n\t x <|end|>y", "\xFF\xC3(\xE2\x82", "ab abc abcd"})
        exercise(tokenizer, text);
    volatile int32_t sink = tokenizer.bosId() + tokenizer.vocabSize();
    for (int32_t id : tokenizer.eosIds())
        sink = sink + id + tokenizer.isSpecial(id);
    (void)sink;
    auto again = lowbit::makeTokenizerFromVocab(tokenizer.exportVocab());
    if (again.ok())
        exercise(**again, "ab abc");
    return 0;
}
