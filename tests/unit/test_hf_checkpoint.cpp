// Hugging Face checkpoint loader: the shared fixtures (values checked against numbers read from the
// files' bytes by an independent Python script), a small model written here with random weights,
// and broken directories, each of which must give an error naming the file and the problem.
#include "io/safetensors.h"
#include "model/checkpoint.h"
#include "shared_data.h"

#include <QTemporaryDir>
#include <QtTest>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <functional>
#include <random>

using namespace lowbit;
namespace fs = std::filesystem;
using Json = nlohmann::json;

namespace {

// A tiny LLaMA with head_dim set explicitly (hidden 8, 2 heads of 6, 1 kv head).
constexpr int64_t kVocab = 16, kHidden = 8, kFfn = 12, kLayers = 2, kHeads = 2, kKvHeads = 1,
                  kHeadDim = 6;

Json tinyConfig() {
    return Json{{"architectures", {"LlamaForCausalLM"}},
                {"model_type", "llama"},
                {"vocab_size", kVocab},
                {"hidden_size", kHidden},
                {"intermediate_size", kFfn},
                {"num_hidden_layers", kLayers},
                {"num_attention_heads", kHeads},
                {"num_key_value_heads", kKvHeads},
                {"head_dim", kHeadDim},
                {"max_position_embeddings", 64},
                {"rms_norm_eps", 1e-6},
                {"rope_theta", 250000.0},
                {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}},
                {"tie_word_embeddings", false},
                {"bos_token_id", 3},
                {"eos_token_id", 4}};
}

std::vector<Tensor> tinyTensors(std::mt19937 &rng) {
    std::normal_distribution<float> dist(0.0f, 0.5f);
    std::vector<Tensor> out;
    auto add = [&](const std::string &name, std::vector<int64_t> shape) {
        int64_t n = 1;
        for (int64_t d : shape)
            n *= d;
        std::vector<float> v(static_cast<size_t>(n));
        for (float &x : v)
            x = dist(rng);
        out.push_back(Tensor::fromFloats(name, shape, v.data(), DType::F32));
    };
    add("model.embed_tokens.weight", {kVocab, kHidden});
    add("lm_head.weight", {kVocab, kHidden});
    add("model.norm.weight", {kHidden});
    for (int64_t i = 0; i < kLayers; ++i) {
        const std::string p = "model.layers." + std::to_string(i) + ".";
        add(p + "input_layernorm.weight", {kHidden});
        add(p + "post_attention_layernorm.weight", {kHidden});
        add(p + "self_attn.q_proj.weight", {kHeads * kHeadDim, kHidden});
        add(p + "self_attn.k_proj.weight", {kKvHeads * kHeadDim, kHidden});
        add(p + "self_attn.v_proj.weight", {kKvHeads * kHeadDim, kHidden});
        add(p + "self_attn.o_proj.weight", {kHidden, kHeads * kHeadDim});
        add(p + "mlp.gate_proj.weight", {kFfn, kHidden});
        add(p + "mlp.up_proj.weight", {kFfn, kHidden});
        add(p + "mlp.down_proj.weight", {kHidden, kFfn});
    }
    return out;
}

void writeText(const fs::path &path, const std::string &text) {
    std::ofstream(path, std::ios::binary) << text;
}

void rewriteConfig(const fs::path &dir, const std::function<void(Json &)> &edit) {
    Json config = Json::parse(test::readFile(dir / "config.json"));
    edit(config);
    writeText(dir / "config.json", config.dump(1));
}

void rewriteWeights(const fs::path &dir, const std::function<void(std::vector<Tensor> &)> &edit) {
    auto file = readSafetensors(dir / "model.safetensors");
    QVERIFY(file.ok());
    std::vector<Tensor> tensors;
    for (auto &[name, t] : file->tensors)
        tensors.push_back(t);
    edit(tensors);
    QVERIFY(writeSafetensors(dir / "model.safetensors", tensors).ok());
}

std::vector<Tensor> without(std::vector<Tensor> tensors, const std::string &name) {
    std::erase_if(tensors, [&](const Tensor &t) { return t.name == name; });
    return tensors;
}

