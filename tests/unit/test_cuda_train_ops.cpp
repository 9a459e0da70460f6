// The CUDA training kernels (engine/backend/cuda/train_kernels.h) against the CPU training ops
// (engine/train/train_ops.h) run in DOUBLE on the same float inputs, on awkward shapes: rows not a
// multiple of a warp, head dims 64, 128, 48 and 20, GQA ratios 1, 4 and 8, batches of sequences of
// lengths 0, 1, 7, 129, 300, vocabularies not a multiple of the block. Fresh random inputs;
// overwritten outputs are poisoned with NaN first, outputs of "adds" ops pre-filled with random
// values and the increment checked; normalized MSE per op (as test_cuda_backend.cpp). Attention
// backward and the IEC scalar gradients run twice and must agree bit for bit (no atomics).
//
// The IEC paths have no train_ops twin: their reference here is written from the index maps of
// train/lora_linear.h, and iecReferenceMatchesLoraLinear (CPU only, runs without a GPU) proves it
// equal to LoraLinear<double> itself.
//
// Skips without the CUDA backend or without a device; the device is LOWBIT_TEST_DEVICE (default
// cuda:0).
#include "backend/device.h"
#include "core/build_info.h"
#include "train/lora_linear.h"
#include "train/train_ops.h"

#if LOWBIT_HAVE_CUDA
#include "backend/cuda/train_kernels.h"

#include <cuda_runtime_api.h>
#endif

#include <QtTest>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
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

std::vector<double> toDouble(const std::vector<float> &v) {
    return {v.begin(), v.end()};
}

// IR-QLoRA's index maps, as train/lora_linear.h documents them (poolBegin/poolEnd/repeatSource).
int64_t poolBegin(int64_t g, int64_t in, int64_t r) {
    return g * in / r;
}
int64_t poolEnd(int64_t g, int64_t in, int64_t r) {
    return std::max((g + 1) * in / r, poolBegin(g, in, r) + 1);
}
int64_t repeatSource(int64_t j, int64_t r, int64_t out) {
    return j * r / out;
}

// The IEC reference in double: the four ops of train_kernels.h.
struct IecShape {
    int64_t n, in, rank, out;
};
std::vector<double> groupMean(const IecShape &s, const std::vector<double> &x) {
    std::vector<double> h(size_t(s.n * s.rank));
    for (int64_t row = 0; row < s.n; ++row)
        for (int64_t g = 0; g < s.rank; ++g) {
            const int64_t b = poolBegin(g, s.in, s.rank), e = poolEnd(g, s.in, s.rank);
            double sum = 0;
            for (int64_t j = b; j < e; ++j)
                sum += x[size_t(row * s.in + j)];
            h[size_t(row * s.rank + g)] = sum / double(e - b);
        }
    return h;
}
std::vector<double> repeat(const IecShape &s, const std::vector<double> &h) {
    std::vector<double> y(size_t(s.n * s.out));
    for (int64_t row = 0; row < s.n; ++row)
        for (int64_t j = 0; j < s.out; ++j)
            y[size_t(row * s.out + j)] = h[size_t(row * s.rank + repeatSource(j, s.rank, s.out))];
    return y;
}
// groupMeanᵀ(dH) (n × in) and repeatᵀ(dY) (n × rank).
std::vector<double> groupMeanT(const IecShape &s, const std::vector<double> &dh) {
    std::vector<double> dx(size_t(s.n * s.in));
    for (int64_t row = 0; row < s.n; ++row)
        for (int64_t g = 0; g < s.rank; ++g) {
            const int64_t b = poolBegin(g, s.in, s.rank), e = poolEnd(g, s.in, s.rank);
            for (int64_t j = b; j < e; ++j)
                dx[size_t(row * s.in + j)] += dh[size_t(row * s.rank + g)] / double(e - b);
        }
    return dx;
}
std::vector<double> repeatT(const IecShape &s, const std::vector<double> &dy) {
    std::vector<double> dh(size_t(s.n * s.rank));
    for (int64_t row = 0; row < s.n; ++row)
        for (int64_t j = 0; j < s.out; ++j)
            dh[size_t(row * s.rank + repeatSource(j, s.rank, s.out))] += dy[size_t(row * s.out + j)];
    return dh;
}
double dotProduct(const std::vector<double> &a, const std::vector<double> &b) {
    double sum = 0;
    for (size_t i = 0; i < a.size(); ++i)
        sum += a[i] * b[i];
    return sum;
}

