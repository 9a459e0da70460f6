// Hugging Face checkpoint directory (LlamaForCausalLM): config.json, model.safetensors or shards
// listed in model.safetensors.index.json, tokenizer.json + tokenizer_config.json,
// generation_config.json; without tokenizer.json, lowbit_vocab.json (tokenizer/vocab_json.h).
// Field names and defaults follow transformers' LlamaConfig.
#include "io/gptq_checkpoint.h"
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer_loaders.h"
#include "tokenizer/vocab_json.h"

#include <nlohmann/json.hpp>

#include <optional>
#include <set>

namespace lowbit {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

Result<Json> readJsonFile(const fs::path &path) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(path));
    const char *text = reinterpret_cast<const char *>(file->data());
    try {
        return Json::parse(text, text + file->size());
    } catch (const Json::parse_error &e) {
        return makeError(ErrorCode::Format, path.string() + ": invalid JSON (error at byte " +
                                                std::to_string(e.byte) + ")");
    } catch (const std::exception &e) {
        return makeError(ErrorCode::Format, path.string() + ": cannot parse JSON: " + e.what());
    }
}

// Typed access to the fields of one JSON object; every error names the file and the field.
class JsonFields {
public:
    JsonFields(const Json &json, std::string source) : m_json(json), m_source(std::move(source)) {}

    const Json *find(const char *key) const {
        const auto it = m_json.find(key);
        return it == m_json.end() || it->is_null() ? nullptr : &*it;
    }
    Error error(const char *key, const std::string &what) const {
        return makeError(ErrorCode::Format, m_source + ": field '" + key + "' " + what);
    }
    Result<int64_t> integer(const char *key, std::optional<int64_t> fallback = std::nullopt) const {
        const Json *v = find(key);
        if (!v) {
            if (fallback)
                return *fallback;
            return makeError(ErrorCode::Format,
                             m_source + ": missing required field '" + key + "'");
        }
        if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX))
            return error(key, "is out of range");
        if (!v->is_number_integer())
            return error(key, "must be an integer");
        return v->get<int64_t>();
    }
    Result<double> number(const char *key, std::optional<double> fallback = std::nullopt) const {
        const Json *v = find(key);
        if (!v) {
            if (fallback)
                return *fallback;
            return makeError(ErrorCode::Format,
                             m_source + ": missing required field '" + key + "'");
        }
        if (!v->is_number())
            return error(key, "must be a number");
        return v->get<double>();
    }
    Result<bool> boolean(const char *key, bool fallback) const {
        const Json *v = find(key);
        if (!v)
            return fallback;
        if (!v->is_boolean())
            return error(key, "must be true or false");
        return v->get<bool>();
    }
    Result<int32_t> tokenId(const Json &v, const char *key) const {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
            return error(key, "must hold non-negative 32-bit token ids");
        return int32_t(v.get<int64_t>());
    }
    // An id, a list of ids, or null (none).
    Result<std::vector<int32_t>> tokenIds(const char *key) const {
        std::vector<int32_t> ids;
        const Json *v = find(key);
        if (!v)
            return ids;
        if (!v->is_array()) {
            LOWBIT_TRY(int32_t id, tokenId(*v, key));
            ids.push_back(id);
            return ids;
        }
        for (const Json &item : *v) {
            LOWBIT_TRY(int32_t id, tokenId(item, key));
            ids.push_back(id);
        }
        return ids;
    }

private:
    const Json &m_json;
    std::string m_source;
};

Status checkArchitecture(const JsonFields &f, const std::string &source) {
    const Json *arch = f.find("architectures");
    const Json *type = f.find("model_type");
    if (!arch && !type)
        return makeError(ErrorCode::Format, source + ": missing required field 'model_type'");
    if (type && (!type->is_string() || type->get<std::string>() != "llama"))
        return makeError(ErrorCode::Unsupported, source + ": model_type " + type->dump() +
                                                     " is not supported (only \"llama\")");
    if (arch) {
        const bool isLlama =
            arch->is_array() && std::any_of(arch->begin(), arch->end(), [](const Json &a) {
                return a.is_string() && a.get<std::string>() == "LlamaForCausalLM";
            });
        if (!isLlama)
            return makeError(ErrorCode::Unsupported,
                             source + ": architectures " + arch->dump() +
                                 " is not supported (only LlamaForCausalLM)");
    }
    // Features of the Llama family that this engine does not implement.
    LOWBIT_TRY(bool attentionBias, f.boolean("attention_bias", false));
    LOWBIT_TRY(bool mlpBias, f.boolean("mlp_bias", false));
    if (attentionBias || mlpBias)
        return makeError(ErrorCode::Unsupported,
                         source + ": attention_bias/mlp_bias are not supported");
    if (const Json *act = f.find("hidden_act"); act && *act != "silu")
        return makeError(ErrorCode::Unsupported,
                         source + ": hidden_act " + act->dump() + " is not supported (only silu)");
    return {};
}

