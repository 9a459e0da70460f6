// GPTQ with QuantizeOptions::device = cuda:N (calibration Hessians by cuBLAS SYRK, chol(H^-1) by
// cuSOLVER, the min-max grid sweep on the device) against the CPU path, through the quantizer a
// user gets (StatsHook, makeQuantizer, quantizeModel), on the shared fixture tiny-llama3-a and on
// stories260K, 4-bit with groups of 32 (their rows are 64 and 172/176 wide: 2-6 groups per row,
// like g128 on a 4096-wide LLaMA layer, and groups that straddle the 128-column sweep blocks).
// The device is LOWBIT_TEST_DEVICE (default cuda:0). Skips without the CUDA backend or a GPU.
#include "shared_data.h"

#include "perplexity.h"
#include "quant/calibration.h"
#include "quant/quant_device.h"
#include "quant/quantize.h"
#include "runtime/model.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

namespace {

// Hessians: ||H_gpu - H_cpu||_F / ||H_cpu||_F. Both sides sum float32 dot products over one
// calibration batch (<= 4096 rows: cuBLAS SYRK, OpenBLAS ssyrk) and add the batches in float64,
// so the difference is float32 rounding of k <= 4096-term sums: about sqrt(k) * 2^-24 ~ 4e-6
// relative for a random-walk error, at most k * 2^-24 ~ 2.4e-4 in the worst case. 1e-4 sits well
// above the typical error and still below the worst case, while any real defect (a triangle left
// out, a batch dropped or counted twice, a wrong 2/N) is an O(1) error.
constexpr double kHessianTolerance = 1e-4;
// Codes: the sweeps do the same float32 operations except the order of the lazy update's GEMM sums
// (cuBLAS vs OpenBLAS) and FMA contraction, a ~1e-7 relative difference in the value rounded; a
// code differs only where w/scale sits that close to a rounding boundary (~1e-6 of the weights),
// plus the few codes such a flip moves later in its row. 1% is far above that and far below what
// a wrong group, column order, or update gives (most codes). Measured on the CPU as a proxy, with
// two float paths of the same size of difference (Hessian BlockedFloat32 vs Float64, ~1e-7 apart;
// GPTQ's LDL vs inverse form): 0 of stories260K's 226,560 codes differ, losses within 3e-7.
constexpr double kCodeAgreement = 0.99;
// gptq.py's loss sum (w - q)^2 / [H^-1]_jj^2 / 2 of a layer: <= 1% of codes differ, each by one
// grid step, changing a few terms of thousands; 3% bounds that with room for the float32
// difference of the two Cholesky factors ([H^-1]_jj).
constexpr double kLossTolerance = 0.03;
// Perplexity of the whole quantized model: <= 1% of codes moved by one step, each far smaller than
// the 4-bit quantization error itself (which moves stories260K's PPL by a few %), so the two
// models' PPLs differ by a small fraction of that; 1% bounds it.
constexpr double kPplTolerance = 0.01;

DeviceSpec testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? *spec : DeviceSpec{DeviceSpec::Kind::Cuda, 0};
}

double relativeFrobenius(const std::vector<double> &a, const std::vector<double> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return std::sqrt(num / den);
}

int64_t sameCodes(const QuantizedTensor &a, const QuantizedTensor &b) {
    const auto x = a.codes(), y = b.codes();
    int64_t same = 0;
    for (size_t i = 0; i < std::min(x.size(), y.size()); ++i)
        same += x[i] == y[i];
    return same;
}

QuantizeOptions gptqOptions() {
    QuantizeOptions o;
    o.method = "gptq";
    o.bits = 4;
    o.groupSize = 32;
    o.threads = 0;
    return o;
}

} // namespace

class TestCudaQuantize : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void fixtureLayers();
    void storiesLayers();
    void storiesEndToEnd();
    void otherMethodsSayWhereTheyRan();

private:
    void compareLayers(std::shared_ptr<const Checkpoint> checkpoint, const CalibrationSet &set,
                       int64_t batchTokens);
    double perplexity(std::shared_ptr<const Checkpoint> checkpoint);

    std::unique_ptr<QuantDevice> m_device;
    std::shared_ptr<const Checkpoint> m_fixture, m_stories;
    std::filesystem::path m_calib;
    std::vector<int32_t> m_evalTokens;
};

void TestCudaQuantize::initTestCase() {
    if (!cudaBuilt())
        QSKIP("built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)");
    std::string why;
    if (cudaDeviceCount(&why) == 0)
        QSKIP(qPrintable(QString("no CUDA device: %1").arg(QString::fromStdString(why))));
    LOWBIT_REQUIRE_SHARED_FILE(fixture, "fixtures/tiny-llama3-a");
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(calib, "data/wikitext2/wiki.train.raw.prefix");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    auto device = QuantDevice::open(testDevice());
    QVERIFY2(device.ok(), device.ok() ? "" : device.error().message.c_str());
    m_device = std::move(*device);
    auto a = loadCheckpoint(fixture);
    auto s = loadCheckpoint(model, {tokenizer});
    QVERIFY(a.ok() && s.ok());
    m_fixture = std::make_shared<const Checkpoint>(std::move(*a));
    m_stories = std::make_shared<const Checkpoint>(std::move(*s));
    m_calib = calib;
    m_evalTokens = m_stories->tokenizer->encode(test::readFile(text), {true, false});
}

