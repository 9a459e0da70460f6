#include "io/gguf.h"

#include "core/mapped_file.h"

#include <algorithm>
#include <cstring>
#include <limits>

namespace lowbit {

namespace {

constexpr int kMaxArrayDepth = 8; // nesting deeper than any real file; bounds the recursion
constexpr uint32_t kMaxDims = 4;  // GGML_MAX_DIMS
constexpr uint64_t kMaxAlignment = uint64_t(1) << 30;

// Smallest encoding of one value of `type`: what an array of n of them needs at least.
uint64_t minEncodedBytes(GgufValueType type) {
    switch (type) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::Bool: return 1;
    case GgufValueType::U16:
    case GgufValueType::I16: return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32: return 4;
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::F64: return 8;
    case GgufValueType::String: return 8;
    case GgufValueType::Array: return 12;
    }
    return 1;
}

bool isUnsigned(GgufValueType t) {
    return t == GgufValueType::U8 || t == GgufValueType::U16 || t == GgufValueType::U32 ||
           t == GgufValueType::U64;
}

bool isSigned(GgufValueType t) {
    return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
           t == GgufValueType::I64;
}

std::string printable(std::string_view s) {
    std::string out = "'";
    for (char c : s.substr(0, 80))
        out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out + (s.size() > 80 ? "...'" : "'");
}

} // namespace

std::string_view ggufValueTypeName(GgufValueType type) {
    static constexpr std::string_view kNames[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                                  "i32", "f32", "bool", "string", "array",
                                                  "u64", "i64", "f64"};
    const auto index = uint32_t(type);
    return index < std::size(kNames) ? kNames[index] : "unknown";
}

bool GgufValue::isInteger() const {
    return isUnsigned(type) || isSigned(type);
}

std::vector<int64_t> GgufTensorInfo::shape() const {
    std::vector<int64_t> out(ne.rbegin(), ne.rend());
    return out;
}

// Walks the bytes front to back with a cursor; every read is bounds-checked first.
class GgufParser {
public:
    GgufParser(std::span<const std::byte> bytes, GgufFile &out) : m_bytes(bytes), m_out(out) {}

    Status run() {
        LOWBIT_CHECK(readHeader());
        for (uint64_t k = 0; k < m_kvCount; ++k)
            LOWBIT_CHECK(readKeyValue(k));
        LOWBIT_CHECK(readAlignment());
        for (uint64_t t = 0; t < m_tensorCount; ++t)
            LOWBIT_CHECK(readTensorInfo(t));
        return placeTensors();
    }

private:
    Error fail(ErrorCode code, const std::string &what) const {
        return makeError(code, m_out.m_source + ": " + what);
    }
    Error fail(const std::string &what) const { return fail(ErrorCode::Format, what); }
    uint64_t remaining() const { return m_bytes.size() - m_pos; }

    Status need(uint64_t n, const std::string &what) const {
        if (n > remaining())
            return fail(what + " needs " + std::to_string(n) + " bytes at offset " +
                        std::to_string(m_pos) + " but the file ends at " +
                        std::to_string(m_bytes.size()) + " (truncated?)");
        return {};
    }

    template <typename T> Status read(T &value, const std::string &what) {
        LOWBIT_CHECK(need(sizeof(T), what));
        std::memcpy(&value, m_bytes.data() + m_pos, sizeof(T));
        m_pos += sizeof(T);
        return {};
    }

    // Where the cursor is, for messages: "metadata key 'x'[3][1]". Built only on failure, so the
    // hot path (vocabularies of 10^5 strings) allocates nothing for it.
    std::string where() const {
        std::string out = m_where;
        for (uint64_t i : m_path) {
            out += '[';
            out += std::to_string(i);
            out += ']';
        }
        return out;
    }

    Status readString(std::string &s) {
        uint64_t length = 0;
        if (remaining() < 8)
            return need(8, where() + ": string length");
        std::memcpy(&length, m_bytes.data() + m_pos, 8);
        m_pos += 8;
        if (length > remaining())
            return fail(where() + ": string length " + std::to_string(length) +
                        " runs past the end of the file (" + std::to_string(remaining()) +
                        " bytes left at offset " + std::to_string(m_pos) + ")");
        s.assign(reinterpret_cast<const char *>(m_bytes.data() + m_pos), size_t(length));
        m_pos += length;
        return {};
    }