// Index mapping every tensor of model.safetensors (plus `extra` names) to `shard`.
std::string indexFor(const fs::path &dir, const std::string &shard,
                     const std::vector<std::string> &extra = {}) {
    auto file = readSafetensors(dir / "model.safetensors");
    Json map = Json::object();
    if (file.ok())
        for (const auto &[name, t] : file->tensors)
            map[name] = shard;
    for (const std::string &name : extra)
        map[name] = shard;
    return Json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump();
}

float at(const Tensor &t, int64_t row, int64_t col) {
    return tensorToFloats(t)[size_t(row * t.cols() + col)];
}

using Mutation = std::function<void(const fs::path &dir)>;

} // namespace

Q_DECLARE_METATYPE(Mutation)

class TestHfCheckpoint : public QObject {
    Q_OBJECT
private slots:
    void loadsShardedBf16FixtureA();
    void loadsTiedF16FixtureB();
    void loadsWrittenModelWithExtras();
    void rejectsBrokenCheckpoints_data();
    void rejectsBrokenCheckpoints();
    void rejectsMissingTokenizerOverride();

private:
    fs::path writeTinyModel(const QTemporaryDir &dir, std::vector<Tensor> *tensorsOut = nullptr);
};

fs::path TestHfCheckpoint::writeTinyModel(const QTemporaryDir &tmp,
                                          std::vector<Tensor> *tensorsOut) {
    std::mt19937 rng(std::random_device{}());
    const fs::path dir = fs::path(tmp.path().toStdString()) / "tiny-model";
    fs::create_directories(dir);
    writeText(dir / "config.json", tinyConfig().dump(1));
    std::vector<Tensor> tensors = tinyTensors(rng);
    if (!writeSafetensors(dir / "model.safetensors", tensors, {{"format", "pt"}}).ok())
        qFatal("cannot write the test model");
    if (tensorsOut)
        *tensorsOut = tensors;
    return dir;
}

void TestHfCheckpoint::loadsShardedBf16FixtureA() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ckpt = loadCheckpoint(dir);
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    const ModelConfig &c = ckpt->config;
    QCOMPARE(ckpt->format, CheckpointFormat::HuggingFace);
    QCOMPARE(c.vocabSize, 512);
    QCOMPARE(c.hiddenSize, 64);
    QCOMPARE(c.intermediateSize, 176);
    QCOMPARE(c.numLayers, 2);
    QCOMPARE(c.numHeads, 4);
    QCOMPARE(c.numKvHeads, 2);
    QCOMPARE(c.headDim, 16);
    QCOMPARE(c.maxPositions, 131072);
    QCOMPARE(c.rmsNormEps, 1e-5);
    QCOMPARE(c.ropeTheta, 500000.0);
    QCOMPARE(c.ropeScaling.type, RopeScaling::Type::Llama3);
    QCOMPARE(c.ropeScaling.factor, 8.0);
    QCOMPARE(c.ropeScaling.lowFreqFactor, 1.0);
    QCOMPARE(c.ropeScaling.highFreqFactor, 4.0);
    QCOMPARE(c.ropeScaling.originalMaxPositions, 8192);
    QCOMPARE(c.tieWordEmbeddings, false);
    QCOMPARE(c.bosId, 0);
    QCOMPARE(c.eosIds, std::vector<int32_t>{1});

    const ModelWeights &w = ckpt->weights;
    QCOMPARE(w.tokenEmbedding.dtype, DType::BF16); // kept as stored
    QVERIFY(w.output.data != w.tokenEmbedding.data);
    // Expected values read from the shard bytes with Python's json + struct.
    QCOMPARE(at(w.tokenEmbedding, 3, 5), 0.16796875f);
    QCOMPARE(at(w.output, 511, 63), 0.033203125f);
    QCOMPARE(at(w.layers[1].wq, 10, 7), 0.07958984375f); // from the second shard
    QCOMPARE(at(w.finalNorm, 0, 0), 0.9140625f);
    QCOMPARE(at(w.layers[0].wDown, 63, 175), -0.09716796875f);

    QCOMPARE(ckpt->metadata.at("safetensors_files"), std::string("2"));
    QCOMPARE(ckpt->metadata.at("stored_dtypes"), std::string("BF16"));
    // 158016 parameters (512x64 embedding and head, 2 layers of 46208, final norm 64) x 2 bytes.
    QCOMPARE(ckpt->bytesByStoredType.at("BF16"), uint64_t(316032));
    QVERIFY(!ckpt->tokenizer); // the fixture has no tokenizer.json
}

