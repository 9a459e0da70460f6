// AWQ (engine/quant/awq.h, awq_search.h): the grid by hand; the clip search on a closed-form case;
// the attention and MLP blocks of the search against the forward pass's own linear inputs on the
// real stories260K layer; scale folding leaves the layer output unchanged; codes in range and
// bits/weight as stated; the layer output error on the calibration activations below RTN's at 3
// and 4 bits, for one linear (synthetic outlier channels) and for a whole real decoder layer.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/awq.h"
#include "quant/awq_search.h"
#include "quant/rtn.h"
#include "runtime/model.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

namespace {

double relativeDiff(const std::vector<float> &a, const std::vector<float> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += std::pow(double(a[i]) - double(b[i]), 2);
        den += std::pow(double(b[i]), 2);
    }
    return num / den;
}

// Y = X W^T in float64 (X tokens x cols, W rows x cols).
std::vector<float> product(const std::vector<float> &x, const std::vector<float> &w, int64_t tokens,
                           int64_t rows, int64_t cols) {
    std::vector<float> y(static_cast<size_t>(tokens * rows));
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t r = 0; r < rows; ++r) {
            double s = 0;
            for (int64_t j = 0; j < cols; ++j)
                s += double(x[size_t(t * cols + j)]) * double(w[size_t(r * cols + j)]);
            y[size_t(t * rows + r)] = float(s);
        }
    return y;
}

struct Stories {
    std::shared_ptr<const Checkpoint> checkpoint;
    std::unique_ptr<Model> model;
    CalibrationSet set;
};

// stories260K with 4 windows of 64 random token ids.
std::optional<Stories> loadStories(const std::filesystem::path &model,
                                   const std::filesystem::path &tok) {
    auto checkpoint = loadCheckpoint(model, {tok});
    if (!checkpoint)
        return std::nullopt;
    Stories s;
    s.checkpoint = std::make_shared<const Checkpoint>(std::move(*checkpoint));
    auto m = Model::create(s.checkpoint, {1});
    if (!m)
        return std::nullopt;
    s.model = std::move(*m);
    std::mt19937 rng(77);
    std::uniform_int_distribution<int32_t> id(3, int32_t(s.checkpoint->config.vocabSize - 1));
    for (int w = 0; w < 4; ++w) {
        std::vector<int32_t> window(64);
        for (int32_t &v : window)
            v = id(rng);
        s.set.windows.push_back(std::move(window));
    }
    return s;
}

// The layer's output over all runner windows.
std::vector<float> layerOutput(LayerRunner &runner, int64_t layer, const LayerWeights &weights) {
    std::vector<float> out(static_cast<size_t>(runner.rows() * runner.hiddenSize()));
    const auto status =
        runner.run(layer, weights, nullptr, [&](int64_t first, int64_t rows, const float *y) {
            std::copy(y, y + rows * runner.hiddenSize(), out.begin() + first * runner.hiddenSize());
        });
    if (!status.ok())
        out.clear();
    return out;
}

} // namespace

class TestQuantAwq : public QObject {
    Q_OBJECT
private slots:
    void gridByHand();
    void clipSearchMatchesFloat64();
    void codesAndBitsPerWeight();
    void linearBeatsRtn_data();
    void linearBeatsRtn();
    void blocksMatchForwardPass();
    void foldingIsExact();
    void layerBeatsRtn_data();
    void layerBeatsRtn();
    void badOptions();
};

void TestQuantAwq::gridByHand() {
    // Asymmetric: the range is [min, max] itself (not widened to 0): scale 3 / 3 = 1,
    // zero = -round(0.5) = 0 (half to even); 3.5 rounds to 4 and clamps to 3.
    const float x[] = {0.5f, 1.0f, 2.0f, 3.5f};
    GridParams p = awqGrid(x, 4, 2, false);
    QCOMPARE(p.scale, 1.0f);
    QCOMPARE(p.zero, 0.0f);
    QCOMPARE(p.fakeQuant(3.5f), 3.0f);
    QCOMPARE(p.fakeQuant(0.5f), 0.0f);
    // Symmetric 3-bit: scale = absmax / (2^2 - 1), zero 4, codes of -4..3.
    const float y[] = {-1.0f, 0.5f, 2.0f};
    p = awqGrid(y, 3, 3, true);
    QCOMPARE(p.scale, 2.0f / 3.0f);
    QCOMPARE(p.zero, 4.0f);
    QCOMPARE(p.fakeQuant(2.0f), 2.0f);
    QCOMPARE(p.fakeQuant(-0.9f), -p.scale); // round(-1.35) + 4 = 3
}

