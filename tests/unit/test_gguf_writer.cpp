// GGUF writer: stories260K written back as F32 must reproduce llama.cpp's own file tensor for
// tensor, as Q8_0 llama-quantize's file block for block; F16/BF16/Q8_0 stay within the encodings'
// error bounds; metadata of every type survives a write/parse round trip; bad requests are errors.
#include "core/dtype.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "io/gguf_writer.h"
#include "model/checkpoint.h"
#include "shared_data.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cmath>
#include <cstring>
#include <numbers>
#include <random>

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

std::vector<const Tensor *> allWeights(const ModelWeights &w) {
    std::vector<const Tensor *> out = {&w.tokenEmbedding, &w.finalNorm, &w.output};
    for (const LayerWeights &l : w.layers)
        for (const Tensor *t :
             {&l.attnNorm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffnNorm, &l.wGate, &l.wUp, &l.wDown})
            out.push_back(t);
    return out;
}

bool sameBits(const Tensor &a, const Tensor &b) {
    const std::vector<float> x = tensorToFloats(a), y = tensorToFloats(b);
    return a.shape == b.shape && x.size() == y.size() &&
           std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
}

struct Fixture {
    QTemporaryDir dir;
    fs::path path(const char *name) const { return fs::path(dir.path().toStdString()) / name; }
};

Result<Checkpoint> loadStories() {
    return loadGgufCheckpoint(lowbit::test::sharedPath("data/gguf/stories260K.gguf"), {});
}

} // namespace

class TestGgufWriter : public QObject {
    Q_OBJECT
private slots:
    void f32RoundTripReproducesLlamaCppFile();
    void q8_0MatchesLlamaQuantizeAndBound();
    void f16AndBf16WithinRounding();
    void tiedHeadIsOmitted();
    void ropeScalingRoundTrips();
    void writerEncodesAllValueTypes();
    void writerRejectsBadRequests();
    void permuteInverseUndoesPermute();
};

void TestGgufWriter::f32RoundTripReproducesLlamaCppFile() {
    LOWBIT_REQUIRE_SHARED_FILE(original, "data/gguf/stories260K.gguf");
    auto ckpt = loadStories();
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    Fixture fx;
    const fs::path out = fx.path("f32.gguf");
    Status written = writeGgufCheckpoint(*ckpt, out, GgmlType::F32);
    QVERIFY2(written.ok(), written.ok() ? "" : written.error().message.c_str());

    // File level: every tensor's bytes equal llama.cpp's conversion (Q/K back in its row order).
    auto a = GgufFile::open(original), b = GgufFile::open(out);
    QVERIFY2(b.ok(), b.ok() ? "" : b.error().message.c_str());
    QCOMPARE(b->tensors().size(), a->tensors().size());
    for (const GgufTensorInfo &t : a->tensors()) {
        const GgufTensorInfo *u = b->findTensor(t.name);
        QVERIFY2(u && u->ne == t.ne && u->type == GgmlType::F32, t.name.c_str());
        QVERIFY2(std::memcmp(u->data.data(), t.data.data(), t.data.size()) == 0, t.name.c_str());
    }
    for (const char *key : {"general.architecture", "general.name", "tokenizer.ggml.model"})
        QCOMPARE(*b->getString(key), *a->getString(key));
    for (const char *key :
         {"llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
          "llama.attention.head_count", "llama.attention.head_count_kv",
          "llama.rope.dimension_count", "llama.context_length", "tokenizer.ggml.bos_token_id",
          "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id"})
        QCOMPARE(*b->getU32(key), *a->getU32(key));
    QCOMPARE(b->find("general.alignment")->type, GgufValueType::U32);
    QCOMPARE(*b->getU32("general.alignment"), 32u);
    QCOMPARE(*b->getStringArray("tokenizer.ggml.tokens"),
             *a->getStringArray("tokenizer.ggml.tokens"));
    QCOMPARE(*b->getF32Array("tokenizer.ggml.scores"), *a->getF32Array("tokenizer.ggml.scores"));
    QCOMPARE(*b->getI32Array("tokenizer.ggml.token_type"),
             *a->getI32Array("tokenizer.ggml.token_type"));
    QVERIFY(!b->has("tokenizer.ggml.padding_token_id")); // none (u32 -1 in the original)

    // Checkpoint level: identical config and weights.
    auto again = loadGgufCheckpoint(out, {});
    QVERIFY2(again.ok(), again.ok() ? "" : again.error().message.c_str());
    QCOMPARE(again->config.hiddenSize, ckpt->config.hiddenSize);
    QCOMPARE(again->config.numKvHeads, ckpt->config.numKvHeads);
    QCOMPARE(again->config.rmsNormEps, ckpt->config.rmsNormEps);
    QCOMPARE(again->config.eosIds, ckpt->config.eosIds);
    const auto w0 = allWeights(ckpt->weights), w1 = allWeights(again->weights);
    for (size_t i = 0; i < w0.size(); ++i)
        QVERIFY2(sameBits(*w0[i], *w1[i]), w0[i]->name.c_str());
}

