// Fine-tuning methods as job-spec methods (storage/pipeline/engine_finetune.h): options parsed
// from a spec with the reference defaults and errors naming the field; other methods handed to
// the wrapped hooks; a tiny QLoRA run through the hooks on stories260K whose artifact loads as the
// merged model (its q_proj differs from the NF4 base by exactly s·BA of the saved adapter).
#include "shared_data.h"
#include "temp_dir.h"

#include "backend/device.h"
#include "pipeline/engine_finetune.h"
#include "pipeline/job_spec.h"
#include "quant/quantizer.h"
#include "train/peft_adapter.h"

#include <QtTest>

#include <cmath>
#include <fstream>

using namespace lowbit;
using nlohmann::json;

namespace {

Result<MethodSpec> method(const json &value) {
    LOWBIT_TRY(JobSpec spec,
               parseJobSpec({{"checkpoint", "/m"}, {"method", value}, {"tasks", {"x"}}}));
    return spec.method;
}

} // namespace

class TestEngineFinetune : public QObject {
    Q_OBJECT
private slots:
    void defaultsAreTheReferenceScripts();
    void optionsAndErrors();
    void otherMethodsPassThrough();
    void qloraThroughTheHooks();
    void hfFixtureChatJsonl();
    void deviceRefusedBeforeAnyWork();
};

void TestEngineFinetune::defaultsAreTheReferenceScripts() {
    auto m = method({{"name", "qlora"}, {"bits", 4}, {"options", {{"data", "/d/alpaca.json"}}}});
    QVERIFY(m.ok());
    auto o = finetuneOptions(*m, 2);
    QVERIFY2(o.ok(), o.ok() ? "" : o.error().message.c_str());
    QCOMPARE(o->lora.rank, 64);
    QCOMPARE(o->lora.alpha, 16.0);
    QCOMPARE(o->lora.targets.size(), size_t(7));
    QCOMPARE(o->trainer.schedule.peak, 2e-4);
    QCOMPARE(o->trainer.schedule.kind, train::LrScheduleKind::Constant);
    QCOMPARE(o->trainer.maxGradNorm, 0.3);
    QCOMPARE(o->trainer.batchSize, int64_t(16));
    QCOMPARE(o->trainer.steps, int64_t(10000));
    QCOMPARE(o->data.sourceMaxTokens, int64_t(384));
    QCOMPARE(o->data.targetMaxTokens, int64_t(128));
    QCOMPARE(o->blockSize, int64_t(64));
    QVERIFY(o->trainer.resume);
    QCOMPARE(o->trainer.saveEverySteps, int64_t(250));
    QCOMPARE(o->threads, 2);
}

void TestEngineFinetune::optionsAndErrors() {
    auto m = method({{"name", "dbllm"},
                     {"bits", 2},
                     {"group_size", 32},
                     {"options",
                      {{"steps", 7},
                       {"lr", 1e-3},
                       {"schedule", "cosine"},
                       {"weighting", "teacher"},
                       {"distill_sequences", 5},
                       {"train_latent", false}}}});
    QVERIFY(m.ok());
    auto o = finetuneOptions(*m, 0);
    QVERIFY2(o.ok(), o.ok() ? "" : o.error().message.c_str());
    QCOMPARE(o->method, train::FinetuneMethod::DbLlm);
    QCOMPARE(o->dualBinary.groupSize, int64_t(32));
    QVERIFY(!o->dualBinary.trainLatent);
    QCOMPARE(o->distill.weighting, train::DistillWeighting::Teacher);
    QCOMPARE(o->distillData.sequences, int64_t(5));
    QCOMPARE(o->trainer.schedule.kind, train::LrScheduleKind::Cosine);
    QVERIFY(o->dataPath.empty()); // dbllm: FP-generated text

    const std::vector<std::pair<json, std::string>> bad = {
        {{{"name", "qlora"}, {"bits", 4}}, "spec.method.options.data"},
        {{{"name", "qlora"}, {"bits", 3}, {"options", {{"data", "x"}}}}, "spec.method.bits"},
        {{{"name", "qlora"}, {"bits", 4}, {"options", {{"data", "x"}, {"steps", -1}}}},
         "spec.method.options.steps"},
        {{{"name", "irqlora"}, {"bits", 4}, {"options", {{"data", "x"}, {"lr", "big"}}}},
         "spec.method.options.lr"},
        {{{"name", "qlora"}, {"bits", 4}, {"options", {{"data", "x"}, {"stepz", 3}}}},
         "spec.method.options.stepz"},
        {{{"name", "qlora"}, {"bits", 4}, {"options", {{"data", "x"}, {"weighting", "teacher"}}}},
         "spec.method.options.weighting"},
        {{{"name", "dbllm"}, {"bits", 2}, {"options", {{"weighting", "loud"}}}},
         "spec.method.options.weighting"},
    };
    const QuantizationHooks hooks = withFinetuneMethods({});
    for (const auto &[value, field] : bad) {
        auto spec = method(value);
        QVERIFY(spec.ok());
        auto status = hooks.validate(*spec);
        QVERIFY2(!status.ok(), value.dump().c_str());
        QVERIFY2(status.error().message.rfind(field, 0) == 0, status.error().message.c_str());
    }
}