#if LOWBIT_HAVE_CUDA
// Σ (got − want)² / Σ want², a NaN counting as a huge error.
double nmse(const std::vector<float> &got, const std::vector<double> &want) {
    if (got.size() != want.size())
        return 1e30;
    double err = 0, ref = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const double d = double(got[i]) - want[i];
        err += std::isnan(got[i]) ? 1e30 : d * d;
        ref += want[i] * want[i];
    }
    return err / std::max(ref, 1e-30);
}

// The same for increments of an "adds" op: (got − before) against (want − before).
double nmseAdded(const std::vector<float> &got, const std::vector<double> &want,
                 const std::vector<float> &before) {
    std::vector<float> gotDelta(got.size());
    std::vector<double> wantDelta(want.size());
    for (size_t i = 0; i < got.size() && i < before.size(); ++i)
        gotDelta[i] = float(double(got[i]) - double(before[i])); // exact for nearby floats
    for (size_t i = 0; i < want.size() && i < before.size(); ++i)
        wantDelta[i] = want[i] - double(before[i]);
    return nmse(gotDelta, wantDelta);
}

#define CHECK_NMSE(value, tol, what)                                                               \
    do {                                                                                           \
        const double nmseValue = (value);                                                          \
        QVERIFY2(nmseValue <= (tol), qPrintable(QString("%1: nmse %2").arg(what).arg(nmseValue))); \
    } while (0)

int testDevice() {
    const char *env = std::getenv("LOWBIT_TEST_DEVICE");
    auto spec = parseDevice(env && *env ? env : "cuda:0");
    return spec.ok() && spec->isCuda() ? spec->index : 0;
}

// A device array filled from / read back to host vectors (default stream, synchronous copies).
template <typename T> struct Dev {
    T *ptr = nullptr;
    size_t n = 0;
    explicit Dev(size_t count) : n(count) {
        if (cudaMalloc(reinterpret_cast<void **>(&ptr), std::max<size_t>(count, 1) * sizeof(T)) !=
            cudaSuccess)
            ptr = nullptr;
    }
    explicit Dev(const std::vector<T> &host) : Dev(host.size()) { set(host); }
    ~Dev() { cudaFree(ptr); }
    Dev(const Dev &) = delete;
    Dev &operator=(const Dev &) = delete;
    void set(const std::vector<T> &host) {
        if (ptr)
            cudaMemcpy(ptr, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
    }
    void poison() { set(std::vector<T>(n, std::numeric_limits<T>::quiet_NaN())); }
    std::vector<T> get() const {
        std::vector<T> host(n, std::numeric_limits<T>::quiet_NaN());
        if (ptr)
            cudaMemcpy(host.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost);
        return host;
    }
};

#define CHECK_OK(expr)                                                                             \
    do {                                                                                           \
        const Status status_ = (expr);                                                             \
        QVERIFY2(status_.ok(), status_.ok() ? "" : status_.error().message.c_str());               \
        const cudaError_t sync_ = cudaDeviceSynchronize();                                         \
        QVERIFY2(sync_ == cudaSuccess, cudaGetErrorString(sync_));                                 \
    } while (0)
#endif

} // namespace

// QSKIPs the current test function unless a device is there (set by initTestCase).
#define REQUIRE_DEVICE()                                                                           \
    do {                                                                                           \
        if (!m_skipReason.isEmpty())                                                               \
            QSKIP(qPrintable(m_skipReason));                                                       \
    } while (0)

class TestCudaTrainOps : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void iecReferenceMatchesLoraLinear();
    void rmsnorm_data();
    void rmsnorm();
    void ropeBackward();
    void swigluBackward();
    void attention_data();
    void attention();
    void crossEntropy_data();
    void crossEntropy();
    void gatherScatter();
    void elastic_data();
    void elastic();
    void errors();

private:
    QString m_skipReason;
};

