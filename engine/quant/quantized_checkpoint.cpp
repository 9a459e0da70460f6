#include "quant/quantized_checkpoint.h"

#include "core/mapped_file.h"
#include "io/safetensors.h"
#include "tokenizer/vocab_json.h"

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr const char *kMetadataKey = "lowbit.quantized";

Status writeTextFile(const fs::path &path, const std::string &text) {
    fs::path temp = path;
    temp += ".partial";
    {
        std::ofstream out(temp, std::ios::binary | std::ios::trunc);
        if (!out)
            return makeError(ErrorCode::Io,
                             temp.string() + ": cannot create: " + std::strerror(errno));
        out.write(text.data(), std::streamsize(text.size()));
        if (!out.flush())
            return makeError(ErrorCode::Io, temp.string() + ": write failed");
    }
    std::error_code ec;
    fs::rename(temp, path, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         path.string() + ": cannot rename the written file: " + ec.message());
    return {};
}

Status copyFile(const fs::path &from, const fs::path &to) {
    std::error_code ec;
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec)
        return makeError(ErrorCode::Io, "cannot copy " + from.string() + " to " + to.string() +
                                            ": " + ec.message());
    return {};
}

// config.json for a source that has none (GGUF, llama2.c), in transformers' LlamaConfig fields.
Json deriveConfig(const Checkpoint &source) {
    const ModelConfig &c = source.config;
    Json j = {{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"hidden_act", "silu"},
              {"vocab_size", c.vocabSize},
              {"hidden_size", c.hiddenSize},
              {"intermediate_size", c.intermediateSize},
              {"num_hidden_layers", c.numLayers},
              {"num_attention_heads", c.numHeads},
              {"num_key_value_heads", c.numKvHeads},
              {"head_dim", c.headDim},
              {"max_position_embeddings", c.maxPositions},
              {"rms_norm_eps", c.rmsNormEps},
              {"rope_theta", c.ropeTheta},
              {"tie_word_embeddings", c.tieWordEmbeddings}};
    const DType stored = source.weights.tokenEmbedding.dtype;
    j["torch_dtype"] = stored == DType::F32   ? "float32"
                       : stored == DType::F16 ? "float16"
                                              : "bfloat16";
    j["bos_token_id"] = c.bosId < 0 ? Json(nullptr) : Json(c.bosId);
    j["eos_token_id"] = c.eosIds.size() == 1 ? Json(c.eosIds.front()) : Json(c.eosIds);
    const RopeScaling &rs = c.ropeScaling;
    if (rs.type == RopeScaling::Type::Llama3)
        j["rope_scaling"] = {{"rope_type", "llama3"},
                             {"factor", rs.factor},
                             {"low_freq_factor", rs.lowFreqFactor},
                             {"high_freq_factor", rs.highFreqFactor},
                             {"original_max_position_embeddings", rs.originalMaxPositions}};
    else if (rs.type == RopeScaling::Type::Linear)
        j["rope_scaling"] = {{"rope_type", "linear"}, {"factor", rs.factor}};
    return j;
}

Status writeConfigAndTokenizer(const fs::path &dir, const Checkpoint &source) {
    std::error_code ec;
    const bool hf = source.format == CheckpointFormat::HuggingFace;
    if (hf && fs::exists(source.path / "config.json", ec))
        LOWBIT_CHECK(copyFile(source.path / "config.json", dir / "config.json"));
    else
        LOWBIT_CHECK(writeTextFile(dir / "config.json", deriveConfig(source).dump(2)));
    bool haveTokenizer = false;
    if (hf)
        for (const char *name :
             {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "generation_config.json", "chat_template.jinja"})
            if (fs::exists(source.path / name, ec)) {
                LOWBIT_CHECK(copyFile(source.path / name, dir / name));
                haveTokenizer = haveTokenizer || std::string(name) == "tokenizer.json";
            }
    if (!haveTokenizer && source.tokenizer)
        LOWBIT_CHECK(
            writeTextFile(dir / "lowbit_vocab.json", vocabToJson(source.tokenizer->exportVocab())));
    if (!hf && !source.chatTemplate.empty())
        LOWBIT_CHECK(writeTextFile(dir / "chat_template.jinja", source.chatTemplate));
    return {};
}

