#include "io/gguf_writer.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace lowbit {

namespace {

GgufValue scalar(GgufValueType type) {
    GgufValue v;
    v.type = type;
    return v;
}

template <typename T> void put(std::ostream &out, T value) {
    out.write(reinterpret_cast<const char *>(&value), sizeof value);
}

void putString(std::ostream &out, const std::string &s) {
    put<uint64_t>(out, s.size());
    out.write(s.data(), std::streamsize(s.size()));
}

void putValue(std::ostream &out, const GgufValue &v) {
    switch (v.type) {
    case GgufValueType::U8: put(out, uint8_t(v.u)); return;
    case GgufValueType::I8: put(out, int8_t(v.i)); return;
    case GgufValueType::U16: put(out, uint16_t(v.u)); return;
    case GgufValueType::I16: put(out, int16_t(v.i)); return;
    case GgufValueType::U32: put(out, uint32_t(v.u)); return;
    case GgufValueType::I32: put(out, int32_t(v.i)); return;
    case GgufValueType::U64: put(out, uint64_t(v.u)); return;
    case GgufValueType::I64: put(out, int64_t(v.i)); return;
    case GgufValueType::F32: put(out, float(v.f)); return;
    case GgufValueType::F64: put(out, double(v.f)); return;
    case GgufValueType::Bool: put(out, uint8_t(v.u ? 1 : 0)); return;
    case GgufValueType::String: putString(out, v.s); return;
    case GgufValueType::Array:
        put(out, uint32_t(v.elementType));
        put<uint64_t>(out, v.array.size());
        for (const GgufValue &e : v.array)
            putValue(out, e);
        return;
    }
}

void pad(std::ostream &out, uint64_t written, uint64_t alignment) {
    static const char kZeros[256] = {};
    for (uint64_t n = (alignment - written % alignment) % alignment; n > 0;) {
        const uint64_t chunk = std::min<uint64_t>(n, sizeof kZeros);
        out.write(kZeros, std::streamsize(chunk));
        n -= chunk;
    }
}

uint64_t alignUp(uint64_t x, uint64_t a) {
    return x + (a - x % a) % a;
}

bool storable(GgmlType t) {
    return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0;
}

} // namespace

GgufWriter::GgufWriter(uint32_t alignment) : m_alignment(alignment) {}

void GgufWriter::set(const std::string &key, GgufValue value) {
    for (auto &[k, v] : m_kv)
        if (k == key) {
            v = std::move(value);
            return;
        }
    m_kv.emplace_back(key, std::move(value));
}

void GgufWriter::setString(const std::string &key, std::string value) {
    GgufValue v = scalar(GgufValueType::String);
    v.s = std::move(value);
    set(key, std::move(v));
}

void GgufWriter::setU32(const std::string &key, uint32_t value) {
    GgufValue v = scalar(GgufValueType::U32);
    v.u = value;
    set(key, std::move(v));
}

void GgufWriter::setI32(const std::string &key, int32_t value) {
    GgufValue v = scalar(GgufValueType::I32);
    v.i = value;
    set(key, std::move(v));
}

void GgufWriter::setU64(const std::string &key, uint64_t value) {
    GgufValue v = scalar(GgufValueType::U64);
    v.u = value;
    set(key, std::move(v));
}

void GgufWriter::setF32(const std::string &key, float value) {
    GgufValue v = scalar(GgufValueType::F32);
    v.f = value;
    set(key, std::move(v));
}

void GgufWriter::setF64(const std::string &key, double value) {
    GgufValue v = scalar(GgufValueType::F64);
    v.f = value;
    set(key, std::move(v));
}

void GgufWriter::setBool(const std::string &key, bool value) {
    GgufValue v = scalar(GgufValueType::Bool);
    v.u = value ? 1 : 0;
    set(key, std::move(v));
}

void GgufWriter::setStringArray(const std::string &key, const std::vector<std::string> &values) {
    GgufValue v = scalar(GgufValueType::Array);
    v.elementType = GgufValueType::String;
    v.array.reserve(values.size());
    for (const std::string &s : values) {
        v.array.push_back(scalar(GgufValueType::String));
        v.array.back().s = s;
    }
    set(key, std::move(v));
}

