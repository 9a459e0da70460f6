// GGUF export round trip on stories260K (the shared llama.cpp-converted GGUF as source): RTN
// 4-bit symmetric groups of 32 -> Q4_0 blocks from the codes, 8-bit -> Q8_0, 4-bit asymmetric ->
// Q5_0; the GGUF loader gives back exactly scale_f16 * (code - zero) (the grid with the scales
// rounded to F16, as a block stores them) for every linear, bit-identical other tensors, and
// logits identical to that reference model. down_proj rows (172) are not a multiple of 32: they
// stay F32 (exact).
#include "shared_data.h"

#include "io/gguf_export.h"
#include "quant/quantize.h"
#include "quant/quantized_checkpoint.h"
#include "runtime/model.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cstring>

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

bool sameValues(const Tensor &a, const Tensor &b) {
    return a.shape == b.shape && tensorToFloats(a) == tensorToFloats(b);
}

} // namespace

class TestGgufExportStories260K : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void roundTrip_data();
    void roundTrip();

private:
    std::shared_ptr<const Checkpoint> m_fp;
    std::vector<int32_t> m_ids;
    QTemporaryDir m_tmp;
};

void TestGgufExportStories260K::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/gguf/stories260K.gguf");
    auto checkpoint = loadCheckpoint(model);
    QVERIFY(checkpoint.ok());
    m_fp = std::make_shared<const Checkpoint>(std::move(*checkpoint));
    m_ids = m_fp->tokenizer->encode("Once upon a time, there was a little dog. He liked to run "
                                    "in the sun with his friend the cat.",
                                    {true, false});
    QVERIFY(m_ids.size() > 20);
}

void TestGgufExportStories260K::roundTrip_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<bool>("symmetric");
    QTest::addColumn<QString>("type");
    QTest::newRow("rtn4 sym") << 4 << true << "Q4_0";
    QTest::newRow("rtn8 sym") << 8 << true << "Q8_0";
    QTest::newRow("rtn4 asym") << 4 << false << "Q5_0";
}

void TestGgufExportStories260K::roundTrip() {
    QFETCH(int, bits);
    QFETCH(bool, symmetric);
    QFETCH(QString, type);
    QuantizeOptions o;
    o.method = "rtn";
    o.bits = bits;
    o.groupSize = 32;
    o.symmetric = symmetric;
    o.threads = 2;
    const std::filesystem::path dir = std::filesystem::path(m_tmp.path().toStdString()) /
                                      ("q" + std::to_string(bits) + (symmetric ? "s" : "a"));
    NullProgress progress;
    QVERIFY(quantizeCheckpoint(*m_fp, o, dir, progress).ok());
    const std::filesystem::path gguf = dir.string() + ".gguf";
    auto report = exportGgufCheckpoint(dir, gguf);
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().message.c_str());
    const int64_t layers = m_fp->config.numLayers;
    QCOMPARE(report->tensorsByType[type.toStdString()], 6 * layers);
    QCOMPARE(report->tensorsByType["F32"], layers); // down_proj
    for (const GgufTensorExport &t : report->tensors)
        QVERIFY2(t.blocks ? t.exactF16 : t.maxAbsError == 0, t.name.c_str());

    // The reference: the quantized checkpoint with every linear rebuilt from codes and F16 scales.
    auto reference = loadQuantizedCheckpoint(dir);
    QVERIFY(reference.ok());
    auto tensors = readQuantizedTensors(dir / "quantized.safetensors");
    QVERIFY(tensors.ok());
    for (QuantizedTensor t : *tensors) {
        for (int64_t l = 0; l < layers; ++l)
            for (LinearKind kind : kAllLinearKinds) {
                if (linearTensorName(l, kind) != t.name || t.cols % 32 != 0)
                    continue;
                for (float &s : t.scales)
                    s = f16ToFloat(floatToF16(s));
                const std::vector<float> values = t.dequantize();
                linearWeight(reference->weights.layers[size_t(l)], kind) =
                    Tensor::fromFloats(t.name, {t.rows, t.cols}, values.data());
            }
    }
    auto loaded = loadCheckpoint(gguf);
    QVERIFY2(loaded.ok(), loaded.ok() ? "" : loaded.error().message.c_str());
    QVERIFY(sameValues(reference->weights.tokenEmbedding, loaded->weights.tokenEmbedding));
    QVERIFY(sameValues(reference->weights.finalNorm, loaded->weights.finalNorm));
    for (int64_t l = 0; l < layers; ++l)
        for (LinearKind kind : kAllLinearKinds)
            QVERIFY2(sameValues(linearWeight(reference->weights.layers[size_t(l)], kind),
                                linearWeight(loaded->weights.layers[size_t(l)], kind)),
                     linearTensorName(l, kind).c_str());
    const auto a = logitsOf(std::make_shared<const Checkpoint>(std::move(*reference)), m_ids);
    const auto b = logitsOf(std::make_shared<const Checkpoint>(std::move(*loaded)), m_ids);
    QVERIFY(!a.empty());
    QVERIFY(a == b);
}

QTEST_APPLESS_MAIN(TestGgufExportStories260K)
#include "test_gguf_export_stories260k.moc"