Status writeModelTensors(const fs::path &path, const Checkpoint &model) {
    const ModelWeights &w = model.weights;
    std::vector<Tensor> tensors;
    auto add = [&](const Tensor &t, std::string name) {
        Tensor named = t;
        named.name = std::move(name);
        tensors.push_back(std::move(named));
    };
    add(w.tokenEmbedding, "model.embed_tokens.weight");
    for (size_t i = 0; i < w.layers.size(); ++i) {
        const LayerWeights &l = w.layers[i];
        const std::string p = "model.layers." + std::to_string(i) + ".";
        add(l.attnNorm, p + "input_layernorm.weight");
        add(l.ffnNorm, p + "post_attention_layernorm.weight");
        for (LinearKind kind : kAllLinearKinds)
            add(linearWeight(l, kind), linearTensorName(int64_t(i), kind));
    }
    add(w.finalNorm, "model.norm.weight");
    if (!model.config.tieWordEmbeddings)
        add(w.output, "lm_head.weight");
    return writeSafetensors(path, tensors, {{"format", "pt"}});
}

template <typename T> std::span<const std::byte> asBytes(const std::vector<T> &v) {
    return {reinterpret_cast<const std::byte *>(v.data()), v.size() * sizeof(T)};
}

Status writePacked(const fs::path &path, const std::vector<QuantizedTensor> &tensors) {
    std::vector<RawTensor> raw;
    Json meta = Json::object();
    for (const QuantizedTensor &t : tensors) {
        std::string base = t.name;
        if (base.size() > 7 && base.substr(base.size() - 7) == ".weight")
            base.resize(base.size() - 7);
        const int64_t groups = t.groups();
        raw.push_back({base + ".qcodes", "U8", {int64_t(t.packed.size())}, asBytes(t.packed)});
        raw.push_back({base + ".scales", "F32", {t.rows, groups}, asBytes(t.scales)});
        raw.push_back({base + ".zeros", "F32", {t.rows, groups}, asBytes(t.zeros)});
        if (!t.permutation.empty())
            raw.push_back({base + ".perm", "I32", {t.cols}, asBytes(t.permutation)});
        if (!t.groupBits.empty())
            raw.push_back({base + ".group_bits", "U8", {groups}, asBytes(t.groupBits)});
        if (!t.codebook.empty())
            raw.push_back(
                {base + ".codebook", "F32", {int64_t(t.codebook.size())}, asBytes(t.codebook)});
        Json extraBits = Json::object();
        for (const auto &[key, e] : t.extra) {
            raw.push_back({base + ".extra." + key,
                           quantExtraTypeName(e.type),
                           e.shape,
                           {e.data.data(), e.data.size()}});
            extraBits[key] = e.storedBitsPerElement;
        }
        meta[base] = {{"tensor", t.name},         {"method", t.method},
                      {"rows", t.rows},           {"cols", t.cols},
                      {"bits", t.bits},           {"group_size", t.groupSize},
                      {"symmetric", t.symmetric}, {"scale_bits", t.scaleBits},
                      {"zero_bits", t.zeroBits},  {"codebook_bits", t.codebookBits},
                      {"extra_bits", extraBits}};
    }
    return writeSafetensorsRaw(path, raw, {{kMetadataKey, meta.dump()}, {"format", "lowbit"}});
}

} // namespace