void TestEngineFinetune::otherMethodsPassThrough() {
    QuantizationHooks inner;
    int validated = 0, quantized = 0;
    inner.validate = [&](const MethodSpec &) {
        ++validated;
        return Status();
    };
    inner.quantize = [&](const Checkpoint &, const MethodSpec &, int, const DeviceSpec &,
                         const std::filesystem::path &, ProgressSink &,
                         std::stop_token) -> Result<json> {
        ++quantized;
        return json{{"inner", true}};
    };
    const QuantizationHooks hooks = withFinetuneMethods(inner);
    auto rtn = method({{"name", "rtn"}, {"bits", 4}});
    QVERIFY(rtn.ok() && hooks.validate(*rtn).ok());
    NullProgress progress;
    auto facts = hooks.quantize(Checkpoint{}, *rtn, 0, DeviceSpec{}, "/nonexistent", progress, {});
    QVERIFY(facts.ok() && (*facts)["inner"] == true);
    QCOMPARE(validated, 1);
    QCOMPARE(quantized, 1);
    QVERIFY(!withFinetuneMethods({}).quantize(Checkpoint{}, *rtn, 0, DeviceSpec{}, "/x", progress, {}).ok());
}

void TestEngineFinetune::qloraThroughTheHooks() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    auto fp = loadCheckpoint(model, {tok});
    QVERIFY(fp.ok());
    test::TempDir dir;
    std::ofstream(dir / "train.txt") << test::readFile(text).substr(0, 40000);
    auto spec = method({{"name", "qlora"},
                        {"bits", 4},
                        {"options",
                         {{"data", (dir / "train.txt").string()},
                          {"steps", 3},
                          {"batch", 2},
                          {"rank", 4},
                          {"seq_len", 64},
                          {"lr", 1e-2}}}});
    QVERIFY(spec.ok());
    const QuantizationHooks hooks = withFinetuneMethods({});
    NullProgress progress;
    auto facts = hooks.quantize(*fp, *spec, 1, DeviceSpec{}, dir / "artifact", progress, {});
    QVERIFY2(facts.ok(), facts.ok() ? "" : facts.error().message.c_str());
    QCOMPARE((*facts)["steps_done"].get<int64_t>(), int64_t(3));
    QCOMPARE((*facts)["method"].get<std::string>(), std::string("qlora"));
    auto merged = hooks.load(dir / "artifact", {});
    QVERIFY2(merged.ok(), merged.ok() ? "" : merged.error().message.c_str());

    // merged q_proj of layer 1 = NF4 base + (alpha / r)·B·A from the saved adapter.
    train::FinetuneOptions o = *finetuneOptions(*spec, 1);
    auto base = train::finetuneBase(*fp, o, progress);
    auto adapter = train::loadPeftAdapter(dir / "artifact");
    QVERIFY(base.ok() && adapter.ok());
    const std::string prefix = "base_model.model.model.layers.1.self_attn.q_proj.";
    const auto &a = adapter->tensors.at(prefix + "lora_A.weight");
    const auto &b = adapter->tensors.at(prefix + "lora_B.weight");
    const auto w0 = tensorToFloats(linearWeight((*base)->weights.layers[1], LinearKind::Q));
    const auto w1 = tensorToFloats(linearWeight(merged->weights.layers[1], LinearKind::Q));
    const int64_t rows = merged->config.hiddenSize, cols = rows, r = 4;
    double maxDiff = 0, maxDelta = 0;
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            double ba = 0;
            for (int64_t k = 0; k < r; ++k)
                ba += double(b[size_t(i * r + k)]) * double(a[size_t(k * cols + j)]);
            const double expected = double(w0[size_t(i * cols + j)]) + 16.0 / 4.0 * ba;
            maxDiff = std::max(maxDiff, std::abs(expected - double(w1[size_t(i * cols + j)])));
            maxDelta = std::max(maxDelta, std::abs(16.0 / 4.0 * ba));
        }
    QVERIFY2(maxDelta > 1e-4, "training left B at zero");
    QVERIFY2(maxDiff < 1e-5, qPrintable(QString::number(maxDiff)));
}