void TestHfCheckpoint::loadsTiedF16FixtureB() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-b");
    auto ckpt = loadHuggingFaceCheckpoint(dir, {});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    const ModelConfig &c = ckpt->config;
    QCOMPARE(c.vocabSize, 128256);
    QCOMPARE(c.hiddenSize, 32);
    QCOMPARE(c.intermediateSize, 96);
    QCOMPARE(c.numKvHeads, 1);
    QCOMPARE(c.headDim, 8);
    QCOMPARE(c.tieWordEmbeddings, true);
    QCOMPARE(c.bosId, 128000);
    QCOMPARE(c.eosIds, (std::vector<int32_t>{128001, 128009}));

    const ModelWeights &w = ckpt->weights;
    QCOMPARE(w.tokenEmbedding.dtype, DType::F16);
    QCOMPARE(w.output.data, w.tokenEmbedding.data); // tied: one tensor
    QCOMPARE(at(w.tokenEmbedding, 128000, 0), -0.056915283203125f);
    QCOMPARE(at(w.output, 128255, 31), 1.765625f);
    QCOMPARE(at(w.layers[1].wDown, 31, 95), 0.066162109375f);
    QCOMPARE(at(w.layers[0].wk, 7, 2), 0.130859375f);
    QCOMPARE(ckpt->metadata.at("safetensors_files"), std::string("1"));

    QVERIFY(ckpt->chatTemplate.starts_with("{% set loop_messages = messages %}"));
    QVERIFY(ckpt->tokenizer);
    QCOMPARE(ckpt->tokenizer->vocabSize(), 128256);
}

void TestHfCheckpoint::loadsWrittenModelWithExtras() {
    QTemporaryDir tmp;
    std::vector<Tensor> written;
    const fs::path dir = writeTinyModel(tmp, &written);
    writeText(
        dir / "generation_config.json",
        R"({"temperature": 0.6, "top_p": 0.9, "top_k": 40, "do_sample": true, "eos_token_id": [4, 9]})");
    writeText(
        dir / "tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]})");
    auto ckpt = loadCheckpoint(dir);
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    const ModelConfig &c = ckpt->config;
    QCOMPARE(c.headDim, kHeadDim);
    QCOMPARE(c.rmsNormEps, 1e-6);
    QCOMPARE(c.ropeTheta, 250000.0);
    QCOMPARE(c.ropeScaling.type, RopeScaling::Type::Linear);
    QCOMPARE(c.ropeScaling.factor, 2.0);
    QCOMPARE(c.bosId, 3);
    QCOMPARE(c.eosIds, (std::vector<int32_t>{4, 9})); // config's eos plus generation_config's
    QCOMPARE(ckpt->generation.temperature, 0.6);
    QCOMPARE(ckpt->generation.topP, 0.9);
    QCOMPARE(ckpt->generation.topK, 40);
    QCOMPARE(ckpt->generation.doSample, true);
    QCOMPARE(ckpt->chatTemplate, std::string("D"));

    // Every weight holds exactly the bytes written, under the role its name says.
    auto same = [&](const Tensor &got, const std::string &name) {
        for (const Tensor &t : written)
            if (t.name == name)
                return got.dtype == t.dtype && got.shape == t.shape &&
                       std::memcmp(got.data, t.data, t.bytes()) == 0;
        return false;
    };
    const ModelWeights &w = ckpt->weights;
    QVERIFY(same(w.tokenEmbedding, "model.embed_tokens.weight"));
    QVERIFY(same(w.output, "lm_head.weight"));
    QVERIFY(same(w.finalNorm, "model.norm.weight"));
    QVERIFY(same(w.layers[1].attnNorm, "model.layers.1.input_layernorm.weight"));
    QVERIFY(same(w.layers[1].ffnNorm, "model.layers.1.post_attention_layernorm.weight"));
    QVERIFY(same(w.layers[0].wq, "model.layers.0.self_attn.q_proj.weight"));
    QVERIFY(same(w.layers[1].wk, "model.layers.1.self_attn.k_proj.weight"));
    QVERIFY(same(w.layers[1].wv, "model.layers.1.self_attn.v_proj.weight"));
    QVERIFY(same(w.layers[0].wo, "model.layers.0.self_attn.o_proj.weight"));
    QVERIFY(same(w.layers[1].wGate, "model.layers.1.mlp.gate_proj.weight"));
    QVERIFY(same(w.layers[0].wUp, "model.layers.0.mlp.up_proj.weight"));
    QVERIFY(same(w.layers[1].wDown, "model.layers.1.mlp.down_proj.weight"));
    QCOMPARE(ckpt->metadata.at("unused_tensors"), std::string("0"));

    // Tied: lm_head is then ignored and the head is the embedding.
    rewriteConfig(dir, [](Json &j) { j["tie_word_embeddings"] = true; });
    auto tied = loadCheckpoint(dir);
    QVERIFY(tied.ok());
    QCOMPARE(tied->weights.output.data, tied->weights.tokenEmbedding.data);
    QCOMPARE(tied->metadata.at("unused_tensors"), std::string("1"));
}