void TestQuantAwq::clipSearchMatchesFloat64() {
    // auto_clip_layer recomputed here in float64, directly from its definition: for each
    // (row, group) and shrink i < 10, clamp to max|w| (1 - i/20), quantize, and take the mean over
    // tokens of (x_t . (q - w))^2 on the group's columns. The search's pick (Gram path when the
    // sample is longer than the group, direct path otherwise) must reach the float64 minimum.
    const int64_t rows = 6, cols = 64;
    for (int64_t tokens : {int64_t(100), int64_t(16)}) {
        std::mt19937 rng(static_cast<uint32_t>(tokens));
        std::normal_distribution<float> n01;
        std::vector<float> w(static_cast<size_t>(rows * cols)),
            x(static_cast<size_t>(tokens * cols));
        for (float &v : w)
            v = n01(rng) * (n01(rng) > 1.8f ? 6.0f : 1.0f);
        for (float &v : x)
            v = n01(rng);
        AwqOptions o;
        o.bits = 3;
        o.groupSize = 32;
        const std::vector<float> best = awqClipSearch(w.data(), rows, cols, x.data(), tokens, o);
        QCOMPARE(best.size(), size_t(rows * 2));
        auto error = [&](int64_t r, int64_t c0, float maxVal) {
            std::vector<float> clamped(32);
            for (int64_t j = 0; j < 32; ++j)
                clamped[size_t(j)] = std::clamp(w[size_t(r * cols + c0 + j)], -maxVal, maxVal);
            const GridParams p = awqGrid(clamped.data(), 32, 3, false);
            double sum = 0;
            for (int64_t t = 0; t < tokens; ++t) {
                double dot = 0;
                for (int64_t j = 0; j < 32; ++j)
                    dot += double(x[size_t(t * cols + c0 + j)]) *
                           (double(p.fakeQuant(clamped[size_t(j)])) -
                            double(w[size_t(r * cols + c0 + j)]));
                sum += dot * dot;
            }
            return sum / double(tokens);
        };
        int clipped = 0;
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t g = 0; g < 2; ++g) {
                float orgMax = 0;
                for (int64_t j = 0; j < 32; ++j)
                    orgMax = std::max(orgMax, std::abs(w[size_t(r * cols + g * 32 + j)]));
                double minErr = 1e300;
                for (int i = 0; i < 10; ++i)
                    minErr = std::min(minErr, error(r, g * 32, orgMax * (1.0f - float(i) / 20.0f)));
                const float pick = best[size_t(r * 2 + g)];
                QVERIFY(pick <= orgMax && pick >= orgMax * 0.55f - 1e-6f);
                QVERIFY2(error(r, g * 32, pick) <= minErr * (1 + 1e-5),
                         qPrintable(QString("row %1 group %2: %3 > %4")
                                        .arg(r)
                                        .arg(g)
                                        .arg(error(r, g * 32, pick))
                                        .arg(minErr)));
                clipped += pick < orgMax;
            }
        QVERIFY(clipped > 0); // the heavy-tailed weights do get clipped somewhere
        applyAwqClip(w.data(), rows, cols, 32, best);
        for (int64_t r = 0; r < rows; ++r)
            for (int64_t j = 0; j < cols; ++j)
                QVERIFY(std::abs(w[size_t(r * cols + j)]) <= best[size_t(r * 2 + j / 32)]);
    }
}

void TestQuantAwq::codesAndBitsPerWeight() {
    std::mt19937 rng(9);
    std::normal_distribution<float> n01;
    std::vector<float> w(48 * 64);
    for (float &v : w)
        v = n01(rng);
    for (int bits : {2, 3, 4, 8}) {
        auto t = quantizeAwqGrid("w", w.data(), 48, 64, bits, 32, false);
        QVERIFY(t.ok());
        QVERIFY(t->validate().ok());
        for (uint8_t c : t->codes())
            QVERIFY(c < (1 << bits));
        // codes + per (row, group) an FP16 scale and a `bits`-wide zero.
        QCOMPARE(t->bitsPerWeight(), double(bits) + double(16 + bits) / 32.0);
        // Every representable value dequantizes to itself.
        const std::vector<float> q = t->dequantize();
        auto again = quantizeAwqGrid("w", q.data(), 48, 64, bits, 32, false);
        const std::vector<float> q2 = again->dequantize();
        for (size_t i = 0; i < q.size(); ++i)
            QVERIFY(std::abs(q2[i] - q[i]) <= 1e-6f * std::max(1.0f, std::abs(q[i])));
    }
}

void TestQuantAwq::linearBeatsRtn_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("group");
    QTest::newRow("3-bit per-channel") << 3 << 0;
    QTest::newRow("4-bit per-channel") << 4 << 0;
    QTest::newRow("3-bit g32") << 3 << 32;
    QTest::newRow("4-bit g32") << 4 << 32;
}