void GgufWriter::setF32Array(const std::string &key, const std::vector<float> &values) {
    GgufValue v = scalar(GgufValueType::Array);
    v.elementType = GgufValueType::F32;
    v.array.reserve(values.size());
    for (float f : values) {
        v.array.push_back(scalar(GgufValueType::F32));
        v.array.back().f = f;
    }
    set(key, std::move(v));
}

void GgufWriter::setI32Array(const std::string &key, const std::vector<int32_t> &values) {
    GgufValue v = scalar(GgufValueType::Array);
    v.elementType = GgufValueType::I32;
    v.array.reserve(values.size());
    for (int32_t i : values) {
        v.array.push_back(scalar(GgufValueType::I32));
        v.array.back().i = i;
    }
    set(key, std::move(v));
}

Status GgufWriter::addTensor(const std::string &name, const Tensor &tensor, GgmlType storeAs) {
    if (!storable(storeAs))
        return makeError(ErrorCode::Unsupported, "GGUF writer: tensor '" + name +
                                                     "': cannot store " +
                                                     std::string(ggmlTypeName(storeAs)));
    if (tensor.empty() || tensor.shape.empty() || tensor.shape.size() > 4)
        return makeError(ErrorCode::InvalidArgument,
                         "GGUF writer: tensor '" + name +
                             "' is empty or has more than 4 dimensions");
    PendingTensor t{name, storeAs, {}, tensor, {}, false};
    for (auto it = tensor.shape.rbegin(); it != tensor.shape.rend(); ++it)
        t.ne.push_back(uint64_t(*it));
    if (storeAs == GgmlType::Q8_0 && t.ne[0] % 32 != 0)
        return makeError(ErrorCode::InvalidArgument,
                         "GGUF writer: tensor '" + name + "' has rows of " +
                             std::to_string(t.ne[0]) +
                             " values, not a multiple of the Q8_0 block (32)");
    m_tensors.push_back(std::move(t));
    return {};
}

Status GgufWriter::addRawTensor(const std::string &name, GgmlType type, std::vector<uint64_t> ne,
                                std::vector<std::byte> data) {
    uint64_t elements = 1;
    for (uint64_t d : ne)
        elements *= d;
    const std::optional<uint64_t> bytes = ggmlBytesFor(type, elements);
    if (ne.empty() || ne.size() > 4 || !bytes || *bytes != data.size() ||
        ne[0] % uint64_t(ggmlTypeInfo(type).blockSize) != 0)
        return makeError(ErrorCode::InvalidArgument,
                         "GGUF writer: tensor '" + name + "': " + std::to_string(data.size()) +
                             " bytes do not match its " + std::string(ggmlTypeName(type)) +
                             " shape");
    m_tensors.push_back(PendingTensor{name, type, std::move(ne), {}, std::move(data), true});
    return {};
}

// Converts one stored tensor row by row (innermost dimension = row) into the target encoding.
Status GgufWriter::writeTensorData(std::ostream &out, const PendingTensor &t) const {
    if (t.isRaw) {
        out.write(reinterpret_cast<const char *>(t.raw.data()), std::streamsize(t.raw.size()));
        return {};
    }
    const Tensor &src = t.source;
    const size_t rowLength = size_t(t.ne[0]);
    const size_t rows = rowLength ? size_t(src.numel()) / rowLength : 0;
    const size_t srcRowBytes = rowLength * dtypeBytes(src.dtype);
    std::vector<float> values(rowLength);
    std::vector<std::byte> encoded(size_t(*ggmlBytesFor(t.type, rowLength)));
    for (size_t r = 0; r < rows; ++r) {
        const std::byte *row = src.data + r * srcRowBytes;
        const bool sameEncoding = (t.type == GgmlType::F32 && src.dtype == DType::F32) ||
                                  (t.type == GgmlType::F16 && src.dtype == DType::F16) ||
                                  (t.type == GgmlType::BF16 && src.dtype == DType::BF16);
        if (sameEncoding) {
            std::memcpy(encoded.data(), row, srcRowBytes);
        } else {
            convertToFloat(src.dtype, row, values.data(), rowLength);
            auto *half = reinterpret_cast<uint16_t *>(encoded.data());
            switch (t.type) {
            case GgmlType::F32: std::memcpy(encoded.data(), values.data(), rowLength * 4); break;
            case GgmlType::F16:
                for (size_t i = 0; i < rowLength; ++i)
                    half[i] = floatToF16(values[i]);
                break;
            case GgmlType::BF16:
                for (size_t i = 0; i < rowLength; ++i)
                    half[i] = floatToBf16(values[i]);
                break;
            case GgmlType::Q8_0:
                quantizeRowQ8_0(values.data(), encoded.data(), int64_t(rowLength));
                break;
            default: return makeError(ErrorCode::Internal, "GGUF writer: unexpected target type");
            }
        }
        out.write(reinterpret_cast<const char *>(encoded.data()), std::streamsize(encoded.size()));
    }
    return {};
}