void TestCudaTrainOps::initTestCase() {
    if (!cudaBuilt()) {
        m_skipReason = "built without the CUDA backend (no CUDA toolkit, or LOWBIT_ENABLE_CUDA=OFF)";
        return;
    }
    std::string why;
    if (cudaDeviceCount(&why) == 0) {
        m_skipReason = QString("no CUDA device: %1").arg(QString::fromStdString(why));
        return;
    }
#if LOWBIT_HAVE_CUDA
    QVERIFY(cudaSetDevice(testDevice()) == cudaSuccess);
#endif
}

// The test's IEC reference against LoraLinear<double> with W = A = B = 0 (only the IEC paths
// left): H = βA·groupMean(X), Y = s·βB·repeat(H); backward dH = s·βB·repeatᵀ(dY),
// dX = βA·groupMeanᵀ(dH), dβA = Σ dH ⊙ groupMean(X), dβB = s·Σ dY ⊙ repeat(H).
void TestCudaTrainOps::iecReferenceMatchesLoraLinear() {
    for (const IecShape s : {IecShape{3, 10, 4, 7}, IecShape{2, 3, 4, 2}, IecShape{2, 16, 4, 8}}) {
        auto base = std::make_unique<train::DenseLinearBase<double>>(
            s.out, s.in, std::vector<double>(size_t(s.out * s.in), 0.0));
        auto made = train::LoraLinear<double>::create(std::move(base), "m", int(s.rank), 2.0 * double(s.rank),
                                                      true, 7);
        QVERIFY(made.ok());
        auto &lora = **made;
        auto params = lora.adapterParameters();
        QCOMPARE(params.size(), size_t(4));
        std::fill(params[0]->value.begin(), params[0]->value.end(), 0.0); // A
        std::fill(params[1]->value.begin(), params[1]->value.end(), 0.0); // B
        const double betaA = 0.7, betaB = -1.3, scale = 2.0;
        params[2]->value[0] = betaA, params[3]->value[0] = betaB;
        const auto x = toDouble(randomVector(size_t(s.n * s.in), 11));
        const auto dy = toDouble(randomVector(size_t(s.n * s.out), 12));
        std::vector<double> y(size_t(s.n * s.out)), hidden(size_t(s.n * s.rank));
        lora.forward(x.data(), s.n, y.data(), hidden.data());
        const auto mean = groupMean(s, x);
        auto wantHidden = mean;
        for (double &v : wantHidden)
            v *= betaA;
        auto wantY = repeat(s, wantHidden);
        for (double &v : wantY)
            v *= scale * betaB;
        std::vector<double> dx(size_t(s.n * s.in));
        lora.backward(x.data(), hidden.data(), dy.data(), s.n, dx.data(), false);
        auto dHidden = repeatT(s, dy);
        for (double &v : dHidden)
            v *= scale * betaB;
        auto wantDx = groupMeanT(s, dHidden);
        for (double &v : wantDx)
            v *= betaA;
        const double wantBetaA = dotProduct(dHidden, mean);
        const double wantBetaB = scale * dotProduct(dy, repeat(s, hidden));
        auto close = [](const std::vector<double> &a, const std::vector<double> &b) {
            for (size_t i = 0; i < a.size(); ++i)
                if (std::abs(a[i] - b[i]) > 1e-12 * (1 + std::abs(b[i])))
                    return false;
            return a.size() == b.size();
        };
        QVERIFY(close(hidden, wantHidden));
        QVERIFY(close(y, wantY));
        QVERIFY(close(dx, wantDx));
        QVERIFY(std::abs(params[2]->grad[0] - wantBetaA) <= 1e-12 * (1 + std::abs(wantBetaA)));
        QVERIFY(std::abs(params[3]->grad[0] - wantBetaB) <= 1e-12 * (1 + std::abs(wantBetaB)));
    }
}

void TestCudaTrainOps::rmsnorm_data() {
    QTest::addColumn<int>("rows");
    QTest::addColumn<int>("dim");
    QTest::newRow("13x1031") << 13 << 1031;
    QTest::newRow("1x64") << 1 << 64;
    QTest::newRow("70x4096") << 70 << 4096;
}

