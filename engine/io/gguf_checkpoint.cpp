#include "io/gguf_checkpoint.h"
#include "quant/ggml_blocks_extra.h"

#include "tokenizer/tokenizer_loaders.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace lowbit {

namespace {

constexpr uint32_t kNoToken = 0xffffffffu; // llama.cpp writes "no such token" as u32 -1

Error formatError(const GgufFile &file, const std::string &what) {
    return makeError(ErrorCode::Format, file.source() + ": " + what);
}

Result<int64_t> requiredCount(const GgufFile &file, const std::string &key) {
    LOWBIT_TRY(uint32_t value, file.getU32(key));
    return int64_t(value);
}

Result<int64_t> optionalCount(const GgufFile &file, const std::string &key, int64_t fallback) {
    if (!file.has(key))
        return fallback;
    return requiredCount(file, key);
}

Result<double> optionalFloat(const GgufFile &file, const std::string &key, double fallback) {
    if (!file.has(key))
        return fallback;
    return file.getF64(key);
}

// llama.rope.scaling.* (linear) or the older llama.rope.scale_linear.
Status readRopeScalingKeys(const GgufFile &file, ModelConfig &config) {
    if (file.has("llama.rope.scaling.type")) {
        LOWBIT_TRY(std::string type, file.getString("llama.rope.scaling.type"));
        if (type == "none")
            return {};
        if (type != "linear")
            return makeError(ErrorCode::Unsupported,
                             file.source() + ": rope scaling type '" + type +
                                 "' is not supported (none, linear, or llama3 via rope_freqs)");
        config.ropeScaling.type = RopeScaling::Type::Linear;
        LOWBIT_TRY(config.ropeScaling.factor, file.getF64("llama.rope.scaling.factor"));
    } else if (file.has("llama.rope.scale_linear")) {
        LOWBIT_TRY(double factor, file.getF64("llama.rope.scale_linear"));
        if (factor != 1.0) {
            config.ropeScaling.type = RopeScaling::Type::Linear;
            config.ropeScaling.factor = factor;
        }
    }
    return {};
}

Result<ModelConfig> readConfig(const GgufFile &file) {
    if (!file.has("general.architecture"))
        return formatError(file, "metadata key 'general.architecture' is missing");
    LOWBIT_TRY(std::string arch, file.getString("general.architecture"));
    if (arch != "llama")
        return makeError(ErrorCode::Unsupported, file.source() + ": architecture '" + arch +
                                                     "' is not supported (only llama)");
    ModelConfig c;
    LOWBIT_TRY(c.maxPositions, requiredCount(file, "llama.context_length"));
    LOWBIT_TRY(c.hiddenSize, requiredCount(file, "llama.embedding_length"));
    LOWBIT_TRY(c.numLayers, requiredCount(file, "llama.block_count"));
    LOWBIT_TRY(c.intermediateSize, requiredCount(file, "llama.feed_forward_length"));
    LOWBIT_TRY(c.numHeads, requiredCount(file, "llama.attention.head_count"));
    LOWBIT_TRY(c.numKvHeads, optionalCount(file, "llama.attention.head_count_kv", c.numHeads));
    LOWBIT_TRY(c.rmsNormEps, file.getF64("llama.attention.layer_norm_rms_epsilon"));
    LOWBIT_TRY(c.ropeTheta, optionalFloat(file, "llama.rope.freq_base", 10000.0));
    if (c.numHeads <= 0)
        return formatError(file, "llama.attention.head_count is 0");
    LOWBIT_TRY(c.headDim,
               optionalCount(file, "llama.attention.key_length", c.hiddenSize / c.numHeads));
    LOWBIT_TRY(int64_t valueDim, optionalCount(file, "llama.attention.value_length", c.headDim));
    if (valueDim != c.headDim)
        return makeError(ErrorCode::Unsupported,
                         file.source() + ": attention value_length " + std::to_string(valueDim) +
                             " differs from key_length " + std::to_string(c.headDim));
    LOWBIT_TRY(int64_t ropeDim, optionalCount(file, "llama.rope.dimension_count", c.headDim));
    if (ropeDim != c.headDim)
        return makeError(ErrorCode::Unsupported,
                         file.source() + ": partial rotary embedding (rope.dimension_count " +
                             std::to_string(ropeDim) + " of head size " +
                             std::to_string(c.headDim) + ") is not supported");
    LOWBIT_CHECK(readRopeScalingKeys(file, c));
    if (file.has("llama.vocab_size")) {
        LOWBIT_TRY(c.vocabSize, requiredCount(file, "llama.vocab_size"));
    } else if (const GgufValue *tokens = file.find("tokenizer.ggml.tokens");
               tokens && tokens->type == GgufValueType::Array) {
        c.vocabSize = int64_t(tokens->array.size());
    } else if (const GgufTensorInfo *embd = file.findTensor("token_embd.weight");
               embd && embd->ne.size() == 2) {
        c.vocabSize = int64_t(embd->ne[1]);
    }
    return c;
}

// rope_freqs.weight holds, per frequency, the divisor llama.cpp applies (convert_hf_to_gguf's
// Llama 3 branch). We accept it when it equals base/scaled of ModelConfig's own Llama 3 formula
// with factor = its largest divisor and Meta's low/high/original parameters (1, 4, 8192).
Status readRopeFreqs(const GgufFile &file, const std::vector<float> &divisors, ModelConfig &c) {
    const std::string what = "tensor 'rope_freqs.weight'";
    if (int64_t(divisors.size()) != c.headDim / 2)
        return formatError(
            file, what + " has " + std::to_string(divisors.size()) +
                      " entries, expected head size / 2 = " + std::to_string(c.headDim / 2));
    ModelConfig candidate = c;
    candidate.ropeScaling.type = RopeScaling::Type::Llama3;
    candidate.ropeScaling.factor = *std::max_element(divisors.begin(), divisors.end());
    LOWBIT_TRY(candidate.ropeScaling.originalMaxPositions,
               optionalCount(file, "llama.rope.scaling.original_context_length", 8192));
    if (std::all_of(divisors.begin(), divisors.end(), [](float d) { return d == 1.0f; }))
        return {};
    ModelConfig plain = c;
    plain.ropeScaling = RopeScaling{};
    const std::vector<double> base = plain.ropeInverseFrequencies();
    const std::vector<double> scaled = candidate.ropeInverseFrequencies();
    for (size_t i = 0; i < divisors.size(); ++i) {
        const double expected = base[i] / scaled[i];
        if (!(std::fabs(double(divisors[i]) - expected) <= 1e-4 * expected))
            return makeError(ErrorCode::Unsupported,
                             file.source() + ": " + what + " entry " + std::to_string(i) + " (" +
                                 std::to_string(divisors[i]) +
                                 ") does not follow Llama 3 rope scaling (expected " +
                                 std::to_string(expected) + ")");
    }
    c.ropeScaling = candidate.ropeScaling;
    return {};
}

// The tensor decoded to F32 bytes (an owned buffer the Tensor can adopt without another copy).
Result<std::vector<std::byte>> decodeTensor(const GgufFile &file, const GgufTensorInfo &info) {
    if (info.elements == 0)
        return formatError(file, "tensor '" + info.name + "' has a zero dimension");
    const GgmlTypeInfo &type = ggmlTypeInfo(info.type);
    const bool extra = canDequantizeExtra(info.type); // Q2_K, Q3_K, IQ4_NL
    if (!type.canDequantize && !extra)
        return makeError(ErrorCode::Unsupported, file.source() + ": tensor '" + info.name +
                                                     "' has type " + std::string(type.name) +
                                                     ", which lowbit cannot decode yet");
    std::vector<std::byte> bytes(size_t(info.elements) * sizeof(float)); // new[] is float-aligned
    float *values = reinterpret_cast<float *>(bytes.data());
    Status decoded = extra ? dequantizeRowExtra(info.type, info.data.data(), values,
                                                int64_t(info.elements))
                           : dequantizeRow(info.type, info.data.data(), values,
                                           int64_t(info.elements));
    if (!decoded)
        return makeError(decoded.error().code, file.source() + ": tensor '" + info.name +
                                                   "': " + decoded.error().message);
    return bytes;
}

Result<Tensor> loadTensor(const GgufFile &file, const std::string &name) {
    const GgufTensorInfo *info = file.findTensor(name);
    if (!info)
        return makeError(ErrorCode::NotFound, file.source() + ": tensor '" + name + "' is missing");
    if (info->elements == 0)
        return formatError(file, "tensor '" + name + "' has a zero dimension");
    Tensor t;
    t.name = name;
    t.shape = info->shape();
    std::optional<DType> plain;
    if (info->type == GgmlType::F32)
        plain = DType::F32;
    if (info->type == GgmlType::F16)
        plain = DType::F16;
    if (info->type == GgmlType::BF16)
        plain = DType::BF16;
    if (plain) {
        t.dtype = *plain;
        // Views need natural alignment (the mapping is page-aligned and offsets are multiples of
        // general.alignment, so only odd alignments or borrowed bytes land here).
        if (reinterpret_cast<uintptr_t>(info->data.data()) % dtypeBytes(*plain) == 0) {
            t.data = info->data.data();
            t.owner = file.owner();
            return t;
        }
        std::vector<std::byte> copy(info->data.begin(), info->data.end());
        return Tensor::fromBytes(name, *plain, t.shape, std::move(copy));
    }
    LOWBIT_TRY(std::vector<std::byte> values, decodeTensor(file, *info));
    return Tensor::fromBytes(name, DType::F32, t.shape, std::move(values));
}

Result<ModelWeights> loadWeights(const GgufFile &file, const ModelConfig &config) {
    ModelWeights w;
    LOWBIT_TRY(w.tokenEmbedding, loadTensor(file, "token_embd.weight"));
    LOWBIT_TRY(w.finalNorm, loadTensor(file, "output_norm.weight"));
    if (file.findTensor("output.weight")) {
        LOWBIT_TRY(w.output, loadTensor(file, "output.weight"));
    } else {
        w.output = w.tokenEmbedding;
    }
    w.layers.resize(size_t(config.numLayers));
    for (int64_t i = 0; i < config.numLayers; ++i) {
        LayerWeights &l = w.layers[size_t(i)];
        const std::string p = "blk." + std::to_string(i) + ".";
        LOWBIT_TRY(l.attnNorm, loadTensor(file, p + "attn_norm.weight"));
        LOWBIT_TRY(l.wq, loadTensor(file, p + "attn_q.weight"));
        LOWBIT_TRY(l.wk, loadTensor(file, p + "attn_k.weight"));
        LOWBIT_TRY(l.wv, loadTensor(file, p + "attn_v.weight"));
        LOWBIT_TRY(l.wo, loadTensor(file, p + "attn_output.weight"));
        LOWBIT_TRY(l.ffnNorm, loadTensor(file, p + "ffn_norm.weight"));
        LOWBIT_TRY(l.wGate, loadTensor(file, p + "ffn_gate.weight"));
        LOWBIT_TRY(l.wUp, loadTensor(file, p + "ffn_up.weight"));
        LOWBIT_TRY(l.wDown, loadTensor(file, p + "ffn_down.weight"));
    }
    LOWBIT_CHECK(w.validate(config, file.source()));
    // Shapes are known good now, so the row permutation stays in bounds.
    for (LayerWeights &l : w.layers) {
        l.wq = permuteRopeRows(l.wq, config.numHeads, config.headDim);
        l.wk = permuteRopeRows(l.wk, config.numKvHeads, config.headDim);
    }
    return w;
}

Result<int32_t> tokenId(const GgufFile &file, const std::string &key, size_t vocabSize) {
    if (!file.has(key))
        return -1;
    LOWBIT_TRY(uint32_t id, file.getU32(key));
    if (id == kNoToken)
        return -1;
    if (id >= vocabSize)
        return formatError(file, key + " " + std::to_string(id) + " is outside the vocabulary of " +
                                     std::to_string(vocabSize) + " tokens");
    return int32_t(id);
}

Result<VocabExport> readVocab(const GgufFile &file) {
    VocabExport v;
    LOWBIT_TRY(v.tokens, file.getStringArray("tokenizer.ggml.tokens"));
    const size_t n = v.tokens.size();
    LOWBIT_TRY(v.model, file.getString("tokenizer.ggml.model"));
    if (file.has("tokenizer.ggml.pre")) {
        LOWBIT_TRY(v.pre, file.getString("tokenizer.ggml.pre"));
    }
    if (file.has("tokenizer.ggml.scores")) {
        LOWBIT_TRY(v.scores, file.getF32Array("tokenizer.ggml.scores"));
    }
    if (file.has("tokenizer.ggml.token_type")) {
        LOWBIT_TRY(v.tokenTypes, file.getI32Array("tokenizer.ggml.token_type"));
    }
    if (file.has("tokenizer.ggml.merges")) {
        LOWBIT_TRY(v.merges, file.getStringArray("tokenizer.ggml.merges"));
    }
    if (!v.scores.empty() && v.scores.size() != n)
        return formatError(file, "tokenizer.ggml.scores has " + std::to_string(v.scores.size()) +
                                     " entries for " + std::to_string(n) + " tokens");
    if (!v.tokenTypes.empty() && v.tokenTypes.size() != n)
        return formatError(file, "tokenizer.ggml.token_type has " +
                                     std::to_string(v.tokenTypes.size()) + " entries for " +
                                     std::to_string(n) + " tokens");
    LOWBIT_TRY(v.bosId, tokenId(file, "tokenizer.ggml.bos_token_id", n));
    LOWBIT_TRY(v.eosId, tokenId(file, "tokenizer.ggml.eos_token_id", n));
    LOWBIT_TRY(v.unkId, tokenId(file, "tokenizer.ggml.unknown_token_id", n));
    LOWBIT_TRY(v.padId, tokenId(file, "tokenizer.ggml.padding_token_id", n));
    // llama.cpp's defaults: SentencePiece vocabularies and the Llama 3 pre-tokenizer add BOS.
    v.addBos =
        v.model == "llama" || v.pre == "llama-bpe" || v.pre == "llama3" || v.pre == "llama-v3";
    if (file.has("tokenizer.ggml.add_bos_token")) {
        LOWBIT_TRY(v.addBos, file.getBool("tokenizer.ggml.add_bos_token"));
    }
    if (file.has("tokenizer.ggml.add_space_prefix")) { // SentencePiece's dummy prefix; default on
        LOWBIT_TRY(v.addSpacePrefix, file.getBool("tokenizer.ggml.add_space_prefix"));
    }
    return v;
}

Status readTokenizer(const GgufFile &file, const LoadOptions &options, Checkpoint &ckpt) {
    ModelConfig &c = ckpt.config;
    if (!options.tokenizerPath.empty()) {
        auto loaded = options.tokenizerPath.extension() == ".json"
                          ? loadHfTokenizer(options.tokenizerPath)
                          : loadLlama2cTokenizer(options.tokenizerPath, int32_t(c.vocabSize));
        if (!loaded)
            return loaded.error();
        ckpt.tokenizer = *loaded;
    } else if (file.has("tokenizer.ggml.tokens")) {
        LOWBIT_TRY(VocabExport vocab, readVocab(file));
        if (int64_t(vocab.tokens.size()) > c.vocabSize)
            return formatError(file, "the vocabulary has " + std::to_string(vocab.tokens.size()) +
                                         " tokens but the model only " +
                                         std::to_string(c.vocabSize) + " embeddings");
        auto made = makeTokenizerFromVocab(std::move(vocab));
        if (!made)
            return makeError(made.error().code, file.source() + ": " + made.error().message);
        ckpt.tokenizer = *made;
    }
    if (ckpt.tokenizer) {
        c.bosId = ckpt.tokenizer->bosId();
        c.eosIds = ckpt.tokenizer->eosIds();
    }
    // End-of-turn ids llama.cpp also stops at (Llama 3 instruct: <|eot_id|>, <|eom_id|>).
    for (const char *key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                            "tokenizer.ggml.eom_token_id"}) {
        LOWBIT_TRY(int32_t id, tokenId(file, key, size_t(c.vocabSize)));
        if (id >= 0 && std::find(c.eosIds.begin(), c.eosIds.end(), id) == c.eosIds.end())
            c.eosIds.push_back(id);
    }
    if (c.bosId < 0) {
        LOWBIT_TRY(c.bosId, tokenId(file, "tokenizer.ggml.bos_token_id", size_t(c.vocabSize)));
    }
    if (file.has("tokenizer.chat_template")) {
        LOWBIT_TRY(ckpt.chatTemplate, file.getString("tokenizer.chat_template"));
    }
    return {};
}