Result<RopeScaling> parseRopeScaling(const Json *v, const std::string &source) {
    RopeScaling rs;
    if (!v)
        return rs;
    if (!v->is_object())
        return makeError(ErrorCode::Format,
                         source + ": field 'rope_scaling' must be an object or null");
    const JsonFields f(*v, source + ": rope_scaling");
    const Json *type = f.find("rope_type");
    if (!type)
        type = f.find("type");
    const std::string name = type && type->is_string() ? type->get<std::string>() : "default";
    if (name == "default")
        return rs;
    if (name == "linear") {
        rs.type = RopeScaling::Type::Linear;
        LOWBIT_TRY(rs.factor, f.number("factor"));
        return rs;
    }
    if (name != "llama3")
        return makeError(ErrorCode::Unsupported,
                         source + ": rope_scaling type '" + name +
                             "' is not supported (llama3, linear, default)");
    rs.type = RopeScaling::Type::Llama3;
    LOWBIT_TRY(rs.factor, f.number("factor"));
    LOWBIT_TRY(rs.lowFreqFactor, f.number("low_freq_factor", 1.0));
    LOWBIT_TRY(rs.highFreqFactor, f.number("high_freq_factor", 4.0));
    LOWBIT_TRY(rs.originalMaxPositions, f.integer("original_max_position_embeddings", 8192));
    if (rs.originalMaxPositions <= 0)
        return f.error("original_max_position_embeddings", "must be positive");
    return rs;
}

Result<ModelConfig> parseConfig(const Json &json, const std::string &source) {
    if (!json.is_object())
        return makeError(ErrorCode::Format, source + ": not a JSON object");
    const JsonFields f(json, source);
    LOWBIT_CHECK(checkArchitecture(f, source));
    ModelConfig c;
    LOWBIT_TRY(c.vocabSize, f.integer("vocab_size"));
    LOWBIT_TRY(c.hiddenSize, f.integer("hidden_size"));
    LOWBIT_TRY(c.intermediateSize, f.integer("intermediate_size"));
    LOWBIT_TRY(c.numLayers, f.integer("num_hidden_layers"));
    LOWBIT_TRY(c.numHeads, f.integer("num_attention_heads"));
    if (c.numHeads <= 0)
        return f.error("num_attention_heads", "must be positive");
    LOWBIT_TRY(c.numKvHeads, f.integer("num_key_value_heads", c.numHeads));
    LOWBIT_TRY(c.headDim, f.integer("head_dim", c.hiddenSize / c.numHeads));
    LOWBIT_TRY(c.maxPositions, f.integer("max_position_embeddings", 2048));
    if (c.maxPositions <= 0)
        return f.error("max_position_embeddings", "must be positive");
    LOWBIT_TRY(c.rmsNormEps, f.number("rms_norm_eps", 1e-6));
    LOWBIT_TRY(c.ropeTheta, f.number("rope_theta", 10000.0));
    LOWBIT_TRY(c.tieWordEmbeddings, f.boolean("tie_word_embeddings", false));
    LOWBIT_TRY(c.ropeScaling, parseRopeScaling(f.find("rope_scaling"), source));
    // transformers' LlamaConfig defaults are bos 1, eos 2; an explicit null means none.
    if (!json.contains("bos_token_id")) {
        c.bosId = 1;
    } else {
        LOWBIT_TRY(std::vector<int32_t> bos, f.tokenIds("bos_token_id"));
        if (bos.size() > 1)
            return f.error("bos_token_id", "must be a single id");
        c.bosId = bos.empty() ? -1 : bos.front();
    }
    if (!json.contains("eos_token_id")) {
        c.eosIds = {2};
    } else {
        LOWBIT_TRY(c.eosIds, f.tokenIds("eos_token_id"));
    }
    return c;
}

