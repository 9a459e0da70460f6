// Every op of every backend against a float64 re-computation on awkward shapes, in the manner of
// ggml's test-backend-ops: normalized mean-squared error per op, fresh random inputs.
// The CPU backend runs with 1 and 3 threads (uneven splits); a CUDA backend joins the list later.
#include "backend/backend.h"

#include <QtTest>

#include <cmath>
#include <random>

using namespace lowbit;

namespace {

struct BackendCase {
    const char *name;
    std::function<std::unique_ptr<Backend>()> make;
};

std::vector<BackendCase> backends() {
    return {{"cpu-1", [] { return makeCpuBackend(1); }}, {"cpu-3", [] { return makeCpuBackend(3); }}};
}

std::vector<float> randomVector(size_t n, uint32_t seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, scale);
    std::vector<float> v(n);
    for (float &x : v)
        x = normal(rng);
    return v;
}

// sum (a-b)^2 / sum b^2
double nmse(const float *got, const std::vector<double> &want) {
    double err = 0, ref = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        err += (got[i] - want[i]) * (got[i] - want[i]);
        ref += want[i] * want[i];
    }
    return err / std::max(ref, 1e-30);
}

#define CHECK_NMSE(got, want, tol)                                                                 \
    do {                                                                                           \
        const double nmseValue = nmse(got, want);                                                          \
        QVERIFY2(nmseValue <= (tol), qPrintable(QString("%1: nmse %2").arg(b.name).arg(nmseValue)));               \
    } while (0)

} // namespace

class TestBackendOps : public QObject {
    Q_OBJECT
private slots:
    void matmul_data();
    void matmul();
    void rmsnormEmbedSwigluAdd();
    void rope();
    void attention_data();
    void attention();
};

void TestBackendOps::matmul_data() {
    QTest::addColumn<int>("dtype");
    QTest::addColumn<int>("rows");
    QTest::addColumn<int>("in");
    QTest::addColumn<int>("out");
    for (DType t : {DType::F32, DType::F16, DType::BF16}) {
        const QByteArray n(dtypeName(t).data(), int(dtypeName(t).size()));
        QTest::newRow(n + " gemv 1x67->129") << int(t) << 1 << 67 << 129;
        QTest::newRow(n + " 5x64->17") << int(t) << 5 << 64 << 17;
        QTest::newRow(n + " 803x96->301 (row blocks)") << int(t) << 803 << 96 << 301;
    }
}

void TestBackendOps::matmul() {
    QFETCH(int, dtype);
    QFETCH(int, rows);
    QFETCH(int, in);
    QFETCH(int, out);
    const auto type = DType(dtype);
    const auto x = randomVector(size_t(rows * in), 1);
    const auto wf = randomVector(size_t(out * in), 2, 0.1f);
    const Tensor w = Tensor::fromFloats("w", {out, in}, wf.data(), type);
    const std::vector<float> wStored = tensorToFloats(w); // the weights as stored (rounded)
    std::vector<double> want(size_t(rows * out));
    for (int r = 0; r < rows; ++r)
        for (int o = 0; o < out; ++o) {
            double s = 0;
            for (int i = 0; i < in; ++i)
                s += double(x[size_t(r * in + i)]) * wStored[size_t(o * in + i)];
            want[size_t(r * out + o)] = s;
        }
    for (const auto &b : backends()) {
        std::vector<float> y(want.size());
        b.make()->matmul(x.data(), rows, w, y.data());
        CHECK_NMSE(y.data(), want, 1e-10);
    }
}

void TestBackendOps::rmsnormEmbedSwigluAdd() {
    const int rows = 13, dim = 77, vocab = 31;
    const auto x = randomVector(size_t(rows * dim), 3, 2.0f);
    const auto wf = randomVector(size_t(dim), 4);
    const Tensor weight = Tensor::fromFloats("norm", {dim}, wf.data(), DType::BF16);
    const auto wStored = tensorToFloats(weight);
    std::vector<double> want(x.size());
    for (int r = 0; r < rows; ++r) {
        double ss = 0;
        for (int i = 0; i < dim; ++i)
            ss += double(x[size_t(r * dim + i)]) * x[size_t(r * dim + i)];
        const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
        for (int i = 0; i < dim; ++i)
            want[size_t(r * dim + i)] = x[size_t(r * dim + i)] * inv * wStored[size_t(i)];
    }
    const auto tableF = randomVector(size_t(vocab * dim), 5);
    const Tensor table = Tensor::fromFloats("embed", {vocab, dim}, tableF.data(), DType::F16);
    const auto tableStored = tensorToFloats(table);
    const std::vector<int32_t> ids = {30, 0, 7, 7, 12};
    const auto g = randomVector(1001, 6, 3.0f), u = randomVector(1001, 7);
    std::vector<double> wantSwiglu(g.size()), wantAdd(g.size()), wantEmbed;
    for (size_t i = 0; i < g.size(); ++i) {
        wantSwiglu[i] = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
        wantAdd[i] = double(g[i]) + u[i];
    }
    for (int32_t id : ids)
        for (int i = 0; i < dim; ++i)
            wantEmbed.push_back(tableStored[size_t(id * dim + i)]);
    for (const auto &b : backends()) {
        auto be = b.make();
        std::vector<float> y(x.size());
        be->rmsnorm(x.data(), rows, dim, weight, 1e-5f, y.data());
        CHECK_NMSE(y.data(), want, 1e-12);
        std::vector<float> inPlace = x; // y may alias x
        be->rmsnorm(inPlace.data(), rows, dim, weight, 1e-5f, inPlace.data());
        CHECK_NMSE(inPlace.data(), want, 1e-12);
        std::vector<float> e(ids.size() * size_t(dim));
        be->embed(table, ids, e.data());
        CHECK_NMSE(e.data(), wantEmbed, 0.0);
        std::vector<float> s(g.size());
        be->swiglu(g.data(), u.data(), int64_t(g.size()), s.data());
        CHECK_NMSE(s.data(), wantSwiglu, 1e-12);
        std::vector<float> a = g;
        be->add(a.data(), u.data(), int64_t(a.size()));
        CHECK_NMSE(a.data(), wantAdd, 1e-14);
    }
}

