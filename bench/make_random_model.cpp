// make_random_model: writes random-weight models of LLaMA-3 shapes as GGUF, for bench_ppl to run
// through lowbit and llama.cpp side by side. The weights mean nothing (perplexity near the vocab
// size); only shapes, dtypes and the real Llama 3 tokenizer matter for throughput.
//
//   make_random_model [--preset 100m|1b] [--dtype f32,f16] [--out DIR] [--seed N] [--tokenizer DIR]
// Writes DIR/random-<preset>-<dtype>.gguf (DIR: build/bench-models). The same seed gives the same
// weights for every dtype: the F16 file holds the F32 file's values rounded to half precision.
#include "bench_support.h"

#include "io/gguf_writer.h"
#include "model/checkpoint.h"
#include "tokenizer/tokenizer_loaders.h"

#include <cmath>
#include <cstdio>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

namespace lowbit::bench {
namespace {

namespace fs = std::filesystem;

constexpr float kWeightStd = 0.02f; // LLaMA's initializer_range
constexpr float kNormStd = 0.02f;   // norms: 1 + N(0, kNormStd)

struct Options {
    std::vector<const ModelPreset *> presets;
    std::vector<DType> dtypes;
    fs::path outDir = defaultModelsDir();
    fs::path tokenizerDir = sharedDir() / "data" / "llama3_tokenizer";
    uint64_t seed = 20240723;
};

// splitmix64: a tiny, fast generator; quality is ample for benchmark weights.
class Random {
public:
    explicit Random(uint64_t seed) : m_state(seed) {}
    uint64_t next() {
        uint64_t z = (m_state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double uniform() { return double((next() >> 11) + 1) * 0x1.0p-53; } // in (0, 1]
    // Box-Muller: two independent N(0, 1) values per call.
    void normalPair(float &a, float &b) {
        const double r = std::sqrt(-2.0 * std::log(uniform()));
        const double t = 2.0 * std::numbers::pi * uniform();
        a = float(r * std::cos(t));
        b = float(r * std::sin(t));
    }

private:
    uint64_t m_state;
};

// One tensor of N(mean, std) values stored as `type`; each tensor has its own stream (seeded by
// its index) so the values do not depend on which dtype or which other tensors are generated.
Tensor randomTensor(std::string name, std::vector<int64_t> shape, DType type, uint64_t seed,
                    uint64_t index, float mean, float std) {
    Random rng(seed ^ (0x5851f42d4c957f2dull * (index + 1)));
    int64_t n = 1;
    for (int64_t d : shape)
        n *= d;
    std::vector<float> values(size_t(n + 1));
    for (int64_t i = 0; i < n; i += 2) {
        float a, b;
        rng.normalPair(a, b);
        values[size_t(i)] = mean + std * a;
        values[size_t(i + 1)] = mean + std * b;
    }
    return Tensor::fromFloats(std::move(name), std::move(shape), values.data(), type);
}

ModelWeights randomWeights(const ModelConfig &c, DType type, uint64_t seed) {
    const int64_t h = c.hiddenSize, q = c.numHeads * c.headDim, kv = c.numKvHeads * c.headDim;
    uint64_t index = 0;
    auto weight = [&](std::string name, std::vector<int64_t> shape) {
        return randomTensor(std::move(name), std::move(shape), type, seed, index++, 0.0f,
                            kWeightStd);
    };
    // Norm vectors stay F32, as llama.cpp's converters store them.
    auto norm = [&](std::string name) {
        return randomTensor(std::move(name), {h}, DType::F32, seed, index++, 1.0f, kNormStd);
    };
    ModelWeights w;
    w.tokenEmbedding = weight("model.embed_tokens.weight", {c.vocabSize, h});
    for (int64_t l = 0; l < c.numLayers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        LayerWeights lw;
        lw.attnNorm = norm(p + "input_layernorm.weight");
        lw.wq = weight(p + "self_attn.q_proj.weight", {q, h});
        lw.wk = weight(p + "self_attn.k_proj.weight", {kv, h});
        lw.wv = weight(p + "self_attn.v_proj.weight", {kv, h});
        lw.wo = weight(p + "self_attn.o_proj.weight", {h, q});
        lw.ffnNorm = norm(p + "post_attention_layernorm.weight");
        lw.wGate = weight(p + "mlp.gate_proj.weight", {c.intermediateSize, h});
        lw.wUp = weight(p + "mlp.up_proj.weight", {c.intermediateSize, h});
        lw.wDown = weight(p + "mlp.down_proj.weight", {h, c.intermediateSize});
        w.layers.push_back(std::move(lw));
    }
    w.finalNorm = norm("model.norm.weight");
    w.output = weight("lm_head.weight", {c.vocabSize, h});
    return w;
}

Result<Options> parseArgs(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (i + 1 >= argc)
            return makeError(ErrorCode::InvalidArgument, "unknown option or missing value: " + a);
        const std::string v = argv[++i];
        if (a == "--preset" || a == "--dtype") {
            std::stringstream ss(v);
            for (std::string item; std::getline(ss, item, ',');) {
                if (a == "--preset") {
                    const ModelPreset *p = findPreset(item);
                    if (!p)
                        return makeError(ErrorCode::InvalidArgument,
                                         "unknown preset '" + item + "' (100m, 1b)");
                    o.presets.push_back(p);
                } else {
                    std::string upper;
                    for (char ch : item)
                        upper += char(std::toupper(static_cast<unsigned char>(ch)));
                    const std::optional<DType> t = dtypeFromName(upper);
                    if (!t || *t == DType::BF16) // llama.cpp's CPU path for BF16 is not our target
                        return makeError(ErrorCode::InvalidArgument,
                                         "unknown dtype '" + item + "' (f32, f16)");
                    o.dtypes.push_back(*t);
                }
            }
        } else if (a == "--out") {
            o.outDir = v;
        } else if (a == "--tokenizer") {
            o.tokenizerDir = v;
        } else if (a == "--seed") {
            o.seed = std::strtoull(v.c_str(), nullptr, 10);
        } else {
            return makeError(ErrorCode::InvalidArgument, "unknown option " + a);
        }
    }
    if (o.presets.empty())
        for (const ModelPreset &p : kPresets)
            o.presets.push_back(&p);
    if (o.dtypes.empty())
        o.dtypes = {DType::F32, DType::F16};
    return o;
}

Status writeModel(const ModelPreset &preset, DType type,
                  const std::shared_ptr<const Tokenizer> &tokenizer, const Options &o) {
    std::string lower;
    for (char ch : dtypeName(type))
        lower += char(std::tolower(static_cast<unsigned char>(ch)));
    const fs::path file = o.outDir / ("random-" + std::string(preset.name) + "-" + lower + ".gguf");

    Checkpoint ck;
    ck.path = file;
    ck.format = CheckpointFormat::Gguf;
    ck.config = presetConfig(preset);
    ck.config.bosId = tokenizer->bosId();
    ck.config.eosIds = tokenizer->eosIds();
    ck.tokenizer = tokenizer;
    ck.metadata["general.name"] = "lowbit random " + std::string(preset.name);
    LOWBIT_CHECK(ck.config.validate(file.string()));

    const auto start = std::chrono::steady_clock::now();
    ck.weights = randomWeights(ck.config, type, o.seed);
    LOWBIT_CHECK(ck.weights.validate(ck.config, file.string()));
    const double genSeconds = secondsSince(start);

    const auto writeStart = std::chrono::steady_clock::now();
    LOWBIT_CHECK(writeGgufCheckpoint(ck, file, type == DType::F32 ? GgmlType::F32 : GgmlType::F16));
    std::error_code ec;
    const uintmax_t bytes = fs::file_size(file, ec);
    std::printf(
        "%s: preset %s, %lld params (hidden %lld, layers %lld, heads %lld/%lld kv, ffn %lld), "
        "%s, %.2f GB; generated in %.1f s, written in %.1f s\n",
        file.string().c_str(), std::string(preset.name).c_str(),
        (long long)ck.config.parameterCount(), (long long)preset.hidden, (long long)preset.layers,
        (long long)preset.heads, (long long)preset.kvHeads, (long long)preset.ffn,
        std::string(dtypeName(type)).c_str(), double(bytes) / 1e9, genSeconds,
        secondsSince(writeStart));
    std::fflush(stdout);
    return {};
}

int run(int argc, char **argv) {
    Result<Options> parsed = parseArgs(argc, argv);
    if (!parsed) {
        std::fprintf(stderr, "make_random_model: %s\n", parsed.error().message.c_str());
        return 2;
    }
    const Options &o = *parsed;
    Result<std::shared_ptr<const Tokenizer>> tokenizer = loadHfTokenizer(
        o.tokenizerDir / "tokenizer.json", o.tokenizerDir / "tokenizer_config.json");
    if (!tokenizer) {
        std::fprintf(stderr, "make_random_model: %s\n", tokenizer.error().toString().c_str());
        return 1;
    }
    std::error_code ec;
    fs::create_directories(o.outDir, ec);
    if (ec) {
        std::fprintf(stderr, "make_random_model: %s: %s\n", o.outDir.string().c_str(),
                     ec.message().c_str());
        return 1;
    }
    for (const ModelPreset *preset : o.presets) {
        for (DType type : o.dtypes) {
            if (Status s = writeModel(*preset, type, *tokenizer, o); !s) {
                std::fprintf(stderr, "make_random_model: %s\n", s.error().toString().c_str());
                return 1;
            }
        }
    }
    return 0;
}

} // namespace
} // namespace lowbit::bench

int main(int argc, char **argv) {
    return lowbit::bench::run(argc, argv);
}
