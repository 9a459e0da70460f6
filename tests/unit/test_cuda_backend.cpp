// Every op of the CUDA backend against the CPU backend (the reference of test_backend_ops) on
// awkward shapes, in the manner of ggml's test-backend-ops: fresh random inputs, device outputs
// poisoned with NaN before each run, normalized mean-squared error per op. Also the loss-side
// reductions, packed quantized GEMV/GEMM, GPTQ's Hessian and Cholesky, and the error paths.
// Skips (with the reason) when the build has no CUDA backend or the machine has no GPU. The
// device is LOWBIT_TEST_DEVICE (default cuda:0).
#include "backend/backend.h"
#include "backend/cuda/cuda_backend.h"
#include "backend/cuda/cuda_gptq.h"
#include "quant/gptq.h"
#include "quant/linalg.h"
#include "quant/nf4.h"
#include "quant/quantized_tensor.h"
#include "runtime/log_prob.h"

#include <QtTest>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>

using namespace lowbit;

namespace {

std::vector<float> randomVector(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v)
        x = normal(rng);
    return v;
}

double nmse(const std::vector<float> &got, const std::vector<float> &want) {
    double err = 0, ref = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = double(got[i]) - double(want[i]);
        err += std::isnan(got[i]) ? 1e30 : d * d;
        ref += double(want[i]) * double(want[i]);
    }
    return err / std::max(ref, 1e-30);
}

#define CHECK_NMSE(got, want, tol, what)                                                           \
    do {                                                                                           \
        const double nmseValue = nmse(got, want);                                                  \
        QVERIFY2(nmseValue <= (tol), qPrintable(QString("%1: nmse %2").arg(what).arg(nmseValue))); \
    } while (0)

// A device buffer of the backend under test, filled from or read back to host vectors.
struct DeviceVector {
    CudaBackend *backend = nullptr;
    float *data = nullptr;
    size_t size = 0;
    DeviceVector(CudaBackend &b, size_t n) : backend(&b), size(n) {
        auto p = b.allocate(n, "test buffer");
        if (p.ok())
            data = *p;
    }
    DeviceVector(CudaBackend &b, const std::vector<float> &host) : DeviceVector(b, host.size()) {
        set(host);
    }
    ~DeviceVector() { backend->release(data); }
    void set(const std::vector<float> &host) {
        (void)backend->upload(data, host.data(), host.size());
    }
    void poison() { set(std::vector<float>(size, std::numeric_limits<float>::quiet_NaN())); }
    std::vector<float> get() {
        std::vector<float> host(size);
        const Status s = backend->download(host.data(), data, size);
        if (!s.ok())
            qWarning("%s", s.error().message.c_str());
        return host;
    }
};

int testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? spec->index : 0;
}

} // namespace

class TestCudaBackend : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void matmul_data();
    void matmul();
    void smallOps();
    void attention_data();
    void attention();
    void lossSide();
    void quantizedMatmul_data();
    void quantizedMatmul();
    void gptqLinearAlgebra();
    void gptqSweep_data();
    void gptqSweep();
    void errors();

private:
    std::unique_ptr<CudaBackend> make(GemmPrecision precision = GemmPrecision::Fp32) {
        auto b = makeCudaBackend({testDevice(), precision});
        if (!b.ok())
            qWarning("%s", b.error().message.c_str());
        return b.ok() ? std::move(*b) : nullptr;
    }
    std::unique_ptr<Backend> m_cpu = makeCpuBackend(2);
};

void TestCudaBackend::initTestCase() {
    if (!cudaBuilt())
        QSKIP("built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)");
    std::string why;
    if (cudaDeviceCount(&why) == 0)
        QSKIP(qPrintable(QString("no CUDA device: %1").arg(QString::fromStdString(why))));
}