// Q8_0: ffn_down rows (172) are not whole blocks and fall back to F16 as in llama-quantize; every
// other matrix is Q8_0 and must equal the blocks of llama.cpp's stories260K-Q8_0.gguf, and every
// loaded weight must lie within |err| <= d/2 + 127|d - f16(d)| (d = amax/127 per block).
void TestGgufWriter::q8_0MatchesLlamaQuantizeAndBound() {
    LOWBIT_REQUIRE_SHARED_FILE(llamaQ8, "data/gguf/stories260K-Q8_0.gguf");
    auto ckpt = loadStories();
    QVERIFY(ckpt.ok());
    Fixture fx;
    const fs::path out = fx.path("q8.gguf");
    QVERIFY(writeGgufCheckpoint(*ckpt, out, GgmlType::Q8_0).ok());
    auto ours = GgufFile::open(out), theirs = GgufFile::open(llamaQ8);
    QVERIFY(ours.ok() && theirs.ok());
    QCOMPARE(*ours->getU32("general.file_type"), 7u);
    QCOMPARE(*ours->getU32("general.quantization_version"), 2u);
    for (const GgufTensorInfo &t : theirs->tensors()) {
        const GgufTensorInfo *u = ours->findTensor(t.name);
        QVERIFY2(u && u->type == t.type && u->ne == t.ne, t.name.c_str());
        QVERIFY2(std::memcmp(u->data.data(), t.data.data(), t.data.size()) == 0, t.name.c_str());
    }
    QCOMPARE(ours->findTensor("blk.0.ffn_down.weight")->type, GgmlType::F16);
    QCOMPARE(ours->findTensor("blk.0.attn_q.weight")->type, GgmlType::Q8_0);
    QCOMPARE(ours->findTensor("blk.0.ffn_norm.weight")->type, GgmlType::F32);

    auto again = loadGgufCheckpoint(out, {});
    QVERIFY2(again.ok(), again.ok() ? "" : again.error().message.c_str());
    const auto w0 = allWeights(ckpt->weights), w1 = allWeights(again->weights);
    for (size_t i = 0; i < w0.size(); ++i) {
        const std::vector<float> x = tensorToFloats(*w0[i]), y = tensorToFloats(*w1[i]);
        QCOMPARE(y.size(), x.size());
        const int64_t row = w0[i]->shape.back();
        if (w0[i]->shape.size() == 1) {
            QVERIFY(sameBits(*w0[i], *w1[i]));
            continue;
        }
        if (row % 32 != 0) { // F16 fallback
            for (size_t j = 0; j < x.size(); ++j)
                QVERIFY2(std::fabs(x[j] - y[j]) <= std::fabs(x[j]) * std::ldexp(1.0, -11) + 1e-7,
                         w0[i]->name.c_str());
            continue;
        }
        for (size_t b = 0; b < x.size(); b += 32) {
            double amax = 0;
            for (size_t j = b; j < b + 32; ++j)
                amax = std::max(amax, std::fabs(double(x[j])));
            const double d = amax / 127, d16 = f16ToFloat(floatToF16(float(d)));
            const double bound = d / 2 + 127 * std::fabs(d - d16) + 1e-7;
            for (size_t j = b; j < b + 32; ++j)
                QVERIFY2(std::fabs(double(x[j]) - double(y[j])) <= bound, w0[i]->name.c_str());
        }
    }
}

