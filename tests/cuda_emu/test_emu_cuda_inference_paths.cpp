// Device inference paths no GPU suite takes, run on the CUDA emulator: CudaModel with packed
// quantized linear weights (CudaModelOptions::quantized), against the CPU Model on a copy of the
// checkpoint whose weights are those tensors dequantized (QuantizedTensor::dequantize(), the
// contract of CudaBackend::quantizedMatmul). stories260K's shapes reach every packed path: 4-bit
// g32 on 64-wide rows (16-byte word path), 2-bit g16 (word path), 3-bit g32 (bit-stream path),
// 4-bit g32 on the 172-wide down projection (rows not whole words: bit-stream path), and an
// act-order permutation on the output projection (device column permutation). A 20-token prefill
// (dequantize + GEMM), then batched decode of two slots of different lengths (packed GEMV with 2
// rows), in float32 GEMMs so that both sides compute the same products up to summation order.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "quant/quantized_tensor.h"
#include "quant/rtn.h"
#include "runtime/cuda_model.h"
#include "runtime/model.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

using namespace lowbit;

namespace {

std::vector<float> floatsOf(const Tensor &t) {
    std::vector<float> out(size_t(t.numel()));
    convertToFloat(t.dtype, t.data, out.data(), out.size());
    return out;
}

// max |got - want| over max |want| of all rows.
double relativeError(const Logits &got, const Logits &want) {
    double maxRef = 0, maxDiff = 0;
    for (size_t i = 0; i < want.values.size(); ++i) {
        maxRef = std::max(maxRef, std::abs(double(want.values[i])));
        const double d = std::abs(double(got.values[i]) - double(want.values[i]));
        maxDiff = std::isnan(d) ? INFINITY : std::max(maxDiff, d);
    }
    return maxDiff / std::max(maxRef, 1e-30);
}

struct Packing {
    int bits;
    int64_t groupSize;
    bool permute;
};

// Which packing each projection gets (see the header comment for the paths they reach).
Packing packingOf(const std::string &name) {
    if (name.find("wk") != std::string::npos || name.find("k_proj") != std::string::npos)
        return {2, 16, false};
    if (name.find("wv") != std::string::npos || name.find("v_proj") != std::string::npos)
        return {3, 32, false};
    if (name.find("wo") != std::string::npos || name.find("o_proj") != std::string::npos)
        return {4, 32, true};
    return {4, 32, false};
}

} // namespace

class TestEmuCudaInferencePaths : public QObject {
    Q_OBJECT
private slots:
    void packedWeightsThroughCudaModel();
};

void TestEmuCudaInferencePaths::packedWeightsThroughCudaModel() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizerPath, "data/llama2c/tok512.bin");
    LoadOptions loadOptions;
    loadOptions.tokenizerPath = tokenizerPath;
    auto loaded = loadCheckpoint(modelPath, loadOptions);
    QVERIFY2(loaded.ok(), loaded.ok() ? "" : loaded.error().message.c_str());
    auto original = std::make_shared<const Checkpoint>(std::move(*loaded));

    std::map<std::string, QuantizedTensor> packed;
    auto dequantized = std::make_shared<Checkpoint>(*original);
    std::mt19937 rng(7);
    for (LayerWeights &lw : dequantized->weights.layers)
        for (Tensor *t : {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.wGate, &lw.wUp, &lw.wDown}) {
            const Packing p = packingOf(t->name);
            const std::vector<float> w = floatsOf(*t);
            auto q = quantizeRtn(t->name, w.data(), t->rows(), t->cols(), p.bits, p.groupSize,
                                 false);
            QVERIFY2(q.ok(), q.ok() ? "" : q.error().message.c_str());
            if (p.permute) { // any permutation makes a valid act-order tensor
                q->permutation.resize(size_t(t->cols()));
                std::iota(q->permutation.begin(), q->permutation.end(), 0);
                std::shuffle(q->permutation.begin(), q->permutation.end(), rng);
                QVERIFY(q->validate().ok());
            }
            const std::vector<float> deq = q->dequantize();
            *t = floatsToTensor(t->name, t->rows(), t->cols(), deq, DType::F32);
            packed.emplace(t->name, std::move(*q));
        }
    QCOMPARE(packed.size(), size_t(7 * original->config.numLayers));

    auto cpuCreated = Model::create(dequantized, {});
    QVERIFY2(cpuCreated.ok(), cpuCreated.ok() ? "" : cpuCreated.error().message.c_str());
    CudaModelOptions options;
    options.backend.precision = GemmPrecision::Fp32;
    options.maxBatchTokens = 64;
    options.quantized = &packed;
    auto gpuCreated = CudaModel::create(original, options);
    QVERIFY2(gpuCreated.ok(), gpuCreated.ok() ? "" : gpuCreated.error().message.c_str());
    LanguageModel &cpu = **cpuCreated, &gpu = **gpuCreated;
    auto cpuCache = cpu.allocateCache(2, 64);
    auto gpuCache = gpu.allocateCache(2, 64);
    QVERIFY(cpuCache.ok() && gpuCache.ok());

    std::vector<int32_t> prompt(20), shortPrompt = {1, 400, 17};
    std::uniform_int_distribution<int32_t> token(0, int32_t(original->config.vocabSize - 1));
    for (int32_t &t : prompt)
        t = token(rng);
    // Prefill: slot 0 with all its logits (dequantize + GEMM), slot 1 a short prompt (last only).
    std::vector<SequenceInput> inputs = {{0, prompt, LogitsWanted::All},
                                         {1, shortPrompt, LogitsWanted::Last}};
    for (int step = 0; step < 4; ++step) {
        auto want = cpu.forward(**cpuCache, inputs);
        auto got = gpu.forward(**gpuCache, inputs);
        QVERIFY2(want.ok(), want.ok() ? "" : want.error().message.c_str());
        QVERIFY2(got.ok(), got.ok() ? "" : got.error().message.c_str());
        QCOMPARE(got->rows, want->rows);
        const double e = relativeError(*got, *want);
        qInfo("step %d (%lld logit rows): relative error %g", step, (long long)want->rows, e);
        QVERIFY2(e <= 1e-4, qPrintable(QString("step %1: relative error %2").arg(step).arg(e)));
        // Decode: both slots one token each, in one batch (packed GEMV with 2 rows).
        static std::vector<int32_t> next[2];
        for (int s = 0; s < 2; ++s) {
            const float *row = want->row(want->rows - 2 + s);
            next[s] = {int32_t(std::max_element(row, row + want->vocab) - row)};
        }
        inputs = {{0, next[0], LogitsWanted::Last}, {1, next[1], LogitsWanted::Last}};
    }
}

QTEST_APPLESS_MAIN(TestEmuCudaInferencePaths)
#include "test_emu_cuda_inference_paths.moc"
