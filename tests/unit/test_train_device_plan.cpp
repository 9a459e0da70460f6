// The host half of device training (train/cuda_train_model.h, cuda_train_detail.h), which runs
// in every build: the factory without a GPU (a clear Unsupported, no crash), the flattened batch
// against TrainableModel's layout written out by hand, and the memory plan against closed-form
// byte counts on the tiny-llama3-a fixture. The device itself is tested by test_cuda_train_model.
#include "shared_data.h"

#include "backend/device.h"
#include "model/checkpoint.h"
#include "quant/nf4.h"
#include "quant/quantized_tensor.h"
#include "train/cuda_train_detail.h"
#include "train/cuda_train_model.h"
#include "train/train_ops.h"

#include <QtTest>
#include <cmath>
#include <random>

using namespace lowbit;
using namespace lowbit::train;

namespace {

Checkpoint tinyConfigOnly() {
    Checkpoint ck;
    ModelConfig &c = ck.config;
    c.vocabSize = 11, c.hiddenSize = 16, c.intermediateSize = 24, c.numLayers = 1;
    c.numHeads = 4, c.numKvHeads = 2, c.headDim = 4, c.maxPositions = 8;
    return ck;
}

// Reference BLAS semantics of a column-major GEMM: C(i, j) = C[i + j·ldc], op(X)(i, p) = X[i +
// p·ld] or, transposed, X[p + i·ld].
void columnMajorGemm(const detail::ColumnMajorGemm &g, double alpha, double beta, double *c,
                     int64_t ldc) {
    const auto *a = static_cast<const double *>(g.first);
    const auto *b = static_cast<const double *>(g.second);
    for (int64_t i = 0; i < g.m; ++i)
        for (int64_t j = 0; j < g.n; ++j) {
            double sum = 0;
            for (int64_t p = 0; p < g.k; ++p)
                sum += (g.transFirst ? a[p + i * g.ldFirst] : a[i + p * g.ldFirst]) *
                       (g.transSecond ? b[j + p * g.ldSecond] : b[p + j * g.ldSecond]);
            c[i + j * ldc] = alpha * sum + beta * c[i + j * ldc];
        }
}

bool contains(const std::string &text, const char *needle) {
    return text.find(needle) != std::string::npos;
}

} // namespace

class TestTrainDevicePlan : public QObject {
    Q_OBJECT
private slots:
    void factoryWithoutDevice();
    void rowMajorGemmAsColumnMajor();
    void flattenedBatch();
    void badBatch();
    void memoryPlan();
    void unsupportedBases();
};

void TestTrainDevicePlan::factoryWithoutDevice() {
    std::string why;
    if (cudaDeviceCount(&why) > 0)
        QSKIP("this machine has a CUDA device: test_cuda_train_model covers the factory");
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    CudaTrainOptions options;
    options.device = 3;
    auto made = CudaTrainModel::create(*ck, LoraOptions{}, options);
    QVERIFY(!made.ok());
    QCOMPARE(made.error().code, ErrorCode::Unsupported);
    QVERIFY2(contains(made.error().message, "device training on cuda:3: "),
             made.error().message.c_str());
    QVERIFY2(contains(made.error().message, why.c_str()), made.error().message.c_str());
}

// The argument mapping the device GEMMs use (cuda_train_linear.cpp), run through a naive
// column-major GEMM, against OpenBLAS's row-major cblas_dgemm (ops::gemm), for every transpose
// pair on rectangular shapes with padded leading dimensions and beta = 1.
void TestTrainDevicePlan::rowMajorGemmAsColumnMajor() {
    std::mt19937_64 rng(3);
    std::uniform_real_distribution<double> uniform(-1.0, 1.0);
    const int64_t m = 5, n = 7, k = 3;
    for (bool transA : {false, true})
        for (bool transB : {false, true}) {
            const int64_t lda = (transA ? m : k) + 2, ldb = (transB ? k : n) + 1, ldc = n + 3;
            std::vector<double> a(size_t((transA ? k : m) * lda)),
                b(size_t((transB ? n : k) * ldb));
            std::vector<double> expected(size_t(m * ldc));
            for (auto *v : {&a, &b, &expected})
                for (double &x : *v)
                    x = uniform(rng);
            std::vector<double> got = expected;
            ops::gemm<double>(transA, transB, m, n, k, 0.5, a.data(), lda, b.data(), ldb, 1.0,
                              expected.data(), ldc);
            columnMajorGemm(
                detail::columnMajorOf(transA, transB, m, n, k, a.data(), lda, b.data(), ldb), 0.5,
                1.0, got.data(), ldc);
            for (size_t i = 0; i < got.size(); ++i)
                QVERIFY2(
                    std::abs(got[i] - expected[i]) < 1e-12,
                    qPrintable(
                        QString("transA %1 transB %2 element %3").arg(transA).arg(transB).arg(i)));
        }
}