// Float32 with float sums of at most `dim` squares: relative errors ~1e-7 per value, so nmse
// ~1e-14; 1e-11 leaves a wide margin while any index or formula slip is >= 1e-4.
void TestCudaTrainOps::rmsnorm() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    QFETCH(int, rows);
    QFETCH(int, dim);
    const size_t count = size_t(rows) * size_t(dim);
    const auto x = randomVector(count, 1, 2.0f), w = randomVector(size_t(dim), 2);
    const auto dy = randomVector(count, 3), dx0 = randomVector(count, 4);
    const auto xd = toDouble(x), wd = toDouble(w), dyd = toDouble(dy);
    std::vector<double> yd(count), invd(static_cast<size_t>(rows)), dxd = toDouble(dx0);
    train::ops::rmsnormForward<double>(xd.data(), rows, dim, wd.data(), 1e-5, yd.data(),
                                       invd.data());
    train::ops::rmsnormBackward<double>(xd.data(), rows, dim, wd.data(), invd.data(), dyd.data(),
                                        dxd.data());

    Dev<float> gx(x), gw(w), gy(count), ginv(static_cast<size_t>(rows)), gdy(dy), gdx(dx0);
    gy.poison(), ginv.poison();
    CHECK_OK(cuda::train::rmsnormForward(gx.ptr, rows, dim, gw.ptr, 1e-5f, gy.ptr, ginv.ptr, 0));
    CHECK_NMSE(nmse(gy.get(), yd), 1e-11, "rmsnorm forward y");
    CHECK_NMSE(nmse(ginv.get(), invd), 1e-12, "rmsnorm forward invRms");
    CHECK_OK(cuda::train::rmsnormBackward(gx.ptr, rows, dim, gw.ptr, ginv.ptr, gdy.ptr, gdx.ptr, 0));
    // The increment r·w·dy − coef·x has a mild cancellation: 1e-10.
    CHECK_NMSE(nmseAdded(gdx.get(), dxd, dx0), 1e-10, "rmsnorm backward (added)");

    ginv.poison();
    CHECK_OK(cuda::train::rmsnormForward(gx.ptr, rows, dim, gw.ptr, 1e-5f, gx.ptr, ginv.ptr, 0));
    CHECK_NMSE(nmse(gx.get(), yd), 1e-11, "rmsnorm forward in place");
#endif
}

// Two float products and a sum per value: nmse ~1e-15; 1e-12.
void TestCudaTrainOps::ropeBackward() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    for (auto [rows, heads, headDim, pad] : {std::tuple{7, 3, 48, 5}, {33, 2, 128, 0}, {1, 1, 2, 3}}) {
        const int64_t stride = int64_t(heads) * headDim + pad;
        const auto dx = randomVector(size_t(rows * stride), 5);
        const auto angles = randomVector(size_t(rows * headDim / 2), 6, 3.0f);
        std::vector<float> cosSin(size_t(rows * headDim));
        for (int r = 0; r < rows; ++r)
            for (int j = 0; j < headDim / 2; ++j) {
                const float a = angles[size_t(r * headDim / 2 + j)];
                cosSin[size_t(r * headDim + j)] = std::cos(a);
                cosSin[size_t(r * headDim + headDim / 2 + j)] = std::sin(a);
            }
        auto want = toDouble(dx);
        const auto csd = toDouble(cosSin);
        train::ops::ropeBackward<double>(want.data(), rows, stride, heads, headDim, csd.data());
        Dev<float> gdx(dx), gcs(cosSin);
        CHECK_OK(cuda::train::ropeBackward(gdx.ptr, rows, stride, heads, headDim, gcs.ptr, 0));
        CHECK_NMSE(nmse(gdx.get(), want), 1e-12, QString("rope backward hd %1").arg(headDim));
    }
#endif
}