// All tensors the checkpoint declares, by name, plus where they came from.
struct StoredWeights {
    std::map<std::string, Tensor> tensors;
    std::vector<std::string> files;
    std::string source; // the file a missing tensor is reported against
};

Result<StoredWeights> readSharded(const fs::path &dir, const fs::path &indexPath) {
    LOWBIT_TRY(Json index, readJsonFile(indexPath));
    const std::string source = indexPath.string();
    const auto map = index.is_object() ? index.find("weight_map") : index.end();
    if (map == index.end() || !map->is_object() || map->empty())
        return makeError(ErrorCode::Format, source + ": missing or empty 'weight_map' object");
    StoredWeights out;
    out.source = source;
    std::map<std::string, SafetensorsFile> shards;
    for (const auto &[tensorName, shardJson] : map->items()) {
        if (!shardJson.is_string())
            return makeError(ErrorCode::Format,
                             source + ": weight_map entry '" + tensorName + "' is not a file name");
        const std::string shard = shardJson.get<std::string>();
        // Shards live in the checkpoint directory; never follow a path elsewhere.
        if (shard.empty() || shard == "." || shard == ".." ||
            shard.find('/') != std::string::npos || shard.find('\\') != std::string::npos)
            return makeError(ErrorCode::Format, source + ": weight_map entry '" + tensorName +
                                                    "' names an invalid shard file '" + shard +
                                                    "'");
        auto it = shards.find(shard);
        if (it == shards.end()) {
            auto parsed = readSafetensors(dir / shard);
            if (!parsed.ok())
                return makeError(parsed.error().code,
                                 source + ": shard '" + shard +
                                     "' cannot be loaded: " + parsed.error().message);
            it = shards.emplace(shard, std::move(parsed).value()).first;
            out.files.push_back(shard);
        }
        const auto tensor = it->second.tensors.find(tensorName);
        if (tensor == it->second.tensors.end())
            return makeError(ErrorCode::NotFound,
                             (dir / shard).string() + ": tensor '" + tensorName +
                                 "' (listed in model.safetensors.index.json) is missing");
        out.tensors.emplace(tensorName, tensor->second);
    }
    return out;
}

Result<StoredWeights> readWeights(const fs::path &dir) {
    std::error_code ec;
    const fs::path indexPath = dir / "model.safetensors.index.json";
    if (fs::exists(indexPath, ec))
        return readSharded(dir, indexPath);
    const fs::path single = dir / "model.safetensors";
    if (!fs::exists(single, ec))
        return makeError(ErrorCode::NotFound,
                         dir.string() + ": no model.safetensors or model.safetensors.index.json");
    LOWBIT_TRY(SafetensorsFile file, readSafetensors(single));
    StoredWeights out;
    out.source = single.string();
    out.files.push_back("model.safetensors");
    out.tensors = std::move(file.tensors);
    return out;
}

// GPTQ / AWQ checkpoints (engine/io/gptq_checkpoint.h) are dequantized to the compute dtype
// (torch_dtype, else float16 as their kernels compute) while loading.
Result<StoredWeights> readWeightsOrPacked(const fs::path &dir, const Json &config,
                                          Checkpoint &ckpt) {
    LOWBIT_TRY(std::optional<PackedQuantConfig> packed, detectPackedQuantization(dir, config));
    if (!packed)
        return readWeights(dir);
    DType compute = DType::F16;
    for (const char *key : {"torch_dtype", "dtype"})
        if (const auto it = config.find(key); it != config.end() && it->is_string())
            compute = *it == "float32" ? DType::F32 : *it == "bfloat16" ? DType::BF16 : DType::F16;
    LOWBIT_TRY(PackedWeights weights, loadPackedQuantizedWeights(dir, *packed, compute));
    ckpt.metadata["quantization"] =
        std::string(packed->method == PackedQuantMethod::Awq ? "awq" : "gptq") + " " +
        std::to_string(packed->bits) + "-bit group " + std::to_string(packed->groupSize) +
        (packed->descAct ? " act-order" : "");
    ckpt.metadata["packed_linears"] = std::to_string(weights.packedLinears);
    return StoredWeights{std::move(weights.tensors), std::move(weights.files),
                         std::move(weights.source)};
}

