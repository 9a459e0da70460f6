// Device inference paths no GPU suite takes, run on the CUDA emulator: CudaModel with packed
// quantized linear weights (CudaModelOptions::quantized), against the CPU Model on a copy of the
// checkpoint whose weights are those tensors dequantized (QuantizedTensor::dequantize(), the
// contract of CudaBackend::quantizedMatmul). stories260K's shapes reach every packed path: 4-bit
// g32 on 64-wide rows (16-byte word path), 2-bit g16 (word path), 3-bit g32 (bit-stream path),
// 4-bit g32 on the 172-wide down projection (rows not whole words: bit-stream path), and an
// act-order permutation on the output projection (device column permutation). A 20-token prefill
// (dequantize + GEMM), then batched decode of two slots of different lengths (packed GEMV with 2
// rows), in float32 GEMMs so that both sides compute the same products up to summation order.
// Also attention on head dims the GPU suite does not use (not a multiple of 4: the zero-padded
// tiles; 127: the fourth dims-per-lane slot) with a sequence of no queries, and top-K over rows
// with NaN, ties and fewer real values than k.
#include "shared_data.h"

#include "backend/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
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
    void attentionOddHeadDims_data();
    void attentionOddHeadDims();
    void topKEdges();
    void gemvUnalignedInput();
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

void TestEmuCudaInferencePaths::attentionOddHeadDims_data() {
    QTest::addColumn<int>("heads");
    QTest::addColumn<int>("kvHeads");
    QTest::addColumn<int>("headDim");
    QTest::newRow("3/1 x 10") << 3 << 1 << 10;
    QTest::newRow("5/5 x 6") << 5 << 5 << 6;
    QTest::newRow("4/2 x 127") << 4 << 2 << 127;
    QTest::newRow("2/1 x 1") << 2 << 1 << 1;
}

void TestEmuCudaInferencePaths::attentionOddHeadDims() {
    QFETCH(int, heads);
    QFETCH(int, kvHeads);
    QFETCH(int, headDim);
    auto made = makeCudaBackend({0, GemmPrecision::Fp32});
    QVERIFY2(made.ok(), made.ok() ? "" : made.error().message.c_str());
    CudaBackend &cuda = **made;
    auto cpu = makeCpuBackend(1);
    const int64_t qStride = heads * headDim, kvStride = kvHeads * headDim;
    const AttentionShape shape{heads, kvHeads, headDim, qStride, kvStride,
                               float(1.0 / std::sqrt(double(headDim)))};
    struct Seq {
        int64_t queries, first;
    };
    const std::vector<Seq> seqs = {{0, 5}, {1, 0}, {65, 3}, {1, 1000}, {33, 31}};
    std::mt19937 rng(11);
    std::normal_distribution<float> normal;
    std::vector<std::vector<float>> q, k, v, want;
    std::vector<float *> device;
    std::vector<AttentionSequence> cpuSeqs, cudaSeqs;
    auto upload = [&](const std::vector<float> &host) {
        float *p = *cuda.allocate(host.size(), "test");
        (void)cuda.upload(p, host.data(), host.size());
        device.push_back(p);
        return p;
    };
    for (const Seq &s : seqs) {
        const int64_t keys = s.first + s.queries;
        auto fill = [&](int64_t n) {
            std::vector<float> x(static_cast<size_t>(n));
            for (float &f : x)
                f = normal(rng);
            return x;
        };
        q.push_back(fill(s.queries * qStride));
        k.push_back(fill(keys * kvStride));
        v.push_back(fill(keys * kvStride));
        want.emplace_back(size_t(s.queries * qStride));
        cpuSeqs.push_back({q.back().data(), k.back().data(), v.back().data(), want.back().data(),
                           s.queries, s.first});
        float *dq = upload(q.back()), *dk = upload(k.back()), *dv = upload(v.back());
        float *dout = upload(std::vector<float>(want.back().size(), NAN));
        cudaSeqs.push_back({dq, dk, dv, dout, s.queries, s.first});
    }
    cpu->attention(cpuSeqs, shape);
    cuda.attention(cudaSeqs, shape);
    QVERIFY(cuda.synchronize().ok());
    for (size_t i = 0; i < seqs.size(); ++i) {
        std::vector<float> got(want[i].size());
        QVERIFY(cuda.download(got.data(), cudaSeqs[i].out, got.size()).ok());
        double err = 0, ref = 0;
        for (size_t j = 0; j < got.size(); ++j) {
            const double d = double(got[j]) - double(want[i][j]);
            err += std::isnan(d) ? 1e30 : d * d;
            ref += double(want[i][j]) * double(want[i][j]);
        }
        QVERIFY2(err <= 1e-10 * std::max(ref, 1e-30),
                 qPrintable(QString("sequence %1: nmse %2").arg(i).arg(err / ref)));
    }
    for (float *p : device)
        cuda.release(p);
}