void TestQuantAwq::linearBeatsRtn() {
    // The AWQ premise: a few input channels carry much larger activations.
    QFETCH(int, bits);
    QFETCH(int, group);
    const int64_t rows = 96, cols = 128, tokens = 1024;
    std::mt19937 rng(2024);
    std::normal_distribution<float> n01;
    std::vector<float> w(static_cast<size_t>(rows * cols)), x(static_cast<size_t>(tokens * cols)),
        scale(static_cast<size_t>(cols));
    for (float &v : w)
        v = 0.05f * n01(rng);
    for (int64_t j = 0; j < cols; ++j)
        scale[size_t(j)] = std::exp(0.5f * n01(rng)) * (j % 13 == 1 ? 20.0f : 1.0f);
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t j = 0; j < cols; ++j)
            x[size_t(t * cols + j)] = n01(rng) * scale[size_t(j)];
    auto rtn = quantizeRtn("w", w.data(), rows, cols, bits, group, false);
    QVERIFY(rtn.ok());
    AwqOptions o;
    o.bits = bits;
    o.groupSize = group;
    std::vector<float> s;
    auto awq = awqQuantizeLinear(w.data(), rows, cols, x.data(), tokens, o, &s);
    QVERIFY(awq.ok());
    const std::vector<float> y = product(x, w, tokens, rows, cols);
    const double rtnErr = relativeDiff(product(x, rtn->dequantize(), tokens, rows, cols), y);
    const double awqErr = relativeDiff(product(x, *awq, tokens, rows, cols), y);
    qInfo("%d-bit group %d: output error RTN %.5f, AWQ %.5f", bits, group, rtnErr, awqErr);
    QVERIFY2(awqErr < rtnErr, qPrintable(QString("AWQ %1 >= RTN %2").arg(awqErr).arg(rtnErr)));
    // The outlier channels got the largest scales.
    QVERIFY(s[1] > s[2] && s[14] > s[15]);
}

void TestQuantAwq::blocksMatchForwardPass() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    auto s = loadStories(modelPath, tokPath);
    QVERIFY(s.has_value());
    const ModelConfig &c = s->checkpoint->config;
    LayerRunner runner(*s->model, s->set, 128);
    QVERIFY(runner.embed().ok());
    QVERIFY(runner.advance(0, s->checkpoint->weights.layers[0]).ok()); // inputs of layer 1
    const FloatLayer layer = FloatLayer::fromWeights(s->checkpoint->weights.layers[1]);
    auto inputs = captureLayerInputs(runner, 1, layer.view(), 1 << 20, 128);
    QVERIFY(inputs.ok());
    QCOMPARE(inputs->tokens, int64_t(4 * 64));
    AwqBlocks blocks(c, 64, 128, 1);
    const int64_t n = inputs->tokens, qDim = c.numHeads * c.headDim;
    std::vector<float> core(static_cast<size_t>(n * qDim));
    using K = LinearKind;
    blocks.attentionCore(inputs->attention.data(), n, layer.weight(K::Q).data(),
                         layer.weight(K::K).data(), layer.weight(K::V).data(), core.data());
    const double attnDiff = relativeDiff(core, inputs->attentionOutput);
    QVERIFY2(attnDiff < 1e-10, qPrintable(QString("attention %1").arg(attnDiff)));
    std::vector<float> mlp(static_cast<size_t>(n * c.hiddenSize));
    blocks.mlp(inputs->mlp.data(), n, layer.weight(K::Gate).data(), layer.weight(K::Up).data(),
               layer.weight(K::Down).data(), mlp.data());
    const std::vector<float> expected =
        product(inputs->mlpDown, layer.weight(K::Down), n, c.hiddenSize, c.intermediateSize);
    const double mlpDiff = relativeDiff(mlp, expected);
    QVERIFY2(mlpDiff < 1e-10, qPrintable(QString("mlp %1").arg(mlpDiff)));
}

