// GPTQ / AWQ packed checkpoints: configuration, unpacking, dequantization (layouts in the header).
#include "io/gptq_checkpoint.h"

#include "core/mapped_file.h"
#include "io/safetensors.h"

#include <cstring>
#include <set>

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Result<Json> readJson(const fs::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    const char *text = reinterpret_cast<const char *>(file->data());
    try {
        return Json::parse(text, text + file->size());
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, path.string() + ": invalid JSON: " + e.what());
    }
}

Error fieldError(const std::string &source, const char *key, const std::string &what) {
    return makeError(ErrorCode::Format, source + ": quantization field '" + key + "' " + what);
}

Result<int64_t> intField(const Json &j, const std::string &source, const char *key,
                         std::optional<int64_t> fallback) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null()) {
        if (fallback)
            return *fallback;
        return fieldError(source, key, "is missing");
    }
    if (!it->is_number_integer())
        return fieldError(source, key, "must be an integer");
    return it->get<int64_t>();
}

Result<bool> boolField(const Json &j, const std::string &source, const char *key, bool fallback) {
    const auto it = j.find(key);
    if (it == j.end() || it->is_null())
        return fallback;
    if (!it->is_boolean())
        return fieldError(source, key, "must be true or false");
    return it->get<bool>();
}

std::string stringField(const Json &j, const char *key, const std::string &fallback) {
    const auto it = j.find(key);
    return it != j.end() && it->is_string() ? it->get<std::string>() : fallback;
}

Result<PackedQuantConfig> parseGptqConfig(const Json &j, const std::string &source) {
    PackedQuantConfig c;
    c.method = PackedQuantMethod::Gptq;
    c.source = source;
    LOWBIT_TRY(int64_t bits, intField(j, source, "bits", std::nullopt));
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return makeError(ErrorCode::Unsupported, source + ": GPTQ bits " + std::to_string(bits) +
                                                     " is not supported (2, 3, 4, 8)");
    c.bits = int(bits);
    LOWBIT_TRY(c.groupSize, intField(j, source, "group_size", 128));
    if (c.groupSize == -1)
        c.groupSize = 0;
    else if (c.groupSize <= 0)
        return fieldError(source, "group_size", "must be positive or -1");
    LOWBIT_TRY(c.descAct, boolField(j, source, "desc_act", false));
    LOWBIT_TRY(c.symmetric, boolField(j, source, "sym", true));
    const std::string format = stringField(j, "checkpoint_format", "gptq");
    if (format != "gptq" && format != "gptq_v2")
        return makeError(ErrorCode::Unsupported, source + ": GPTQ checkpoint_format '" + format +
                                                     "' is not supported (gptq, gptq_v2)");
    if (j.value("is_marlin_format", false))
        return makeError(ErrorCode::Unsupported, source + ": Marlin-packed GPTQ is not supported");
    c.zeroOffset = format == "gptq";
    return c;
}

Result<PackedQuantConfig> parseAwqConfig(const Json &j, const std::string &source) {
    PackedQuantConfig c;
    c.method = PackedQuantMethod::Awq;
    c.source = source;
    c.zeroOffset = false;
    c.symmetric = false;
    LOWBIT_TRY(int64_t bits, intField(j, source, j.contains("w_bit") ? "w_bit" : "bits", 4));
    if (bits != 4)
        return makeError(ErrorCode::Unsupported,
                         source + ": AWQ bits " + std::to_string(bits) + " (only 4)");
    c.bits = 4;
    LOWBIT_TRY(
        c.groupSize,
        intField(j, source, j.contains("q_group_size") ? "q_group_size" : "group_size", 128));
    if (c.groupSize == -1)
        c.groupSize = 0;
    else if (c.groupSize <= 0)
        return fieldError(source, "group_size", "must be positive or -1");
    LOWBIT_TRY(bool zeroPoint, boolField(j, source, "zero_point", true));
    if (!zeroPoint)
        return makeError(ErrorCode::Unsupported, source + ": AWQ without zero_point");
    std::string version = stringField(j, "version", "gemm");
    for (char &ch : version)
        ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (version != "gemm")
        return makeError(ErrorCode::Unsupported,
                         source + ": AWQ version '" + version + "' is not supported (only gemm)");
    return c;
}

Result<PackedQuantConfig> parseQuantConfig(const Json &j, const std::string &source,
                                           const std::string &fallbackMethod) {
    if (!j.is_object())
        return makeError(ErrorCode::Format, source + ": quantization config is not an object");
    std::string method = stringField(j, "quant_method", fallbackMethod);
    for (char &ch : method)
        ch = char(std::tolower(static_cast<unsigned char>(ch)));
    if (method == "gptq")
        return parseGptqConfig(j, source);
    if (method == "awq")
        return parseAwqConfig(j, source);
    return makeError(ErrorCode::Unsupported,
                     source + ": quant_method '" + method + "' is not supported (gptq, awq)");
}

