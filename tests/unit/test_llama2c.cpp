// llama2.c checkpoint loader: the real stories260K model (values from an independent NumPy reader,
// ../shared/tools/llama_ref.py, which also permutes Q/K to rotate-half), a model written here with
// a separate classifier, and broken files.
#include "io/llama2c.h"
#include "model/checkpoint.h"
#include "shared_data.h"

#include <QTemporaryDir>
#include <QtTest>

#include <array>
#include <fstream>
#include <random>

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

using Header = std::array<int32_t, 7>; // dim, hidden, layers, heads, kv heads, vocab, seq_len

float at(const Tensor &t, int64_t row, int64_t col) {
    return tensorToFloats(t)[size_t(row * t.cols() + col)];
}

// The number of floats run.c reads for `h` (computed here independently of the loader).
int64_t floatCount(const Header &h) {
    const int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv = h[4];
    const int64_t vocab = std::abs(int64_t(h[5])), seq = h[6], headSize = dim / heads;
    int64_t n = vocab * dim + layers * dim * 2 + layers * dim * dim * 2 +
                layers * kv * headSize * dim * 2 + layers * hidden * dim * 3 + dim + seq * headSize;
    return h[5] < 0 ? n + vocab * dim : n;
}

void writeModel(const fs::path &path, const Header &h, const std::vector<float> &floats) {
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char *>(h.data()), 28);
    out.write(reinterpret_cast<const char *>(floats.data()), std::streamsize(floats.size() * 4));
}

} // namespace

class TestLlama2c : public QObject {
    Q_OBJECT
private slots:
    void loadsStories260K();
    void loadsSeparateClassifierAndPermutesQk();
    void rejectsBrokenFiles_data();
    void rejectsBrokenFiles();
    void rejectsMissingFiles();
};

void TestLlama2c::loadsStories260K() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/llama2c/stories260K.bin");
    auto ckpt = loadCheckpoint(path);
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->format, CheckpointFormat::Llama2c);
    const ModelConfig &c = ckpt->config;
    // Header [64, 172, 5, 8, 4, 512, 512], read with Python's struct.
    QCOMPARE(c.hiddenSize, 64);
    QCOMPARE(c.intermediateSize, 172);
    QCOMPARE(c.numLayers, 5);
    QCOMPARE(c.numHeads, 8);
    QCOMPARE(c.numKvHeads, 4);
    QCOMPARE(c.vocabSize, 512);
    QCOMPARE(c.maxPositions, 512);
    QCOMPARE(c.headDim, 8);
    QCOMPARE(c.tieWordEmbeddings, true);
    QCOMPARE(c.ropeTheta, 10000.0);
    QCOMPARE(c.rmsNormEps, 1e-5);
    QCOMPARE(c.ropeScaling.type, RopeScaling::Type::None);
    QCOMPARE(c.bosId, 1);
    QCOMPARE(c.eosIds, std::vector<int32_t>{2});

    const ModelWeights &w = ckpt->weights;
    QCOMPARE(w.output.data, w.tokenEmbedding.data);
    // Values from llama_ref.read_llama2c (Q/K already in rotate-half order there).
    QCOMPARE(at(w.tokenEmbedding, 0, 0), float(-0.29474878311157227));
    QCOMPARE(at(w.tokenEmbedding, 511, 63), float(-0.424032598733902));
    QCOMPARE(at(w.layers[0].wq, 1, 3), float(-0.012554725632071495));
    QCOMPARE(at(w.layers[0].wq, 4, 0), float(0.22455421090126038));
    QCOMPARE(at(w.layers[4].wk, 5, 10), float(-0.015484652481973171));
    QCOMPARE(at(w.layers[2].wDown, 63, 171), float(0.10219375044107437));
    QCOMPARE(at(w.finalNorm, 0, 7), float(1.5204191207885742));
    QCOMPARE(ckpt->bytesByStoredType.at("F32"), uint64_t(1056540 - 28));

    // tok512.bin lies beside the model and is picked up (tokenizer.bin there is Llama 2's 32000).
    QVERIFY(ckpt->tokenizer);
    QCOMPARE(ckpt->tokenizer->vocabSize(), 512);
    QVERIFY(ckpt->metadata.at("tokenizer").ends_with("tok512.bin"));
}

