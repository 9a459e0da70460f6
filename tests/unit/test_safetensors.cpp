// Safetensors reader/writer: round trips of random tensors, a shared fixture shard checked against
// values read from its bytes by an independent script, and malformed files built byte by byte.
#include "io/safetensors.h"
#include "shared_data.h"

#include <QTemporaryDir>
#include <QtTest>

#include <cstring>
#include <fstream>
#include <random>

using namespace lowbit;

namespace {

std::filesystem::path tempPath(const QTemporaryDir &dir, const char *name) {
    return std::filesystem::path(dir.path().toStdString()) / name;
}

// Writes an 8-byte length (or `lengthOverride`), the header text and `dataBytes` bytes of data.
void writeImage(const std::filesystem::path &path, const QByteArray &header, qint64 dataBytes,
                qint64 lengthOverride = -1) {
    std::ofstream out(path, std::ios::binary);
    const uint64_t length =
        lengthOverride >= 0 ? uint64_t(lengthOverride) : uint64_t(header.size());
    for (int i = 0; i < 8; ++i)
        out.put(char(length >> (8 * i)));
    out.write(header.constData(), header.size());
    for (qint64 i = 0; i < dataBytes; ++i)
        out.put(char(i * 37 + 11));
}

std::vector<float> randomFloats(std::mt19937 &rng, size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> v(n);
    for (float &x : v)
        x = dist(rng);
    return v;
}

} // namespace

class TestSafetensors : public QObject {
    Q_OBJECT
private slots:
    void roundTripsAllDtypes();
    void readsMisalignedTensorCorrectly();
    void readsFixtureShard();
    void rejectsMalformedFiles_data();
    void rejectsMalformedFiles();
    void rejectsMissingFile();
    void writerRejectsDuplicateNames();
};

void TestSafetensors::roundTripsAllDtypes() {
    std::mt19937 rng(std::random_device{}());
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const auto a = randomFloats(rng, 6 * 5), b = randomFloats(rng, 7),
               c = randomFloats(rng, 3 * 2 * 4);
    const std::vector<Tensor> tensors = {
        Tensor::fromFloats("blk.a", {6, 5}, a.data(), DType::F32),
        Tensor::fromFloats("blk.b", {7}, b.data(), DType::F16),
        Tensor::fromFloats("blk.c", {3, 2, 4}, c.data(), DType::BF16),
    };
    const auto path = tempPath(dir, "round.safetensors");
    QVERIFY(writeSafetensors(path, tensors, {{"format", "pt"}, {"note", "lowbit test"}}).ok());

    // The layout, read back by hand: 8-byte length, then data 8-aligned.
    const std::string raw = test::readFile(path);
    uint64_t headerBytes = 0;
    for (int i = 7; i >= 0; --i)
        headerBytes = (headerBytes << 8) | uint8_t(raw[size_t(i)]);
    QCOMPARE((8 + headerBytes) % 8, uint64_t(0));
    QCOMPARE(uint64_t(raw.size()), 8 + headerBytes + 30 * 4 + 7 * 2 + 24 * 2);

    auto file = readSafetensors(path);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->tensors.size(), size_t(3));
    QCOMPARE(file->metadata.at("note"), std::string("lowbit test"));
    for (const Tensor &expected : tensors) {
        const Tensor &got = file->tensors.at(expected.name);
        QCOMPARE(got.dtype, expected.dtype);
        QCOMPARE(got.shape, expected.shape);
        QVERIFY(std::memcmp(got.data, expected.data, expected.bytes()) == 0);
        QVERIFY(got.owner); // views the mapping, which it keeps alive
    }
    // F32 is stored exactly.
    QCOMPARE(tensorToFloats(file->tensors.at("blk.a"))[17], a[17]);
}

void TestSafetensors::readsMisalignedTensorCorrectly() {
    // Header of odd length, no padding: the F32 tensor starts at an odd address in the mapping.
    QTemporaryDir dir;
    const QByteArray header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
    QCOMPARE(header.size() % 4 != 0, true);
    const auto path = tempPath(dir, "odd.safetensors");
    {
        std::ofstream out(path, std::ios::binary);
        for (int i = 0; i < 8; ++i)
            out.put(char(uint64_t(header.size()) >> (8 * i)));
        out.write(header.constData(), header.size());
        const float values[2] = {1.5f, -2.25f};
        out.write(reinterpret_cast<const char *>(values), 8);
    }
    auto file = readSafetensors(path);
    QVERIFY(file.ok());
    const Tensor &w = file->tensors.at("w");
    QCOMPARE(reinterpret_cast<uintptr_t>(w.data) % 4, uintptr_t(0));
    QCOMPARE(tensorToFloats(w), (std::vector<float>{1.5f, -2.25f}));
}

void TestSafetensors::readsFixtureShard() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "fixtures/tiny-llama3-a/model-00001-of-00002.safetensors");
    auto file = readSafetensors(path);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->metadata.at("format"), std::string("pt"));
    const Tensor &embed = file->tensors.at("model.embed_tokens.weight");
    QCOMPARE(embed.dtype, DType::BF16);
    QCOMPARE(embed.shape, (std::vector<int64_t>{512, 64}));
    // Values read from the file's bytes with Python's json + struct (not with this reader).
    QCOMPARE(tensorToFloats(embed)[3 * 64 + 5], 0.16796875f);
    QCOMPARE(tensorToFloats(file->tensors.at("lm_head.weight"))[511 * 64 + 63], 0.033203125f);
    const Tensor &down = file->tensors.at("model.layers.0.mlp.down_proj.weight");
    QCOMPARE(down.shape, (std::vector<int64_t>{64, 176}));
    QCOMPARE(tensorToFloats(down)[63 * 176 + 175], -0.09716796875f);
    // The tensor views the mapping: nothing was copied.
    const auto *begin = file->file->data(), *end = begin + file->file->size();
    QVERIFY(embed.data >= begin && embed.data + embed.bytes() <= end);
}

