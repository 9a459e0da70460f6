// GGUF reader (versions 2 and 3, little-endian), after ggml's docs/gguf.md:
//   header   : "GGUF", u32 version, u64 tensor_count, u64 kv_count
//   metadata : kv_count x (string key, u32 value type, value)
//   tensors  : tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   padding to general.alignment (default 32), then the data section; offsets are relative to it.
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements (nesting
// allowed). Every count, length, offset and size is checked against the bytes actually present
// before anything is allocated, so a hostile file yields a Format error, never a crash or a huge
// allocation. Errors name the source (the file path) and the problem.
#pragma once

#include "core/result.h"
#include "quant/ggml_blocks.h"

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

enum class GgufValueType : uint32_t {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
};
std::string_view ggufValueTypeName(GgufValueType type); // "u32", "string", "array", ...

// One metadata value. Integers are widened into `u` (unsigned, bool) or `i` (signed), floats into
// `f`; `type` remembers the stored type so that a writer can reproduce it.
struct GgufValue {
    GgufValueType type = GgufValueType::U8;
    uint64_t u = 0;
    int64_t i = 0;
    double f = 0.0;
    std::string s;
    GgufValueType elementType = GgufValueType::U8; // arrays only
    std::vector<GgufValue> array;                  // arrays only

    bool isInteger() const;
    bool isFloat() const { return type == GgufValueType::F32 || type == GgufValueType::F64; }
};

struct GgufTensorInfo {
    std::string name;
    std::vector<uint64_t> ne; // innermost first: ne[0] is the row length
    GgmlType type = GgmlType::F32;
    uint64_t offset = 0; // from the start of the data section
    uint64_t elements = 0;
    std::span<const std::byte> data; // the tensor's bytes inside the file

    // Shape outermost first, as Tensor::shape wants it ({rows, rowLength} for a matrix).
    std::vector<int64_t> shape() const;
};

class GgufFile {
public:
    // Maps `path` and parses it; tensor data spans view the mapping, which owner() keeps alive.
    static Result<GgufFile> open(const std::filesystem::path &path);
    // Parses bytes held elsewhere (tests, fuzzing). `source` names them in errors; `owner`, if
    // given, keeps `bytes` alive for as long as the GgufFile or any tensor taken from it.
    static Result<GgufFile> parse(std::span<const std::byte> bytes, std::string source,
                                  std::shared_ptr<const void> owner = {});

    const std::string &source() const { return m_source; }
    uint32_t version() const { return m_version; }
    uint64_t alignment() const { return m_alignment; }
    uint64_t dataOffset() const { return m_dataOffset; } // file offset of the data section
    const std::shared_ptr<const void> &owner() const { return m_owner; }

    // Metadata in file order.
    const std::vector<std::pair<std::string, GgufValue>> &metadata() const { return m_kv; }
    const GgufValue *find(std::string_view key) const; // nullptr when absent
    bool has(std::string_view key) const { return find(key) != nullptr; }

    // Typed accessors: NotFound when the key is absent, Format (naming source, key, stored type)
    // when the value has another type or does not fit. Integer getters accept any integer type
    // whose value fits; getF32/getF64 accept F32 or F64.
    Result<std::string> getString(std::string_view key) const;
    Result<uint32_t> getU32(std::string_view key) const;
    Result<uint64_t> getU64(std::string_view key) const;
    Result<int64_t> getI64(std::string_view key) const;
    Result<float> getF32(std::string_view key) const;
    Result<double> getF64(std::string_view key) const;
    Result<bool> getBool(std::string_view key) const;
    Result<const GgufValue *> getArray(std::string_view key) const;
    Result<std::vector<std::string>> getStringArray(std::string_view key) const;
    Result<std::vector<float>> getF32Array(std::string_view key) const;   // any numeric elements
    Result<std::vector<int32_t>> getI32Array(std::string_view key) const; // integers fitting i32

    const std::vector<GgufTensorInfo> &tensors() const { return m_tensors; }
    const GgufTensorInfo *findTensor(std::string_view name) const;

private:
    friend class GgufParser;
    std::string m_source;
    uint32_t m_version = 0;
    uint64_t m_alignment = 32;
    uint64_t m_dataOffset = 0;
    std::shared_ptr<const void> m_owner;
    std::vector<std::pair<std::string, GgufValue>> m_kv;
    std::map<std::string, size_t, std::less<>> m_kvIndex;
    std::vector<GgufTensorInfo> m_tensors;
    std::map<std::string, size_t, std::less<>> m_tensorIndex;
};

} // namespace lowbit