void TestGgufWriter::f16AndBf16WithinRounding() {
    auto ckpt = loadStories();
    if (!ckpt.ok())
        QSKIP("stories260K.gguf missing");
    Fixture fx;
    for (auto [type, bits] : {std::pair{GgmlType::F16, 11}, std::pair{GgmlType::BF16, 8}}) {
        const fs::path out = fx.path(type == GgmlType::F16 ? "f16.gguf" : "bf16.gguf");
        QVERIFY(writeGgufCheckpoint(*ckpt, out, type).ok());
        auto again = loadGgufCheckpoint(out, {});
        QVERIFY2(again.ok(), again.ok() ? "" : again.error().message.c_str());
        QCOMPARE(again->weights.layers[2].wUp.dtype,
                 type == GgmlType::F16 ? DType::F16 : DType::BF16);
        const auto w0 = allWeights(ckpt->weights), w1 = allWeights(again->weights);
        for (size_t i = 0; i < w0.size(); ++i) {
            const std::vector<float> x = tensorToFloats(*w0[i]), y = tensorToFloats(*w1[i]);
            for (size_t j = 0; j < x.size(); ++j)
                QVERIFY(std::fabs(x[j] - y[j]) <= std::fabs(x[j]) * std::ldexp(1.0, -bits) + 1e-7);
        }
    }
}

void TestGgufWriter::tiedHeadIsOmitted() {
    auto ckpt = loadStories();
    if (!ckpt.ok())
        QSKIP("stories260K.gguf missing");
    ckpt->weights.output = ckpt->weights.tokenEmbedding;
    ckpt->config.tieWordEmbeddings = true;
    Fixture fx;
    QVERIFY(writeGgufCheckpoint(*ckpt, fx.path("tied.gguf"), GgmlType::F32).ok());
    auto file = GgufFile::open(fx.path("tied.gguf"));
    QVERIFY(file.ok());
    QCOMPARE(file->tensors().size(), size_t(47));
    QVERIFY(!file->findTensor("output.weight"));
    auto again = loadGgufCheckpoint(fx.path("tied.gguf"), {});
    QVERIFY(again.ok());
    QVERIFY(again->config.tieWordEmbeddings);
    QCOMPARE(again->weights.output.data, again->weights.tokenEmbedding.data);
}

// Llama 3 scaling travels as rope_freqs.weight: per frequency i of head size 8, the divisor
// computed here from Meta's formula (wavelength 2*pi*theta^(2i/8) against original/high and
// original/low) must be stored, and loading must recover the same scaling.
void TestGgufWriter::ropeScalingRoundTrips() {
    auto ckpt = loadStories();
    if (!ckpt.ok())
        QSKIP("stories260K.gguf missing");
    Fixture fx;
    RopeScaling llama3;
    llama3.type = RopeScaling::Type::Llama3;
    llama3.factor = 8;
    llama3.originalMaxPositions = 1024;
    ckpt->config.ropeScaling = llama3;
    QVERIFY(writeGgufCheckpoint(*ckpt, fx.path("l3.gguf"), GgmlType::F32).ok());
    auto file = GgufFile::open(fx.path("l3.gguf"));
    const GgufTensorInfo *freqs = file->findTensor("rope_freqs.weight");
    QVERIFY(freqs && freqs->ne == std::vector<uint64_t>{4});
    std::vector<float> stored(4);
    std::memcpy(stored.data(), freqs->data.data(), 16);
    for (int i = 0; i < 4; ++i) {
        const double wavelen = 2 * std::numbers::pi * std::pow(10000.0, 2.0 * i / 8);
        double expected = 1;
        if (wavelen > 1024.0 / 1)
            expected = 8;
        else if (wavelen >= 1024.0 / 4) {
            const double smooth = (1024.0 / wavelen - 1) / (4 - 1);
            expected = 1 / ((1 - smooth) / 8 + smooth);
        }
        QVERIFY2(std::fabs(stored[i] - expected) <= 1e-6 * expected,
                 qPrintable(QString::number(i)));
    }
    QVERIFY(stored[2] > 1 && stored[2] < 8); // one frequency in the smooth band
    auto again = loadGgufCheckpoint(fx.path("l3.gguf"), {});
    QVERIFY2(again.ok(), again.ok() ? "" : again.error().message.c_str());
    QCOMPARE(again->config.ropeScaling.type, RopeScaling::Type::Llama3);
    QCOMPARE(again->config.ropeScaling.factor, 8.0);
    QCOMPARE(again->config.ropeScaling.originalMaxPositions, int64_t(1024));

    ckpt->config.ropeScaling = RopeScaling{RopeScaling::Type::Linear, 4.0};
    QVERIFY(writeGgufCheckpoint(*ckpt, fx.path("lin.gguf"), GgmlType::F32).ok());
    again = loadGgufCheckpoint(fx.path("lin.gguf"), {});
    QVERIFY(again.ok());
    QCOMPARE(again->config.ropeScaling.type, RopeScaling::Type::Linear);
    QCOMPARE(again->config.ropeScaling.factor, 4.0);
}