// Float values of a raw F16/BF16/F32 tensor.
Result<std::vector<float>> rawFloats(const RawTensor &t, const std::string &file) {
    const std::optional<DType> type = dtypeFromName(t.dtype);
    if (!type)
        return makeError(ErrorCode::Unsupported, file + ": tensor '" + t.name + "' has dtype " +
                                                     t.dtype + " (scales must be F16/BF16/F32)");
    std::vector<float> out(t.bytes.size() / dtypeBytes(*type));
    convertToFloat(*type, t.bytes.data(), out.data(), out.size());
    return out;
}

Result<std::vector<int32_t>> rawInts(const RawTensor &t, const std::string &file) {
    if (t.dtype != "I32")
        return makeError(ErrorCode::Format, file + ": tensor '" + t.name + "' has dtype " +
                                                t.dtype + " (expected I32)");
    std::vector<int32_t> out(t.bytes.size() / 4);
    std::memcpy(out.data(), t.bytes.data(), out.size() * 4);
    return out;
}

Status expectShape(const RawTensor &t, std::vector<int64_t> shape, const std::string &file) {
    if (t.shape == shape)
        return {};
    auto text = [](const std::vector<int64_t> &s) {
        std::string r = "[";
        for (size_t i = 0; i < s.size(); ++i)
            r += (i ? ", " : "") + std::to_string(s[i]);
        return r + "]";
    };
    return makeError(ErrorCode::Format, file + ": tensor '" + t.name + "' has shape " +
                                            text(t.shape) + ", expected " + text(shape));
}

int64_t ceilDiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

// Reads NAME.{qweight,qzeros,scales,g_idx} from `raw` and checks their shapes against the layout.
Result<PackedLinear> readPackedLinear(const std::map<std::string, RawTensor> &raw,
                                      const std::string &name, const PackedQuantConfig &config,
                                      const std::string &file) {
    auto get = [&](const char *suffix) -> Result<const RawTensor *> {
        const auto it = raw.find(name + suffix);
        if (it == raw.end())
            return makeError(ErrorCode::NotFound,
                             file + ": missing tensor '" + name + suffix + "'");
        return &it->second;
    };
    LOWBIT_TRY(const RawTensor *qweight, get(".qweight"));
    LOWBIT_TRY(const RawTensor *qzeros, get(".qzeros"));
    LOWBIT_TRY(const RawTensor *scales, get(".scales"));
    if (qweight->shape.size() != 2 || scales->shape.size() != 2)
        return makeError(ErrorCode::Format, file + ": '" + name + "' qweight/scales must be 2-D");
    PackedLinear p;
    p.name = name;
    p.groups = scales->shape[0];
    p.rows = scales->shape[1];
    const int bits = config.bits;
    if (config.method == PackedQuantMethod::Awq) {
        p.cols = qweight->shape[0];
        LOWBIT_CHECK(expectShape(*qweight, {p.cols, ceilDiv(p.rows, 8)}, file));
        LOWBIT_CHECK(expectShape(*qzeros, {p.groups, ceilDiv(p.rows, 8)}, file));
        if (p.rows % 8 != 0)
            return makeError(ErrorCode::Format,
                             file + ": '" + name + "' AWQ out features must be a multiple of 8");
    } else {
        // The in-feature count is not stored: g_idx gives it, else the packed words' capacity.
        const auto gIdx = raw.find(name + ".g_idx");
        p.cols = gIdx != raw.end() && gIdx->second.shape.size() == 1
                     ? gIdx->second.shape[0]
                     : qweight->shape[0] * 32 / bits;
        LOWBIT_CHECK(expectShape(*qweight, {ceilDiv(p.cols * bits, 32), p.rows}, file));
        LOWBIT_CHECK(expectShape(*qzeros, {p.groups, ceilDiv(p.rows * bits, 32)}, file));
        if (gIdx != raw.end()) {
            LOWBIT_TRY(p.gIdx, rawInts(gIdx->second, file));
        }
    }
    LOWBIT_TRY(p.qweight, rawInts(*qweight, file));
    LOWBIT_TRY(p.qzeros, rawInts(*qzeros, file));
    LOWBIT_TRY(p.scales, rawFloats(*scales, file));
    return p;
}