void TestTrainDevicePlan::flattenedBatch() {
    const Checkpoint ck = tinyConfigOnly();
    const std::vector<double> invFreq = {1.0, 0.01};
    const std::vector<TrainExample> batch = {
        {{3, 7, 1}, {kIgnoreTarget, 1, 9}}, {}, {{5, 0}, {0, kIgnoreTarget}}};
    const detail::FlatBatch b = detail::flattenTrainBatch(ck.config, invFreq, batch);
    QCOMPARE(b.ids, (std::vector<int32_t>{3, 7, 1, 5, 0}));
    QCOMPARE(b.starts, (std::vector<int64_t>{0, 3, 3, 5}));
    QCOMPARE(b.scoredRows, (std::vector<int64_t>{1, 2, 3}));
    QCOMPARE(b.scoredExample, (std::vector<int64_t>{0, 0, 2}));
    QCOMPARE(b.scoredPosition, (std::vector<int64_t>{1, 2, 0}));
    QCOMPARE(b.scoredTargets, (std::vector<int32_t>{1, 9, 0}));
    QCOMPARE(b.cosSin.size(), size_t(5 * 4));
    // Row 2 is position 2 of its sequence, row 4 position 1: cos then sin of position·invFreq.
    QCOMPARE(b.cosSin[2 * 4 + 0], float(std::cos(2.0)));
    QCOMPARE(b.cosSin[2 * 4 + 1], float(std::cos(0.02)));
    QCOMPARE(b.cosSin[2 * 4 + 2], float(std::sin(2.0)));
    QCOMPARE(b.cosSin[2 * 4 + 3], float(std::sin(0.02)));
    QCOMPARE(b.cosSin[4 * 4 + 2], float(std::sin(1.0)));
    QCOMPARE(b.cosSin[3 * 4 + 0], 1.0f); // position 0
}

void TestTrainDevicePlan::badBatch() {
    const Checkpoint ck = tinyConfigOnly();
    auto fails = [&](std::vector<TrainExample> batch, const char *needle) {
        const Status s = checkTrainBatch(ck.config, batch);
        return !s.ok() && contains(s.error().message, needle);
    };
    QVERIFY(fails({{{1, 2, 3}, {2, 3}}}, "3 tokens but 2 targets"));
    QVERIFY(fails({{{1, 2, 3}, {2, 3, 11}}}, "target 11 out of range"));
    QVERIFY(fails({{}, {{1, -1}, {2, 3}}}, "training example 1: token -1 out of range"));
    QVERIFY(fails({{std::vector<int32_t>(9, 1), std::vector<int32_t>(9, 1)}}, "context of 8"));
    QVERIFY(
        checkTrainBatch(ck.config, std::vector<TrainExample>{{{1}, {kIgnoreTarget}}}).ok());
}

