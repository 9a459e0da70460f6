#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <system_error>

namespace lowbit {

namespace {

using Json = nlohmann::json;

struct Entry {
    std::string name;
    DType dtype = DType::F32;
    std::string dtypeText; // as written in the header
    uint64_t elementBytes = 0;
    std::vector<int64_t> shape;
    uint64_t begin = 0;
    uint64_t end = 0;
};

// Element sizes of every dtype the safetensors format defines, so that a file with, say, an I64
// tensor is reported as "unsupported dtype" rather than "unknown dtype".
std::optional<uint64_t> knownDtypeBytes(std::string_view name) {
    static constexpr std::pair<std::string_view, uint64_t> kKnown[] = {
        {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
        {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
        {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8},
    };
    for (const auto &[known, bytes] : kKnown)
        if (known == name)
            return bytes;
    return std::nullopt;
}

uint64_t readLe64(const std::byte *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | uint64_t(p[i]);
    return v;
}

Result<std::vector<int64_t>> parseShape(const Json &shape, const std::string &where) {
    if (!shape.is_array())
        return makeError(ErrorCode::Format, where + ": 'shape' is not an array");
    std::vector<int64_t> dims;
    dims.reserve(shape.size());
    for (const Json &d : shape) {
        if (d.is_number_integer() && !d.is_number_unsigned())
            return makeError(ErrorCode::Format, where + ": shape has a negative dimension");
        if (!d.is_number_unsigned())
            return makeError(ErrorCode::Format,
                             where + ": shape has a dimension that is not an integer");
        const uint64_t v = d.get<uint64_t>();
        if (v > uint64_t(std::numeric_limits<int64_t>::max()))
            return makeError(ErrorCode::Format,
                             where + ": shape dimension " + std::to_string(v) + " is too large");
        dims.push_back(int64_t(v));
    }
    return dims;
}

Result<Entry> parseEntry(const std::string &name, const Json &value, const std::string &source,
                         bool anyDtype) {
    const std::string where = source + ": tensor '" + name + "'";
    if (!value.is_object())
        return makeError(ErrorCode::Format, where + ": header entry is not an object");
    const auto dtypeIt = value.find("dtype");
    const auto shapeIt = value.find("shape");
    const auto offsetsIt = value.find("data_offsets");
    if (dtypeIt == value.end() || !dtypeIt->is_string())
        return makeError(ErrorCode::Format, where + ": missing or non-string 'dtype'");
    if (shapeIt == value.end())
        return makeError(ErrorCode::Format, where + ": missing 'shape'");
    if (offsetsIt == value.end() || !offsetsIt->is_array() || offsetsIt->size() != 2 ||
        !(*offsetsIt)[0].is_number_unsigned() || !(*offsetsIt)[1].is_number_unsigned())
        return makeError(ErrorCode::Format,
                         where + ": 'data_offsets' must be two non-negative integers [begin, end]");

    Entry e;
    e.name = name;
    const std::string dtypeText = dtypeIt->get<std::string>();
    const std::optional<uint64_t> elementBytes = knownDtypeBytes(dtypeText);
    if (!elementBytes)
        return makeError(ErrorCode::Format, where + ": unknown dtype '" + dtypeText + "'");
    const std::optional<DType> dtype = dtypeFromName(dtypeText);
    if (!dtype && !anyDtype)
        return makeError(ErrorCode::Unsupported, where + ": dtype " + dtypeText +
                                                     " is not supported (only F32, F16, BF16)");
    e.dtype = dtype.value_or(DType::F32);
    e.dtypeText = dtypeText;
    e.elementBytes = *elementBytes;
    LOWBIT_TRY(e.shape, parseShape(*shapeIt, where));
    e.begin = (*offsetsIt)[0].get<uint64_t>();
    e.end = (*offsetsIt)[1].get<uint64_t>();
    if (e.begin > e.end)
        return makeError(ErrorCode::Format, where + ": data_offsets begin " +
                                                std::to_string(e.begin) + " is greater than end " +
                                                std::to_string(e.end));

    // Zero dimensions are skipped for the overflow test so that [0, 2^62, 2^62] is refused too:
    // code downstream divides numel by a leading dimension.
    uint64_t magnitude = *elementBytes;
    for (int64_t d : e.shape)
        if (__builtin_mul_overflow(magnitude, uint64_t(std::max<int64_t>(d, 1)), &magnitude) ||
            magnitude > uint64_t(std::numeric_limits<int64_t>::max()))
            return makeError(ErrorCode::Format,
                             where + ": shape overflows (byte size does not fit 63 bits)");
    uint64_t expected = *elementBytes;
    for (int64_t d : e.shape)
        expected *= uint64_t(d);
    if (e.end - e.begin != expected)
        return makeError(ErrorCode::Format, where + ": byte length " +
                                                std::to_string(e.end - e.begin) +
                                                " does not match dtype x shape (" +
                                                std::to_string(expected) + " bytes)");
    return e;
}

Status parseMetadata(const Json &value, const std::string &source,
                     std::map<std::string, std::string> &out) {
    if (value.is_null())
        return {};
    if (!value.is_object())
        return makeError(ErrorCode::Format, source + ": '__metadata__' is not an object");
    for (const auto &[key, v] : value.items())
        out[key] = v.is_string() ? v.get<std::string>() : v.dump();
    return {};
}

// Offsets were checked one by one; here they are checked against the buffer and each other.
Status checkLayout(std::vector<Entry> &entries, uint64_t bufferBytes, const std::string &source) {
    for (const Entry &e : entries)
        if (e.end > bufferBytes)
            return makeError(ErrorCode::Format, source + ": tensor '" + e.name +
                                                    "': data_offsets [" + std::to_string(e.begin) +
                                                    ", " + std::to_string(e.end) +
                                                    "] out of range: the data buffer has " +
                                                    std::to_string(bufferBytes) + " bytes");
    std::sort(entries.begin(), entries.end(), [](const Entry &a, const Entry &b) {
        return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const Entry *previous = nullptr;
    for (const Entry &e : entries) {
        if (e.begin == e.end)
            continue; // an empty tensor occupies no bytes
        if (previous && e.begin < previous->end)
            return makeError(ErrorCode::Format, source + ": tensors '" + previous->name +
                                                    "' and '" + e.name +
                                                    "' have overlapping data_offsets");
        previous = &e;
    }
    return {};
}

Tensor makeTensor(const Entry &e, const std::byte *buffer,
                  const std::shared_ptr<const void> &owner) {
    const std::byte *data = buffer + e.begin;
    const size_t elementBytes = dtypeBytes(e.dtype);
    if (reinterpret_cast<uintptr_t>(data) % elementBytes != 0) {
        // Kernels read elements as uint16_t/float; give them an aligned copy.
        return Tensor::fromBytes(e.name, e.dtype, e.shape,
                                 std::vector<std::byte>(data, data + (e.end - e.begin)));
    }
    Tensor t;
    t.name = e.name;
    t.dtype = e.dtype;
    t.shape = e.shape;
    t.data = data;
    t.owner = owner;
    return t;
}

struct ParsedHeader {
    std::vector<Entry> entries;
    std::map<std::string, std::string> metadata;
    uint64_t headerBytes = 0;
    const std::byte *buffer = nullptr;
};

Result<ParsedHeader> parseHeader(std::span<const std::byte> bytes, const std::string &name,
                                 bool anyDtype) {
    if (bytes.size() < 8)
        return makeError(ErrorCode::Format,
                         name + ": file is truncated: " + std::to_string(bytes.size()) +
                             " bytes, too short for the 8-byte header length");
    const uint64_t headerBytes = readLe64(bytes.data());
    if (headerBytes > kSafetensorsMaxHeaderBytes)
        return makeError(ErrorCode::Format, name + ": header length " +
                                                std::to_string(headerBytes) + " is absurd (limit " +
                                                std::to_string(kSafetensorsMaxHeaderBytes) + ")");
    if (headerBytes > bytes.size() - 8)
        return makeError(ErrorCode::Format, name + ": header length " +
                                                std::to_string(headerBytes) +
                                                " runs past the end of the file (" +
                                                std::to_string(bytes.size()) + " bytes)");
    const char *text = reinterpret_cast<const char *>(bytes.data() + 8);
    Json header;
    try {
        header = Json::parse(text, text + headerBytes);
    } catch (const Json::parse_error &e) {
        return makeError(ErrorCode::Format, name + ": header is not valid JSON (error at byte " +
                                                std::to_string(e.byte) + " of the header)");
    }
    if (!header.is_object())
        return makeError(ErrorCode::Format, name + ": header is not a JSON object");

    ParsedHeader out;
    out.headerBytes = headerBytes;
    for (const auto &[key, value] : header.items()) {
        if (key == "__metadata__") {
            LOWBIT_CHECK(parseMetadata(value, name, out.metadata));
            continue;
        }
        LOWBIT_TRY(Entry e, parseEntry(key, value, name, anyDtype));
        out.entries.push_back(std::move(e));
    }
    out.buffer = bytes.data() + 8 + headerBytes;
    LOWBIT_CHECK(checkLayout(out.entries, bytes.size() - 8 - headerBytes, name));
    return out;
}

Result<SafetensorsFile> parseChecked(std::span<const std::byte> bytes, const std::string &name,
                                     const std::shared_ptr<const void> &owner) {
    LOWBIT_TRY(ParsedHeader parsed, parseHeader(bytes, name, false));
    SafetensorsFile out;
    out.headerBytes = parsed.headerBytes;
    out.metadata = std::move(parsed.metadata);
    for (const Entry &e : parsed.entries)
        out.tensors.emplace(e.name, makeTensor(e, parsed.buffer, owner));
    return out;
}

} // namespace

Result<SafetensorsFile> parseSafetensors(std::span<const std::byte> bytes, const std::string &name,
                                         std::shared_ptr<const void> owner) {
    // The checks above leave nlohmann nothing to throw on, but a third-party library's exceptions
    // (and allocation failure on a hostile header) must still end as an error value.
    try {
        return parseChecked(bytes, name, owner);
    } catch (const std::bad_alloc &) {
        return makeError(ErrorCode::OutOfMemory, name + ": out of memory while parsing the header");
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, name + ": malformed header: " + e.what());
    }
}

Result<SafetensorsFile> readSafetensors(const std::filesystem::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    LOWBIT_TRY(SafetensorsFile parsed, parseSafetensors(file->bytes(), path.string(), file));
    parsed.file = std::move(file);
    return parsed;
}

Result<RawSafetensorsFile> readSafetensorsRaw(const std::filesystem::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    RawSafetensorsFile out;
    try {
        LOWBIT_TRY(ParsedHeader parsed, parseHeader(file->bytes(), path.string(), true));
        out.metadata = std::move(parsed.metadata);
        for (const Entry &e : parsed.entries)
            out.tensors.emplace(e.name,
                                RawTensor{e.name,
                                          e.dtypeText,
                                          e.shape,
                                          {parsed.buffer + e.begin, size_t(e.end - e.begin)}});
    } catch (const std::bad_alloc &) {
        return makeError(ErrorCode::OutOfMemory,
                         path.string() + ": out of memory while parsing the header");
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, path.string() + ": malformed header: " + e.what());
    }
    out.file = std::move(file);
    return out;
}

namespace {

Result<std::string> buildHeader(const std::vector<RawTensor> &tensors,
                                const std::map<std::string, std::string> &metadata) {
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    if (!metadata.empty())
        header["__metadata__"] = metadata;
    uint64_t offset = 0;
    for (const RawTensor &t : tensors) {
        if (t.name.empty() || t.name == "__metadata__")
            return makeError(ErrorCode::InvalidArgument,
                             "safetensors writer: invalid tensor name '" + t.name + "'");
        if (header.contains(t.name))
            return makeError(ErrorCode::InvalidArgument,
                             "safetensors writer: duplicate tensor '" + t.name + "'");
        const std::optional<uint64_t> elementBytes = knownDtypeBytes(t.dtype);
        if (!elementBytes)
            return makeError(ErrorCode::InvalidArgument, "safetensors writer: tensor '" + t.name +
                                                             "' has unknown dtype '" + t.dtype +
                                                             "'");
        uint64_t expected = *elementBytes;
        for (int64_t d : t.shape) {
            if (d < 0)
                return makeError(ErrorCode::InvalidArgument, "safetensors writer: tensor '" +
                                                                 t.name +
                                                                 "' has a negative dimension");
            expected *= uint64_t(d);
        }
        if (expected != t.bytes.size() || (t.bytes.data() == nullptr && expected != 0))
            return makeError(ErrorCode::InvalidArgument,
                             "safetensors writer: tensor '" + t.name + "' has " +
                                 std::to_string(t.bytes.size()) +
                                 " bytes, its dtype and shape need " + std::to_string(expected));
        header[t.name] = {
            {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + expected}}};
        offset += expected;
    }
    try {
        std::string text = header.dump();
        text.append((8 - text.size() % 8) % 8, ' ');
        return text;
    } catch (const std::exception &e) {
        return makeError(ErrorCode::InvalidArgument,
                         std::string("safetensors writer: ") + e.what());
    }
}

} // namespace

Status writeSafetensorsRaw(const std::filesystem::path &path, const std::vector<RawTensor> &tensors,
                           const std::map<std::string, std::string> &metadata) {
    LOWBIT_TRY(std::string header, buildHeader(tensors, metadata));
    std::filesystem::path temp = path;
    temp += ".partial";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        if (!out)
            return makeError(ErrorCode::Io,
                             temp.string() + ": cannot create: " + std::strerror(errno));
        unsigned char length[8];
        for (int i = 0; i < 8; ++i)
            length[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
        out.write(reinterpret_cast<const char *>(length), 8);
        out.write(header.data(), std::streamsize(header.size()));
        for (const RawTensor &t : tensors)
            if (!t.bytes.empty())
                out.write(reinterpret_cast<const char *>(t.bytes.data()),
                          std::streamsize(t.bytes.size()));
        out.flush();
        if (!out) {
            std::error_code ignored;
            std::filesystem::remove(temp, ignored);
            return makeError(ErrorCode::Io, temp.string() + ": write failed");
        }
    }
    std::error_code ec;
    std::filesystem::rename(temp, path, ec);
    if (ec) {
        std::filesystem::remove(temp, ec);
        return makeError(ErrorCode::Io,
                         path.string() + ": cannot rename the written file: " + ec.message());
    }
    return {};
}

Status writeSafetensors(const std::filesystem::path &path, const std::vector<Tensor> &tensors,
                        const std::map<std::string, std::string> &metadata) {
    std::vector<RawTensor> raw;
    raw.reserve(tensors.size());
    for (const Tensor &t : tensors) {
        if (t.data == nullptr && t.numel() != 0)
            return makeError(ErrorCode::InvalidArgument,
                             "safetensors writer: tensor '" + t.name + "' has no data");
        for (int64_t d : t.shape)
            if (d < 0)
                return makeError(ErrorCode::InvalidArgument, "safetensors writer: tensor '" +
                                                                 t.name +
                                                                 "' has a negative dimension");
        raw.push_back({t.name, std::string(dtypeName(t.dtype)), t.shape, {t.data, t.bytes()}});
    }
    return writeSafetensorsRaw(path, raw, metadata);
}

} // namespace lowbit