class WeightMapper {
public:
    explicit WeightMapper(const StoredWeights &stored) : m_stored(stored) {}

    Result<Tensor> take(const std::string &name) {
        const auto it = m_stored.tensors.find(name);
        if (it == m_stored.tensors.end())
            return makeError(ErrorCode::NotFound,
                             m_stored.source + ": missing tensor '" + name + "'");
        m_used.insert(name);
        return it->second;
    }
    size_t unusedCount() const { return m_stored.tensors.size() - m_used.size(); }

private:
    const StoredWeights &m_stored;
    std::set<std::string> m_used;
};

Result<ModelWeights> mapWeights(WeightMapper &m, const ModelConfig &config) {
    ModelWeights w;
    LOWBIT_TRY(w.tokenEmbedding, m.take("model.embed_tokens.weight"));
    LOWBIT_TRY(w.finalNorm, m.take("model.norm.weight"));
    if (config.tieWordEmbeddings) {
        w.output = w.tokenEmbedding;
    } else {
        LOWBIT_TRY(w.output, m.take("lm_head.weight"));
    }
    w.layers.resize(size_t(config.numLayers));
    for (int64_t i = 0; i < config.numLayers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        LayerWeights &l = w.layers[size_t(i)];
        LOWBIT_TRY(l.attnNorm, m.take(p + "input_layernorm.weight"));
        LOWBIT_TRY(l.wq, m.take(p + "self_attn.q_proj.weight"));
        LOWBIT_TRY(l.wk, m.take(p + "self_attn.k_proj.weight"));
        LOWBIT_TRY(l.wv, m.take(p + "self_attn.v_proj.weight"));
        LOWBIT_TRY(l.wo, m.take(p + "self_attn.o_proj.weight"));
        LOWBIT_TRY(l.ffnNorm, m.take(p + "post_attention_layernorm.weight"));
        LOWBIT_TRY(l.wGate, m.take(p + "mlp.gate_proj.weight"));
        LOWBIT_TRY(l.wUp, m.take(p + "mlp.up_proj.weight"));
        LOWBIT_TRY(l.wDown, m.take(p + "mlp.down_proj.weight"));
    }
    return w;
}

Status loadTokenizerAndTemplate(const fs::path &dir, const LoadOptions &options, Checkpoint &ckpt) {
    std::error_code ec;
    const fs::path configPath = dir / "tokenizer_config.json";
    const bool hasConfig = fs::exists(configPath, ec);
    const fs::path tokenizerPath =
        options.tokenizerPath.empty() ? dir / "tokenizer.json" : options.tokenizerPath;
    if (fs::exists(tokenizerPath, ec)) {
        LOWBIT_TRY(ckpt.tokenizer,
                   loadHfTokenizer(tokenizerPath, hasConfig ? configPath : fs::path()));
    } else if (!options.tokenizerPath.empty()) {
        return makeError(ErrorCode::NotFound,
                         tokenizerPath.string() + ": tokenizer file not found");
    } else if (const fs::path vocabPath = dir / "lowbit_vocab.json"; fs::exists(vocabPath, ec)) {
        // Written by `lowbit quantize` for GGUF / llama2.c sources (engine/tokenizer/vocab_json.h).
        LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(vocabPath));
        LOWBIT_TRY(VocabExport vocab,
                   vocabFromJson({reinterpret_cast<const char *>(file->data()), file->size()},
                                 vocabPath.string()));
        auto tokenizer = makeTokenizerFromVocab(std::move(vocab));
        if (!tokenizer)
            return makeError(tokenizer.error().code,
                             vocabPath.string() + ": " + tokenizer.error().message);
        ckpt.tokenizer = std::move(tokenizer).value();
    }
    if (hasConfig) {
        LOWBIT_TRY(Json config, readJsonFile(configPath));
        const auto tmpl = config.is_object() ? config.find("chat_template") : config.end();
        if (tmpl != config.end() && tmpl->is_string()) {
            ckpt.chatTemplate = tmpl->get<std::string>();
        } else if (tmpl != config.end() && tmpl->is_array()) {
            // Several named templates: the one called "default" is the chat template.
            for (const Json &item : *tmpl)
                if (item.is_object() && item.value("name", Json()) == "default" &&
                    item.contains("template") && item["template"].is_string())
                    ckpt.chatTemplate = item["template"].get<std::string>();
        }
    }
    const fs::path jinja = dir / "chat_template.jinja"; // newer transformers save it separately
    if (ckpt.chatTemplate.empty() && fs::exists(jinja, ec)) {
        LOWBIT_TRY(std::shared_ptr<MappedFile> file, MappedFile::open(jinja));
        ckpt.chatTemplate.assign(reinterpret_cast<const char *>(file->data()), file->size());
    }
    return {};
}

