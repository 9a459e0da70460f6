// The device-resident forward (CudaModel) on the GPU against the same independent references as
// test_reference_logits (float64 NumPy logits of the HF fixtures) and test_stories260k (llama2.c
// run.c's greedy generation), with Fp32 GEMMs; plus a 16-bit tensor-core run held to a looser
// bound and batching across slots. The device is LOWBIT_TEST_DEVICE (default cuda:0).
// Skips when the build has no CUDA backend or the machine has no GPU.
#include "shared_data.h"

#include "model/checkpoint.h"
#include "runtime/cuda_model.h"

#include <nlohmann/json.hpp>

#include <QtTest>
#include <cmath>
#include <cstdlib>

using namespace lowbit;

namespace {

int testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? spec->index : 0;
}

std::shared_ptr<const Checkpoint> load(const std::filesystem::path &path,
                                       const LoadOptions &options = {}) {
    auto checkpoint = loadCheckpoint(path, options);
    if (!checkpoint.ok())
        qWarning("%s", checkpoint.error().message.c_str());
    return checkpoint.ok() ? std::make_shared<const Checkpoint>(std::move(*checkpoint)) : nullptr;
}

// max |got - ref| over max |ref| of one logit row.
double relativeRowError(const float *got, const nlohmann::json &ref) {
    double maxRef = 0, maxDiff = 0;
    for (size_t j = 0; j < ref.size(); ++j) {
        maxRef = std::max(maxRef, std::abs(ref[j].get<double>()));
        maxDiff = std::max(maxDiff, std::abs(got[j] - ref[j].get<double>()));
    }
    return maxDiff / std::max(maxRef, 1e-30);
}

} // namespace

class TestCudaModel : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void fixture_data();
    void fixture();
    void stories260kGreedy();
};

void TestCudaModel::initTestCase() {
    if (!cudaBuilt())
        QSKIP("built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)");
    std::string why;
    if (cudaDeviceCount(&why) == 0)
        QSKIP(qPrintable(QString("no CUDA device: %1").arg(QString::fromStdString(why))));
}

void TestCudaModel::fixture_data() {
    QTest::addColumn<QString>("name");
    QTest::addColumn<int>("precision");
    QTest::addColumn<double>("tol");
    QTest::newRow("a fp32") << "tiny-llama3-a" << int(GemmPrecision::Fp32) << 1e-4;
    QTest::newRow("b fp32 (128256 vocab)") << "tiny-llama3-b" << int(GemmPrecision::Fp32) << 1e-4;
    // bf16-rounded GEMM inputs above 8 rows (2^-9 relative per input): a loose bound that still
    // catches a wrong op (errors of order 1).
    QTest::newRow("a tensor16") << "tiny-llama3-a" << int(GemmPrecision::Tensor16) << 5e-2;
}