void TestCudaBackend::matmul_data() {
    QTest::addColumn<int>("dtype");
    QTest::addColumn<int>("precision");
    QTest::addColumn<int>("rows");
    QTest::addColumn<int>("in");
    QTest::addColumn<int>("out");
    QTest::addColumn<double>("tol");
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        const QByteArray n(dtypeName(t).data(), int(dtypeName(t).size()));
        for (auto [rows, in, out] :
             {std::tuple{1, 67, 129}, {5, 64, 17}, {8, 4096, 33}, {9, 96, 301}, {803, 96, 301}}) {
            const QByteArray shape = QByteArray::number(rows) + "x" + QByteArray::number(in) +
                                     "->" + QByteArray::number(out);
            QTest::newRow(n + " fp32 " + shape)
                << int(t) << int(GemmPrecision::Fp32) << rows << in << out << 1e-10;
            // Tensor16 rounds x to 16 bits above kGemvMaxRows rows: bf16 has 8 significant bits.
            QTest::newRow(n + " tensor16 " + shape)
                << int(t) << int(GemmPrecision::Tensor16) << rows << in << out
                << (t == DType::BF16 ? 3e-5 : 1e-6);
        }
    }
}

void TestCudaBackend::matmul() {
    QFETCH(int, dtype);
    QFETCH(int, precision);
    QFETCH(int, rows);
    QFETCH(int, in);
    QFETCH(int, out);
    QFETCH(double, tol);
    auto cuda = make(GemmPrecision(precision));
    QVERIFY(cuda);
    const auto x = randomVector(size_t(rows * in), 1);
    const auto wf = randomVector(size_t(out * in), 2, 0.1f);
    const Tensor w = Tensor::fromFloats("w", {out, in}, wf.data(), DType(dtype));
    std::vector<float> want(size_t(rows * out));
    m_cpu->matmul(x.data(), rows, w, want.data());
    DeviceVector dx(*cuda, x), dy(*cuda, want.size());
    dy.poison();
    cuda->matmul(dx.data, rows, w, dy.data);
    QVERIFY(cuda->synchronize().ok());
    CHECK_NMSE(dy.get(), want, tol, "matmul");
}

void TestCudaBackend::smallOps() {
    auto cuda = make();
    QVERIFY(cuda);
    const int rows = 13, dim = 1031, vocab = 37; // dim: not a multiple of the block size
    const auto x = randomVector(size_t(rows * dim), 3, 2.0f);
    const auto wf = randomVector(size_t(dim), 4);
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        const Tensor weight = Tensor::fromFloats("norm", {dim}, wf.data(), t);
        std::vector<float> want(x.size());
        m_cpu->rmsnorm(x.data(), rows, dim, weight, 1e-5f, want.data());
        DeviceVector dx(*cuda, x), dy(*cuda, x.size());
        dy.poison();
        cuda->rmsnorm(dx.data, rows, dim, weight, 1e-5f, dy.data);
        CHECK_NMSE(dy.get(), want, 1e-12, "rmsnorm");
        cuda->rmsnorm(dx.data, rows, dim, weight, 1e-5f, dx.data); // in place
        CHECK_NMSE(dx.get(), want, 1e-12, "rmsnorm in place");

        const auto tableF = randomVector(size_t(vocab * dim), 5);
        const Tensor table = Tensor::fromFloats("embed", {vocab, dim}, tableF.data(), t);
        const std::vector<int32_t> ids = {36, 0, 7, 7, 12};
        std::vector<float> wantEmbed(ids.size() * size_t(dim));
        m_cpu->embed(table, ids, wantEmbed.data());
        DeviceVector de(*cuda, wantEmbed.size());
        de.poison();
        cuda->embed(table, ids, de.data);
        CHECK_NMSE(de.get(), wantEmbed, 0.0, "embed");
    }
    const auto g = randomVector(100003, 6, 3.0f), u = randomVector(100003, 7);
    std::vector<float> wantSwiglu(g.size()), wantAdd = g;
    m_cpu->swiglu(g.data(), u.data(), int64_t(g.size()), wantSwiglu.data());
    m_cpu->add(wantAdd.data(), u.data(), int64_t(g.size()));
    DeviceVector dg(*cuda, g), du(*cuda, u), ds(*cuda, g.size());
    ds.poison();
    cuda->swiglu(dg.data, du.data, int64_t(g.size()), ds.data);
    CHECK_NMSE(ds.get(), wantSwiglu, 1e-12, "swiglu");
    cuda->add(dg.data, du.data, int64_t(g.size()));
    CHECK_NMSE(dg.get(), wantAdd, 1e-14, "add");

    const int ropeRows = 9, heads = 3, hd = 10, stride = heads * hd + 4; // padded rows
    const auto r = randomVector(size_t(ropeRows * stride), 8);
    std::vector<float> cosSin(size_t(ropeRows * hd));
    for (int row = 0; row < ropeRows; ++row)
        for (int j = 0; j < hd / 2; ++j) {
            const double angle = (row * 997 % 5000) * std::pow(10000.0, -2.0 * j / hd);
            cosSin[size_t(row * hd + j)] = float(std::cos(angle));
            cosSin[size_t(row * hd + hd / 2 + j)] = float(std::sin(angle));
        }
    std::vector<float> wantRope = r;
    m_cpu->rope(wantRope.data(), ropeRows, stride, heads, hd, cosSin.data());
    DeviceVector dr(*cuda, r), dc(*cuda, cosSin);
    cuda->rope(dr.data, ropeRows, stride, heads, hd, dc.data);
    CHECK_NMSE(dr.get(), wantRope, 1e-12, "rope");
    QVERIFY(cuda->synchronize().ok());
}