Status GgufWriter::writeTo(std::ostream &out, const std::string &what) const {
    if (m_alignment == 0 || (m_alignment & (m_alignment - 1)) != 0)
        return makeError(ErrorCode::InvalidArgument, what + ": alignment " +
                                                         std::to_string(m_alignment) +
                                                         " is not a power of two");
    bool hasAlignment = false;
    for (const auto &[key, value] : m_kv)
        if (key == "general.alignment") {
            hasAlignment = true;
            if (value.type != GgufValueType::U32 || value.u != m_alignment)
                return makeError(ErrorCode::InvalidArgument,
                                 what +
                                     ": general.alignment must be the writer's alignment as u32");
        }
    out.write("GGUF", 4);
    put<uint32_t>(out, 3);
    put<uint64_t>(out, m_tensors.size());
    put<uint64_t>(out, m_kv.size() + (hasAlignment ? 0 : 1));
    for (const auto &[key, value] : m_kv) {
        putString(out, key);
        put(out, uint32_t(value.type));
        putValue(out, value);
    }
    if (!hasAlignment) {
        putString(out, "general.alignment");
        put(out, uint32_t(GgufValueType::U32));
        put<uint32_t>(out, m_alignment);
    }
    uint64_t offset = 0;
    for (const PendingTensor &t : m_tensors) {
        putString(out, t.name);
        put<uint32_t>(out, uint32_t(t.ne.size()));
        uint64_t elements = 1;
        for (uint64_t d : t.ne) {
            put<uint64_t>(out, d);
            elements *= d;
        }
        put(out, uint32_t(t.type));
        put<uint64_t>(out, offset);
        offset = alignUp(offset + *ggmlBytesFor(t.type, elements), m_alignment);
    }
    pad(out, uint64_t(out.tellp()), m_alignment);
    for (const PendingTensor &t : m_tensors) {
        const uint64_t start = uint64_t(out.tellp());
        LOWBIT_CHECK(writeTensorData(out, t));
        pad(out, uint64_t(out.tellp()) - start, m_alignment);
    }
    if (!out)
        return makeError(ErrorCode::Io, what + ": write failed");
    return {};
}

Status GgufWriter::write(const std::filesystem::path &path) const {
    std::filesystem::path temp = path;
    temp += ".partial";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        if (!out)
            return makeError(ErrorCode::Io, path.string() + ": cannot create " + temp.string());
        Status written = writeTo(out, path.string());
        out.close();
        if (!written || !out) {
            std::error_code ignored;
            std::filesystem::remove(temp, ignored);
            return written ? makeError(ErrorCode::Io, path.string() + ": write failed (disk full?)")
                           : written;
        }
    }
    std::error_code ec;
    std::filesystem::rename(temp, path, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         path.string() + ": cannot rename the written file: " + ec.message());
    return {};
}

Result<std::vector<std::byte>> GgufWriter::toBytes() const {
    std::ostringstream out(std::ios::binary);
    LOWBIT_CHECK(writeTo(out, "GGUF writer"));
    const std::string s = std::move(out).str();
    std::vector<std::byte> bytes(s.size());
    std::memcpy(bytes.data(), s.data(), s.size());
    return bytes;
}