void TestCudaModel::fixture() {
    QFETCH(QString, name);
    QFETCH(int, precision);
    QFETCH(double, tol);
    LOWBIT_REQUIRE_SHARED_FILE(dir, "fixtures/" + name.toStdString());
    const auto ref = nlohmann::json::parse(test::readFile(dir / "reference_logits.json"));
    auto checkpoint = load(dir);
    QVERIFY(checkpoint);
    CudaModelOptions options;
    options.backend = {testDevice(), GemmPrecision(precision)};
    options.maxBatchTokens = 256;
    auto created = CudaModel::create(checkpoint, options);
    QVERIFY2(created.ok(), created.ok() ? "" : created.error().message.c_str());
    CudaModel &model = **created;
    auto allocated = model.allocateCache(2, 256);
    QVERIFY2(allocated.ok(), allocated.ok() ? "" : allocated.error().message.c_str());
    SequenceCache &cache = **allocated;
    for (size_t s = 0; s < ref["sequences"].size(); ++s) {
        const std::vector<int32_t> ids = ref["sequences"][s].get<std::vector<int32_t>>();
        cache.clear(0);
        SequenceInput input{0, ids, LogitsWanted::All};
        auto logits = model.forward(cache, {&input, 1});
        QVERIFY2(logits.ok(), logits.ok() ? "" : logits.error().message.c_str());
        QCOMPARE(logits->rows, int64_t(ids.size()));
        for (size_t t = 0; t < ids.size(); ++t) {
            const float *row = logits->row(int64_t(t));
            double e = 0;
            if (ref.contains("top10")) { // wide vocabulary: the stored top-10 [id, logit] pairs
                double maxRef = 0, maxDiff = 0;
                for (size_t j = 0; j < 10; ++j) {
                    const auto &pair = ref["top10"][s][t * 10 + j];
                    maxRef = std::max(maxRef, std::abs(pair[1].get<double>()));
                    maxDiff = std::max(maxDiff,
                                       std::abs(row[pair[0].get<int>()] - pair[1].get<double>()));
                }
                e = maxDiff / std::max(maxRef, 1e-30);
            } else {
                e = relativeRowError(row, ref["logits"][s][t]);
            }
            QVERIFY2(e <= tol,
                     qPrintable(QString("seq %1 pos %2: relative error %3").arg(s).arg(t).arg(e)));
        }
        // The mean NLL, reduced on the device from a fresh slot.
        cache.clear(1);
        auto logProbs = model.logProbs(cache, 1, ids);
        QVERIFY2(logProbs.ok(), logProbs.ok() ? "" : logProbs.error().message.c_str());
        if (ids.size() > 1) {
            double nll = 0;
            for (double lp : *logProbs)
                nll -= lp;
            nll /= double(ids.size() - 1);
            const double refNll = ref["nll"][s].get<double>();
            QVERIFY2(std::abs(nll - refNll) <=
                         (precision == int(GemmPrecision::Fp32) ? 1e-5 : 3e-2),
                     qPrintable(QString("seq %1: nll %2 vs %3")
                                    .arg(s)
                                    .arg(nll, 0, 'g', 12)
                                    .arg(refNll, 0, 'g', 12)));
        }
    }
    // Two slots in one batch, the second fed in two pieces, give the single-sequence logits (a
    // 4-token piece takes the exact GEMV path, 10 rows the GEMM: Tensor16 rounds only the latter).
    const float batchTol = precision == int(GemmPrecision::Fp32) ? 1e-3f : 5e-2f;
    const std::vector<int32_t> a = {5, 77, 300, 12, 9, 411, 2, 2, 100, 7}, b = {42, 1, 511, 250};
    cache.clear(0);
    SequenceInput alone{0, a, LogitsWanted::All};
    auto single = model.forward(cache, {&alone, 1});
    QVERIFY(single.ok());
    cache.clear(0);
    cache.clear(1);
    std::vector<SequenceInput> both = {{1, b, LogitsWanted::All},
                                       {0, {a.data(), 6}, LogitsWanted::All}};
    auto batched = model.forward(cache, both);
    QVERIFY(batched.ok());
    SequenceInput rest{0, {a.data() + 6, 4}, LogitsWanted::All};
    auto tail = model.forward(cache, {&rest, 1});
    QVERIFY(tail.ok());
    for (int64_t t = 0; t < 10; ++t) {
        const float *got = t < 6 ? batched->row(4 + t) : tail->row(t - 6);
        for (int64_t j = 0; j < single->vocab; ++j)
            QVERIFY(std::abs(got[j] - single->row(t)[j]) <=
                    batchTol * (1.0f + std::abs(single->row(t)[j])));
    }
}

// run.c's greedy continuation of BOS, 256 tokens, token by token through the device KV cache and
// the device arg-max (top-1).
void TestCudaModel::stories260kGreedy() {
    LOWBIT_REQUIRE_SHARED_FILE(modelPath, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizerPath, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(refPath, "data/llama2c/stories260K.greedy_reference.json");
    const auto ref = nlohmann::json::parse(test::readFile(refPath));
    const auto expected = ref["generated_ids"].get<std::vector<int32_t>>();
    LoadOptions loadOptions;
    loadOptions.tokenizerPath = tokenizerPath;
    auto checkpoint = load(modelPath, loadOptions);
    QVERIFY(checkpoint);
    CudaModelOptions options;
    options.backend = {testDevice(), GemmPrecision::Fp32};
    options.maxBatchTokens = 8;
    auto created = CudaModel::create(checkpoint, options);
    QVERIFY2(created.ok(), created.ok() ? "" : created.error().message.c_str());
    CudaModel &model = **created;
    auto allocated = model.allocateCache(1, int64_t(expected.size()) + 1);
    QVERIFY2(allocated.ok(), allocated.ok() ? "" : allocated.error().message.c_str());
    SequenceCache &cache = **allocated;

    const std::vector<int32_t> prefix = {1, expected[0], expected[1]};
    SequenceInput input{0, prefix, LogitsWanted::All};
    auto logits = model.forward(cache, {&input, 1});
    QVERIFY(logits.ok());
    for (int64_t t = 0; t < 3; ++t) {
        const double e = relativeRowError(logits->row(t), ref["first_logits"][size_t(t)]);
        QVERIFY2(e <= 1e-4, qPrintable(QString("row %1: relative error %2").arg(t).arg(e)));
    }

    cache.clear(0);
    std::vector<int32_t> generated;
    int32_t token = 1; // BOS
    while (generated.size() < expected.size()) {
        auto top = model.next(cache, 0, {&token, 1}, 1);
        QVERIFY2(top.ok(), top.ok() ? "" : top.error().message.c_str());
        token = top->ids[0];
        generated.push_back(token);
    }
    QCOMPARE(generated, expected);
}

QTEST_APPLESS_MAIN(TestCudaModel)
#include "test_cuda_model.moc"
