#include "model/checkpoint.h"

#include <cstring>
#include <fstream>

namespace lowbit {

const char *checkpointFormatName(CheckpointFormat format) {
    switch (format) {
    case CheckpointFormat::HuggingFace: return "huggingface";
    case CheckpointFormat::Gguf: return "gguf";
    case CheckpointFormat::Llama2c: return "llama2c";
    }
    return "?";
}

Result<CheckpointFormat> detectCheckpointFormat(const std::filesystem::path &path) {
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec)) {
        if (!std::filesystem::exists(path / "config.json", ec))
            return makeError(ErrorCode::NotFound,
                             path.string() + ": directory has no config.json (not a Hugging Face checkpoint)");
        return CheckpointFormat::HuggingFace;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return makeError(ErrorCode::NotFound, path.string() + ": cannot open");
    char magic[4] = {};
    in.read(magic, 4);
    if (in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0)
        return CheckpointFormat::Gguf;
    if (path.extension() == ".gguf")
        return makeError(ErrorCode::Format, path.string() + ": bad GGUF magic");
    if (path.extension() == ".bin")
        return CheckpointFormat::Llama2c;
    return makeError(ErrorCode::Unsupported,
                     path.string() + ": not a Hugging Face directory, GGUF file or llama2.c .bin");
}

Result<Checkpoint> loadCheckpoint(const std::filesystem::path &path, const LoadOptions &options) {
    LOWBIT_TRY(CheckpointFormat format, detectCheckpointFormat(path));
    switch (format) {
    case CheckpointFormat::HuggingFace: return loadHuggingFaceCheckpoint(path, options);
    case CheckpointFormat::Gguf: return loadGgufCheckpoint(path, options);
    case CheckpointFormat::Llama2c: return loadLlama2cCheckpoint(path, options);
    }
    return makeError(ErrorCode::Internal, "unreachable");
}

} // namespace lowbit