    Status readHeader() {
        char magic[4];
        LOWBIT_CHECK(read(magic, "header magic"));
        if (std::memcmp(magic, "GGUF", 4) != 0)
            return fail("bad magic " + printable(std::string_view(magic, 4)) +
                        " (not a GGUF file)");
        uint32_t version = 0;
        LOWBIT_CHECK(read(version, "header version"));
        if (version == 1)
            return fail(ErrorCode::Unsupported,
                        "GGUF version 1 (32-bit counts, pre-2023-10) is not supported; "
                        "re-convert the model with a current llama.cpp");
        if (version < 2 || version > 3)
            return fail(ErrorCode::Unsupported,
                        "GGUF version " + std::to_string(version) +
                            " is not supported (only 2 and 3, little-endian)");
        m_out.m_version = version;
        LOWBIT_CHECK(read(m_tensorCount, "header tensor count"));
        LOWBIT_CHECK(read(m_kvCount, "header metadata count"));
        // Each key-value needs at least 13 bytes (empty key, type, one-byte value) and each
        // tensor info 24, so larger counts cannot be honest; reject before reserving anything.
        if (m_kvCount > remaining() / 13)
            return fail("metadata count " + std::to_string(m_kvCount) + " cannot fit in the " +
                        std::to_string(m_bytes.size()) + "-byte file");
        if (m_tensorCount > remaining() / 24)
            return fail("tensor count " + std::to_string(m_tensorCount) + " cannot fit in the " +
                        std::to_string(m_bytes.size()) + "-byte file");
        return {};
    }

    Status readKeyValue(uint64_t index) {
        std::string key;
        m_where = "metadata entry #" + std::to_string(index);
        LOWBIT_CHECK(readString(key));
        m_where = "metadata key " + printable(key);
        if (m_out.m_kvIndex.count(key))
            return fail("duplicate metadata key " + printable(key));
        uint32_t typeId = 0;
        LOWBIT_CHECK(read(typeId, m_where + " value type"));
        GgufValue value;
        LOWBIT_CHECK(readValue(typeId, value, 0));
        m_out.m_kvIndex.emplace(key, m_out.m_kv.size());
        m_out.m_kv.emplace_back(std::move(key), std::move(value));
        return {};
    }

    Status readValue(uint32_t typeId, GgufValue &v, int depth) {
        if (typeId > uint32_t(GgufValueType::F64))
            return fail(where() + ": unknown value type " + std::to_string(typeId));
        v.type = GgufValueType(typeId);
        const uint64_t size = minEncodedBytes(v.type);
        if (v.type != GgufValueType::String && v.type != GgufValueType::Array && remaining() < size)
            return need(size, where() + " (" + std::string(ggufValueTypeName(v.type)) + ")");
        const std::byte *p = m_bytes.data() + m_pos;
        auto load = [&](auto sample) {
            decltype(sample) x;
            std::memcpy(&x, p, sizeof x);
            m_pos += sizeof x;
            return x;
        };
        switch (v.type) {
        case GgufValueType::U8: v.u = load(uint8_t()); return {};
        case GgufValueType::I8: v.i = load(int8_t()); return {};
        case GgufValueType::U16: v.u = load(uint16_t()); return {};
        case GgufValueType::I16: v.i = load(int16_t()); return {};
        case GgufValueType::U32: v.u = load(uint32_t()); return {};
        case GgufValueType::I32: v.i = load(int32_t()); return {};
        case GgufValueType::U64: v.u = load(uint64_t()); return {};
        case GgufValueType::I64: v.i = load(int64_t()); return {};
        case GgufValueType::F32: v.f = load(float()); return {};
        case GgufValueType::F64: v.f = load(double()); return {};
        case GgufValueType::Bool:
            v.u = load(uint8_t());
            if (v.u > 1)
                return fail(where() + ": bool byte is " + std::to_string(v.u) + ", not 0 or 1");
            return {};
        case GgufValueType::String: return readString(v.s);
        case GgufValueType::Array: return readArray(v, depth);
        }
        return fail(where() + ": unreachable value type");
    }