void TestHfCheckpoint::rejectsBrokenCheckpoints_data() {
    QTest::addColumn<Mutation>("mutate");
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("phrase");
    QTest::addColumn<int>("code");
    const int format = int(ErrorCode::Format), unsupported = int(ErrorCode::Unsupported);
    const int notFound = int(ErrorCode::NotFound);
    auto config = [](std::function<void(Json &)> edit) {
        return Mutation([edit](const fs::path &dir) { rewriteConfig(dir, edit); });
    };

    QTest::newRow("config.json missing")
        << Mutation([](const fs::path &d) { fs::remove(d / "config.json"); }) << "config.json"
        << "cannot open" << notFound;
    QTest::newRow("config.json invalid JSON") << Mutation([](const fs::path &d) {
        writeText(d / "config.json", R"({"hidden_size": 8,,})");
    }) << "config.json"
                                              << "invalid JSON" << format;
    QTest::newRow("config field missing")
        << config([](Json &j) { j.erase("intermediate_size"); }) << "config.json"
        << "missing required field 'intermediate_size'" << format;
    QTest::newRow("config field wrong type")
        << config([](Json &j) { j["hidden_size"] = "8"; }) << "config.json"
        << "'hidden_size' must be an integer" << format;
    QTest::newRow("config negative size")
        << config([](Json &j) { j["hidden_size"] = -8; }) << "config.json"
        << "hidden_size must be positive" << format;
    QTest::newRow("kv heads do not divide heads")
        << config([](Json &j) { j["num_key_value_heads"] = 3; }) << "config.json"
        << "num_key_value_heads" << format;
    QTest::newRow("unsupported architecture") << config([](Json &j) {
        j["architectures"] = {"MistralForCausalLM"};
        j.erase("model_type");
    }) << "config.json"
                                              << "MistralForCausalLM" << unsupported;
    QTest::newRow("unsupported model_type")
        << config([](Json &j) { j["model_type"] = "gpt_neox"; }) << "config.json"
        << "model_type \"gpt_neox\"" << unsupported;
    QTest::newRow("unsupported rope scaling") << config([](Json &j) {
        j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
    }) << "config.json"
                                              << "rope_scaling type 'yarn'" << unsupported;
    QTest::newRow("rope scaling without factor") << config([](Json &j) {
        j["rope_scaling"] = {{"rope_type", "llama3"}};
    }) << "config.json"
                                                 << "rope_scaling: missing required field 'factor'"
                                                 << format;
    QTest::newRow("eos id not a number")
        << config([](Json &j) { j["eos_token_id"] = "</s>"; }) << "config.json"
        << "eos_token_id" << format;
    QTest::newRow("missing tensor") << Mutation([](const fs::path &d) {
        rewriteWeights(d, [](auto &t) { t = without(t, "model.layers.1.mlp.up_proj.weight"); });
    }) << "model.safetensors"
                                    << "missing tensor 'model.layers.1.mlp.up_proj.weight'"
                                    << notFound;
    QTest::newRow("untied without lm_head") << Mutation([](const fs::path &d) {
        rewriteWeights(d, [](auto &t) { t = without(t, "lm_head.weight"); });
    }) << "model.safetensors"
                                            << "missing tensor 'lm_head.weight'" << notFound;
    QTest::newRow("tensor of wrong shape") << Mutation([](const fs::path &d) {
        rewriteWeights(d, [](auto &t) {
            t = without(t, "model.layers.0.self_attn.v_proj.weight");
            const float v[kHidden * 5] = {0.25f, -1.0f};
            t.push_back(
                Tensor::fromFloats("model.layers.0.self_attn.v_proj.weight", {5, kHidden}, v));
        });
    }) << "model.safetensors"
                                           << "has shape [5, 8], expected [6, 8]" << format;
    QTest::newRow("corrupt safetensors")
        << Mutation([](const fs::path &d) { fs::resize_file(d / "model.safetensors", 5); })
        << "model.safetensors"
        << "truncated" << format;
    QTest::newRow("no weights file")
        << Mutation([](const fs::path &d) { fs::remove(d / "model.safetensors"); }) << "tiny-model"
        << "no model.safetensors or model.safetensors.index.json" << notFound;
    QTest::newRow("index invalid JSON") << Mutation([](const fs::path &d) {
        writeText(d / "model.safetensors.index.json", R"({"weight_map": {)");
    }) << "model.safetensors.index.json"
                                        << "invalid JSON" << format;
    QTest::newRow("index without weight_map") << Mutation([](const fs::path &d) {
        writeText(d / "model.safetensors.index.json", R"({"metadata": {}})");
    }) << "model.safetensors.index.json"
                                              << "'weight_map'" << format;
    QTest::newRow("missing shard") << Mutation([](const fs::path &d) {
        writeText(d / "model.safetensors.index.json",
                  indexFor(d, "model-00002-of-00002.safetensors"));
    }) << "model-00002-of-00002.safetensors"
                                   << "shard 'model-00002-of-00002.safetensors' cannot be loaded"
                                   << notFound;
    QTest::newRow("tensor missing from its shard")
        << Mutation([](const fs::path &d) {
               writeText(d / "model.safetensors.index.json",
                         indexFor(d, "model.safetensors",
                                  {"model.layers.0.self_attn.rotary_emb.inv_freq"}));
           })
        << "model.safetensors"
        << "'model.layers.0.self_attn.rotary_emb.inv_freq' (listed in" << notFound;
    QTest::newRow("shard outside the directory") << Mutation([](const fs::path &d) {
        writeText(d / "model.safetensors.index.json", indexFor(d, "../model.safetensors"));
    }) << "model.safetensors.index.json"
                                                 << "invalid shard file '../model.safetensors'"
                                                 << format;
    QTest::newRow("generation_config wrong type") << Mutation([](const fs::path &d) {
        writeText(d / "generation_config.json", R"({"temperature": "hot"})");
    }) << "generation_config.json"
                                                  << "'temperature' must be a number" << format;
    QTest::newRow("tokenizer_config invalid JSON") << Mutation([](const fs::path &d) {
        writeText(d / "tokenizer_config.json", "{chat_template");
    }) << "tokenizer_config.json"
                                                   << "invalid JSON" << format;
}