void TestCudaBackend::attention_data() {
    QTest::addColumn<int>("heads");
    QTest::addColumn<int>("kvHeads");
    QTest::addColumn<int>("headDim");
    QTest::newRow("MHA 2x8 (stories260K heads)") << 2 << 2 << 8;
    QTest::newRow("GQA 6/2 x 24") << 6 << 2 << 24;
    QTest::newRow("GQA 12/3 x 96") << 12 << 3 << 96;
    QTest::newRow("LLaMA-3 group 32/8 x 128") << 32 << 8 << 128;
    QTest::newRow("MQA 9/1 x 64 (group > warps of a block)") << 9 << 1 << 64;
}

void TestCudaBackend::attention() {
    QFETCH(int, heads);
    QFETCH(int, kvHeads);
    QFETCH(int, headDim);
    auto cuda = make();
    QVERIFY(cuda);
    const int qStride = heads * headDim, kvStride = kvHeads * headDim;
    // A long prefill, a chunk after a cached prefix, and two decode steps over long caches (split
    // keys), all in one call.
    struct Seq {
        int64_t queries, first;
    };
    const std::vector<Seq> shapes = {{301, 0}, {37, 200}, {1, 2500}, {1, 33}};
    const AttentionShape shape{heads,   kvHeads,  headDim,
                               qStride, kvStride, 1.0f / std::sqrt(float(headDim))};
    std::vector<std::vector<float>> q, k, v, want;
    std::vector<std::unique_ptr<DeviceVector>> dq, dk, dv, dout;
    std::vector<AttentionSequence> cpuSeqs, cudaSeqs;
    uint32_t seed = 10;
    for (const Seq &s : shapes) {
        const int64_t keys = s.first + s.queries;
        q.push_back(randomVector(size_t(s.queries * qStride), seed++));
        k.push_back(randomVector(size_t(keys * kvStride), seed++));
        v.push_back(randomVector(size_t(keys * kvStride), seed++));
        want.emplace_back(size_t(s.queries * qStride));
        dq.push_back(std::make_unique<DeviceVector>(*cuda, q.back()));
        dk.push_back(std::make_unique<DeviceVector>(*cuda, k.back()));
        dv.push_back(std::make_unique<DeviceVector>(*cuda, v.back()));
        dout.push_back(std::make_unique<DeviceVector>(*cuda, want.back().size()));
        dout.back()->poison();
    }
    for (size_t i = 0; i < shapes.size(); ++i) {
        cpuSeqs.push_back({q[i].data(), k[i].data(), v[i].data(), want[i].data(), shapes[i].queries,
                           shapes[i].first});
        cudaSeqs.push_back({dq[i]->data, dk[i]->data, dv[i]->data, dout[i]->data, shapes[i].queries,
                            shapes[i].first});
    }
    m_cpu->attention(cpuSeqs, shape);
    cuda->attention(cudaSeqs, shape);
    QVERIFY(cuda->synchronize().ok());
    for (size_t i = 0; i < shapes.size(); ++i)
        CHECK_NMSE(dout[i]->get(), want[i], 1e-10, QString("attention sequence %1").arg(i));
}