namespace {

// llama.cpp's llama_ftype values for general.file_type.
uint32_t fileTypeOf(GgmlType t) {
    switch (t) {
    case GgmlType::F16: return 1;
    case GgmlType::Q8_0: return 7;
    case GgmlType::BF16: return 32;
    default: return 0;
    }
}

void writeConfigKeys(GgufWriter &w, const Checkpoint &ckpt, GgmlType weightType) {
    const ModelConfig &c = ckpt.config;
    w.setString("general.architecture", "llama");
    auto name = ckpt.metadata.find("general.name");
    w.setString("general.name", name != ckpt.metadata.end() ? name->second
                                : !ckpt.path.empty()        ? ckpt.path.stem().string()
                                                            : std::string("lowbit"));
    w.setU32("general.file_type", fileTypeOf(weightType));
    if (weightType == GgmlType::Q8_0)
        w.setU32("general.quantization_version", 2); // GGML_QNT_VERSION
    w.setU32("llama.vocab_size", uint32_t(c.vocabSize));
    w.setU32("llama.context_length", uint32_t(c.maxPositions));
    w.setU32("llama.embedding_length", uint32_t(c.hiddenSize));
    w.setU32("llama.block_count", uint32_t(c.numLayers));
    w.setU32("llama.feed_forward_length", uint32_t(c.intermediateSize));
    w.setU32("llama.rope.dimension_count", uint32_t(c.headDim));
    w.setU32("llama.attention.head_count", uint32_t(c.numHeads));
    w.setU32("llama.attention.head_count_kv", uint32_t(c.numKvHeads));
    w.setF32("llama.attention.layer_norm_rms_epsilon", float(c.rmsNormEps));
    w.setF32("llama.rope.freq_base", float(c.ropeTheta));
    if (c.headDim * c.numHeads != c.hiddenSize) {
        w.setU32("llama.attention.key_length", uint32_t(c.headDim));
        w.setU32("llama.attention.value_length", uint32_t(c.headDim));
    }
    if (c.ropeScaling.type == RopeScaling::Type::Linear) {
        w.setString("llama.rope.scaling.type", "linear");
        w.setF32("llama.rope.scaling.factor", float(c.ropeScaling.factor));
    } else if (c.ropeScaling.type == RopeScaling::Type::Llama3) {
        // The divisors go into rope_freqs.weight; the original context is recorded for readers
        // that rebuild the parameters (lowbit's loader does).
        w.setU32("llama.rope.scaling.original_context_length",
                 uint32_t(c.ropeScaling.originalMaxPositions));
    }
}

void writeTokenizerKeys(GgufWriter &w, const Checkpoint &ckpt) {
    if (ckpt.tokenizer) {
        const VocabExport v = ckpt.tokenizer->exportVocab();
        w.setString("tokenizer.ggml.model", v.model);
        if (!v.pre.empty())
            w.setString("tokenizer.ggml.pre", v.pre);
        w.setStringArray("tokenizer.ggml.tokens", v.tokens);
        if (!v.scores.empty())
            w.setF32Array("tokenizer.ggml.scores", v.scores);
        if (!v.tokenTypes.empty())
            w.setI32Array("tokenizer.ggml.token_type", v.tokenTypes);
        if (!v.merges.empty())
            w.setStringArray("tokenizer.ggml.merges", v.merges);
        const std::pair<const char *, int32_t> ids[] = {
            {"tokenizer.ggml.bos_token_id", v.bosId},
            {"tokenizer.ggml.eos_token_id", v.eosId},
            {"tokenizer.ggml.unknown_token_id", v.unkId},
            {"tokenizer.ggml.padding_token_id", v.padId}};
        for (const auto &[key, id] : ids)
            if (id >= 0)
                w.setU32(key, uint32_t(id));
        w.setBool("tokenizer.ggml.add_bos_token", v.addBos);
        if (v.model == "llama")
            w.setBool("tokenizer.ggml.add_space_prefix", v.addSpacePrefix);
        // Further end-of-generation ids (Llama 3 instruct's <|eot_id|>, <|eom_id|>).
        std::vector<int32_t> extra;
        for (int32_t id : ckpt.config.eosIds)
            if (id != v.eosId)
                extra.push_back(id);
        if (!extra.empty())
            w.setU32("tokenizer.ggml.eot_token_id", uint32_t(extra[0]));
        if (extra.size() > 1)
            w.setU32("tokenizer.ggml.eom_token_id", uint32_t(extra[1]));
    }
    if (!ckpt.chatTemplate.empty())
        w.setString("tokenizer.chat_template", ckpt.chatTemplate);
}

// rope_freqs.weight: per frequency, the divisor llama.cpp applies to its unscaled frequency.
Status addRopeFreqs(GgufWriter &w, const ModelConfig &c) {
    ModelConfig plain = c;
    plain.ropeScaling = RopeScaling{};
    const std::vector<double> base = plain.ropeInverseFrequencies();
    const std::vector<double> scaled = c.ropeInverseFrequencies();
    std::vector<float> divisors(base.size());
    for (size_t i = 0; i < base.size(); ++i)
        divisors[i] = float(base[i] / scaled[i]);
    const Tensor t =
        Tensor::fromFloats("rope_freqs.weight", {int64_t(divisors.size())}, divisors.data());
    return w.addTensor("rope_freqs.weight", t, GgmlType::F32);
}

Status addWeight(GgufWriter &w, const std::string &name, const Tensor &t, GgmlType weightType,
                 const GgufWeightOverrides *overrides = nullptr) {
    if (overrides)
        if (const auto it = overrides->find(t.name); it != overrides->end())
            return w.addRawTensor(name, it->second.type, {uint64_t(t.cols()), uint64_t(t.rows())},
                                  it->second.data);
    const int64_t rowLength = t.shape.empty() ? 0 : t.shape.back();
    const GgmlType type =
        weightType == GgmlType::Q8_0 && rowLength % 32 != 0 ? GgmlType::F16 : weightType;
    return w.addTensor(name, t, type);
}

} // namespace