// Every figure of the plan from the fixture's shapes: hidden 64, q 64, kv 32, ffn 176, 2 layers,
// vocab 512, untied BF16.
void TestTrainDevicePlan::memoryPlan() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    LoraOptions lora;
    lora.rank = 8;
    lora.targets = {"q_proj", "down_proj"};
    lora.elasticConnection = true;
    CudaTrainOptions options;
    options.maxBatchTokens = 100;
    options.headChunkRows = 32;
    options.precision = GemmPrecision::Fp32;
    // down_proj of layer 1 packed as NF4.
    const Tensor &down = ck->weights.layers[1].wDown;
    const std::vector<float> values = tensorToFloats(down);
    auto q = quantizeNf4(down.name, values.data(), down.rows(), down.cols(), Nf4Options{});
    QVERIFY(q.ok());
    std::map<std::string, QuantizedTensor> packed;
    packed.emplace(down.name, *q);
    options.packed = &packed;
    auto plan = detail::planCudaTraining(*ck, lora, options, 1000);
    QVERIFY2(plan.ok(), plan.ok() ? "" : plan.error().message.c_str());
    const int64_t h = 64, kv = 32, f = 176, v = 512, n = 100;
    QCOMPARE(plan->linears.size(), size_t(14));
    QCOMPARE(plan->linears[0].rank, 8); // layer 0 q_proj
    QCOMPARE(plan->linears[1].rank, 0); // k_proj
    QCOMPARE(plan->linears[13].packed, &packed.begin()->second);
    QCOMPARE(plan->adapterFloats, 2 * (8 * (h + h) + 2 + 8 * (f + h) + 2));
    QCOMPARE(plan->maxLinearValues, h * f);
    QCOMPARE(plan->chunkRows, int64_t(32));
    const CudaTrainMemory &m = plan->memory;
    // Codes 4 bits (+4 padding bytes), scale + zero per 64-block (3 per row), codebook 16,
    // offsets + widths per group.
    const uint64_t downPacked = uint64_t(h * f / 2 + 4 + h * 3 * 8 + 16 * 4 + 3 * 5);
    QCOMPARE(detail::packedDeviceBytes(packed.begin()->second), downPacked);
    const uint64_t linearValues = uint64_t(2 * (h * h * 2 + kv * h * 2 + f * h * 3)) - h * f;
    QCOMPARE(m.weightBytes, uint64_t(2 * v * h * 4 + 5 * h * 4) + linearValues * 4 + downPacked);
    QCOMPARE(m.adapterBytes, uint64_t(plan->adapterFloats) * 8);
    QCOMPARE(m.checkpointBytes, uint64_t(3 * n * h * 4));
    QCOMPARE(m.headBytes, uint64_t(32 * v * 4 + 32 * h * 16 + 32 * 4));
    QVERIFY(m.layerBytes > uint64_t(n * (6 * f + 2 * h) * 4)); // at least the MLP's buffers
    // The public estimate is the same plan with its attention-scratch allowance.
    auto estimate = estimateCudaTrainMemory(*ck, lora, options);
    QVERIFY(estimate.ok());
    QCOMPARE(estimate->checkpointBytes, m.checkpointBytes);
    QCOMPARE(estimate->weightBytes, m.weightBytes);
    // Tensor16 keeps the BF16 tables and dense linears as stored.
    options.precision = GemmPrecision::Tensor16;
    auto half = detail::planCudaTraining(*ck, lora, options, 1000);
    QVERIFY(half.ok());
    QCOMPARE(half->memory.weightBytes,
             uint64_t(2 * v * h * 2 + 5 * h * 4) + linearValues * 2 + downPacked);
}

void TestTrainDevicePlan::unsupportedBases() {
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/tiny-llama3-a");
    auto ck = loadCheckpoint(dir);
    QVERIFY(ck.ok());
    auto error = [&](const CudaTrainOptions &options, LoraOptions lora = {}) {
        auto plan = detail::planCudaTraining(*ck, lora, options, 0);
        return plan.ok() ? std::string() : plan.error().message;
    };
    CudaTrainOptions options;
    options.makeBase = [](int64_t, std::string_view,
                          const Tensor &) -> Result<std::unique_ptr<LinearBase<float>>> {
        return makeError(ErrorCode::Internal, "not called");
    };
    QVERIFY(contains(error(options), "DB-LLM's dual binary) are not supported on the GPU"));
    options.makeBase = nullptr;
    const Tensor &wq = ck->weights.layers[0].wq;
    std::map<std::string, QuantizedTensor> packed;
    auto wrongShape = QuantizedTensor::create(wq.name, "nf4", 8, 64, 4, 64, true);
    packed.emplace(wq.name, *wrongShape);
    options.packed = &packed;
    QVERIFY(contains(error(options), "packed tensor is 8x64 but the checkpoint weight is 64x64"));
    auto other = QuantizedTensor::create(wq.name, "awq", 64, 64, 4, 64, false);
    packed.clear();
    packed.emplace(wq.name, *other);
    QVERIFY(contains(error(options), "packed method 'awq' is not supported"));
    packed.begin()->second.method = "gptq";
    packed.begin()->second.permutation.assign(64, 0);
    QVERIFY(contains(error(options), "act-order"));
    LoraOptions lora;
    lora.targets = {"qkv"};
    options.packed = nullptr;
    QVERIFY(contains(error(options, lora), "LoRA target 'qkv'"));
    options.maxBatchTokens = 0;
    QVERIFY(contains(error(options), "must be positive"));
}

QTEST_APPLESS_MAIN(TestTrainDevicePlan)
#include "test_train_device_plan.moc"