Status loadGenerationConfig(const fs::path &dir, Checkpoint &ckpt) {
    std::error_code ec;
    const fs::path path = dir / "generation_config.json";
    if (!fs::exists(path, ec))
        return {};
    LOWBIT_TRY(Json json, readJsonFile(path));
    if (!json.is_object())
        return makeError(ErrorCode::Format, path.string() + ": not a JSON object");
    const JsonFields f(json, path.string());
    GenerationDefaults &g = ckpt.generation;
    LOWBIT_TRY(g.temperature, f.number("temperature", g.temperature));
    LOWBIT_TRY(g.topP, f.number("top_p", g.topP));
    LOWBIT_TRY(g.topK, f.integer("top_k", g.topK));
    LOWBIT_TRY(g.doSample, f.boolean("do_sample", g.doSample));
    // Instruct models list their end-of-turn ids here (Llama 3: <|eot_id|>); generation must
    // stop on them too.
    LOWBIT_TRY(std::vector<int32_t> eos, f.tokenIds("eos_token_id"));
    for (int32_t id : eos)
        if (std::find(ckpt.config.eosIds.begin(), ckpt.config.eosIds.end(), id) ==
            ckpt.config.eosIds.end())
            ckpt.config.eosIds.push_back(id);
    return {};
}

void fillMetadata(const Json &config, const StoredWeights &stored, size_t unused,
                  Checkpoint &ckpt) {
    std::set<std::string> dtypes;
    for (const auto &[name, t] : stored.tensors) {
        dtypes.insert(std::string(dtypeName(t.dtype)));
        ckpt.bytesByStoredType[std::string(dtypeName(t.dtype))] += t.bytes();
    }
    std::string joined;
    for (const std::string &d : dtypes)
        joined += (joined.empty() ? "" : ",") + d;
    ckpt.metadata["format"] = "safetensors";
    ckpt.metadata["safetensors_files"] = std::to_string(stored.files.size());
    ckpt.metadata["tensors"] = std::to_string(stored.tensors.size());
    ckpt.metadata["unused_tensors"] = std::to_string(unused);
    ckpt.metadata["stored_dtypes"] = joined;
    for (const char *key : {"torch_dtype", "dtype"}) // newer transformers write "dtype"
        if (const auto it = config.find(key); it != config.end() && it->is_string())
            ckpt.metadata["torch_dtype"] = it->get<std::string>();
    ckpt.metadata["architecture"] = "LlamaForCausalLM";
}

} // namespace

Result<Checkpoint> loadHuggingFaceCheckpoint(const std::filesystem::path &dir,
                                             const LoadOptions &options) {
    const fs::path configPath = dir / "config.json";
    LOWBIT_TRY(Json configJson, readJsonFile(configPath));
    Checkpoint ckpt;
    ckpt.path = dir;
    ckpt.format = CheckpointFormat::HuggingFace;
    LOWBIT_TRY(ckpt.config, parseConfig(configJson, configPath.string()));
    LOWBIT_CHECK(ckpt.config.validate(configPath.string()));

    LOWBIT_TRY(StoredWeights stored, readWeightsOrPacked(dir, configJson, ckpt));
    WeightMapper mapper(stored);
    LOWBIT_TRY(ckpt.weights, mapWeights(mapper, ckpt.config));
    LOWBIT_CHECK(ckpt.weights.validate(ckpt.config, stored.source));
    fillMetadata(configJson, stored, mapper.unusedCount(), ckpt);

    LOWBIT_CHECK(loadTokenizerAndTemplate(dir, options, ckpt));
    LOWBIT_CHECK(loadGenerationConfig(dir, ckpt));
    return ckpt;
}

} // namespace lowbit