void TestQuantAwq::foldingIsExact() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    auto s = loadStories(modelPath, tokPath);
    QVERIFY(s.has_value());
    LayerRunner runner(*s->model, s->set, 128);
    QVERIFY(runner.embed().ok());
    FloatLayer layer = FloatLayer::fromWeights(s->checkpoint->weights.layers[0]);
    const std::vector<float> before = layerOutput(runner, 0, layer.view());
    auto inputs = captureLayerInputs(runner, 0, layer.view(), 1 << 20, 128);
    QVERIFY(inputs.ok());
    AwqOptions o;
    o.bits = 3;
    o.groupSize = 32;
    o.threads = 1;
    auto scales = searchLayerScales(layer, *inputs, s->checkpoint->config, o);
    QVERIFY(scales.ok());
    QVERIFY(!scales->qkv.empty() && !scales->mlp.empty() && !scales->down.empty());
    QVERIFY(scales->vo.empty()); // stories260K has 4 kv heads for 8 query heads (GQA)
    // A search that found something: some scale differs from 1 somewhere.
    bool nonTrivial = false;
    for (const auto *v : {&scales->qkv, &scales->mlp, &scales->down})
        for (float x : *v)
            nonTrivial = nonTrivial || std::abs(x - 1.0f) > 1e-3f;
    QVERIFY(nonTrivial);
    foldLayerScales(layer, *scales);
    const std::vector<float> after = layerOutput(runner, 0, layer.view());
    const double diff = relativeDiff(after, before);
    QVERIFY2(diff < 1e-10, qPrintable(QString("folded layer output differs: %1").arg(diff)));
}

void TestQuantAwq::layerBeatsRtn_data() {
    QTest::addColumn<int>("bits");
    QTest::newRow("3-bit g32") << 3;
    QTest::newRow("4-bit g32") << 4;
}

void TestQuantAwq::layerBeatsRtn() {
    QFETCH(int, bits);
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokPath, "data/llama2c/tok512.bin");
    auto s = loadStories(modelPath, tokPath);
    QVERIFY(s.has_value());
    LayerRunner runner(*s->model, s->set, 128);
    QVERIFY(runner.embed().ok());
    const int64_t layerIndex = 0;
    const FloatLayer original =
        FloatLayer::fromWeights(s->checkpoint->weights.layers[size_t(layerIndex)]);
    const std::vector<float> reference = layerOutput(runner, layerIndex, original.view());
    QuantizeOptions options;
    options.bits = bits;
    options.groupSize = 32;
    options.threads = 1;
    double errors[2] = {0, 0};
    for (int m = 0; m < 2; ++m) {
        options.method = m == 0 ? "rtn" : "awq";
        auto quantizer = makeQuantizer(options);
        QVERIFY(quantizer.ok());
        FloatLayer layer = original;
        LayerStatistics stats;
        nlohmann::json notes = nlohmann::json::object();
        LayerContext context{layerIndex, layer, stats, &runner, notes, {}};
        QVERIFY((*quantizer)->prepareLayer(context).ok());
        for (LinearKind kind : kAllLinearKinds) {
            LinearJob job{layerIndex,
                          kind,
                          linearTensorName(layerIndex, kind),
                          layer.rows[size_t(kind)],
                          layer.cols[size_t(kind)],
                          layer.weight(kind),
                          nullptr,
                          nullptr,
                          {},
                          nullptr};
            auto t = (*quantizer)->quantize(job);
            QVERIFY2(t.ok(), t.ok() ? "" : t.error().message.c_str());
            for (uint8_t c : t->codes())
                QVERIFY(c < (1 << bits));
            auto q = (*quantizer)->dequantize(*t);
            QVERIFY(q.ok());
            layer.weight(kind) = *q;
        }
        errors[m] = relativeDiff(layerOutput(runner, layerIndex, layer.view()), reference);
    }
    qInfo("%d-bit g32, stories260K layer 0 output error: RTN %.6f, AWQ %.6f", bits, errors[0],
          errors[1]);
    QVERIFY2(errors[1] < errors[0],
             qPrintable(QString("AWQ %1 >= RTN %2").arg(errors[1]).arg(errors[0])));
}

void TestQuantAwq::badOptions() {
    QuantizeOptions options;
    options.method = "awq";
    options.bits = 3;
    options.methodOptions = {{"grid", 0}};
    QCOMPARE(makeAwqQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = {{"max_shrink", 1.5}};
    QCOMPARE(makeAwqQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = {{"clip_token", 12}};
    QCOMPARE(makeAwqQuantizer(options).error().code, ErrorCode::InvalidArgument);
    options.methodOptions = nlohmann::json::object();
    options.symmetric = true;
    options.bits = 1;
    QCOMPARE(makeAwqQuantizer(options).error().code, ErrorCode::InvalidArgument);
    // Without calibration windows, prepareLayer says so instead of crashing.
    options.symmetric = false;
    options.bits = 4;
    auto q = makeAwqQuantizer(options);
    QVERIFY(q.ok());
    FloatLayer layer;
    LayerStatistics stats;
    nlohmann::json notes;
    LayerContext context{0, layer, stats, nullptr, notes, {}};
    QCOMPARE((*q)->prepareLayer(context).error().code, ErrorCode::InvalidArgument);
}

QTEST_APPLESS_MAIN(TestQuantAwq)
#include "test_quant_awq.moc"
