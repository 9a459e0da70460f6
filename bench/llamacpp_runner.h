// Runs llama.cpp's `llama-perplexity` (built from source next to the repository, never part of
// it) on a GGUF file and reads back its figures, so bench_ppl can print them beside ours.
#pragma once

#include "core/result.h"

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

namespace lowbit::bench {

struct LlamaCppRun {
    std::filesystem::path model;
    std::filesystem::path text;
    int64_t contextTokens = 512;
    int64_t batchTokens = 2048; // -b; llama.cpp packs batchTokens/contextTokens chunks per batch
    int64_t chunks = 0;         // --chunks; 0: all
    int threads = 1;            // -t (sets the batch thread count too)
};

struct LlamaCppResult {
    double perplexity = 0;
    double perplexityError = 0;
    int64_t chunks = 0;         // from "calculating perplexity over N chunks"
    int64_t evalTokens = 0;     // from the "prompt eval time" perf line
    double evalSeconds = 0;     // llama_decode time only (not load, tokenization, log-softmax)
    double tokensPerSecond = 0; // evalTokens / evalSeconds
    double wallSeconds = 0;     // the whole process, load and tokenization included
    double cpuSeconds = 0;      // user + system CPU of the whole process, every thread summed
    std::string commandLine;
};

// The llama-perplexity binary: `override` if given (a binary or a folder holding it), else
// $LLAMACPP_DIR (the llama.cpp checkout or any folder holding the binary), else
// ../llama.cpp/build/bin next to the source tree. nullopt when none exists.
std::optional<std::filesystem::path> findLlamaPerplexity(const std::filesystem::path &override);

// Runs the binary and parses its output; an error carries the command and the output's tail when
// the process fails or prints no final estimate.
Result<LlamaCppResult> runLlamaPerplexity(const std::filesystem::path &binary,
                                          const LlamaCppRun &run);

// Parses llama-perplexity's combined stdout/stderr (exposed for the parser's own checks).
Result<LlamaCppResult> parseLlamaPerplexityOutput(const std::string &output);

} // namespace lowbit::bench