void TestCudaBackend::lossSide() {
    auto cuda = make();
    QVERIFY(cuda);
    const int rows = 7, vocab = 128256; // LLaMA-3's vocabulary
    auto logits = randomVector(size_t(rows * vocab), 20, 4.0f);
    logits[5] = logits[vocab + 9] = 40.0f; // a tie in row 0 and a clear winner in row 1
    logits[17] = 40.0f;
    std::vector<int32_t> targets = {5, 9, 0, vocab - 1, 1234, 77, 100000};
    DeviceVector d(*cuda, logits);
    std::vector<double> got(rows);
    const Status s = cuda->tokenLogProbs(d.data, rows, vocab, targets, got);
    QVERIFY2(s.ok(), s.ok() ? "" : s.error().message.c_str());
    for (int r = 0; r < rows; ++r) {
        const double want =
            logProbability(logits.data() + size_t(r) * vocab, vocab, targets[size_t(r)]);
        QVERIFY2(std::abs(got[size_t(r)] - want) <= 1e-6 * (1 + std::abs(want)),
                 qPrintable(QString("row %1").arg(r)));
    }
    const int k = 10;
    std::vector<int32_t> ids(rows * k);
    std::vector<float> values(rows * k);
    QVERIFY(cuda->topK(d.data, rows, vocab, k, ids, values).ok());
    for (int r = 0; r < rows; ++r) {
        std::vector<int32_t> order(static_cast<size_t>(vocab));
        std::iota(order.begin(), order.end(), 0);
        const float *row = logits.data() + size_t(r) * vocab;
        std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
            return row[a] > row[b] || (row[a] == row[b] && a < b);
        });
        for (int j = 0; j < k; ++j) {
            QCOMPARE(ids[size_t(r * k + j)], order[size_t(j)]);
            QCOMPARE(values[size_t(r * k + j)], row[order[size_t(j)]]);
        }
    }
    targets[3] = vocab; // out of range: an error, not a fault
    QCOMPARE(cuda->tokenLogProbs(d.data, rows, vocab, targets, got).error().code,
             ErrorCode::InvalidArgument);
}

void TestCudaBackend::quantizedMatmul_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("groupSize");
    QTest::addColumn<bool>("nf4");
    QTest::addColumn<bool>("mixed");
    QTest::addColumn<bool>("permuted");
    QTest::newRow("4-bit g128 (16-byte word path)") << 4 << 128 << false << false << false;
    QTest::newRow("4-bit g8 (one word per lane)") << 4 << 8 << false << false << false;
    QTest::newRow("2-bit g64") << 2 << 64 << false << false << false;
    QTest::newRow("8-bit per-channel") << 8 << 0 << false << false << false;
    QTest::newRow("3-bit g128 (bit stream)") << 3 << 128 << false << false << false;
    QTest::newRow("4-bit g32 act-order") << 4 << 32 << false << false << true;
    QTest::newRow("NF4 g64") << 4 << 64 << true << false << false;
    QTest::newRow("mixed 2/3/4 g128") << 4 << 128 << false << true << false;
}