    Status readArray(GgufValue &v, int depth) {
        if (depth >= kMaxArrayDepth)
            return fail(where() + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
        uint32_t elementType = 0;
        uint64_t count = 0;
        LOWBIT_CHECK(read(elementType, where() + " array element type"));
        LOWBIT_CHECK(read(count, where() + " array length"));
        if (elementType > uint32_t(GgufValueType::F64))
            return fail(where() + ": unknown array element type " + std::to_string(elementType));
        v.elementType = GgufValueType(elementType);
        const uint64_t minBytes = minEncodedBytes(v.elementType);
        if (count > remaining() / minBytes)
            return fail(where() + ": array of " + std::to_string(count) + " " +
                        std::string(ggufValueTypeName(v.elementType)) +
                        " values runs past the end of the file (" + std::to_string(remaining()) +
                        " bytes left)");
        v.array.resize(size_t(count));
        m_path.push_back(0);
        for (uint64_t i = 0; i < count; ++i) {
            m_path.back() = i;
            LOWBIT_CHECK(readValue(elementType, v.array[size_t(i)], depth + 1));
        }
        m_path.pop_back();
        return {};
    }

    Status readAlignment() {
        const GgufValue *a = m_out.find("general.alignment");
        if (!a)
            return {};
        if (!a->isInteger())
            return fail("general.alignment has type " + std::string(ggufValueTypeName(a->type)) +
                        ", expected u32");
        const bool negative = isSigned(a->type) && a->i < 0;
        const uint64_t value = isSigned(a->type) ? uint64_t(a->i) : a->u;
        if (negative || value == 0 || (value & (value - 1)) != 0 || value > kMaxAlignment)
            return fail("general.alignment " +
                        (negative ? std::to_string(a->i) : std::to_string(value)) +
                        " is not a power of two between 1 and 2^30");
        m_out.m_alignment = value;
        return {};
    }

    Status readTensorInfo(uint64_t index) {
        GgufTensorInfo info;
        m_where = "tensor info #" + std::to_string(index);
        LOWBIT_CHECK(readString(info.name));
        const std::string what = "tensor " + printable(info.name);
        if (m_out.m_tensorIndex.count(info.name))
            return fail("duplicate tensor name " + printable(info.name));
        uint32_t dims = 0;
        LOWBIT_CHECK(read(dims, what + " n_dims"));
        if (dims == 0 || dims > kMaxDims)
            return fail(what + " has " + std::to_string(dims) + " dimensions (1 to 4 allowed)");
        info.ne.resize(dims);
        uint64_t elements = 1;
        for (uint32_t d = 0; d < dims; ++d) {
            LOWBIT_CHECK(read(info.ne[d], what + " dimension"));
            const uint64_t ne = info.ne[d];
            if (ne > uint64_t(std::numeric_limits<int64_t>::max()) ||
                (ne != 0 && elements > uint64_t(std::numeric_limits<int64_t>::max()) / ne))
                return fail(what + ": dimensions overflow 63 bits (dimension " + std::to_string(d) +
                            " is " + std::to_string(ne) + ")");
            elements *= ne;
        }
        info.elements = elements;
        uint32_t typeId = 0;
        LOWBIT_CHECK(read(typeId, what + " type"));
        const std::optional<GgmlTypeInfo> type = ggmlTypeInfo(typeId);
        if (!type)
            return fail(what + " has unknown GGML type id " + std::to_string(typeId));
        info.type = type->type;
        if (info.ne[0] % uint64_t(type->blockSize) != 0)
            return fail(what + ": row length " + std::to_string(info.ne[0]) +
                        " is not a multiple of the " + std::string(type->name) + " block size " +
                        std::to_string(type->blockSize));
        LOWBIT_CHECK(read(info.offset, what + " offset"));
        if (info.offset % m_out.m_alignment != 0)
            return fail(what + ": data offset " + std::to_string(info.offset) +
                        " is not a multiple of the alignment " + std::to_string(m_out.m_alignment));
        if (!ggmlBytesFor(info.type, elements))
            return fail(what + ": byte size overflows 64 bits");
        m_out.m_tensorIndex.emplace(info.name, m_out.m_tensors.size());
        m_out.m_tensors.push_back(std::move(info));
        return {};
    }

    Status placeTensors() {
        const uint64_t a = m_out.m_alignment;
        const uint64_t dataOffset = m_pos + (a - m_pos % a) % a; // no overflow: m_pos < 2^63
        m_out.m_dataOffset = dataOffset;
        const uint64_t dataSize = dataOffset <= m_bytes.size() ? m_bytes.size() - dataOffset : 0;
        struct Extent {
            uint64_t begin, end;
            size_t index;
        };
        std::vector<Extent> extents;
        for (size_t t = 0; t < m_out.m_tensors.size(); ++t) {
            GgufTensorInfo &info = m_out.m_tensors[t];
            const uint64_t bytes = *ggmlBytesFor(info.type, info.elements);
            if (info.offset > dataSize || bytes > dataSize - info.offset)
                return fail("tensor " + printable(info.name) + " (" + std::to_string(bytes) +
                            " bytes at data offset " + std::to_string(info.offset) +
                            ") ends past the end of the file (data section holds " +
                            std::to_string(dataSize) + " bytes)");
            info.data = m_bytes.subspan(size_t(dataOffset + info.offset), size_t(bytes));
            if (bytes > 0)
                extents.push_back({info.offset, info.offset + bytes, t});
        }
        std::sort(extents.begin(), extents.end(),
                  [](const Extent &x, const Extent &y) { return x.begin < y.begin; });
        for (size_t i = 1; i < extents.size(); ++i)
            if (extents[i].begin < extents[i - 1].end)
                return fail("tensors " + printable(m_out.m_tensors[extents[i - 1].index].name) +
                            " and " + printable(m_out.m_tensors[extents[i].index].name) +
                            " overlap in the data section");
        return {};
    }

    std::span<const std::byte> m_bytes;
    GgufFile &m_out;
    uint64_t m_pos = 0;
    uint64_t m_tensorCount = 0;
    uint64_t m_kvCount = 0;
    std::string m_where;
    std::vector<uint64_t> m_path;
};

Result<GgufFile> GgufFile::open(const std::filesystem::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> mapped, MappedFile::open(path));
    const std::span<const std::byte> bytes = mapped->bytes();
    return parse(bytes, path.string(), std::move(mapped));
}

