// GPTQ export round trip on stories260K: a lowbit quantized checkpoint (RTN 4-bit groups of 32,
// GPTQ 3-bit act-order symmetric) -> HF GPTQ checkpoint -> the HF loader's GPTQ import gives
// bit-identical weights and identical logits to the quantized checkpoint rebuilt from its codes
// (F32 scales), and, with the usual F16 scales, exactly scale_f16 * (code - zero) per weight.
// Its FFN width (172) is not a multiple of 8, so the 4-bit and 3-bit down_proj streams end in a
// padded word.
#include "shared_data.h"

#include "io/gptq_checkpoint.h"
#include "io/gptq_export.h"
#include "io/safetensors.h"
#include "quant/quantize.h"
#include "quant/quantized_checkpoint.h"
#include "runtime/model.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QtTest>

#include <cstring>
#include <fstream>

using namespace lowbit;

namespace {

std::vector<float> logitsOf(std::shared_ptr<const Checkpoint> checkpoint,
                            const std::vector<int32_t> &ids) {
    auto model = Model::create(std::move(checkpoint), {1});
    if (!model.ok())
        return {};
    KvCache cache = (*model)->makeCache(1, int64_t(ids.size()));
    SequenceInput in{0, ids, LogitsWanted::All, 0};
    auto logits = (*model)->forward(cache, {&in, 1});
    return logits.ok() ? std::move(logits->values) : std::vector<float>();
}

bool sameBytes(const Tensor &a, const Tensor &b) {
    return a.dtype == b.dtype && a.shape == b.shape && std::memcmp(a.data, b.data, a.bytes()) == 0;
}

std::vector<const Tensor *> allTensors(const ModelWeights &w) {
    std::vector<const Tensor *> out = {&w.tokenEmbedding, &w.finalNorm, &w.output};
    for (const LayerWeights &l : w.layers)
        for (const Tensor *t :
             {&l.attnNorm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffnNorm, &l.wGate, &l.wUp, &l.wDown})
            out.push_back(t);
    return out;
}

} // namespace

class TestGptqExportStories260K : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void rtn4RoundTrip();
    void gptq3ActOrderRoundTrip();
    void f16ScalesAreExactGridValues();
    void refusesCodebooks();

private:
    std::filesystem::path quantize(const std::string &method, int bits, bool actOrder);
    void roundTrip(const std::filesystem::path &quantized, int bits, bool descAct);

    std::shared_ptr<const Checkpoint> m_fp;
    std::filesystem::path m_calib;
    std::vector<int32_t> m_ids;
    QTemporaryDir m_tmp;
};

void TestGptqExportStories260K::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(calib, "data/wikitext2/wiki.train.raw.prefix");
    m_calib = calib;
    auto checkpoint = loadCheckpoint(model, {tokenizer});
    QVERIFY(checkpoint.ok());
    m_fp = std::make_shared<const Checkpoint>(std::move(*checkpoint));
    m_ids = m_fp->tokenizer->encode("Once upon a time, there was a little girl named Lily. She "
                                    "loved to play outside in the park with her friends.",
                                    {true, false});
    QVERIFY(m_ids.size() > 20);
}

std::filesystem::path TestGptqExportStories260K::quantize(const std::string &method, int bits,
                                                          bool actOrder) {
    QuantizeOptions o;
    o.method = method;
    o.bits = bits;
    o.groupSize = 32;
    o.symmetric = method == "gptq";
    o.threads = 2;
    o.calibration.textPath = m_calib;
    o.calibration.samples = 4;
    o.calibration.tokens = 256;
    if (actOrder)
        o.methodOptions["act_order"] = true;
    const std::filesystem::path dir =
        std::filesystem::path(m_tmp.path().toStdString()) / (method + std::to_string(bits));
    NullProgress progress;
    auto report = quantizeCheckpoint(*m_fp, o, dir, progress);
    return report.ok() ? dir : std::filesystem::path();
}