// Layer by layer on the FP model's calibration activations: the device Hessian of each linear
// input against the CPU's, then each of the seven linears through the GPTQ quantizer twice (CPU
// stats and no device; device stats and the device).
void TestCudaQuantize::compareLayers(std::shared_ptr<const Checkpoint> checkpoint,
                                     const CalibrationSet &set, int64_t batchTokens) {
    auto model = Model::create(checkpoint, {0});
    QVERIFY(model.ok());
    LayerRunner runner(**model, set, batchTokens);
    QVERIFY(runner.embed().ok());
    auto cpuQuantizer = makeQuantizer(gptqOptions()), gpuQuantizer = makeQuantizer(gptqOptions());
    QVERIFY(cpuQuantizer.ok() && gpuQuantizer.ok());
    const std::set<LinearInput> inputs = {LinearInput::Attention, LinearInput::AttentionOutput,
                                          LinearInput::Mlp, LinearInput::MlpDown};
    for (int64_t layer = 0; layer < checkpoint->config.numLayers; ++layer) {
        const LayerWeights &weights = checkpoint->weights.layers[size_t(layer)];
        StatsHook cpuHook(inputs, {true, false, false}, HessianPrecision::BlockedFloat32, 0);
        StatsHook gpuHook(inputs, {true, false, false}, HessianPrecision::BlockedFloat32, 0, 0,
                          m_device.get());
        QVERIFY(runner.run(layer, weights, &cpuHook).ok());
        QVERIFY(runner.run(layer, weights, &gpuHook).ok());
        const LayerStatistics cpu = cpuHook.finish(), gpu = gpuHook.finish();
        QVERIFY2(gpuHook.status().ok(), gpuHook.status().error().message.c_str());
        for (LinearInput input : inputs) {
            const double rel = relativeFrobenius(gpu.at(input).hessian, cpu.at(input).hessian);
            qInfo("layer %lld input %d: Hessian relative difference %.3g",
                  static_cast<long long>(layer), int(input), rel);
            QVERIFY2(rel <= kHessianTolerance, qPrintable(QString("%1").arg(rel)));
        }
        const FloatLayer floats = FloatLayer::fromWeights(weights);
        int64_t same = 0, total = 0;
        double cpuLoss = 0, gpuLoss = 0;
        for (LinearKind kind : kAllLinearKinds) {
            const LinearInput input = linearInputOf(kind);
            nlohmann::json cpuNotes, gpuNotes;
            const auto rows = floats.rows[size_t(kind)], cols = floats.cols[size_t(kind)];
            const LinearJob cpuJob{.layer = layer,
                                   .kind = kind,
                                   .name = "w",
                                   .rows = rows,
                                   .cols = cols,
                                   .weight = floats.weight(kind),
                                   .stats = &cpu.at(input),
                                   .notes = &cpuNotes,
                                   .stop = {},
                                   .device = nullptr};
            const LinearJob gpuJob{.layer = layer,
                                   .kind = kind,
                                   .name = "w",
                                   .rows = rows,
                                   .cols = cols,
                                   .weight = floats.weight(kind),
                                   .stats = &gpu.at(input),
                                   .notes = &gpuNotes,
                                   .stop = {},
                                   .device = m_device.get()};
            auto c = (*cpuQuantizer)->quantize(cpuJob);
            auto g = (*gpuQuantizer)->quantize(gpuJob);
            QVERIFY2(c.ok(), c.ok() ? "" : c.error().message.c_str());
            QVERIFY2(g.ok(), g.ok() ? "" : g.error().message.c_str());
            same += sameCodes(*c, *g);
            total += rows * cols;
            cpuLoss += cpuNotes["loss"].get<double>();
            gpuLoss += gpuNotes["loss"].get<double>();
        }
        qInfo("layer %lld: %lld of %lld codes agree; loss CPU %.6g, GPU %.6g",
              static_cast<long long>(layer), static_cast<long long>(same),
              static_cast<long long>(total), cpuLoss, gpuLoss);
        QVERIFY(double(same) >= kCodeAgreement * double(total));
        QVERIFY(std::abs(gpuLoss - cpuLoss) <= kLossTolerance * cpuLoss);
        QVERIFY(runner.advance(layer, weights).ok());
    }
}

void TestCudaQuantize::fixtureLayers() {
    // The fixture has no tokenizer: random token windows (its weights are random too). 8 x 128
    // tokens in batches of 512: two device SYRK batches summed per input.
    CalibrationSet set;
    std::mt19937 rng(7);
    std::uniform_int_distribution<int32_t> id(0, int32_t(m_fixture->config.vocabSize) - 1);
    for (int w = 0; w < 8; ++w) {
        set.windows.emplace_back(128);
        for (int32_t &t : set.windows.back())
            t = id(rng);
    }
    compareLayers(m_fixture, set, 512);
}