// A handful of float operations per value (expf within 2 ulp): nmse ~1e-14; 1e-11.
void TestCudaTrainOps::swigluBackward() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    const size_t count = 100003;
    const auto g = randomVector(count, 7, 3.0f), u = randomVector(count, 8),
               d = randomVector(count, 9);
    const auto gd = toDouble(g), ud = toDouble(u), dd = toDouble(d);
    std::vector<double> wantGate(count), wantUp(count);
    train::ops::swigluBackward<double>(gd.data(), ud.data(), dd.data(), int64_t(count),
                                       wantGate.data(), wantUp.data());
    Dev<float> gg(g), gu(u), gdo(d), gdg(count), gdu(count);
    gdg.poison(), gdu.poison();
    CHECK_OK(cuda::train::swigluBackward(gg.ptr, gu.ptr, gdo.ptr, int64_t(count), gdg.ptr, gdu.ptr,
                                         0));
    CHECK_NMSE(nmse(gdg.get(), wantGate), 1e-11, "swiglu dGate");
    CHECK_NMSE(nmse(gdu.get(), wantUp), 1e-11, "swiglu dUp");
#endif
}

void TestCudaTrainOps::attention_data() {
    QTest::addColumn<int>("headDim");
    QTest::addColumn<int>("kvHeads");
    QTest::addColumn<int>("group");
    QTest::addColumn<QList<int>>("lengths");
    QTest::newRow("hd64 gqa1 1,7,129") << 64 << 4 << 1 << QList<int>{1, 7, 129};
    QTest::newRow("hd128 gqa4 129,1,40") << 128 << 2 << 4 << QList<int>{129, 1, 40};
    QTest::newRow("hd48 gqa8 7,1,33,1") << 48 << 1 << 8 << QList<int>{7, 1, 33, 1};
    QTest::newRow("hd128 gqa8 300") << 128 << 2 << 8 << QList<int>{300};
    QTest::newRow("hd64 gqa4 5,empty,70") << 64 << 2 << 4 << QList<int>{5, 0, 70};
    // A row alone with its key has dQ = 0 exactly (a one-key softmax is constant), so its float
    // dQ is pure rounding of dO·V − D; the second sequence gives the case a dQ to compare with.
    QTest::newRow("hd20 gqa1 1,3") << 20 << 3 << 1 << QList<int>{1, 3};
}

// Float32 attention: scores within ~1e-6 relative of the exact ones, so P, O and lse within
// ~1e-6 and the nmse of O ~1e-12; backward sums up to 300·8 products and dS = P ⊙ (dP − D)
// cancels, a few times worse. Tolerances 1e-9 (forward) and 1e-8 (backward) leave >= 100x room,
// while a wrong mask, head mapping or missing key row gives >= 1e-4.
void TestCudaTrainOps::attention() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    QFETCH(int, headDim);
    QFETCH(int, kvHeads);
    QFETCH(int, group);
    QFETCH(QList<int>, lengths);
    std::vector<int64_t> starts{0};
    for (int len : lengths)
        starts.push_back(starts.back() + len);
    const int64_t rows = starts.back(), heads = int64_t(kvHeads) * group;
    const size_t qCount = size_t(rows * heads * headDim), kvCount = size_t(rows * kvHeads * headDim);
    const auto q = randomVector(qCount, 21, 2.0f), k = randomVector(kvCount, 22),
               v = randomVector(kvCount, 23), dOut = randomVector(qCount, 24);
    const double scale = 1.0 / std::sqrt(double(headDim));
    const train::ops::AttentionDims cpuDims{heads, kvHeads, headDim, scale};
    const auto qd = toDouble(q), kd = toDouble(k), vd = toDouble(v), dOutD = toDouble(dOut);
    std::vector<double> outD(qCount), lseD(size_t(rows * heads)), dqD(qCount), dkD(kvCount),
        dvD(kvCount);
    train::ops::attentionForward<double>(qd.data(), kd.data(), vd.data(), starts, cpuDims,
                                         outD.data(), lseD.data());
    train::ops::attentionBackward<double>(qd.data(), kd.data(), vd.data(), outD.data(),
                                          lseD.data(), dOutD.data(), starts, cpuDims, dqD.data(),
                                          dkD.data(), dvD.data());

    const cuda::train::AttentionDims dims{heads, kvHeads, headDim, float(scale)};
    const int64_t sequences = int64_t(lengths.size());
    Dev<float> gq(q), gk(k), gv(v), gdo(dOut), gout(qCount), glse(size_t(rows * heads));
    Dev<float> gdq(qCount), gdk(kvCount), gdv(kvCount);
    Dev<float> work(size_t(cuda::train::attentionBackwardWorkspaceFloats(rows, dims)));
    Dev<int64_t> gstarts(starts);
    gout.poison(), glse.poison();
    CHECK_OK(cuda::train::attentionForward(gq.ptr, gk.ptr, gv.ptr, gstarts.ptr, sequences, rows,
                                           dims, gout.ptr, glse.ptr, 0));
    CHECK_NMSE(nmse(gout.get(), outD), 1e-9, "attention out");
    CHECK_NMSE(nmse(glse.get(), lseD), 1e-11, "attention lse");

    std::vector<float> first[3];
    for (int run = 0; run < 2; ++run) {
        gdq.poison(), gdk.poison(), gdv.poison(), work.poison();
        CHECK_OK(cuda::train::attentionBackward(gq.ptr, gk.ptr, gv.ptr, gout.ptr, glse.ptr,
                                                gdo.ptr, gstarts.ptr, sequences, rows, dims,
                                                gdq.ptr, gdk.ptr, gdv.ptr, work.ptr, 0));
        const std::vector<float> got[3] = {gdq.get(), gdk.get(), gdv.get()};
        if (run == 0) {
            CHECK_NMSE(nmse(got[0], dqD), 1e-8, "attention dQ");
            CHECK_NMSE(nmse(got[1], dkD), 1e-8, "attention dK");
            CHECK_NMSE(nmse(got[2], dvD), 1e-8, "attention dV");
            for (int i = 0; i < 3; ++i)
                first[i] = got[i];
        } else {
            for (int i = 0; i < 3; ++i)
                QVERIFY2(std::memcmp(first[i].data(), got[i].data(), got[i].size() * 4) == 0,
                         "attention backward is not bit-reproducible");
        }
    }