// Rows: NaNs among values; all equal (ties by lower id); only 3 real values for k = 5 (the rest
// NaN: ids -1 and -inf); +/-inf present. Expected lists written by hand from the contract.
void TestEmuCudaInferencePaths::topKEdges() {
    auto made = makeCudaBackend({0, GemmPrecision::Fp32});
    QVERIFY(made.ok());
    CudaBackend &cuda = **made;
    const int64_t vocab = 300;
    const int k = 5;
    std::vector<float> rows(size_t(4 * vocab), 0.0f);
    float *r0 = rows.data(), *r1 = r0 + vocab, *r2 = r1 + vocab, *r3 = r2 + vocab;
    for (int64_t i = 0; i < vocab; ++i)
        r0[i] = float(i % 7), r2[i] = NAN, r3[i] = -float(i);
    r0[3] = NAN, r0[150] = 9.0f, r0[299] = 9.0f;
    for (int64_t i = 0; i < vocab; ++i)
        r1[i] = 2.5f; // all ties
    r2[290] = 1.0f, r2[7] = -2.0f, r2[100] = 1.0f;
    r3[42] = INFINITY, r3[0] = -INFINITY, r3[1] = -INFINITY;
    float *d = *cuda.allocate(rows.size(), "logits");
    QVERIFY(cuda.upload(d, rows.data(), rows.size()).ok());
    std::vector<int32_t> ids(size_t(4 * k));
    std::vector<float> values(size_t(4 * k));
    QVERIFY(cuda.topK(d, 4, vocab, k, ids, values).ok());
    const std::vector<int32_t> wantIds = {150, 299, 6, 13, 20,  0,   1, 2, 3, 4,
                                          100, 290, 7, -1, -1,  42,  2, 3, 4, 5};
    const std::vector<float> wantValues = {9, 9, 6, 6, 6, 2.5f, 2.5f, 2.5f, 2.5f, 2.5f,
                                           1, 1, -2, -INFINITY, -INFINITY,
                                           INFINITY, -2, -3, -4, -5};
    QCOMPARE(ids, wantIds);
    QCOMPARE(values, wantValues);
    cuda.release(d);
}

// Decode-sized matmul (the GEMV kernel) on an x that starts one float into a buffer: legal under
// Backend::matmul's contract, and the 16-byte vector path must not be taken for it (on a GPU a
// misaligned float4 load faults; the emulator cannot see alignment, so this checks the results of
// the path the host picks). Every dtype, in a multiple of 8.
void TestEmuCudaInferencePaths::gemvUnalignedInput() {
    auto made = makeCudaBackend({0, GemmPrecision::Fp32});
    QVERIFY(made.ok());
    CudaBackend &cuda = **made;
    auto cpu = makeCpuBackend(1);
    const int64_t rows = 3, in = 64, out = 37;
    std::mt19937 rng(5);
    std::normal_distribution<float> normal;
    std::vector<float> x(size_t(rows * in + 1)), w(size_t(out * in));
    for (float &f : x)
        f = normal(rng);
    for (float &f : w)
        f = normal(rng);
    float *dx = *cuda.allocate(x.size(), "x"), *dy = *cuda.allocate(size_t(rows * out), "y");
    QVERIFY(cuda.upload(dx, x.data(), x.size()).ok());
    for (DType type : {DType::F32, DType::BF16, DType::F16}) {
        const Tensor weight = floatsToTensor("w", out, in, w, type);
        std::vector<float> want(size_t(rows * out)), got(want.size());
        cpu->matmul(x.data() + 1, rows, weight, want.data());
        cuda.matmul(dx + 1, rows, weight, dy);
        QVERIFY(cuda.synchronize().ok());
        QVERIFY(cuda.download(got.data(), dy, got.size()).ok());
        for (size_t i = 0; i < want.size(); ++i)
            QVERIFY2(std::abs(got[i] - want[i]) <= 1e-4f * (1.0f + std::abs(want[i])),
                     qPrintable(QString("%1 [%2]: %3 vs %4")
                                    .arg(QString::fromStdString(std::string(dtypeName(type))))
                                    .arg(i)
                                    .arg(got[i])
                                    .arg(want[i])));
    }
    cuda.release(dx);
    cuda.release(dy);
}

QTEST_APPLESS_MAIN(TestEmuCudaInferencePaths)
#include "test_emu_cuda_inference_paths.moc"
