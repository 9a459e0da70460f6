// The pipeline's seam to engine/quant: a job spec's method becomes the QuantizeOptions the
// quantizer gets, and the method registry validates names and options at submission.
#include "pipeline/engine_quantization.h"

#include "temp_dir.h"

#include <QtTest>

#include <fstream>

using namespace lowbit;
using nlohmann::json;

namespace {

MethodSpec method(const json &value) {
    auto spec = parseJobSpec({{"checkpoint", "/m"}, {"method", value}, {"tasks", {"x"}}});
    if (!spec.ok())
        qFatal("%s", spec.error().toString().c_str());
    return spec->method;
}

} // namespace

class TestEngineQuantization : public QObject {
    Q_OBJECT
private slots:
    void fieldsMapped();
    void calibrationDefaults();
    void validation();
};

void TestEngineQuantization::fieldsMapped() {
    auto options = quantizeOptions(
        method({{"name", "gptq"},
                {"bits", 3},
                {"group_size", 128},
                {"symmetric", true},
                {"layers", "0-1,q,v"},
                {"calibration",
                 {{"dataset", "/data/c4.jsonl"}, {"samples", 16}, {"tokens", 256}, {"seed", 9}}},
                {"options", {{"act_order", true}}}}),
        4, 512);
    QVERIFY(options.ok());
    QCOMPARE(options->method, std::string("gptq"));
    QCOMPARE(options->bits, 3);
    QCOMPARE(options->groupSize, int64_t(128));
    QVERIFY(options->symmetric);
    QCOMPARE(options->threads, 4);
    QCOMPARE(options->selection.toString(), LayerSelection::parse("0-1,q,v")->toString());
    QCOMPARE(options->calibration.textPath, std::filesystem::path("/data/c4.jsonl"));
    QCOMPARE(options->calibration.samples, int64_t(16));
    QCOMPARE(options->calibration.tokens, int64_t(256));
    QCOMPARE(options->calibration.seed, uint64_t(9));
    QCOMPARE(options->methodOptions["act_order"].get<bool>(), true);
    // group_size -1 is per-channel, as GPTQ's --groupsize -1.
    QCOMPARE(quantizeOptions(method({{"name", "rtn"}, {"bits", 4}, {"group_size", -1}}), 0, 512)
                 ->groupSize,
             int64_t(0));
}

void TestEngineQuantization::calibrationDefaults() {
    lowbit::test::TempDir data;
    // Without a calibration object: windows no longer than the model's context.
    auto small = quantizeOptions(method({{"name", "gptq"}, {"bits", 4}}), 0, 512, data.path());
    QCOMPARE(small->calibration.tokens, int64_t(512));
    QVERIFY(small->calibration.textPath
                .empty()); // no text in this data folder: the quantizer's default
    QCOMPARE(quantizeOptions(method({{"name", "gptq"}, {"bits", 4}}), 0, 8192)->calibration.tokens,
             int64_t(2048));
    std::filesystem::create_directories(data / "wikitext2");
    std::ofstream(data / "wikitext2" / "wiki.train.raw.prefix") << "text";
    auto found = quantizeOptions(method({{"name", "gptq"}, {"bits", 4}}), 0, 512, data.path());
    QCOMPARE(found->calibration.textPath, data / "wikitext2" / "wiki.train.raw.prefix");
    auto named = quantizeOptions(
        method({{"name", "gptq"}, {"bits", 4}, {"calibration", {{"dataset", "c4"}}}}), 0, 512);
    QVERIFY(!named.ok());
    QVERIFY(named.error().message.rfind("spec.method.calibration.dataset", 0) == 0);
}

void TestEngineQuantization::validation() {
    const QuantizationHooks hooks = engineQuantizationHooks();
    QVERIFY(hooks.validate && hooks.quantize && hooks.load);
    QVERIFY(hooks.validate(method({{"name", "rtn"}, {"bits", 4}, {"group_size", 32}})).ok());
    auto unknown = hooks.validate(method({{"name", "nosuchmethod"}, {"bits", 4}}));
    QVERIFY(!unknown.ok());
    QVERIFY2(unknown.error().message.find("nosuchmethod") != std::string::npos,
             unknown.error().message.c_str());
    auto badOption =
        hooks.validate(method({{"name", "rtn"}, {"bits", 4}, {"options", {{"dampp", 1}}}}));
    QVERIFY(!badOption.ok());
    QVERIFY2(badOption.error().message.find("dampp") != std::string::npos,
             badOption.error().message.c_str());
    auto badLayers = hooks.validate(method({{"name", "rtn"}, {"bits", 4}, {"layers", "q,banana"}}));
    QVERIFY(!badLayers.ok());
    QVERIFY(badLayers.error().message.rfind("spec.method.layers", 0) == 0);
}

QTEST_APPLESS_MAIN(TestEngineQuantization)
#include "test_engine_quantization.moc"