void TestGgufWriter::writerEncodesAllValueTypes() {
    GgufWriter w(64);
    auto value = [](GgufValueType t) {
        GgufValue v;
        v.type = t;
        return v;
    };
    GgufValue u8 = value(GgufValueType::U8), i16 = value(GgufValueType::I16);
    u8.u = 200;
    i16.i = -1234;
    w.set("v.u8", u8);
    w.set("v.i16", i16);
    w.setU32("v.u32", 4000000000u);
    w.setI32("v.i32", -5);
    w.setU64("v.u64", ~uint64_t(0) - 1);
    w.setF32("v.f32", 0.75f);
    w.setF64("v.f64", -1e300);
    w.setBool("v.bool", true);
    w.setString("v.str", std::string("a\0b", 3));
    w.setStringArray("v.strs", {"x", "", "yz"});
    w.setF32Array("v.f32s", {1.5f, -2.0f});
    w.setI32Array("v.i32s", {7, -8});
    GgufValue nested = value(GgufValueType::Array);
    nested.elementType = GgufValueType::Array;
    nested.array.push_back(value(GgufValueType::Array));
    nested.array[0].elementType = GgufValueType::U8;
    nested.array[0].array = {u8, u8};
    w.set("v.nested", nested);
    w.setU32("v.u32", 17); // replaces, keeps position
    const float f[3] = {0.5f, -0.25f, 3.0f};
    QVERIFY(w.addTensor("t.f16", Tensor::fromFloats("x", {3}, f), GgmlType::F16).ok());
    std::vector<std::byte> q4(18, std::byte{0x97});
    QVERIFY(w.addRawTensor("t.q4", GgmlType::Q4_0, {32}, q4).ok());
    auto bytes = w.toBytes();
    QVERIFY(bytes.ok());
    auto file = GgufFile::parse(*bytes, "written.gguf");
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->metadata().size(), size_t(14)); // 13 set + general.alignment
    QCOMPARE(file->metadata()[2].first, std::string("v.u32"));
    QCOMPARE(*file->getU32("v.u32"), 17u);
    QCOMPARE(file->find("v.u8")->u, uint64_t(200));
    QCOMPARE(file->find("v.i16")->i, int64_t(-1234));
    QCOMPARE(*file->getI64("v.i32"), int64_t(-5));
    QCOMPARE(*file->getU64("v.u64"), ~uint64_t(0) - 1);
    QCOMPARE(*file->getF32("v.f32"), 0.75f);
    QCOMPARE(file->find("v.f64")->type, GgufValueType::F64);
    QCOMPARE(*file->getF64("v.f64"), -1e300);
    QCOMPARE(*file->getBool("v.bool"), true);
    QCOMPARE(*file->getString("v.str"), std::string("a\0b", 3));
    QCOMPARE(*file->getStringArray("v.strs"), (std::vector<std::string>{"x", "", "yz"}));
    QCOMPARE(*file->getF32Array("v.f32s"), (std::vector<float>{1.5f, -2.0f}));
    QCOMPARE(*file->getI32Array("v.i32s"), (std::vector<int32_t>{7, -8}));
    QCOMPARE((*file->getArray("v.nested"))->array[0].array[1].u, uint64_t(200));
    QCOMPARE(file->alignment(), uint64_t(64));
    QCOMPARE(file->dataOffset() % 64, uint64_t(0));
    const GgufTensorInfo *t16 = file->findTensor("t.f16"), *tq = file->findTensor("t.q4");
    QCOMPARE(t16->offset, uint64_t(0));
    QCOMPARE(tq->offset, uint64_t(64));
    uint16_t h[3];
    std::memcpy(h, t16->data.data(), 6);
    QCOMPARE(h[0], uint16_t(0x3800));
    QCOMPARE(h[1], uint16_t(0xb400));
    QCOMPARE(h[2], uint16_t(0x4200));
    QVERIFY(std::memcmp(tq->data.data(), q4.data(), 18) == 0);
}