// A Hugging Face Llama 3 checkpoint (GQA, F16, tied embeddings, a chat template that always
// appends the assistant header) trained on chat JSONL: the adapter has PEFT shapes, the merged
// directory keeps the source dtype and loads.
void TestEngineFinetune::hfFixtureChatJsonl() {
    LOWBIT_REQUIRE_SHARED_FILE(fixture, "fixtures/tiny-llama3-b/config.json");
    auto fp = loadCheckpoint(fixture.parent_path());
    QVERIFY(fp.ok());
    QVERIFY(!fp->chatTemplate.empty());
    test::TempDir dir;
    std::ofstream(dir / "chat.jsonl")
        << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]})"
        << "\n"
        << R"({"messages": [{"role": "system", "content": "Brief."}, {"role": "user", "content": "2+2?"}, )"
        << R"({"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, )"
        << R"({"role": "assistant", "content": "6"}]})"
        << "\n";
    train::FinetuneOptions o;
    o.dataPath = dir / "chat.jsonl";
    o.outDir = dir / "out";
    o.lora.rank = 4;
    o.blockSize = 32; // the fixture's rows are 32 wide
    o.trainer.steps = 2;
    o.trainer.batchSize = 2;
    NullProgress progress;
    auto report =
        train::runFinetune(std::make_shared<const Checkpoint>(std::move(*fp)), o, progress);
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().message.c_str());
    QCOMPARE(report->dataFormat, train::DataFormat::Chat);
    QCOMPARE(report->examples, int64_t(2));
    auto adapter = train::loadPeftAdapter(o.outDir);
    QVERIFY(adapter.ok());
    const std::string k = "base_model.model.model.layers.1.self_attn.k_proj.";
    QCOMPARE(adapter->shapes.at(k + "lora_A.weight"), (std::vector<int64_t>{4, 32}));
    QCOMPARE(adapter->shapes.at(k + "lora_B.weight"),
             (std::vector<int64_t>{8, 4})); // 1 kv head x 8
    auto merged = loadCheckpoint(report->mergedDir);
    QVERIFY2(merged.ok(), merged.ok() ? "" : merged.error().message.c_str());
    QCOMPARE(merged->weights.layers[1].wk.dtype, DType::F16);
    QCOMPARE(merged->config.numKvHeads, int64_t(1));
}

// --device cuda:N where there is no such GPU fails before the base is quantized and before OUT
// exists, with cudaDeviceCount's reason; dbllm refuses a device everywhere (no device version of
// its trainable base). On a machine with the GPU, test_cuda_finetune_stories260k covers the run.
void TestEngineFinetune::deviceRefusedBeforeAnyWork() {
    LOWBIT_REQUIRE_SHARED_FILE(fixture, "fixtures/tiny-llama3-b/config.json");
    auto fp = loadCheckpoint(fixture.parent_path());
    QVERIFY(fp.ok());
    const auto source = std::make_shared<const Checkpoint>(std::move(*fp));
    test::TempDir dir;
    std::ofstream(dir / "text.txt") << "Once upon a time there was a tiny model.\n";
    train::FinetuneOptions o;
    o.dataPath = dir / "text.txt";
    o.outDir = dir / "out";
    o.blockSize = 32;
    o.device = {DeviceSpec::Kind::Cuda, 7};
    NullProgress progress;
    std::string why;
    if (cudaDeviceCount(&why) <= 7) {
        auto report = train::runFinetune(source, o, progress);
        QVERIFY(!report.ok());
        QCOMPARE(report.error().code, ErrorCode::Unsupported);
        QVERIFY2(report.error().message.find("--device cuda:7") != std::string::npos,
                 report.error().message.c_str());
        QVERIFY(!std::filesystem::exists(o.outDir));
    }
    o.method = train::FinetuneMethod::DbLlm;
    auto dbllm = train::runFinetune(source, o, progress);
    QVERIFY(!dbllm.ok());
    QCOMPARE(dbllm.error().code, ErrorCode::Unsupported);
    QVERIFY2(dbllm.error().message.find("CPU only") != std::string::npos,
             dbllm.error().message.c_str());
    QVERIFY(!std::filesystem::exists(o.outDir));
}

QTEST_APPLESS_MAIN(TestEngineFinetune)
#include "test_engine_finetune.moc"
