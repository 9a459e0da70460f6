#include "io/llama2c.h"

#include "core/mapped_file.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer_loaders.h"

#include <cstring>

namespace lowbit {

namespace {

struct Header {
    int32_t dim, hiddenDim, numLayers, numHeads, numKvHeads, vocabSize, seqLen;
};

constexpr uint64_t kHeaderBytes = 7 * 4;
// export.py's versioned formats (v1/v2) start with this magic instead of the legacy header.
constexpr uint32_t kVersionedMagic = 0x616b3432; // "ak42"

Status checkHeader(const Header &h, const std::string &name) {
    auto bad = [&](const char *field, int32_t value, const char *why) {
        return makeError(ErrorCode::Format, name + ": header field " + field + " is " +
                                                std::to_string(value) + " (" + why + ")");
    };
    if (h.dim <= 0)
        return bad("dim", h.dim, "must be positive");
    if (h.hiddenDim <= 0)
        return bad("hidden_dim", h.hiddenDim, "must be positive");
    if (h.numLayers <= 0)
        return bad("n_layers", h.numLayers, "must be positive");
    if (h.numHeads <= 0)
        return bad("n_heads", h.numHeads, "must be positive");
    if (h.numKvHeads <= 0)
        return bad("n_kv_heads", h.numKvHeads, "must be positive");
    if (h.vocabSize == 0 || h.vocabSize == INT32_MIN)
        return bad("vocab_size", h.vocabSize, "must be non-zero");
    if (h.seqLen <= 0)
        return bad("seq_len", h.seqLen, "must be positive");
    if (h.dim % h.numHeads != 0)
        return bad("n_heads", h.numHeads, "must divide dim");
    if (h.numHeads % h.numKvHeads != 0)
        return bad("n_kv_heads", h.numKvHeads, "must divide n_heads");
    if ((h.dim / h.numHeads) % 2 != 0)
        return bad("dim", h.dim, "dim / n_heads must be even for RoPE");
    return {};
}

// Element counts of the arrays in file order, with overflow checks: header values are untrusted.
struct Layout {
    uint64_t embed = 0, perLayerDim = 0, wq = 0, wkv = 0, ffn = 0, freq = 0, cls = 0;
    uint64_t totalBytes = 0;
};

bool mul(uint64_t a, uint64_t b, uint64_t &out) {
    return !__builtin_mul_overflow(a, b, &out);
}

std::optional<Layout> computeLayout(const Header &h) {
    const uint64_t dim = uint64_t(h.dim), hidden = uint64_t(h.hiddenDim),
                   layers = uint64_t(h.numLayers);
    const uint64_t vocab = uint64_t(h.vocabSize < 0 ? -int64_t(h.vocabSize) : h.vocabSize);
    const uint64_t headSize = dim / uint64_t(h.numHeads);
    const uint64_t kvDim = headSize * uint64_t(h.numKvHeads);
    Layout l;
    uint64_t dimDim = 0, kvDimDim = 0, hiddenDim = 0;
    if (!mul(vocab, dim, l.embed) || !mul(dim, dim, dimDim) || !mul(kvDim, dim, kvDimDim) ||
        !mul(hidden, dim, hiddenDim) || !mul(layers, dim, l.perLayerDim) ||
        !mul(layers, dimDim, l.wq) || !mul(layers, kvDimDim, l.wkv) ||
        !mul(layers, hiddenDim, l.ffn) || !mul(uint64_t(h.seqLen), headSize / 2, l.freq))
        return std::nullopt;
    l.cls = h.vocabSize < 0 ? l.embed : 0;
    // embed, rms_att, wq, wk, wv, wo, rms_ffn, w1, w2, w3, rms_final, freq real+imag, wcls
    const uint64_t counts[] = {l.embed, l.perLayerDim, l.wq,  l.wkv, l.wkv,  l.wq,   l.perLayerDim,
                               l.ffn,   l.ffn,         l.ffn, dim,   l.freq, l.freq, l.cls};
    uint64_t floats = 0;
    for (uint64_t c : counts)
        if (__builtin_add_overflow(floats, c, &floats))
            return std::nullopt;
    if (!mul(floats, 4, l.totalBytes) ||
        __builtin_add_overflow(l.totalBytes, kHeaderBytes, &l.totalBytes))
        return std::nullopt;
    return l;
}

// Hands out consecutive fp32 arrays of the image; the size check beforehand keeps it in range.
class Cursor {
public:
    Cursor(const std::byte *data, std::shared_ptr<const void> owner)
        : m_data(data), m_owner(std::move(owner)) {}