void TestGgufWriter::writerRejectsBadRequests() {
    std::vector<float> v(40, 0.5f);
    GgufWriter w;
    Status s = w.addTensor("odd", Tensor::fromFloats("odd", {2, 20}, v.data()), GgmlType::Q8_0);
    QCOMPARE(s.error().code, ErrorCode::InvalidArgument);
    QVERIFY(s.error().message.find("'odd'") != std::string::npos);
    s = w.addTensor("q4", Tensor::fromFloats("q4", {32}, v.data()), GgmlType::Q4_0);
    QCOMPARE(s.error().code, ErrorCode::Unsupported);
    s = w.addRawTensor("raw", GgmlType::Q8_0, {32}, std::vector<std::byte>(33));
    QCOMPARE(s.error().code, ErrorCode::InvalidArgument);
    QCOMPARE(GgufWriter(48).toBytes().error().code, ErrorCode::InvalidArgument);
    GgufWriter ok;
    ok.setString("general.architecture", "llama");
    Status io = ok.write("/nonexistent/dir/out.gguf");
    QCOMPARE(io.error().code, ErrorCode::Io);
    QVERIFY(io.error().message.find("/nonexistent/dir/out.gguf") != std::string::npos);
    auto ckpt = loadStories();
    if (ckpt.ok()) {
        Fixture fx;
        Status bad = writeGgufCheckpoint(*ckpt, fx.path("x.gguf"), GgmlType::Q4_K);
        QCOMPARE(bad.error().code, ErrorCode::InvalidArgument);
        QVERIFY(!fs::exists(fx.path("x.gguf")));
    }
}

// Head size 6: interleaved row h*6 + 2j + s holds rotate-half row h*6 + 3s + j.
void TestGgufWriter::permuteInverseUndoesPermute() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> dist(-1, 1);
    std::vector<float> x(12 * 5);
    for (float &v : x)
        v = dist(rng);
    const Tensor t = Tensor::fromFloats("w", {12, 5}, x.data());
    const std::vector<float> inv = tensorToFloats(permuteRopeRowsInverse(t, 2, 6));
    for (int h = 0; h < 2; ++h)
        for (int s = 0; s < 2; ++s)
            for (int j = 0; j < 3; ++j)
                for (int c = 0; c < 5; ++c)
                    QCOMPARE(inv[size_t((h * 6 + 2 * j + s) * 5 + c)],
                             x[size_t((h * 6 + 3 * s + j) * 5 + c)]);
    QVERIFY(sameBits(permuteRopeRows(permuteRopeRowsInverse(t, 2, 6), 2, 6), t));
    QVERIFY(sameBits(permuteRopeRowsInverse(permuteRopeRows(t, 2, 6), 2, 6), t));
}

QTEST_APPLESS_MAIN(TestGgufWriter)
#include "test_gguf_writer.moc"