// The group of input k, checked against the scales' group count.
Status checkGroups(const PackedQuantConfig &config, const PackedLinear &p) {
    const int64_t expected = config.groupSize > 0 ? ceilDiv(p.cols, config.groupSize) : 1;
    if (p.gIdx.empty() && p.groups != expected)
        return makeError(ErrorCode::Format, p.name + ": scales have " + std::to_string(p.groups) +
                                                " groups, group_size implies " +
                                                std::to_string(expected));
    if (!p.gIdx.empty() && int64_t(p.gIdx.size()) != p.cols)
        return makeError(ErrorCode::Format, p.name + ": g_idx length differs from in features");
    for (int32_t g : p.gIdx)
        if (g < 0 || g >= p.groups)
            return makeError(ErrorCode::Format, p.name + ": g_idx value " + std::to_string(g) +
                                                    " outside [0, " + std::to_string(p.groups) +
                                                    ")");
    if (int64_t(p.scales.size()) != p.groups * p.rows)
        return makeError(ErrorCode::Format, p.name + ": scales size mismatch");
    return {};
}

} // namespace

uint32_t readPackedCode(std::span<const int32_t> words, int64_t stride, int64_t index, int bits) {
    const int64_t bit = index * bits;
    const int64_t word = bit / 32;
    const int shift = int(bit % 32);
    uint64_t v = uint32_t(words[size_t(word * stride)]) >> shift;
    if (shift + bits > 32) // 3-bit codes straddle two words
        v |= uint64_t(uint32_t(words[size_t((word + 1) * stride)])) << (32 - shift);
    return uint32_t(v & ((1u << bits) - 1));
}

void writePackedCode(std::span<int32_t> words, int64_t stride, int64_t index, int bits,
                     uint32_t code) {
    const int64_t bit = index * bits;
    const int64_t word = bit / 32;
    const int shift = int(bit % 32);
    const uint64_t v = uint64_t(code & ((1u << bits) - 1)) << shift;
    int32_t &lo = words[size_t(word * stride)];
    lo = int32_t(uint32_t(lo) | uint32_t(v));
    if (shift + bits > 32) {
        int32_t &hi = words[size_t((word + 1) * stride)];
        hi = int32_t(uint32_t(hi) | uint32_t(v >> 32));
    }
}

Result<std::vector<float>> dequantizeGptqLinear(const PackedQuantConfig &config,
                                                const PackedLinear &p) {
    LOWBIT_CHECK(checkGroups(config, p));
    const int bits = config.bits;
    const int64_t rows = p.rows, cols = p.cols;
    if (int64_t(p.qweight.size()) != ceilDiv(cols * bits, 32) * rows ||
        int64_t(p.qzeros.size()) != p.groups * ceilDiv(rows * bits, 32))
        return makeError(ErrorCode::Format, p.name + ": qweight/qzeros size mismatch");
    // Zeros per (group, out) as float, with the AutoGPTQ +1 (unmasked, as its kernels do).
    std::vector<float> zeros(size_t(p.groups * rows));
    const int64_t zeroWords = ceilDiv(rows * bits, 32);
    for (int64_t g = 0; g < p.groups; ++g) {
        std::span<const int32_t> row(p.qzeros.data() + g * zeroWords, size_t(zeroWords));
        for (int64_t o = 0; o < rows; ++o)
            zeros[size_t(g * rows + o)] =
                float(readPackedCode(row, 1, o, bits) + (config.zeroOffset ? 1 : 0));
    }
    std::vector<float> out(size_t(rows * cols));
    for (int64_t k = 0; k < cols; ++k) {
        const int64_t g =
            p.gIdx.empty() ? (config.groupSize > 0 ? k / config.groupSize : 0) : p.gIdx[size_t(k)];
        const float *s = p.scales.data() + g * rows;
        const float *z = zeros.data() + g * rows;
        for (int64_t o = 0; o < rows; ++o) {
            // Column o of qweight is its own stream: stride `rows` between its words.
            const uint32_t code =
                readPackedCode({p.qweight.data() + o, p.qweight.size() - size_t(o)}, rows, k, bits);
            out[size_t(o * cols + k)] = s[o] * (float(code) - z[o]);
        }
    }
    return out;
}

Result<std::vector<float>> dequantizeAwqLinear(const PackedQuantConfig &config,
                                               const PackedLinear &p) {
    LOWBIT_CHECK(checkGroups(config, p));
    const int64_t rows = p.rows, cols = p.cols, words = rows / 8;
    if (rows % 8 != 0 || int64_t(p.qweight.size()) != cols * words ||
        int64_t(p.qzeros.size()) != p.groups * words)
        return makeError(ErrorCode::Format, p.name + ": AWQ qweight/qzeros size mismatch");
    auto nibble = [](int32_t word, int i) { return (uint32_t(word) >> (4 * i)) & 15u; };
    std::vector<float> out(size_t(rows * cols));
    for (int64_t k = 0; k < cols; ++k) {
        const int64_t g = config.groupSize > 0 ? k / config.groupSize : 0;
        for (int64_t c = 0; c < words; ++c) {
            const int32_t qw = p.qweight[size_t(k * words + c)];
            const int32_t qz = p.qzeros[size_t(g * words + c)];
            for (int i = 0; i < 8; ++i) {
                const int64_t o = 8 * c + kAwqOrder[size_t(i)];
                const float s = p.scales[size_t(g * rows + o)];
                out[size_t(o * cols + k)] = s * (float(nibble(qw, i)) - float(nibble(qz, i)));
            }
        }
    }
    return out;
}