void TestGptqExportStories260K::roundTrip(const std::filesystem::path &quantized, int bits,
                                          bool descAct) {
    const std::filesystem::path out = quantized.string() + "-gptq";
    GptqExportOptions options;
    options.scaleType = DType::F32;
    auto report = exportGptqCheckpoint(quantized, out, options);
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().message.c_str());
    QCOMPARE(report->packedLinears, 7 * m_fp->config.numLayers);
    QCOMPARE(report->bits, bits);
    QCOMPARE(report->groupSize, int64_t(32));
    QCOMPARE(report->descAct, descAct);
    QCOMPARE(report->scalesChanged, int64_t(0));

    // The files hold the GPTQ layout (not the float weights).
    auto raw = readSafetensorsRaw(out / "model.safetensors");
    QVERIFY(raw.ok());
    QVERIFY(!raw->tensors.count("model.layers.0.mlp.down_proj.weight"));
    const RawTensor &qweight = raw->tensors.at("model.layers.0.mlp.down_proj.qweight");
    QCOMPARE(qweight.dtype, std::string("I32"));
    QCOMPARE(qweight.shape, (std::vector<int64_t>{(172 * bits + 31) / 32, 64}));
    QCOMPARE(raw->tensors.at("model.layers.0.mlp.down_proj.g_idx").shape,
             std::vector<int64_t>{172});
    std::ifstream configFile(out / "config.json");
    const auto config = nlohmann::json::parse(configFile);
    QCOMPARE(config["quantization_config"]["quant_method"], "gptq");
    QCOMPARE(config["quantization_config"]["bits"], bits);
    QCOMPARE(config["quantization_config"]["desc_act"], descAct);

    auto reference = loadQuantizedCheckpoint(quantized);
    QVERIFY(reference.ok());
    auto imported = loadCheckpoint(out);
    QVERIFY2(imported.ok(), imported.ok() ? "" : imported.error().message.c_str());
    QCOMPARE(imported->metadata["packed_linears"], std::to_string(7 * m_fp->config.numLayers));
    const auto a = allTensors(reference->weights), b = allTensors(imported->weights);
    for (size_t i = 0; i < a.size(); ++i)
        QVERIFY2(sameBytes(*a[i], *b[i]), a[i]->name.c_str());
    const auto refLogits =
        logitsOf(std::make_shared<const Checkpoint>(std::move(*reference)), m_ids);
    const auto impLogits =
        logitsOf(std::make_shared<const Checkpoint>(std::move(*imported)), m_ids);
    QVERIFY(!refLogits.empty());
    QVERIFY(refLogits == impLogits);
}

void TestGptqExportStories260K::rtn4RoundTrip() {
    const auto dir = quantize("rtn", 4, false);
    QVERIFY(!dir.empty());
    roundTrip(dir, 4, false);
}

void TestGptqExportStories260K::gptq3ActOrderRoundTrip() {
    const auto dir = quantize("gptq", 3, true);
    QVERIFY(!dir.empty());
    roundTrip(dir, 3, true);
}

void TestGptqExportStories260K::f16ScalesAreExactGridValues() {
    const auto dir = quantize("rtn", 4, false);
    const std::filesystem::path out = dir.string() + "-gptq-f16";
    auto report = exportGptqCheckpoint(dir, out);
    QVERIFY(report.ok());
    QVERIFY(report->scalesChanged > 0); // float32 min-max scales are rarely F16 values
    QVERIFY(report->maxScaleRelativeChange < 1.0 / 1024);
    auto tensors = readQuantizedTensors(dir / "quantized.safetensors");
    QVERIFY(tensors.ok());
    auto imported = loadCheckpoint(out);
    QVERIFY(imported.ok());
    for (QuantizedTensor t : *tensors) {
        for (float &s : t.scales)
            s = f16ToFloat(floatToF16(s));
        const std::vector<float> expected = t.dequantize();
        const int64_t layer = std::stoll(t.name.substr(std::strlen("model.layers.")));
        const LayerWeights &l = imported->weights.layers[size_t(layer)];
        const Tensor *target = nullptr;
        for (const Tensor *c : {&l.wq, &l.wk, &l.wv, &l.wo, &l.wGate, &l.wUp, &l.wDown})
            if (c->name == t.name)
                target = c;
        QVERIFY2(target, t.name.c_str());
        QVERIFY2(tensorToFloats(*target) == expected, t.name.c_str());
    }
}

void TestGptqExportStories260K::refusesCodebooks() {
    QuantizeOptions o;
    o.method = "nf4";
    o.bits = 4;
    o.threads = 2;
    const std::filesystem::path dir = std::filesystem::path(m_tmp.path().toStdString()) / "nf4";
    NullProgress progress;
    QVERIFY(quantizeCheckpoint(*m_fp, o, dir, progress).ok());
    auto report = exportGptqCheckpoint(dir, dir.string() + "-gptq");
    QVERIFY(!report.ok());
    QVERIFY(report.error().message.find("codebook") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestGptqExportStories260K)
#include "test_gptq_export_stories260k.moc"