Result<GgufFile> GgufFile::parse(std::span<const std::byte> bytes, std::string source,
                                 std::shared_ptr<const void> owner) {
    GgufFile file;
    file.m_source = std::move(source);
    file.m_owner = std::move(owner);
    GgufParser parser(bytes, file);
    LOWBIT_CHECK(parser.run());
    return file;
}

const GgufValue *GgufFile::find(std::string_view key) const {
    auto it = m_kvIndex.find(key);
    return it == m_kvIndex.end() ? nullptr : &m_kv[it->second].second;
}

const GgufTensorInfo *GgufFile::findTensor(std::string_view name) const {
    auto it = m_tensorIndex.find(name);
    return it == m_tensorIndex.end() ? nullptr : &m_tensors[it->second];
}

namespace {

Error wrongType(const std::string &source, std::string_view key, const GgufValue &v,
                const char *expected) {
    std::string got(ggufValueTypeName(v.type));
    if (v.type == GgufValueType::Array)
        got = "array of " + std::string(ggufValueTypeName(v.elementType));
    return makeError(ErrorCode::Format, source + ": metadata key " + printable(key) + " has type " +
                                            got + ", expected " + expected);
}

// An integer value as u64; false when it is negative.
bool integerValue(const GgufValue &v, uint64_t &magnitude) {
    if (isSigned(v.type) && v.i < 0)
        return false;
    magnitude = isSigned(v.type) ? uint64_t(v.i) : v.u;
    return true;
}

} // namespace

#define LOWBIT_GGUF_LOOKUP(var, key)                                                               \
    const GgufValue *var = find(key);                                                              \
    if (!var)                                                                                      \
    return makeError(ErrorCode::NotFound,                                                          \
                     m_source + ": metadata key " + printable(key) + " is missing")