Result<std::optional<PackedQuantConfig>> detectPackedQuantization(const fs::path &dir,
                                                                  const Json &config) {
    if (config.is_object()) {
        const auto it = config.find("quantization_config");
        if (it != config.end() && !it->is_null()) {
            LOWBIT_TRY(PackedQuantConfig c,
                       parseQuantConfig(*it, (dir / "config.json").string(), ""));
            return std::optional<PackedQuantConfig>(c);
        }
    }
    std::error_code ec;
    for (const auto &[file, method] :
         {std::pair{"quantize_config.json", "gptq"}, std::pair{"quant_config.json", "awq"}}) {
        const fs::path path = dir / file;
        if (!fs::exists(path, ec))
            continue;
        LOWBIT_TRY(Json j, readJson(path));
        LOWBIT_TRY(PackedQuantConfig c, parseQuantConfig(j, path.string(), method));
        return std::optional<PackedQuantConfig>(c);
    }
    return std::optional<PackedQuantConfig>();
}

namespace {

Result<std::vector<std::string>> weightFiles(const fs::path &dir) {
    std::error_code ec;
    const fs::path index = dir / "model.safetensors.index.json";
    if (!fs::exists(index, ec))
        return std::vector<std::string>{"model.safetensors"};
    LOWBIT_TRY(Json j, readJson(index));
    const auto map = j.is_object() ? j.find("weight_map") : j.end();
    if (map == j.end() || !map->is_object())
        return makeError(ErrorCode::Format, index.string() + ": missing 'weight_map' object");
    std::set<std::string> files;
    for (const auto &[tensor, shard] : map->items()) {
        const std::string s = shard.is_string() ? shard.get<std::string>() : "";
        if (s.empty() || s == "." || s == ".." || s.find('/') != std::string::npos ||
            s.find('\\') != std::string::npos)
            return makeError(ErrorCode::Format,
                             index.string() + ": invalid shard for '" + tensor + "'");
        files.insert(s);
    }
    return std::vector<std::string>(files.begin(), files.end());
}

bool endsWith(const std::string &s, const std::string &tail) {
    return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

} // namespace

Result<PackedWeights> loadPackedQuantizedWeights(const fs::path &dir,
                                                 const PackedQuantConfig &config,
                                                 DType computeType) {
    LOWBIT_TRY(std::vector<std::string> files, weightFiles(dir));
    PackedWeights out;
    out.files = files;
    out.source = (dir / files.front()).string();
    for (const std::string &name : files) {
        const std::string file = (dir / name).string();
        LOWBIT_TRY(RawSafetensorsFile raw, readSafetensorsRaw(dir / name));
        std::set<std::string> packedNames;
        for (const auto &[tensorName, t] : raw.tensors)
            if (endsWith(tensorName, ".qweight"))
                packedNames.insert(tensorName.substr(0, tensorName.size() - 8));
        for (const std::string &linear : packedNames) {
            LOWBIT_TRY(PackedLinear p, readPackedLinear(raw.tensors, linear, config, file));
            auto values = config.method == PackedQuantMethod::Awq ? dequantizeAwqLinear(config, p)
                                                                  : dequantizeGptqLinear(config, p);
            if (!values.ok())
                return makeError(values.error().code, file + ": " + values.error().message);
            out.tensors[linear + ".weight"] = Tensor::fromFloats(
                linear + ".weight", {p.rows, p.cols}, values.value().data(), computeType);
            ++out.packedLinears;
        }
        for (const auto &[tensorName, t] : raw.tensors) {
            const size_t dot = tensorName.rfind('.');
            const std::string stem = dot == std::string::npos ? "" : tensorName.substr(0, dot);
            if (packedNames.count(stem))
                continue; // qweight / qzeros / scales / g_idx / bias of a packed linear
            const std::optional<DType> type = dtypeFromName(t.dtype);
            if (!type)
                continue; // other integer tensors are not model weights this engine uses
            std::vector<std::byte> bytes(t.bytes.begin(), t.bytes.end());
            out.tensors[tensorName] =
                Tensor::fromBytes(tensorName, *type, t.shape, std::move(bytes));
        }
    }
    return out;
}

} // namespace lowbit
