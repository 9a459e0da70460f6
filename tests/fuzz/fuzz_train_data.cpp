// libFuzzer target: arbitrary bytes as a training-data file (engine/train/train_data.h). The first
// byte picks the file extension (.json, .jsonl, .txt), the declared format, train_on_source, the
// truncation limits and whether a Llama 3 chat template is given; the rest is the file. Every
// input must end in examples or an error, never a crash; accepted examples are checked for the
// invariants the trainer relies on (equal lengths, token ids in range, something scored).
#include "tokenizer/tokenizer_loaders.h"
#include "train/train_data.h"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace {

// A byte-level SentencePiece vocabulary: <unk> <s> </s>, the 256 byte pieces, a few merges.
const lowbit::Tokenizer &tinyTokenizer() {
    static const std::shared_ptr<const lowbit::Tokenizer> tokenizer = [] {
        lowbit::VocabExport v;
        v.model = "llama";
        v.tokens = {"<unk>", "<s>", "</s>"};
        v.tokenTypes = {2, 3, 3};
        for (int b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof name, "<0x%02X>", b);
            v.tokens.push_back(name);
            v.tokenTypes.push_back(6);
        }
        for (const char *piece :
             {"\xE2\x96\x81", "\xE2\x96\x81t", "he", "###", "\xE2\x96\x81the"}) {
            v.tokens.push_back(piece);
            v.tokenTypes.push_back(1);
        }
        v.scores.assign(v.tokens.size(), 0.0f);
        for (size_t i = 259; i < v.scores.size(); ++i)
            v.scores[i] = -float(i);
        v.bosId = 1;
        v.eosId = 2;
        v.unkId = 0;
        auto made = lowbit::makeTokenizerFromVocab(std::move(v));
        if (!made.ok())
            std::abort(); // a fixed vocabulary: failing here is a bug of this harness
        return *made;
    }();
    return *tokenizer;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    const uint8_t control = data[0];
    static const char *kExtensions[] = {".json", ".jsonl", ".txt", ".json"};
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() /
        ("lowbit_fuzz_train_data_" + std::to_string(::getpid()) + kExtensions[control & 3]);
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char *>(data + 1), std::streamsize(size - 1));
    }
    lowbit::train::DataOptions options;
    static const lowbit::train::DataFormat kFormats[] = {
        lowbit::train::DataFormat::Auto, lowbit::train::DataFormat::Alpaca,
        lowbit::train::DataFormat::Chat, lowbit::train::DataFormat::Oasst};
    options.format =
        (control & 0x40) ? lowbit::train::DataFormat::Text : kFormats[(control >> 2) & 3];
    options.trainOnSource = control & 0x10;
    options.sourceMaxTokens = (control & 0x20) ? 3 : 384;
    options.targetMaxTokens = (control & 0x20) ? 2 : 128;
    options.textWindowTokens = (control & 0x20) ? 2 : 64;
    options.includeSynthetic = control & 0x10;
    const lowbit::ChatTemplate chat(lowbit::ChatTemplateKind::Llama3);
    const lowbit::Tokenizer &tokenizer = tinyTokenizer();
    auto set = lowbit::train::loadTrainingData(path, tokenizer, options,
                                               (control & 0x80) ? &chat : nullptr);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (!set.ok())
        return 0;
    for (const lowbit::train::TrainExample &e : set->examples) {
        bool scored = false;
        if (e.tokens.size() != e.targets.size() || e.tokens.empty())
            std::abort();
        for (size_t i = 0; i < e.tokens.size(); ++i) {
            if (e.tokens[i] < 0 || e.tokens[i] >= tokenizer.vocabSize())
                std::abort();
            const int32_t t = e.targets[i];
            if (t != lowbit::train::kIgnoreTarget && (t < 0 || t >= tokenizer.vocabSize()))
                std::abort();
            scored = scored || t != lowbit::train::kIgnoreTarget;
        }
        if (!scored)
            std::abort();
    }
    return 0;
}