void TestLlama2c::loadsSeparateClassifierAndPermutesQk() {
    // dim 8, hidden 12, 2 layers, 2 heads of 4, 1 kv head, vocab 10 with its own classifier.
    const Header h = {8, 12, 2, 2, 1, -10, 6};
    std::mt19937 rng(std::random_device{}());
    std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
    std::vector<float> floats(size_t(floatCount(h)));
    for (float &x : floats)
        x = dist(rng);
    QTemporaryDir tmp;
    const fs::path path = fs::path(tmp.path().toStdString()) / "tiny.bin";
    writeModel(path, h, floats);

    auto ckpt = loadLlama2cCheckpoint(path, {});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->config.vocabSize, 10);
    QCOMPARE(ckpt->config.tieWordEmbeddings, false);
    QVERIFY(!ckpt->tokenizer);

    // Offsets in floats, in run.c's order.
    const int64_t dim = 8, hidden = 12, L = 2, kvDim = 4, vocab = 10, seq = 6;
    const int64_t embed = 0, rmsAtt = embed + vocab * dim, wq = rmsAtt + L * dim;
    const int64_t wk = wq + L * dim * dim, wv = wk + L * kvDim * dim, wo = wv + L * kvDim * dim;
    const int64_t rmsFfn = wo + L * dim * dim, w1 = rmsFfn + L * dim, w2 = w1 + L * hidden * dim;
    const int64_t w3 = w2 + L * dim * hidden, rmsFinal = w3 + L * hidden * dim;
    const int64_t wcls = rmsFinal + dim + seq * 2 * 2;
    const ModelWeights &w = ckpt->weights;
    QCOMPARE(at(w.output, 9, 7), floats[size_t(wcls + 9 * dim + 7)]);
    QCOMPARE(at(w.tokenEmbedding, 9, 7), floats[size_t(embed + 9 * dim + 7)]);
    QCOMPARE(at(w.layers[1].attnNorm, 0, 5), floats[size_t(rmsAtt + dim + 5)]);
    QCOMPARE(at(w.layers[1].ffnNorm, 0, 2), floats[size_t(rmsFfn + dim + 2)]);
    QCOMPARE(at(w.layers[1].wv, 3, 6), floats[size_t(wv + kvDim * dim + 3 * dim + 6)]);
    QCOMPARE(at(w.layers[1].wo, 7, 1), floats[size_t(wo + dim * dim + 7 * dim + 1)]);
    QCOMPARE(at(w.layers[1].wGate, 11, 0), floats[size_t(w1 + hidden * dim + 11 * dim)]);
    QCOMPARE(at(w.layers[1].wDown, 2, 11), floats[size_t(w2 + dim * hidden + 2 * hidden + 11)]);
    QCOMPARE(at(w.layers[1].wUp, 5, 4), floats[size_t(w3 + hidden * dim + 5 * dim + 4)]);
    QCOMPARE(at(w.finalNorm, 0, 3), floats[size_t(rmsFinal + 3)]);
    // Head size 4: rotate-half row (h, half s, j) is interleaved row h*4 + 2j + s.
    const int srcOfHfRow[8] = {0, 2, 1, 3, 4, 6, 5, 7};
    for (int r = 0; r < 8; ++r)
        for (int col = 0; col < dim; ++col)
            QCOMPARE(at(w.layers[1].wq, r, col),
                     floats[size_t(wq + dim * dim + srcOfHfRow[r] * dim + col)]);
    for (int r = 0; r < 4; ++r)
        QCOMPARE(at(w.layers[0].wk, r, 5), floats[size_t(wk + srcOfHfRow[r] * dim + 5)]);
}

