// Perplexity corpora as Tasks over evaluators/perplexity.h. A sample is one chunk (window) of the
// context length with its summed NLL and scored-token count; the aggregate is
// exp(total NLL / total tokens), its standard error bootstrapped over chunks.
//
// Texts, as the LLaMA3 low-bit study (GPTQ's datautils) builds them:
//   wikitext2    wikitext2/wiki.test.raw, read whole, tokenized once with BOS
//   ptb          ptb/ptb.valid.txt, lines stripped and joined with "\n\n" (GPTQ get_ptb)
//   c4           c4/c4_validation_2k.jsonl: `windows` (256) random windows of the context length
//                from documents at least that long, drawn with random.seed(0) exactly as GPTQ's
//                get_c4 draws them (randint over documents, then over the start)
//   tinystories  tinystories/tinystories_val_first1000.txt, read whole
//   text:PATH    any UTF-8 file, read whole
// Options: contextTokens (default min(2048, model context)); extra["mode"] = "paper" (every
// position after the first of each chunk) or "llamacpp" (BOS first, second half scored);
// extra["c4_windows"] (default 256). limit N scores a seeded subsample of N chunks.
#pragma once

#include "perplexity.h"
#include "task.h"

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

enum class CorpusKind { WikiText2, C4, Ptb, TinyStories, TextFile };

struct CorpusSpec {
    CorpusKind kind = CorpusKind::TextFile;
    std::string name;           // "wikitext2", "text:/path/file.txt"
    std::filesystem::path file; // the data file
};

// "wikitext2", "c4", "ptb", "tinystories" or "text:PATH"; NotFound for another name.
Result<CorpusSpec> corpusSpec(const std::string &name, const std::filesystem::path &dataDir);

struct CorpusChunks {
    std::vector<std::vector<int32_t>> chunks; // each exactly contextTokens long
    int64_t textTokens = 0;                   // tokens of the whole text (c4: of the picked docs)
    std::string tokenHash;                    // hash of all chunk tokens (base/compare checks)
};

Result<CorpusChunks> loadCorpusChunks(const CorpusSpec &spec, const Tokenizer &tokenizer,
                                      int64_t contextTokens, const TaskOptions &options);

int64_t perplexityContext(const LanguageModel &model, const TaskOptions &options);
Result<PerplexityProtocol> perplexityMode(const TaskOptions &options);

std::unique_ptr<Task> makePerplexityTask(const CorpusSpec &spec);

} // namespace lowbit