    // The next `count` matrices of `shape`, each named by `nameOf(i)`.
    template <typename NameOf>
    std::vector<Tensor> take(int64_t count, std::vector<int64_t> shape, NameOf nameOf) {
        std::vector<Tensor> out;
        for (int64_t i = 0; i < count; ++i) {
            Tensor t;
            t.name = nameOf(i);
            t.dtype = DType::F32;
            t.shape = shape;
            t.data = m_data + m_offset;
            t.owner = m_owner;
            m_offset += t.bytes();
            out.push_back(std::move(t));
        }
        return out;
    }
    Tensor takeOne(std::string name, std::vector<int64_t> shape) {
        return take(1, std::move(shape), [&](int64_t) { return name; }).front();
    }
    void skip(uint64_t bytes) { m_offset += bytes; }

private:
    const std::byte *m_data;
    std::shared_ptr<const void> m_owner;
    uint64_t m_offset = kHeaderBytes;
};

ModelConfig configFromHeader(const Header &h) {
    ModelConfig c;
    c.vocabSize = h.vocabSize < 0 ? -int64_t(h.vocabSize) : h.vocabSize;
    c.hiddenSize = h.dim;
    c.intermediateSize = h.hiddenDim;
    c.numLayers = h.numLayers;
    c.numHeads = h.numHeads;
    c.numKvHeads = h.numKvHeads;
    c.headDim = h.dim / h.numHeads;
    c.maxPositions = h.seqLen;
    c.rmsNormEps = 1e-5;   // llama2.c model.py / run.c
    c.ropeTheta = 10000.0; // the freq_cis tables were built with theta 10000
    c.tieWordEmbeddings = h.vocabSize > 0;
    c.bosId = 1;
    c.eosIds = {2};
    return c;
}

ModelWeights weightsFromImage(const ModelConfig &c, Cursor &cur) {
    const int64_t L = c.numLayers, dim = c.hiddenSize, hidden = c.intermediateSize;
    const int64_t kvDim = c.numKvHeads * c.headDim;
    auto layerName = [](const char *suffix) {
        return [suffix](int64_t i) { return "model.layers." + std::to_string(i) + "." + suffix; };
    };
    ModelWeights w;
    w.tokenEmbedding = cur.takeOne("model.embed_tokens.weight", {c.vocabSize, dim});
    const auto attnNorm = cur.take(L, {dim}, layerName("input_layernorm.weight"));
    const auto wq = cur.take(L, {dim, dim}, layerName("self_attn.q_proj.weight"));
    const auto wk = cur.take(L, {kvDim, dim}, layerName("self_attn.k_proj.weight"));
    const auto wv = cur.take(L, {kvDim, dim}, layerName("self_attn.v_proj.weight"));
    const auto wo = cur.take(L, {dim, dim}, layerName("self_attn.o_proj.weight"));
    const auto ffnNorm = cur.take(L, {dim}, layerName("post_attention_layernorm.weight"));
    const auto w1 = cur.take(L, {hidden, dim}, layerName("mlp.gate_proj.weight"));
    const auto w2 = cur.take(L, {dim, hidden}, layerName("mlp.down_proj.weight"));
    const auto w3 = cur.take(L, {hidden, dim}, layerName("mlp.up_proj.weight"));
    w.finalNorm = cur.takeOne("model.norm.weight", {dim});
    // freq_cis_real/imag: RoPE tables for theta 10000, recomputed by the forward pass instead.
    cur.skip(2 * uint64_t(c.maxPositions) * uint64_t(c.headDim / 2) * 4);
    w.output =
        c.tieWordEmbeddings ? w.tokenEmbedding : cur.takeOne("lm_head.weight", {c.vocabSize, dim});

    w.layers.resize(size_t(L));
    for (size_t i = 0; i < size_t(L); ++i) {
        LayerWeights &l = w.layers[i];
        l.attnNorm = attnNorm[i];
        // run.c applies RoPE to interleaved pairs (2j, 2j+1); the engine rotates halves.
        l.wq = permuteRopeRows(wq[i], c.numHeads, c.headDim);
        l.wk = permuteRopeRows(wk[i], c.numKvHeads, c.headDim);
        l.wv = wv[i];
        l.wo = wo[i];
        l.ffnNorm = ffnNorm[i];
        l.wGate = w1[i];
        l.wDown = w2[i];
        l.wUp = w3[i];
    }
    return w;
}

} // namespace

Result<Llama2cModel> parseLlama2c(std::span<const std::byte> bytes, const std::string &name,
                                  std::shared_ptr<const void> owner) {
    if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(float) != 0) {
        auto copy = std::make_shared<std::vector<std::byte>>(bytes.begin(), bytes.end());
        return parseLlama2c(*copy, name, copy);
    }
    if (bytes.size() < kHeaderBytes)
        return makeError(ErrorCode::Format, name + ": file is too short (" +
                                                std::to_string(bytes.size()) +
                                                " bytes) for the 28-byte llama2.c header");
    uint32_t magic = 0;
    std::memcpy(&magic, bytes.data(), 4);
    if (magic == kVersionedMagic)
        return makeError(ErrorCode::Unsupported,
                         name + ": llama2.c versioned export (magic \"ak42\") is not supported; "
                                "export with --version 0 (legacy float32)");
    Header h{};
    std::memcpy(&h, bytes.data(), kHeaderBytes);
    LOWBIT_CHECK(checkHeader(h, name));
    const std::optional<Layout> layout = computeLayout(h);
    if (!layout)
        return makeError(ErrorCode::Format, name + ": header dimensions overflow 64-bit sizes");
    if (layout->totalBytes != bytes.size())
        return makeError(ErrorCode::Format, name + ": wrong file size: the header implies " +
                                                std::to_string(layout->totalBytes) +
                                                " bytes, the file has " +
                                                std::to_string(bytes.size()));
    Llama2cModel model;
    model.config = configFromHeader(h);
    LOWBIT_CHECK(model.config.validate(name));
    Cursor cursor(bytes.data(), std::move(owner));
    model.weights = weightsFromImage(model.config, cursor);
    LOWBIT_CHECK(model.weights.validate(model.config, name));
    return model;
}

