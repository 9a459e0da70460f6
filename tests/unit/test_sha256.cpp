// SHA-256 against the FIPS 180-2 appendix examples and NIST CAVS short/long messages.
#include "core/sha256.h"

#include <QtTest>

#include <filesystem>
#include <fstream>
#include <random>

using namespace lowbit;

class TestSha256 : public QObject {
    Q_OBJECT
private slots:
    void fipsExamples();
    void piecewiseEqualsWhole();
    void file();
    void missingFile();
};

void TestSha256::fipsExamples() {
    QCOMPARE(sha256Hex(""),
             std::string("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    QCOMPARE(sha256Hex("abc"),
             std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    QCOMPARE(sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
             std::string("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
    // One million 'a' (FIPS 180-2 appendix B.3).
    QCOMPARE(sha256Hex(std::string(1000000, 'a')),
             std::string("cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"));
    // 448 < length mod 512 bits: padding spills into a second block.
    QCOMPARE(sha256Hex(std::string(56, 'a')),
             std::string("b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"));
}

void TestSha256::piecewiseEqualsWhole() {
    std::mt19937 rng(std::random_device{}());
    std::string data(5000, '\0');
    for (char &c : data)
        c = char(rng());
    const std::string whole = sha256Hex(data);
    Sha256 pieces;
    size_t at = 0;
    while (at < data.size()) {
        const size_t take = std::min(data.size() - at, size_t(rng() % 130));
        pieces.update(data.data() + at, take);
        at += take;
    }
    QCOMPARE(pieces.hexDigest(), whole);
}

void TestSha256::file() {
    const auto path =
        std::filesystem::temp_directory_path() / ("lowbit_sha_" + std::to_string(::getpid()));
    {
        std::ofstream out(path, std::ios::binary);
        out << "abc";
    }
    auto hash = sha256File(path);
    std::filesystem::remove(path);
    QVERIFY(hash.ok());
    QCOMPARE(*hash,
             std::string("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
}

void TestSha256::missingFile() {
    auto hash = sha256File("/nonexistent/lowbit/file.bin");
    QVERIFY(!hash.ok());
    QVERIFY(hash.error().message.find("/nonexistent/lowbit/file.bin") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestSha256)
#include "test_sha256.moc"