std::string describeValue(const GgufValue &v) {
    switch (v.type) {
    case GgufValueType::String: return v.s.size() > 120 ? v.s.substr(0, 120) + "..." : v.s;
    case GgufValueType::Array:
        return "array[" + std::to_string(v.array.size()) + "] of " +
               std::string(ggufValueTypeName(v.elementType));
    case GgufValueType::Bool: return v.u ? "true" : "false";
    case GgufValueType::F32:
    case GgufValueType::F64: return std::to_string(v.f);
    case GgufValueType::I8:
    case GgufValueType::I16:
    case GgufValueType::I32:
    case GgufValueType::I64: return std::to_string(v.i);
    default: return std::to_string(v.u);
    }
}

void fillMetadata(const GgufFile &file, Checkpoint &ckpt) {
    ckpt.metadata["gguf.version"] = std::to_string(file.version());
    ckpt.metadata["gguf.alignment"] = std::to_string(file.alignment());
    ckpt.metadata["gguf.tensor_count"] = std::to_string(file.tensors().size());
    for (const auto &[key, value] : file.metadata())
        ckpt.metadata[key] = describeValue(value);
    for (const GgufTensorInfo &t : file.tensors())
        ckpt.bytesByStoredType[std::string(ggmlTypeName(t.type))] += t.data.size();
}

} // namespace