void TestHfCheckpoint::rejectsBrokenCheckpoints() {
    QFETCH(Mutation, mutate);
    QFETCH(QString, file);
    QFETCH(QString, phrase);
    QFETCH(int, code);
    QTemporaryDir tmp;
    const fs::path dir = writeTinyModel(tmp);
    QVERIFY(loadCheckpoint(dir).ok()); // the unbroken model loads
    mutate(dir);
    auto ckpt = loadHuggingFaceCheckpoint(dir, {});
    QVERIFY(!ckpt.ok());
    const QString message = QString::fromStdString(ckpt.error().message);
    QVERIFY2(message.contains(file), qPrintable(message));
    QVERIFY2(message.contains(phrase), qPrintable(message));
    QCOMPARE(int(ckpt.error().code), code);
}

void TestHfCheckpoint::rejectsMissingTokenizerOverride() {
    QTemporaryDir tmp;
    const fs::path dir = writeTinyModel(tmp);
    LoadOptions options;
    options.tokenizerPath = dir / "elsewhere-tokenizer.json";
    auto ckpt = loadHuggingFaceCheckpoint(dir, options);
    QVERIFY(!ckpt.ok());
    QVERIFY(ckpt.error().message.find("elsewhere-tokenizer.json: tokenizer file not found") !=
            std::string::npos);
}

QTEST_APPLESS_MAIN(TestHfCheckpoint)
#include "test_hf_checkpoint.moc"