void TestLlama2c::rejectsBrokenFiles_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<QString>("phrase");
    QTest::addColumn<int>("code");
    const int format = int(ErrorCode::Format);
    auto image = [](Header h, int64_t extraFloats = 0) {
        int64_t n = 0;
        if (h[0] > 0 && h[3] > 0 && h[4] > 0 && h[2] > 0 && h[6] > 0 && h[0] % h[3] == 0)
            n = floatCount(h);
        QByteArray b(reinterpret_cast<const char *>(h.data()), 28);
        b.append(QByteArray(qsizetype(std::max<int64_t>(0, n + extraFloats) * 4), '\x3f'));
        return b;
    };
    const Header good = {8, 12, 2, 2, 1, 10, 6};
    QTest::newRow("empty file") << QByteArray() << "too short (0 bytes)" << format;
    QTest::newRow("truncated header") << image(good).left(20) << "too short (20 bytes)" << format;
    QTest::newRow("truncated weights") << image(good, -1) << "wrong file size" << format;
    QTest::newRow("trailing bytes") << image(good, 3) << "wrong file size" << format;
    QTest::newRow("negative dim") << image({-8, 12, 2, 2, 1, 10, 6}) << "dim is -8" << format;
    QTest::newRow("zero layers") << image({8, 12, 0, 2, 1, 10, 6}) << "n_layers is 0" << format;
    QTest::newRow("zero vocab") << image({8, 12, 2, 2, 1, 0, 6}) << "vocab_size is 0" << format;
    QTest::newRow("negative seq_len")
        << image({8, 12, 2, 2, 1, 10, -6}) << "seq_len is -6" << format;
    QTest::newRow("heads do not divide dim")
        << image({8, 12, 2, 3, 1, 10, 6}) << "n_heads is 3" << format;
    QTest::newRow("kv heads do not divide heads")
        << image({8, 12, 2, 4, 3, 10, 6}) << "n_kv_heads is 3" << format;
    QTest::newRow("odd head size") << image({6, 12, 2, 2, 1, 10, 6}) << "must be even" << format;
    auto headerOnly = [](Header h) {
        return QByteArray(reinterpret_cast<const char *>(h.data()), 28);
    };
    QTest::newRow("sizes overflow")
        << headerOnly({1 << 30, 1 << 30, 1 << 30, 2, 1, 1 << 30, 1 << 30}) << "overflow" << format;
    QTest::newRow("huge dims, small file")
        << headerOnly({1 << 20, 1 << 20, 64, 2, 1, 1 << 20, 2}) << "wrong file size" << format;
    QTest::newRow("versioned export") << QByteArray("24ka").append(QByteArray(252, '\0'))
                                      << "versioned export" << int(ErrorCode::Unsupported);
}

void TestLlama2c::rejectsBrokenFiles() {
    QFETCH(QByteArray, bytes);
    QFETCH(QString, phrase);
    QFETCH(int, code);
    QTemporaryDir tmp;
    const fs::path path = fs::path(tmp.path().toStdString()) / "broken_model.bin";
    std::ofstream(path, std::ios::binary).write(bytes.constData(), bytes.size());
    auto ckpt = loadLlama2cCheckpoint(path, {});
    QVERIFY(!ckpt.ok());
    const QString message = QString::fromStdString(ckpt.error().message);
    QVERIFY2(message.contains("broken_model.bin"), qPrintable(message));
    QVERIFY2(message.contains(phrase), qPrintable(message));
    QCOMPARE(int(ckpt.error().code), code);
}

void TestLlama2c::rejectsMissingFiles() {
    QTemporaryDir tmp;
    const fs::path dir(tmp.path().toStdString());
    auto missing = loadLlama2cCheckpoint(dir / "absent.bin", {});
    QVERIFY(!missing.ok());
    QCOMPARE(missing.error().code, ErrorCode::NotFound);
    QVERIFY(missing.error().message.find("absent.bin") != std::string::npos);

    // An explicit tokenizer path that does not exist is an error, not a silent "no tokenizer".
    const Header h = {8, 12, 1, 2, 1, 10, 6};
    writeModel(dir / "m.bin", h, std::vector<float>(size_t(floatCount(h)), 0.5f));
    LoadOptions options;
    options.tokenizerPath = dir / "absent_tok.bin";
    auto noTokenizer = loadLlama2cCheckpoint(dir / "m.bin", options);
    QVERIFY(!noTokenizer.ok());
    QVERIFY(noTokenizer.error().message.find("absent_tok.bin") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestLlama2c)
#include "test_llama2c.moc"
