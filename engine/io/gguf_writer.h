// GGUF v3 writer (little-endian), the inverse of io/gguf.h, producing files llama.cpp loads:
// header, metadata in insertion order, tensor infos, zero padding to the alignment, then each
// tensor's data padded to the alignment (as gguf-py does). Not thread-safe; one writer per file.
#pragma once

#include "core/result.h"
#include "core/tensor.h"
#include "io/gguf.h"
#include "model/checkpoint.h"
#include "quant/ggml_blocks.h"

#include <filesystem>
#include <map>
#include <ostream>
#include <string>
#include <vector>

namespace lowbit {

class GgufWriter {
public:
    // `alignment` must be a power of two; it is also written as general.alignment (u32) unless
    // the caller sets that key itself (to the same value).
    explicit GgufWriter(uint32_t alignment = 32);

    // Metadata, kept in insertion order; setting a key again replaces its value in place.
    void set(const std::string &key, GgufValue value);
    void setString(const std::string &key, std::string value);
    void setU32(const std::string &key, uint32_t value);
    void setI32(const std::string &key, int32_t value);
    void setU64(const std::string &key, uint64_t value);
    void setF32(const std::string &key, float value);
    void setF64(const std::string &key, double value);
    void setBool(const std::string &key, bool value);
    void setStringArray(const std::string &key, const std::vector<std::string> &values);
    void setF32Array(const std::string &key, const std::vector<float> &values);
    void setI32Array(const std::string &key, const std::vector<int32_t> &values);

    // A tensor stored as `storeAs` (F32, F16, BF16 or Q8_0), converted row by row when written;
    // `tensor` (F32/F16/BF16, shape outermost first) must stay valid until then (it shares
    // ownership of its bytes). Q8_0 needs the innermost dimension to be a multiple of 32.
    Status addTensor(const std::string &name, const Tensor &tensor, GgmlType storeAs);
    // Bytes already encoded as `type`; ne innermost first. Size must match type x ne.
    Status addRawTensor(const std::string &name, GgmlType type, std::vector<uint64_t> ne,
                        std::vector<std::byte> data);

    // Writes to `path` through a temporary file renamed into place, so a failed write leaves any
    // existing file untouched. Errors name the path.
    Status write(const std::filesystem::path &path) const;
    Result<std::vector<std::byte>> toBytes() const;

private:
    struct PendingTensor {
        std::string name;
        GgmlType type;
        std::vector<uint64_t> ne;
        Tensor source;              // converted on write, or
        std::vector<std::byte> raw; // written as is
        bool isRaw = false;
    };
    Status writeTo(std::ostream &out, const std::string &what) const;
    Status writeTensorData(std::ostream &out, const PendingTensor &t) const;

    uint32_t m_alignment;
    std::vector<std::pair<std::string, GgufValue>> m_kv;
    std::vector<PendingTensor> m_tensors;
};

// Writes a LLaMA checkpoint as llama.cpp expects it (general.*, llama.*, tokenizer.ggml.*, the
// chat template; tensor names token_embd / blk.N.* / output_norm / output). 2-D weights are stored
// as `weightType` (F32, F16, BF16 or Q8_0; Q8_0 falls back to F16 for rows that are not a
// multiple of 32, as llama-quantize does), norms as F32; wq/wk go back to the interleaved RoPE
// row order. A tied head is written as no output.weight; Llama 3 rope scaling as rope_freqs.
// `overrides`: optional pre-encoded blocks for some 2-D weights, keyed by the Tensor's name (the
// Hugging Face name, "model.layers.0.self_attn.q_proj.weight"), written as is instead of
// `weightType`; rows already in GGUF order (q/k interleaved). Used by engine/io/gguf_export.h.
struct GgufEncodedWeight {
    GgmlType type = GgmlType::F32;
    std::vector<std::byte> data;
};
using GgufWeightOverrides = std::map<std::string, GgufEncodedWeight>;

Status writeGgufCheckpoint(const Checkpoint &checkpoint, const std::filesystem::path &path,
                           GgmlType weightType, const GgufWeightOverrides *overrides = nullptr);

} // namespace lowbit