#endif
}

void TestCudaTrainOps::crossEntropy_data() {
    QTest::addColumn<int>("rows");
    QTest::addColumn<int>("vocab");
    QTest::newRow("11x32003") << 11 << 32003;
    QTest::newRow("3x37") << 3 << 37;
    QTest::newRow("2x128256") << 2 << 128256;
}

// Loss: log Σ exp in float64 over float exps (relative error ~1e-7) minus z_t: |error| ~1e-6 on a
// loss ~10, checked at 1e-5. dLogits: exp(z − float(lse)) carries lse's float rounding
// (|lse|·6e-8 relative), nmse ~1e-13; 1e-11.
void TestCudaTrainOps::crossEntropy() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    QFETCH(int, rows);
    QFETCH(int, vocab);
    const size_t count = size_t(rows) * size_t(vocab);
    const auto logits = randomVector(count, 31, 3.0f);
    std::vector<int32_t> targets(static_cast<size_t>(rows));
    std::mt19937 rng(32);
    for (int r = 0; r < rows; ++r)
        targets[size_t(r)] = r == 0 ? 0 : r == 1 ? vocab - 1 : int32_t(rng() % uint32_t(vocab));
    const auto ld = toDouble(logits);
    std::vector<double> wantGrad(count), wantLoss(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) {
        const size_t at = size_t(r) * size_t(vocab);
        wantLoss[size_t(r)] = train::ops::crossEntropy<double>(
            std::span<const double>(ld.data() + at, size_t(vocab)), targets[size_t(r)],
            std::span<double>(wantGrad.data() + at, size_t(vocab)));
    }
    Dev<float> gl(logits), gd(count);
    Dev<int32_t> gt(targets);
    Dev<double> gloss(static_cast<size_t>(rows));
    for (bool inPlace : {false, true}) {
        gl.set(logits), gd.poison(), gloss.poison();
        float *grad = inPlace ? gl.ptr : gd.ptr;
        CHECK_OK(cuda::train::crossEntropyRows(gl.ptr, rows, vocab, gt.ptr, grad, gloss.ptr, 0));
        const auto loss = gloss.get();
        for (int r = 0; r < rows; ++r)
            QVERIFY2(std::abs(loss[size_t(r)] - wantLoss[size_t(r)]) <= 1e-5,
                     qPrintable(QString("row %1: loss %2, want %3")
                                    .arg(r)
                                    .arg(loss[size_t(r)])
                                    .arg(wantLoss[size_t(r)])));
        CHECK_NMSE(nmse(inPlace ? gl.get() : gd.get(), wantGrad), 1e-11,
                   inPlace ? "dLogits in place" : "dLogits");
    }
