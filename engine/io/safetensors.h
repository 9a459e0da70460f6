// Safetensors reader and writer (https://github.com/huggingface/safetensors, "Format" section):
//   8 bytes   little-endian uint64 N = header length
//   N bytes   UTF-8 JSON object: "name": {"dtype", "shape", "data_offsets": [begin, end]}, plus an
//             optional "__metadata__": {string: string}
//   rest      the byte buffer; offsets are relative to its start.
// The reader checks every length, offset and shape against the file before any tensor is built,
// and returns a Format/Unsupported error naming the file and the tensor; it never throws or aborts.
// Tensors view the caller's bytes (the memory mapping for files): nothing is copied, except a
// tensor whose data is not aligned to its element size, which gets an aligned private copy.
#pragma once

#include "core/mapped_file.h"
#include "core/result.h"
#include "core/tensor.h"

#include <cstddef>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

struct SafetensorsFile {
    std::shared_ptr<MappedFile> file; // null when parsed from caller-owned bytes
    std::map<std::string, Tensor> tensors;
    std::map<std::string, std::string> metadata; // "__metadata__"; non-string values as JSON text
    uint64_t headerBytes = 0;                    // N, the JSON header's length
};

// Largest header accepted: the reference implementation's limit (100 MB).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// Parses a whole safetensors image. `name` prefixes every error message (usually the file name);
// `owner` keeps `bytes` alive and becomes each tensor's owner.
Result<SafetensorsFile> parseSafetensors(std::span<const std::byte> bytes, const std::string &name,
                                         std::shared_ptr<const void> owner = {});

// Maps `path` and parses it; the tensors keep the mapping alive.
Result<SafetensorsFile> readSafetensors(const std::filesystem::path &path);

// Writes `tensors` (F32, F16 or BF16, each with a unique non-empty name) in the given order, with
// `metadata` as "__metadata__". The header is padded with spaces so the data starts 8-aligned.
// Writes to a temporary file beside `path` and renames it, so an existing file is never left
// half-written.
Status writeSafetensors(const std::filesystem::path &path, const std::vector<Tensor> &tensors,
                        const std::map<std::string, std::string> &metadata = {});

// A tensor of any dtype the format defines ("U8", "I32", "F32", ...) as raw little-endian bytes:
// for data the DType set lacks, such as packed quantization codes.
struct RawTensor {
    std::string name;
    std::string dtype;
    std::vector<int64_t> shape;
    std::span<const std::byte> bytes; // views the caller's storage (writer) or the file (reader)
};

struct RawSafetensorsFile {
    std::shared_ptr<MappedFile> file; // keeps every tensor's bytes valid
    std::map<std::string, RawTensor> tensors;
    std::map<std::string, std::string> metadata;
};

// Maps and parses `path` with the same checks as readSafetensors, but accepts every dtype of the
// format and builds no Tensor: byte ranges only.
Result<RawSafetensorsFile> readSafetensorsRaw(const std::filesystem::path &path);
// As writeSafetensors, for raw tensors; each byte length must equal dtype size x shape.
Status writeSafetensorsRaw(const std::filesystem::path &path, const std::vector<RawTensor> &tensors,
                           const std::map<std::string, std::string> &metadata = {});

} // namespace lowbit