Result<Checkpoint> checkpointFromGguf(const GgufFile &file, const LoadOptions &options) {
    Checkpoint ckpt;
    ckpt.format = CheckpointFormat::Gguf;
    if (file.tensors().empty())
        return formatError(file,
                           "has no tensors (a vocabulary-only GGUF cannot be run as a model)");
    LOWBIT_TRY(ckpt.config, readConfig(file));
    LOWBIT_CHECK(ckpt.config.validate(file.source()));
    if (const GgufTensorInfo *freqs = file.findTensor("rope_freqs.weight")) {
        LOWBIT_TRY(std::vector<std::byte> bytes, decodeTensor(file, *freqs));
        std::vector<float> divisors(bytes.size() / sizeof(float));
        std::memcpy(divisors.data(), bytes.data(), bytes.size());
        LOWBIT_CHECK(readRopeFreqs(file, divisors, ckpt.config));
    }
    LOWBIT_TRY(ckpt.weights, loadWeights(file, ckpt.config));
    ckpt.config.tieWordEmbeddings = file.findTensor("output.weight") == nullptr;
    LOWBIT_CHECK(readTokenizer(file, options, ckpt));
    fillMetadata(file, ckpt);
    return ckpt;
}

Result<Checkpoint> loadGgufCheckpoint(const std::filesystem::path &path,
                                      const LoadOptions &options) {
    LOWBIT_TRY(GgufFile file, GgufFile::open(path));
    LOWBIT_TRY(Checkpoint ckpt, checkpointFromGguf(file, options));
    ckpt.path = path;
    return ckpt;
}

} // namespace lowbit