#endif
}

// Copies and one float add per value: exact.
void TestCudaTrainOps::gatherScatter() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    const int64_t rows = 50, dim = 1031;
    const std::vector<int64_t> index{49, 0, 17, 3, 48, 22, 5};
    const int64_t count = int64_t(index.size());
    const auto x = randomVector(size_t(rows * dim), 41), y = randomVector(size_t(count * dim), 42);
    Dev<float> gx(x), gout(size_t(count * dim)), gy(y);
    Dev<int64_t> gi(index);
    gout.poison();
    CHECK_OK(cuda::train::gatherRows(gx.ptr, dim, gi.ptr, count, gout.ptr, 0));
    const auto gathered = gout.get();
    auto added = x;
    for (int64_t i = 0; i < count; ++i)
        for (int64_t c = 0; c < dim; ++c) {
            QCOMPARE(gathered[size_t(i * dim + c)], x[size_t(index[size_t(i)] * dim + c)]);
            added[size_t(index[size_t(i)] * dim + c)] += y[size_t(i * dim + c)];
        }
    CHECK_OK(cuda::train::scatterAddRows(gx.ptr, dim, gi.ptr, count, gy.ptr, 0));
    QVERIFY(gx.get() == added);
#endif
}

void TestCudaTrainOps::elastic_data() {
    QTest::addColumn<int>("n");
    QTest::addColumn<int>("in");
    QTest::addColumn<int>("rank");
    QTest::addColumn<int>("out");
    QTest::newRow("r does not divide") << 13 << 100 << 8 << 70;
    QTest::newRow("in, out < r") << 5 << 6 << 8 << 3;
    QTest::newRow("r divides") << 33 << 256 << 16 << 512;
    QTest::newRow("more rows than partial blocks") << 1500 << 64 << 8 << 40;
}