Status writeGgufCheckpoint(const Checkpoint &ckpt, const std::filesystem::path &path,
                           GgmlType weightType, const GgufWeightOverrides *overrides) {
    if (!storable(weightType))
        return makeError(ErrorCode::InvalidArgument,
                         path.string() +
                             ": GGUF weights can be written as F32, F16, BF16 or Q8_0, not " +
                             std::string(ggmlTypeName(weightType)));
    const ModelConfig &c = ckpt.config;
    const ModelWeights &wt = ckpt.weights;
    LOWBIT_CHECK(c.validate(path.string()));
    LOWBIT_CHECK(wt.validate(c, path.string()));
    GgufWriter w(32);
    writeConfigKeys(w, ckpt, weightType);
    w.setU32("general.alignment", 32);
    writeTokenizerKeys(w, ckpt);
    LOWBIT_CHECK(addWeight(w, "token_embd.weight", wt.tokenEmbedding, weightType));
    LOWBIT_CHECK(w.addTensor("output_norm.weight", wt.finalNorm, GgmlType::F32));
    const bool tied = c.tieWordEmbeddings || wt.output.data == wt.tokenEmbedding.data;
    if (!tied)
        LOWBIT_CHECK(addWeight(w, "output.weight", wt.output, weightType));
    if (c.ropeScaling.type == RopeScaling::Type::Llama3)
        LOWBIT_CHECK(addRopeFreqs(w, c));
    for (size_t i = 0; i < wt.layers.size(); ++i) {
        const LayerWeights &l = wt.layers[i];
        const std::string p = "blk." + std::to_string(i) + ".";
        LOWBIT_CHECK(w.addTensor(p + "attn_norm.weight", l.attnNorm, GgmlType::F32));
        LOWBIT_CHECK(addWeight(w, p + "attn_q.weight",
                               permuteRopeRowsInverse(l.wq, c.numHeads, c.headDim), weightType,
                               overrides));
        LOWBIT_CHECK(addWeight(w, p + "attn_k.weight",
                               permuteRopeRowsInverse(l.wk, c.numKvHeads, c.headDim), weightType,
                               overrides));
        LOWBIT_CHECK(addWeight(w, p + "attn_v.weight", l.wv, weightType, overrides));
        LOWBIT_CHECK(addWeight(w, p + "attn_output.weight", l.wo, weightType, overrides));
        LOWBIT_CHECK(w.addTensor(p + "ffn_norm.weight", l.ffnNorm, GgmlType::F32));
        LOWBIT_CHECK(addWeight(w, p + "ffn_gate.weight", l.wGate, weightType, overrides));
        LOWBIT_CHECK(addWeight(w, p + "ffn_up.weight", l.wUp, weightType, overrides));
        LOWBIT_CHECK(addWeight(w, p + "ffn_down.weight", l.wDown, weightType, overrides));
    }
    return w.write(path);
}

} // namespace lowbit