void TestCudaQuantize::storiesLayers() {
    CalibrationOptions co;
    co.textPath = m_calib;
    co.samples = 16;
    co.tokens = 256;
    auto set = loadCalibration(*m_stories->tokenizer, co);
    QVERIFY(set.ok());
    compareLayers(m_stories, *set, 1024);
}

double TestCudaQuantize::perplexity(std::shared_ptr<const Checkpoint> checkpoint) {
    auto model = Model::create(checkpoint, {0});
    if (!model.ok())
        return 0;
    PerplexityOptions po;
    po.contextTokens = 256;
    po.maxChunks = 100;
    NullProgress progress;
    auto report = evaluatePerplexity(**model, m_evalTokens, po, progress);
    return report.ok() ? report->perplexity : 0;
}

// The whole pipeline, sequential layers and all: later layers see inputs from layers quantized
// on their own path, so the comparison includes how differences carry from layer to layer.
void TestCudaQuantize::storiesEndToEnd() {
    QuantizeOptions o = gptqOptions();
    o.calibration.textPath = m_calib;
    o.calibration.samples = 32;
    o.calibration.tokens = 256;
    NullProgress progress;
    auto cpu = quantizeModel(*m_stories, o, progress);
    o.device = testDevice();
    auto gpu = quantizeModel(*m_stories, o, progress);
    QVERIFY2(cpu.ok(), cpu.ok() ? "" : cpu.error().message.c_str());
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    QCOMPARE(cpu->report.device, std::string("cpu"));
    QCOMPARE(gpu->report.device,
             "gptq: hessian+cholesky+sweep on " + o.device.toString() + "; forward on cpu");
    QCOMPARE(gpu->tensors.size(), cpu->tensors.size());
    int64_t same = 0, total = 0;
    for (size_t i = 0; i < cpu->tensors.size(); ++i) {
        same += sameCodes(cpu->tensors[i], gpu->tensors[i]);
        total += cpu->tensors[i].rows * cpu->tensors[i].cols;
    }
    qInfo("whole model: %lld of %lld codes agree", static_cast<long long>(same),
          static_cast<long long>(total));
    QVERIFY(double(same) >= kCodeAgreement * double(total));
    for (int64_t layer = 0; layer < m_stories->config.numLayers; ++layer) {
        double cpuLoss = 0, gpuLoss = 0;
        for (size_t k = 0; k < kAllLinearKinds.size(); ++k) {
            cpuLoss += cpu->report.linears[size_t(layer) * 7 + k].notes["loss"].get<double>();
            gpuLoss += gpu->report.linears[size_t(layer) * 7 + k].notes["loss"].get<double>();
        }
        qInfo("layer %lld loss: CPU %.6g, GPU %.6g", static_cast<long long>(layer), cpuLoss,
              gpuLoss);
        QVERIFY(std::abs(gpuLoss - cpuLoss) <= kLossTolerance * cpuLoss);
    }
    const double fp = perplexity(m_stories), pplCpu = perplexity(cpu->checkpoint),
                 pplGpu = perplexity(gpu->checkpoint);
    qInfo("PPL (ctx 256, 25.6k tokens): FP %.4f, GPTQ 4-bit g32 CPU %.4f, GPU %.4f", fp, pplCpu,
          pplGpu);
    QVERIFY(fp > 0 && pplCpu > 0 && pplGpu > 0);
    QVERIFY2(std::abs(pplGpu - pplCpu) <= kPplTolerance * pplCpu,
             qPrintable(QString("GPU %1 vs CPU %2").arg(pplGpu).arg(pplCpu)));
}

// Methods with their own sweeps reuse the device Hessian and Cholesky and say the sweep stayed on
// the CPU; a method with no device path says that.
void TestCudaQuantize::otherMethodsSayWhereTheyRan() {
    const std::string device = testDevice().toString();
    const std::pair<const char *, std::string> cases[] = {
        {"pb-llm", "pb-llm: hessian+cholesky on " + device + "; forward+sweep on cpu"},
        {"awq", "awq: cpu (no device path)"},
        {"rtn", "rtn: cpu (no device path)"},
    };
    for (const auto &[method, want] : cases) {
        QuantizeOptions o = gptqOptions();
        o.method = method;
        o.bits = std::string(method) == "pb-llm" ? 2 : 4; // pb-llm: 2 payload bits per weight
        o.calibration.textPath = m_calib;
        o.calibration.samples = 8;
        o.calibration.tokens = 256;
        o.device = testDevice();
        NullProgress progress;
        auto q = quantizeModel(*m_stories, o, progress);
        QVERIFY2(q.ok(), q.ok() ? "" : q.error().message.c_str());
        QCOMPARE(q->report.device, want);
        qInfo("%s on the device: PPL %.4f", method, perplexity(q->checkpoint));
    }
}

QTEST_APPLESS_MAIN(TestCudaQuantize)
#include "test_cuda_quantize_stories260k.moc"