// Group means and repeats are a few float operations per value (nmse ~1e-14, checked at 1e-11);
// the scalar gradients are float64 sums rounded to float, checked at 1e-5 of Σ|terms|.
void TestCudaTrainOps::elastic() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    QFETCH(int, n);
    QFETCH(int, in);
    QFETCH(int, rank);
    QFETCH(int, out);
    const IecShape s{n, in, rank, out};
    const float beta = 0.7f, scale = 0.25f, dBeta0 = 0.5f;
    const auto x = randomVector(size_t(n * in), 51), hidden = randomVector(size_t(n * rank), 52);
    const auto dy = randomVector(size_t(n * out), 53), dh = randomVector(size_t(n * rank), 54);
    const auto hidden0 = randomVector(size_t(n * rank), 55), y0 = randomVector(size_t(n * out), 56);
    const auto dx0 = randomVector(size_t(n * in), 57), dh0 = randomVector(size_t(n * rank), 58);
    const auto xd = toDouble(x), hd = toDouble(hidden), dyd = toDouble(dy), dhd = toDouble(dh);
    const auto mean = groupMean(s, xd), rep = repeat(s, hd);
    const auto meanT = groupMeanT(s, dhd), repT = repeatT(s, dyd);
    auto expectAdd = [](const std::vector<float> &before, const std::vector<double> &delta,
                        double c) {
        std::vector<double> r(before.size());
        for (size_t i = 0; i < r.size(); ++i)
            r[i] = double(before[i]) + c * delta[i];
        return r;
    };
    auto absSum = [](const std::vector<double> &a, const std::vector<double> &b) {
        double sum = 0;
        for (size_t i = 0; i < a.size(); ++i)
            sum += std::abs(a[i] * b[i]);
        return sum;
    };
    Dev<float> gx(x), gh(hidden), gdy(dy), gdh(dh), gbeta(std::vector<float>{beta});
    Dev<float> gHidden(hidden0), gy(y0), gdx(dx0), gdHidden(dh0), gdBeta(std::vector<float>{dBeta0});

    CHECK_OK(cuda::train::elasticGroupMeanAdd(gx.ptr, n, in, rank, gbeta.ptr, gHidden.ptr, 0));
    CHECK_NMSE(nmseAdded(gHidden.get(), expectAdd(hidden0, mean, beta), hidden0), 1e-11,
               "group mean add");
    CHECK_OK(cuda::train::elasticRepeatAdd(gh.ptr, n, rank, out, scale, gbeta.ptr, gy.ptr, 0));
    CHECK_NMSE(nmseAdded(gy.get(), expectAdd(y0, rep, double(scale) * beta), y0), 1e-11,
               "repeat add");

    float firstA = 0, firstB = 0;
    for (int run = 0; run < 2; ++run) {
        gdx.set(dx0), gdHidden.set(dh0), gdBeta.set({dBeta0});
        CHECK_OK(cuda::train::elasticGroupMeanBackward(gx.ptr, gdh.ptr, n, in, rank, gbeta.ptr,
                                                       gdx.ptr, gdBeta.ptr, 0));
        CHECK_NMSE(nmseAdded(gdx.get(), expectAdd(dx0, meanT, beta), dx0), 1e-11,
                   "group mean backward dx");
        const float gotA = gdBeta.get()[0];
        const double wantA = dBeta0 + dotProduct(dhd, mean);
        QVERIFY2(std::abs(gotA - wantA) <= 1e-5 * (1 + absSum(dhd, mean)),
                 qPrintable(QString("dBetaA %1, want %2").arg(gotA).arg(wantA)));

        gdBeta.set({dBeta0});
        CHECK_OK(cuda::train::elasticRepeatBackward(gh.ptr, gdy.ptr, n, rank, out, scale,
                                                    gbeta.ptr, gdHidden.ptr, gdBeta.ptr, 0));
        CHECK_NMSE(nmseAdded(gdHidden.get(), expectAdd(dh0, repT, double(scale) * beta), dh0),
                   1e-11, "repeat backward dHidden");
        const float gotB = gdBeta.get()[0];
        const double wantB = dBeta0 + double(scale) * dotProduct(dyd, rep);
        QVERIFY2(std::abs(gotB - wantB) <= 1e-5 * (1 + double(scale) * absSum(dyd, rep)),
                 qPrintable(QString("dBetaB %1, want %2").arg(gotB).arg(wantB)));
        if (run == 0)
            firstA = gotA, firstB = gotB;
        else
            QVERIFY2(std::memcmp(&firstA, &gotA, 4) == 0 && std::memcmp(&firstB, &gotB, 4) == 0,
                     "IEC scalar gradients are not bit-reproducible");
    }
#endif
}

// Shapes the kernels cannot run are errors naming the op, before any launch.
void TestCudaTrainOps::errors() {
    REQUIRE_DEVICE();
#if LOWBIT_HAVE_CUDA
    const cuda::train::AttentionDims tooWide{4, 2, 256, 0.1f}, badGroup{6, 4, 64, 0.1f};
    const Status wide = cuda::train::attentionForward(nullptr, nullptr, nullptr, nullptr, 1, 4,
                                                      tooWide, nullptr, nullptr, 0);
    QVERIFY(!wide.ok());
    QVERIFY(wide.error().message.find("head dim 256") != std::string::npos);
    QVERIFY(!cuda::train::attentionBackward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                            nullptr, 1, 4, badGroup, nullptr, nullptr, nullptr,
                                            nullptr, 0)
                 .ok());
    QVERIFY(!cuda::train::ropeBackward(nullptr, 2, 10, 1, 7, nullptr, 0).ok()); // odd head dim
    QVERIFY(!cuda::train::crossEntropyRows(nullptr, 2, 0, nullptr, nullptr, nullptr, 0).ok());
    QVERIFY(!cuda::train::elasticGroupMeanAdd(nullptr, 2, 8, 0, nullptr, nullptr, 0).ok());
    // Nothing to do is fine.
    QVERIFY(cuda::train::swigluBackward(nullptr, nullptr, nullptr, 0, nullptr, nullptr, 0).ok());
#endif
}

QTEST_APPLESS_MAIN(TestCudaTrainOps)
#include "test_cuda_train_ops.moc"