Status writeQuantizedCheckpoint(const std::filesystem::path &dir, const Checkpoint &source,
                                const Checkpoint &model,
                                const std::vector<QuantizedTensor> &tensors,
                                const QuantizeReport &report) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         dir.string() + ": cannot create directory: " + ec.message());
    LOWBIT_CHECK(writeConfigAndTokenizer(dir, source));
    LOWBIT_CHECK(writeModelTensors(dir / "model.safetensors", model));
    LOWBIT_CHECK(writePacked(dir / "quantized.safetensors", tensors));
    Json config = report.toJson();
    config["source"] = {{"path", source.path.string()},
                        {"format", checkpointFormatName(source.format)}};
    return writeTextFile(dir / "quantization_config.json", config.dump(2));
}

namespace {

template <typename T>
Result<std::vector<T>> rawValues(const RawSafetensorsFile &file, const std::string &name,
                                 const char *dtype, int64_t count, const std::string &source,
                                 bool required = true) {
    const auto it = file.tensors.find(name);
    if (it == file.tensors.end()) {
        if (!required)
            return std::vector<T>();
        return makeError(ErrorCode::Format, source + ": missing tensor '" + name + "'");
    }
    if (it->second.dtype != dtype ||
        (count >= 0 && int64_t(it->second.bytes.size()) != count * int64_t(sizeof(T))))
        return makeError(ErrorCode::Format, source + ": tensor '" + name + "' must be " + dtype +
                                                " with " + std::to_string(count) + " elements");
    std::vector<T> out(it->second.bytes.size() / sizeof(T));
    if (!out.empty())
        std::memcpy(out.data(), it->second.bytes.data(), out.size() * sizeof(T));
    return out;
}

Result<QuantizedTensor> readOne(const RawSafetensorsFile &file, const std::string &base,
                                const Json &m, const std::string &source) {
    QuantizedTensor t;
    try {
        t.name = m.at("tensor").get<std::string>();
        t.method = m.at("method").get<std::string>();
        t.rows = m.at("rows").get<int64_t>();
        t.cols = m.at("cols").get<int64_t>();
        t.bits = m.at("bits").get<int>();
        t.groupSize = m.at("group_size").get<int64_t>();
        t.symmetric = m.at("symmetric").get<bool>();
        t.scaleBits = m.at("scale_bits").get<int>();
        t.zeroBits = m.at("zero_bits").get<int>();
        t.codebookBits = m.value("codebook_bits", 0);
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, source + ": metadata of '" + base + "': " + e.what());
    }
    // Bounded so that rows x cols x 8 bits cannot overflow in the size checks that follow.
    if (t.rows <= 0 || t.cols <= 0 || t.groupSize <= 0 || t.groupSize > t.cols ||
        t.rows > (int64_t(1) << 31) || t.cols > (int64_t(1) << 31) ||
        t.rows * t.cols > (int64_t(1) << 40))
        return makeError(ErrorCode::Format,
                         source + ": '" + base + "' has an invalid shape or group size");
    const int64_t groups = t.groups();
    LOWBIT_TRY(t.groupBits,
               rawValues<uint8_t>(file, base + ".group_bits", "U8", groups, source, false));
    LOWBIT_TRY(t.packed, rawValues<uint8_t>(file, base + ".qcodes", "U8", -1, source));
    LOWBIT_TRY(t.scales, rawValues<float>(file, base + ".scales", "F32", t.rows * groups, source));
    LOWBIT_TRY(t.zeros, rawValues<float>(file, base + ".zeros", "F32", t.rows * groups, source));
    LOWBIT_TRY(t.permutation,
               rawValues<int32_t>(file, base + ".perm", "I32", t.cols, source, false));
    LOWBIT_TRY(t.codebook, rawValues<float>(file, base + ".codebook", "F32", -1, source, false));
    const std::string prefix = base + ".extra.";
    const Json extraBits = m.value("extra_bits", Json::object());
    for (const auto &[name, raw] : file.tensors) {
        if (name.rfind(prefix, 0) != 0)
            continue;
        const std::string key = name.substr(prefix.size());
        QuantExtra e;
        e.type = raw.dtype == "U8"    ? QuantExtra::Type::U8
                 : raw.dtype == "I32" ? QuantExtra::Type::I32
                                      : QuantExtra::Type::F32;
        if (raw.dtype != quantExtraTypeName(e.type))
            return makeError(ErrorCode::Format, source + ": '" + name + "' has dtype " + raw.dtype +
                                                    " (U8, I32 or F32)");
        e.shape = raw.shape;
        e.data.assign(raw.bytes.begin(), raw.bytes.end());
        e.storedBitsPerElement = extraBits.contains(key) && extraBits[key].is_number()
                                     ? extraBits[key].get<double>()
                                     : 0;
        t.extra.emplace(key, std::move(e));
    }
    LOWBIT_CHECK(t.validate());
    return t;
}