void TestBackendOps::rope() {
    const int rows = 9, heads = 3, hd = 10, stride = heads * hd + 4; // padded rows
    const auto x = randomVector(size_t(rows * stride), 8);
    const std::vector<int32_t> positions = {0, 1, 2, 50, 51, 700, 3, 9999, 4};
    std::vector<float> cosSin(size_t(rows * hd));
    std::vector<double> want(x.begin(), x.end());
    for (int r = 0; r < rows; ++r)
        for (int j = 0; j < hd / 2; ++j) {
            const double angle = positions[size_t(r)] * std::pow(10000.0, -2.0 * j / hd);
            cosSin[size_t(r * hd + j)] = float(std::cos(angle));
            cosSin[size_t(r * hd + hd / 2 + j)] = float(std::sin(angle));
            for (int h = 0; h < heads; ++h) { // HF rotate_half: x*cos + rotate_half(x)*sin
                const size_t i0 = size_t(r * stride + h * hd + j), i1 = i0 + hd / 2;
                want[i0] = x[i0] * std::cos(angle) - x[i1] * std::sin(angle);
                want[i1] = x[i1] * std::cos(angle) + x[i0] * std::sin(angle);
            }
        }
    for (const auto &b : backends()) {
        std::vector<float> y = x;
        b.make()->rope(y.data(), rows, stride, heads, hd, cosSin.data());
        CHECK_NMSE(y.data(), want, 1e-12);
    }
}

void TestBackendOps::attention_data() {
    QTest::addColumn<int>("heads");
    QTest::addColumn<int>("kvHeads");
    QTest::addColumn<int>("headDim");
    QTest::newRow("MHA 2x8") << 2 << 2 << 8;
    QTest::newRow("GQA 6/2 x 24") << 6 << 2 << 24;
    QTest::newRow("MQA 4/1 x 64") << 4 << 1 << 64;
}

void TestBackendOps::attention() {
    QFETCH(int, heads);
    QFETCH(int, kvHeads);
    QFETCH(int, headDim);
    const int qStride = heads * headDim, kvStride = kvHeads * headDim;
    // Three sequences: a long prefill past several key tiles, a chunk after a cached prefix, decode.
    struct Seq { int64_t queries, first; };
    const std::vector<Seq> shapes = {{301, 0}, {37, 200}, {1, 450}};
    const float scale = 1.0f / std::sqrt(float(headDim));
    std::vector<std::vector<float>> q, k, v;
    std::vector<std::vector<double>> want;
    uint32_t seed = 10;
    for (const Seq &s : shapes) {
        const int64_t keys = s.first + s.queries;
        q.push_back(randomVector(size_t(s.queries * qStride), seed++));
        k.push_back(randomVector(size_t(keys * kvStride), seed++));
        v.push_back(randomVector(size_t(keys * kvStride), seed++));
        std::vector<double> o(size_t(s.queries * qStride));
        for (int64_t i = 0; i < s.queries; ++i)
            for (int h = 0; h < heads; ++h) {
                const int kvh = h / (heads / kvHeads);
                std::vector<double> p(size_t(s.first + i + 1));
                double maxS = -1e300, sum = 0;
                for (size_t j = 0; j < p.size(); ++j) {
                    double d = 0;
                    for (int c = 0; c < headDim; ++c)
                        d += double(q.back()[size_t(i * qStride + h * headDim + c)]) * k.back()[j * kvStride + size_t(kvh * headDim + c)];
                    p[j] = d * scale;
                    maxS = std::max(maxS, p[j]);
                }
                for (double &x : p) sum += (x = std::exp(x - maxS));
                for (int c = 0; c < headDim; ++c) {
                    double acc = 0;
                    for (size_t j = 0; j < p.size(); ++j)
                        acc += p[j] / sum * v.back()[j * kvStride + size_t(kvh * headDim + c)];
                    o[size_t(i * qStride + h * headDim + c)] = acc;
                }
            }
        want.push_back(std::move(o));
    }
    for (const auto &b : backends()) {
        std::vector<std::vector<float>> out;
        std::vector<AttentionSequence> seqs;
        for (size_t s = 0; s < shapes.size(); ++s)
            out.emplace_back(want[s].size());
        for (size_t s = 0; s < shapes.size(); ++s)
            seqs.push_back({q[s].data(), k[s].data(), v[s].data(), out[s].data(), shapes[s].queries, shapes[s].first});
        b.make()->attention(seqs, {heads, kvHeads, headDim, qStride, kvStride, scale});
        for (size_t s = 0; s < shapes.size(); ++s)
            CHECK_NMSE(out[s].data(), want[s], 1e-10);
    }
}

QTEST_APPLESS_MAIN(TestBackendOps)
#include "test_backend_ops.moc"
