// Checkpoint: a loaded model (config, weights, tokenizer, chat template), whatever the file format.
// loadCheckpoint() recognises a Hugging Face directory, a GGUF file or a llama2.c .bin.
#pragma once

#include "core/result.h"
#include "model/config.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <map>
#include <memory>
#include <string>

namespace lowbit {

enum class CheckpointFormat { HuggingFace, Gguf, Llama2c };
const char *checkpointFormatName(CheckpointFormat format);

struct GenerationDefaults { // generation_config.json when present
    double temperature = 1.0;
    double topP = 1.0;
    int64_t topK = 0;
    bool doSample = false;
};

struct Checkpoint {
    std::filesystem::path path;
    CheckpointFormat format = CheckpointFormat::HuggingFace;
    ModelConfig config;
    ModelWeights weights;
    std::shared_ptr<const Tokenizer> tokenizer; // null when the checkpoint has none
    std::string chatTemplate;                   // Jinja source, empty when none
    GenerationDefaults generation;
    // Format-specific facts for `lowbit info`: stored dtypes of the file, GGUF keys, etc.
    std::map<std::string, std::string> metadata;
    // Bytes per stored tensor type as found in the file ("BF16" -> n, "Q4_0" -> n).
    std::map<std::string, uint64_t> bytesByStoredType;
};

struct LoadOptions {
    std::filesystem::path tokenizerPath; // llama2.c tokenizer .bin, or a tokenizer.json override
};

Result<CheckpointFormat> detectCheckpointFormat(const std::filesystem::path &path);
Result<Checkpoint> loadCheckpoint(const std::filesystem::path &path, const LoadOptions &options = {});

// Per-format loaders (engine/io/*). Each validates config and weights before returning.
Result<Checkpoint> loadHuggingFaceCheckpoint(const std::filesystem::path &dir, const LoadOptions &options);
Result<Checkpoint> loadGgufCheckpoint(const std::filesystem::path &file, const LoadOptions &options);
Result<Checkpoint> loadLlama2cCheckpoint(const std::filesystem::path &file, const LoadOptions &options);

} // namespace lowbit