namespace {

// An explicit tokenizer must load; otherwise tok<vocab>.bin, then tokenizer.bin, beside the model.
// tok<vocab>.bin comes first because llama2.c's default tokenizer.bin is the 32000-piece Llama 2
// vocabulary, which is wrong for custom-vocabulary models such as stories260K.
Status attachTokenizer(const std::filesystem::path &file, const LoadOptions &options,
                       Checkpoint &ckpt) {
    const int32_t vocab = int32_t(ckpt.config.vocabSize);
    if (!options.tokenizerPath.empty()) {
        LOWBIT_TRY(ckpt.tokenizer, loadLlama2cTokenizer(options.tokenizerPath, vocab));
        ckpt.metadata["tokenizer"] = options.tokenizerPath.string();
        return {};
    }
    const std::filesystem::path dir = file.parent_path();
    for (const std::filesystem::path &candidate :
         {dir / ("tok" + std::to_string(vocab) + ".bin"), dir / "tokenizer.bin"}) {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(candidate, ec))
            continue;
        LOWBIT_TRY(ckpt.tokenizer, loadLlama2cTokenizer(candidate, vocab));
        ckpt.metadata["tokenizer"] = candidate.string();
        return {};
    }
    return {};
}

} // namespace

Result<Checkpoint> loadLlama2cCheckpoint(const std::filesystem::path &file,
                                         const LoadOptions &options) {
    LOWBIT_TRY(std::shared_ptr<MappedFile> mapping, MappedFile::open(file));
    LOWBIT_TRY(Llama2cModel model, parseLlama2c(mapping->bytes(), file.string(), mapping));
    Checkpoint ckpt;
    ckpt.path = file;
    ckpt.format = CheckpointFormat::Llama2c;
    ckpt.config = std::move(model.config);
    ckpt.weights = std::move(model.weights);
    ckpt.metadata["format"] = "llama2c";
    ckpt.metadata["stored_dtypes"] = "F32";
    ckpt.metadata["shared_classifier"] = ckpt.config.tieWordEmbeddings ? "yes" : "no";
    ckpt.bytesByStoredType["F32"] = mapping->size() - kHeaderBytes;
    LOWBIT_CHECK(attachTokenizer(file, options, ckpt));
    return ckpt;
}

} // namespace lowbit