void TestCudaBackend::quantizedMatmul() {
    QFETCH(int, bits);
    QFETCH(int, groupSize);
    QFETCH(bool, nf4);
    QFETCH(bool, mixed);
    QFETCH(bool, permuted);
    const int64_t outF = 203, in = 640;
    auto q = QuantizedTensor::create("w", "test", outF, in, bits, groupSize, false);
    QVERIFY(q.ok());
    std::mt19937 rng(30);
    if (mixed) {
        std::vector<uint8_t> widths;
        for (int64_t g = 0; g < q->groups(); ++g)
            widths.push_back(uint8_t(2 + g % 3));
        QVERIFY(q->setGroupBits(widths).ok());
    }
    std::vector<uint8_t> codes(size_t(outF * in));
    for (int64_t r = 0; r < outF; ++r)
        for (int64_t j = 0; j < in; ++j)
            codes[size_t(r * in + j)] = uint8_t(rng() % (1u << q->groupWidth(q->groupOf(j))));
    QVERIFY(q->setCodes(codes).ok());
    const auto scales = randomVector(q->scales.size(), 31, 0.05f);
    for (size_t i = 0; i < scales.size(); ++i) {
        q->scales[i] = scales[i];
        q->zeros[i] = float(rng() % 4);
    }
    if (nf4)
        q->codebook.assign(kNf4Levels.begin(), kNf4Levels.end());
    if (permuted) {
        q->permutation.resize(size_t(in));
        std::iota(q->permutation.begin(), q->permutation.end(), 0);
        std::shuffle(q->permutation.begin(), q->permutation.end(), rng);
    }
    QVERIFY(q->validate().ok());
    const std::vector<float> dense = q->dequantize();
    const Tensor w = Tensor::fromFloats("dense", {outF, in}, dense.data(), DType::F32);
    for (GemmPrecision precision : {GemmPrecision::Fp32, GemmPrecision::Tensor16}) {
        auto cuda = make(precision);
        QVERIFY(cuda);
        for (int rows : {1, 3, 8, 40}) {
            const auto x = randomVector(size_t(rows * in), 32 + uint32_t(rows));
            std::vector<float> want(size_t(rows * outF));
            m_cpu->matmul(x.data(), rows, w, want.data());
            DeviceVector dx(*cuda, x), dy(*cuda, want.size());
            dy.poison();
            const Status s = cuda->quantizedMatmul(dx.data, rows, *q, dy.data);
            QVERIFY2(s.ok(), s.ok() ? "" : s.error().message.c_str());
            QVERIFY(cuda->synchronize().ok());
            const bool rounded =
                precision == GemmPrecision::Tensor16 && rows > 8; // bf16 GEMM inputs
            CHECK_NMSE(dy.get(), want, rounded ? 3e-5 : 1e-10, QString("rows %1").arg(rows));
        }
    }
}

void TestCudaBackend::gptqLinearAlgebra() {
    auto cuda = make();
    QVERIFY(cuda);
    const int64_t rows = 5000, cols = 67; // two row blocks, odd size
    const auto x = randomVector(size_t(rows * cols), 40);
    auto h = cudaHessian(*cuda, x, rows, cols);
    QVERIFY2(h.ok(), h.ok() ? "" : h.error().message.c_str());
    double err = 0, ref = 0;
    for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) {
            double want = 0;
            for (int64_t t = 0; t < rows; ++t)
                want += double(x[size_t(t * cols + i)]) * double(x[size_t(t * cols + j)]);
            want *= 2.0 / double(rows);
            err += std::pow((*h)[size_t(i * cols + j)] - want, 2);
            ref += want * want;
        }
    // float32 sums of up to 4096 products (one SYRK per row block): a relative error of about
    // sqrt(4096) * 2^-24 ~ 4e-6, an nmse near 1e-11; 1e-9 allows that, an O(1) defect does not.
    QVERIFY2(err / ref < 1e-9, qPrintable(QString("Hessian nmse %1").arg(err / ref)));
    std::vector<float> hf(h->begin(), h->end()), hCpu = hf;
    QVERIFY(cudaCholeskyInverseUpper(*cuda, hf, cols).ok());
    QVERIFY(choleskyInverseUpper(hCpu, cols).ok());
    CHECK_NMSE(hf, hCpu, 1e-9, "chol(H^-1) upper");
    std::vector<float> notPd(size_t(cols * cols), 0.0f); // zero matrix: not positive definite
    QCOMPARE(cudaCholeskyInverseUpper(*cuda, notPd, cols).error().code, ErrorCode::Internal);
}

void TestCudaBackend::gptqSweep_data() {
    QTest::addColumn<int>("bits");
    QTest::addColumn<int>("groupSize");
    QTest::addColumn<bool>("symmetric");
    QTest::addColumn<bool>("actOrder");
    QTest::newRow("4-bit g64") << 4 << 64 << false << false;
    QTest::newRow("3-bit g48 (groups straddle blocks), act-order") << 3 << 48 << false << true;
    QTest::newRow("2-bit per-channel symmetric") << 2 << 0 << true << false;
}