// "model.layers.N.self_attn.q_proj.weight" -> (N, kind).
std::optional<std::pair<int64_t, LinearKind>> parseLinearName(const std::string &name,
                                                              int64_t layers) {
    for (int64_t l = 0; l < layers; ++l)
        for (LinearKind kind : kAllLinearKinds)
            if (linearTensorName(l, kind) == name)
                return std::make_pair(l, kind);
    return std::nullopt;
}

} // namespace

Result<std::vector<QuantizedTensor>> readQuantizedTensors(const std::filesystem::path &file) {
    LOWBIT_TRY(RawSafetensorsFile raw, readSafetensorsRaw(file));
    const auto it = raw.metadata.find(kMetadataKey);
    if (it == raw.metadata.end())
        return makeError(ErrorCode::Format, file.string() + ": no '" + kMetadataKey + "' metadata");
    const Json meta = Json::parse(it->second, nullptr, false);
    if (meta.is_discarded() || !meta.is_object())
        return makeError(ErrorCode::Format,
                         file.string() + ": '" + kMetadataKey + "' is not a JSON object");
    std::vector<QuantizedTensor> out;
    for (const auto &[base, m] : meta.items()) {
        if (!m.is_object())
            return makeError(ErrorCode::Format,
                             file.string() + ": metadata of '" + base + "' is not an object");
        LOWBIT_TRY(QuantizedTensor t, readOne(raw, base, m, file.string()));
        out.push_back(std::move(t));
    }
    return out;
}

Result<Checkpoint> loadQuantizedCheckpoint(const std::filesystem::path &dir,
                                           const LoadOptions &options) {
    LOWBIT_TRY(Checkpoint ckpt, loadHuggingFaceCheckpoint(dir, options));
    const fs::path packedPath = dir / "quantized.safetensors";
    LOWBIT_TRY(std::vector<QuantizedTensor> tensors, readQuantizedTensors(packedPath));
    for (const QuantizedTensor &t : tensors) {
        const auto where = parseLinearName(t.name, ckpt.config.numLayers);
        if (!where)
            return makeError(ErrorCode::Format, packedPath.string() + ": '" + t.name +
                                                    "' is not a linear weight of this model");
        Tensor &target = linearWeight(ckpt.weights.layers[size_t(where->first)], where->second);
        if (target.rows() != t.rows || target.cols() != t.cols)
            return makeError(ErrorCode::Format, packedPath.string() + ": '" + t.name +
                                                    "' shape differs from model.safetensors");
        QuantizeOptions options;
        options.method = t.method;
        options.bits = t.bits;
        options.groupSize = t.groupSize;
        options.symmetric = t.symmetric;
        LOWBIT_TRY(std::unique_ptr<Quantizer> quantizer, makeQuantizer(options));
        LOWBIT_TRY(std::vector<float> values, quantizer->dequantize(t));
        target = Tensor::fromFloats(t.name, {t.rows, t.cols}, values.data(), target.dtype);
    }
    ckpt.metadata["quantized_tensors"] = std::to_string(tensors.size());
    return ckpt;
}

} // namespace lowbit