Result<std::string> GgufFile::getString(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    if (v->type != GgufValueType::String)
        return wrongType(m_source, key, *v, "string");
    return v->s;
}

Result<uint64_t> GgufFile::getU64(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    uint64_t value = 0;
    if (!v->isInteger())
        return wrongType(m_source, key, *v, "an unsigned integer");
    if (!integerValue(*v, value))
        return makeError(ErrorCode::Format, m_source + ": metadata key " + printable(key) +
                                                " is negative (" + std::to_string(v->i) + ")");
    return value;
}

Result<uint32_t> GgufFile::getU32(std::string_view key) const {
    LOWBIT_TRY(uint64_t value, getU64(key));
    if (value > UINT32_MAX)
        return makeError(ErrorCode::Format, m_source + ": metadata key " + printable(key) +
                                                " value " + std::to_string(value) +
                                                " does not fit in u32");
    return uint32_t(value);
}

Result<int64_t> GgufFile::getI64(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    if (!v->isInteger())
        return wrongType(m_source, key, *v, "an integer");
    if (isUnsigned(v->type) && v->u > uint64_t(std::numeric_limits<int64_t>::max()))
        return makeError(ErrorCode::Format, m_source + ": metadata key " + printable(key) +
                                                " value " + std::to_string(v->u) +
                                                " does not fit in i64");
    return isSigned(v->type) ? v->i : int64_t(v->u);
}

Result<double> GgufFile::getF64(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    if (!v->isFloat())
        return wrongType(m_source, key, *v, "f32");
    return v->f;
}

Result<float> GgufFile::getF32(std::string_view key) const {
    LOWBIT_TRY(double value, getF64(key));
    return float(value);
}

Result<bool> GgufFile::getBool(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    if (v->type != GgufValueType::Bool)
        return wrongType(m_source, key, *v, "bool");
    return v->u != 0;
}

Result<const GgufValue *> GgufFile::getArray(std::string_view key) const {
    LOWBIT_GGUF_LOOKUP(v, key);
    if (v->type != GgufValueType::Array)
        return wrongType(m_source, key, *v, "array");
    return v;
}

Result<std::vector<std::string>> GgufFile::getStringArray(std::string_view key) const {
    LOWBIT_TRY(const GgufValue *v, getArray(key));
    if (v->elementType != GgufValueType::String)
        return wrongType(m_source, key, *v, "array of string");
    std::vector<std::string> out;
    out.reserve(v->array.size());
    for (const GgufValue &e : v->array)
        out.push_back(e.s);
    return out;
}

Result<std::vector<float>> GgufFile::getF32Array(std::string_view key) const {
    LOWBIT_TRY(const GgufValue *v, getArray(key));
    GgufValue probe;
    probe.type = v->elementType;
    if (!probe.isFloat() && !probe.isInteger())
        return wrongType(m_source, key, *v, "array of f32");
    std::vector<float> out;
    out.reserve(v->array.size());
    for (const GgufValue &e : v->array)
        out.push_back(e.isFloat() ? float(e.f) : isSigned(e.type) ? float(e.i) : float(e.u));
    return out;
}

Result<std::vector<int32_t>> GgufFile::getI32Array(std::string_view key) const {
    LOWBIT_TRY(const GgufValue *v, getArray(key));
    GgufValue probe;
    probe.type = v->elementType;
    if (!probe.isInteger())
        return wrongType(m_source, key, *v, "array of i32");
    std::vector<int32_t> out;
    out.reserve(v->array.size());
    for (size_t i = 0; i < v->array.size(); ++i) {
        const GgufValue &e = v->array[i];
        const bool fits =
            isSigned(e.type) ? (e.i >= INT32_MIN && e.i <= INT32_MAX) : e.u <= uint64_t(INT32_MAX);
        if (!fits)
            return makeError(ErrorCode::Format, m_source + ": metadata key " + printable(key) +
                                                    "[" + std::to_string(i) +
                                                    "] does not fit in i32");
        out.push_back(isSigned(e.type) ? int32_t(e.i) : int32_t(e.u));
    }
    return out;
}

#undef LOWBIT_GGUF_LOOKUP

} // namespace lowbit