// The GPU sweep against the CPU's quantizeGptq on the same prepared Hessian: the same codes up to
// float rounding at grid boundaries (and what such a flip propagates), the same loss.
void TestCudaBackend::gptqSweep() {
    QFETCH(int, bits);
    QFETCH(int, groupSize);
    QFETCH(bool, symmetric);
    QFETCH(bool, actOrder);
    auto cuda = make();
    QVERIFY(cuda);
    const int64_t rows = 77, cols = 300, tokens = 600; // blocks of 128, 128, 44
    auto x = randomVector(size_t(tokens * cols), 50);
    for (int64_t t = 0; t < tokens; ++t) // uneven column scales, one dead column
        for (int64_t j = 0; j < cols; ++j)
            x[size_t(t * cols + j)] *= j == 7 ? 0.0f : 0.2f + float(j % 13) / 4.0f;
    std::vector<double> h(size_t(cols * cols));
    for (int64_t t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t j = 0; j < cols; ++j)
                h[size_t(i * cols + j)] +=
                    2.0 / tokens * double(x[size_t(t * cols + i)]) * x[size_t(t * cols + j)];
    auto prepared = prepareHessian(h, cols, {0.01, actOrder, 2, false});
    QVERIFY(prepared.ok());
    const auto w = randomVector(size_t(rows * cols), 51, 0.05f);
    GptqOptions options;
    options.bits = bits;
    options.groupSize = groupSize;
    options.symmetric = symmetric;
    options.actOrder = actOrder;
    options.threads = 2;
    nlohmann::json notes;
    auto cpu = quantizeGptq("w", w, rows, cols, *prepared, options, {}, &notes);
    QVERIFY(cpu.ok());
    double gpuLoss = 0;
    auto gpu = cudaGptqSweep(*cuda, "w", w, rows, cols, *prepared, options, &gpuLoss);
    QVERIFY2(gpu.ok(), gpu.ok() ? "" : gpu.error().message.c_str());
    const auto a = cpu->codes(), b = gpu->codes();
    int64_t same = 0;
    for (size_t i = 0; i < a.size(); ++i)
        same += a[i] == b[i];
    QVERIFY2(double(same) >= 0.99 * double(a.size()),
             qPrintable(QString("%1 of %2 codes agree").arg(same).arg(a.size())));
    CHECK_NMSE(gpu->dequantize(), cpu->dequantize(), 1e-3, "dequantized weights");
    const double cpuLoss = notes["loss"].get<double>();
    QVERIFY2(std::abs(gpuLoss - cpuLoss) <= 1e-2 * cpuLoss,
             qPrintable(QString("loss %1 vs %2").arg(gpuLoss).arg(cpuLoss)));
    QCOMPARE(gpu->permutation, cpu->permutation);
}

void TestCudaBackend::errors() {
    auto missing = makeCudaBackend({999, GemmPrecision::Fp32});
    QVERIFY(!missing.ok());
    QVERIFY2(missing.error().message.find("cuda:999") != std::string::npos,
             missing.error().message.c_str());
    auto cuda = make();
    QVERIFY(cuda);
    auto huge = cuda->allocate(size_t(1) << 48, "a test tensor"); // 1 PiB of floats
    QVERIFY(!huge.ok());
    QCOMPARE(huge.error().code, ErrorCode::OutOfMemory);
    QVERIFY2(huge.error().message.find("free") != std::string::npos &&
                 huge.error().message.find("a test tensor") != std::string::npos,
             huge.error().message.c_str());
    // A shape the kernels refuse: kept by the backend, returned by synchronize(), then cleared.
    DeviceVector a(*cuda, 256 * 4);
    cuda->attention(std::vector<AttentionSequence>{{a.data, a.data, a.data, a.data, 1, 0}},
                    {1, 1, 256, 256, 256, 0.0625f});
    const Status s = cuda->synchronize();
    QVERIFY(!s.ok());
    QVERIFY2(s.error().message.find("head dim 256") != std::string::npos,
             s.error().message.c_str());
    QVERIFY(cuda->synchronize().ok());
}

QTEST_APPLESS_MAIN(TestCudaBackend)
#include "test_cuda_backend.moc"