void TestSafetensors::rejectsMalformedFiles_data() {
    QTest::addColumn<QByteArray>("header");
    QTest::addColumn<qint64>("dataBytes");
    QTest::addColumn<qint64>("lengthOverride"); // -1: the header's true length
    QTest::addColumn<QString>("phrase");
    QTest::addColumn<int>("code");
    const int format = int(ErrorCode::Format);
    const QByteArray ok = R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}})";

    QTest::newRow("truncated before length")
        << QByteArray() << qint64(0) << qint64(-2) << "truncated" << format;
    QTest::newRow("header length past end")
        << ok << qint64(24) << qint64(ok.size() + 100) << "runs past the end" << format;
    QTest::newRow("header length absurd")
        << ok << qint64(24) << (qint64(1) << 62) << "absurd" << format;
    QTest::newRow("invalid json") << QByteArray(R"({"t":{"dtype":"F32",)") << qint64(0)
                                  << qint64(-1) << "not valid JSON" << format;
    QTest::newRow("header not an object")
        << QByteArray("[1,2,3]") << qint64(0) << qint64(-1) << "not a JSON object" << format;
    QTest::newRow("offsets out of range")
        << ok << qint64(20) << qint64(-1) << "out of range" << format;
    QTest::newRow("overlapping offsets")
        << QByteArray(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                      R"("b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})")
        << qint64(24) << qint64(-1) << "overlapping" << format;
    QTest::newRow("begin greater than end")
        << QByteArray(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})") << qint64(24)
        << qint64(-1) << "greater than end" << format;
    QTest::newRow("length not dtype x shape")
        << QByteArray(R"({"t":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})") << qint64(24)
        << qint64(-1) << "does not match dtype x shape" << format;
    QTest::newRow("unknown dtype")
        << QByteArray(R"({"t":{"dtype":"Q9_X","shape":[2],"data_offsets":[0,2]}})") << qint64(2)
        << qint64(-1) << "unknown dtype 'Q9_X'" << format;
    QTest::newRow("unsupported dtype I64")
        << QByteArray(R"({"t":{"dtype":"I64","shape":[3],"data_offsets":[0,24]}})") << qint64(24)
        << qint64(-1) << "tensor 't': dtype I64 is not supported" << int(ErrorCode::Unsupported);
    QTest::newRow("overflowing shape")
        << QByteArray(
               R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})")
        << qint64(0) << qint64(-1) << "overflows" << format;
    QTest::newRow("overflow hidden by a zero dim")
        << QByteArray(
               R"({"t":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}})")
        << qint64(0) << qint64(-1) << "overflows" << format;
    QTest::newRow("negative dimension")
        << QByteArray(R"({"t":{"dtype":"F32","shape":[-2,3],"data_offsets":[0,24]}})") << qint64(24)
        << qint64(-1) << "negative dimension" << format;
    QTest::newRow("missing data_offsets") << QByteArray(R"({"t":{"dtype":"F32","shape":[2]}})")
                                          << qint64(8) << qint64(-1) << "data_offsets" << format;
    QTest::newRow("non-integer offsets")
        << QByteArray(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0.0,8]}})") << qint64(8)
        << qint64(-1) << "data_offsets" << format;
    QTest::newRow("metadata not an object")
        << QByteArray(
               R"({"__metadata__":[1],"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})")
        << qint64(8) << qint64(-1) << "__metadata__" << format;
}

void TestSafetensors::rejectsMalformedFiles() {
    QFETCH(QByteArray, header);
    QFETCH(qint64, dataBytes);
    QFETCH(qint64, lengthOverride);
    QFETCH(QString, phrase);
    QFETCH(int, code);
    QTemporaryDir dir;
    const auto path = tempPath(dir, "bad_input.safetensors");
    if (lengthOverride == -2) {
        std::ofstream(path, std::ios::binary) << "abc"; // shorter than the length field
    } else {
        writeImage(path, header, dataBytes, lengthOverride);
    }
    auto file = readSafetensors(path);
    QVERIFY(!file.ok());
    const QString message = QString::fromStdString(file.error().message);
    QVERIFY2(message.contains("bad_input.safetensors"), qPrintable(message));
    QVERIFY2(message.contains(phrase), qPrintable(message));
    QCOMPARE(int(file.error().code), code);
}

void TestSafetensors::rejectsMissingFile() {
    QTemporaryDir dir;
    auto file = readSafetensors(tempPath(dir, "absent.safetensors"));
    QVERIFY(!file.ok());
    QCOMPARE(file.error().code, ErrorCode::NotFound);
    QVERIFY(file.error().message.find("absent.safetensors") != std::string::npos);
}

void TestSafetensors::writerRejectsDuplicateNames() {
    QTemporaryDir dir;
    const float v[2] = {0.5f, -1.0f};
    const std::vector<Tensor> tensors = {Tensor::fromFloats("x", {2}, v),
                                         Tensor::fromFloats("x", {2}, v)};
    const auto path = tempPath(dir, "dup.safetensors");
    const Status status = writeSafetensors(path, tensors);
    QVERIFY(!status.ok());
    QVERIFY(status.error().message.find("duplicate tensor 'x'") != std::string::npos);
    QVERIFY(!std::filesystem::exists(path));
}

QTEST_APPLESS_MAIN(TestSafetensors)
#include "test_safetensors.moc"
