// SmoothQuant (engine/quant/smoothquant.h) and per-token activation quantization
// (engine/quant/activation_quant.h): activation and weight grids by hand; Eq. 4 by hand; folding
// the smoothing factors into stories260K leaves its logits unchanged (closed form: exact up to
// float rounding); the recorded activation width is read back from quantization_config.json, and
// malformed records are errors.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/activation_quant.h"
#include "quant/smoothquant.h"
#include "runtime/model.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cmath>
#include <fstream>
#include <random>

using namespace lowbit;

namespace {

void writeText(const std::filesystem::path &path, const std::string &text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

Result<Logits> run(const std::shared_ptr<const Checkpoint> &checkpoint,
                   std::span<const int32_t> ids, LinearHook *hook = nullptr) {
    LOWBIT_TRY(auto model, Model::create(checkpoint, {1}));
    model->setLinearHook(hook);
    KvCache cache = model->makeCache(1, int64_t(ids.size()));
    SequenceInput input{0, ids, LogitsWanted::All};
    return model->forward(cache, {&input, 1});
}

} // namespace

class TestQuantSmoothQuant : public QObject {
    Q_OBJECT
private slots:
    void activationGridByHand();
    void weightGridByHand();
    void smoothingFactorsByHand();
    void foldingKeepsLogits();
    void recordedActivationBits();
    void badOptions();
};

void TestQuantSmoothQuant::activationGridByHand() {
    // 4 bits: s = 4 / 7; 1 / s = 1.75 -> 2, -2.1 / s = -3.675 -> -4, 0.5 / s = 0.875 -> 1.
    float row[] = {1.0f, -2.1f, 0.5f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    quantizeActivationsPerToken(row, 2, 4, 4);
    const float s = 4.0f / 7.0f;
    QCOMPARE(row[0], 2 * s);
    QCOMPARE(row[1], -4 * s);
    QCOMPARE(row[2], 1 * s);
    QCOMPARE(row[3], 7 * s);
    for (int j = 4; j < 8; ++j) // an all-zero token stays zero (scale clamped to 1e-5 / qmax)
        QCOMPARE(row[j], 0.0f);
    // Ties round to even (torch.round), here with the exact scale 7 / 7 = 1.
    float ties[] = {2.5f, 3.5f, -2.5f, 7.0f};
    quantizeActivationsPerToken(ties, 1, 4, 4);
    QCOMPARE(ties[0], 2.0f);
    QCOMPARE(ties[1], 4.0f);
    QCOMPARE(ties[2], -2.0f);
    // 8 bits on a fresh random token: every value within half a step of the input.
    std::mt19937 rng(1);
    std::normal_distribution<float> n01;
    std::vector<float> x(300), y;
    for (float &v : x)
        v = n01(rng);
    y = x;
    quantizeActivationsPerToken(y.data(), 1, 300, 8);
    float absMax = 0;
    for (float v : x)
        absMax = std::max(absMax, std::abs(v));
    for (size_t i = 0; i < x.size(); ++i)
        QVERIFY(std::abs(y[i] - x[i]) <= 0.5f * absMax / 127.0f * 1.0001f);
    QVERIFY(activationQuantHook(8) != nullptr);
    QVERIFY(activationQuantHook(1) == nullptr && activationQuantHook(16) == nullptr);
}

void TestQuantSmoothQuant::weightGridByHand() {
    // One row, per channel, 4 bits: s = 2 / 7; codes q + 8.
    const float w[] = {2.0f, -1.1f, 0.3f, -2.0f};
    auto t = quantizeAbsmax("w", w, 1, 4, 4, 0);
    QVERIFY(t.ok());
    QCOMPARE(t->scale(0, 0), 2.0f / 7.0f);
    QCOMPARE(t->zero(0, 0), 8.0f);
    const std::vector<uint8_t> codes = t->codes();
    QCOMPARE(int(codes[0]), 15);    // 7 + 8
    QCOMPARE(int(codes[1]), 8 - 4); // -3.85 -> -4
    QCOMPARE(int(codes[2]), 8 + 1); // 1.05 -> 1
    QCOMPARE(int(codes[3]), 1);     // -7 + 8: -8 is never used (q_max = 7)
    // bits/weight: codes + one FP16 scale per row; the zero is the constant 2^(b-1).
    std::vector<float> big(32 * 64);
    std::mt19937 rng(4);
    std::normal_distribution<float> n01;
    for (float &v : big)
        v = n01(rng);
    auto t8 = quantizeAbsmax("w", big.data(), 32, 64, 8, 0);
    QVERIFY(t8.ok() && t8->validate().ok());
    QCOMPARE(t8->bitsPerWeight(), 8.0 + 16.0 / 64.0);
    for (uint8_t c : t8->codes())
        QVERIFY(c >= 1);
}

void TestQuantSmoothQuant::smoothingFactorsByHand() {
    // Eq. 4: s_j = max|X_j|^a / max_i|W_ij|^(1-a), max over both linears.
    const std::vector<double> act = {4.0, 1.0, 0.0};
    const std::vector<float> w1 = {1.0f, -0.25f, 2.0f, 0.5f, 0.5f, 0.5f}; // 2 x 3
    const std::vector<float> w2 = {-9.0f, 0.0f, 1.0f};                    // 1 x 3
    const std::vector<float> s = smoothingFactors(act, {w1, w2}, {2, 1}, 3, 0.5);
    QCOMPARE(s[0], float(std::sqrt(4.0) / std::sqrt(9.0)));
    QCOMPARE(s[1], float(std::sqrt(1.0) / std::sqrt(0.5)));
    QCOMPARE(s[2], 1e-5f); // a dead channel: clamped
    const std::vector<float> s75 = smoothingFactors(act, {w1, w2}, {2, 1}, 3, 0.75);
    QCOMPARE(s75[0], float(std::pow(4.0, 0.75) / std::pow(9.0, 0.25)));
}

void TestQuantSmoothQuant::foldingKeepsLogits() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    auto loaded = loadCheckpoint(modelPath, {tokPath});
    QVERIFY(loaded.ok());
    auto original = std::make_shared<const Checkpoint>(std::move(*loaded));
    // Real max |x| statistics from a text, layer by layer.
    const std::vector<int32_t> ids = original->tokenizer->encode(
        "Once upon a time, there was a little dog named Max. He liked to run.", {true, false});
    CalibrationSet set;
    set.windows = {ids};
    auto model = Model::create(original, {1});
    QVERIFY(model.ok());
    LayerRunner runner(**model, set, 4096);
    QVERIFY(runner.embed().ok());
    Checkpoint smoothed = *original;
    for (int64_t l = 0; l < original->config.numLayers; ++l) {
        const LayerWeights &source = original->weights.layers[size_t(l)];
        FloatLayer layer = FloatLayer::fromWeights(source);
        StatsHook hook({LinearInput::Attention, LinearInput::Mlp}, {false, true, false},
                       HessianPrecision::Float64, 1);
        QVERIFY(runner.run(l, source, &hook).ok());
        QVERIFY(smoothLayer(layer, hook.finish(), 0.5).ok());
        QVERIFY(layer.attnNorm != tensorToFloats(source.attnNorm)); // something was folded
        LayerWeights &w = smoothed.weights.layers[size_t(l)];
        w.attnNorm = Tensor::fromFloats("n", source.attnNorm.shape, layer.attnNorm.data());
        w.ffnNorm = Tensor::fromFloats("n", source.ffnNorm.shape, layer.ffnNorm.data());
        for (LinearKind kind : kAllLinearKinds)
            linearWeight(w, kind) = Tensor::fromFloats("w", linearWeight(source, kind).shape,
                                                       layer.weight(kind).data());
        QVERIFY(runner.advance(l, source).ok());
    }
    auto base = run(original, ids);
    auto folded = run(std::make_shared<const Checkpoint>(std::move(smoothed)), ids);
    QVERIFY(base.ok() && folded.ok());
    double worst = 0, range = 0;
    for (size_t i = 0; i < base->values.size(); ++i) {
        worst = std::max(worst, double(std::abs(base->values[i] - folded->values[i])));
        range = std::max(range, double(std::abs(base->values[i])));
    }
    QVERIFY2(worst < 1e-4 * range,
             qPrintable(QString("max logit change %1 of %2").arg(worst).arg(range)));
    // With 8-bit activations the logits move, but little; with 4 bits, more.
    auto a8 = run(original, ids, activationQuantHook(8));
    auto a4 = run(original, ids, activationQuantHook(4));
    double d8 = 0, d4 = 0;
    for (size_t i = 0; i < base->values.size(); ++i) {
        d8 = std::max(d8, double(std::abs(base->values[i] - a8->values[i])));
        d4 = std::max(d4, double(std::abs(base->values[i] - a4->values[i])));
    }
    QVERIFY(d8 > 0 && d8 < d4);
}

void TestQuantSmoothQuant::recordedActivationBits() {
    QTemporaryDir dir;
    const std::filesystem::path root = dir.path().toStdString();
    auto none = lowbit::recordedActivationBits(root);
    QVERIFY(none.ok());
    QCOMPARE(*none, kNoActivationQuant);
    writeText(
        root / "quantization_config.json",
        R"({"method": "smoothquant", "layer_notes": [{"layer": 0, "notes": {"activation_bits": 6}},
                  {"layer": 1, "notes": {"activation_bits": 6, "alpha": 0.5}}]})");
    auto six = lowbit::recordedActivationBits(root);
    QVERIFY(six.ok());
    QCOMPARE(*six, 6);
    writeText(
        root / "quantization_config.json",
        R"({"layer_notes": [{"layer": 0, "notes": {"activation_bits": 6}}, {"layer": 1, "notes": {"activation_bits": 8}}]})");
    QCOMPARE(lowbit::recordedActivationBits(root).error().code, ErrorCode::Format);
    writeText(root / "quantization_config.json",
              R"({"layer_notes": [{"notes": {"activation_bits": 12}}]})");
    QCOMPARE(lowbit::recordedActivationBits(root).error().code, ErrorCode::Format);
    writeText(root / "quantization_config.json",
              R"({"layer_notes": [{"notes": {"activation_bits": "8"}}]})");
    QCOMPARE(lowbit::recordedActivationBits(root).error().code, ErrorCode::Format);
    writeText(root / "quantization_config.json", "{\"layer_notes\": [");
    const auto broken = lowbit::recordedActivationBits(root);
    QCOMPARE(broken.error().code, ErrorCode::Format);
    QVERIFY(broken.error().message.find("quantization_config.json") != std::string::npos);
    writeText(root / "quantization_config.json", R"({"method": "gptq", "layer_notes": []})");
    QCOMPARE(*lowbit::recordedActivationBits(root), kNoActivationQuant);
}

void TestQuantSmoothQuant::badOptions() {
    QuantizeOptions options;
    options.method = "smoothquant";
    options.bits = 8;
    options.methodOptions = {{"alpha", 1.5}};
    QCOMPARE(makeSmoothQuantQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = {{"act_bits", 12}};
    QCOMPARE(makeSmoothQuantQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = {{"alfa", 0.5}};
    QCOMPARE(makeSmoothQuantQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = nlohmann::json::object();
    options.bits = 1;
    QCOMPARE(makeSmoothQuantQuantizer(options).error().code, ErrorCode::InvalidArgument);
    // Statistics missing for the layer: an error naming the input, not a crash.
    FloatLayer layer;
    layer.attnNorm.assign(4, 1.0f);
    LayerStatistics empty;
    const Status s = smoothLayer(layer, empty, 0.5);
    QVERIFY(!s.ok());
    QVERIFY(s.error().message.find("q_proj") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestQuantSmoothQuant)
#include "test_quant_smoothquant.moc"
