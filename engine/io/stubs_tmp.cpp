#include "model/checkpoint.h"
namespace lowbit {
Result<Checkpoint> loadHuggingFaceCheckpoint(const std::filesystem::path &p, const LoadOptions &) { return makeError(ErrorCode::Unsupported, p.string() + ": HF loader not built yet"); }
Result<Checkpoint> loadGgufCheckpoint(const std::filesystem::path &p, const LoadOptions &) { return makeError(ErrorCode::Unsupported, p.string() + ": GGUF loader not built yet"); }
Result<Checkpoint> loadLlama2cCheckpoint(const std::filesystem::path &p, const LoadOptions &) { return makeError(ErrorCode::Unsupported, p.string() + ": llama2c loader not built yet"); }
}
