// GGML block codecs against hand-built blocks. Each test encodes known integer codes into a block
// following the layouts documented in ggml's ggml-common.h (written here in the encoding
// direction, independently of the decoder) and checks the closed-form value of every element.
// Scales are powers of two, so the expected floats are exact.
#include "core/dtype.h"
#include "quant/ggml_blocks.h"

#include <QtTest>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace lowbit;

namespace {

// IEEE half bit patterns, written out by hand.
constexpr uint16_t kHalf0_5 = 0x3800, kHalf0_25 = 0x3400, kHalfMinus1_5 = 0xbe00,
                   kHalf0_125 = 0x3000, kHalf2 = 0x4000, kHalf1_16th = 0x2c00,
                   kHalf1_128th = 0x2000;

struct Block {
    std::vector<std::byte> bytes;
    explicit Block(size_t n) : bytes(n) {}
    void u8(size_t at, uint8_t v) { bytes[at] = std::byte(v); }
    void u16(size_t at, uint16_t v) { std::memcpy(bytes.data() + at, &v, 2); }
    void u32(size_t at, uint32_t v) { std::memcpy(bytes.data() + at, &v, 4); }
    uint8_t get(size_t at) const { return uint8_t(bytes[at]); }
};

std::vector<float> decode(GgmlType type, const Block &b, int64_t n) {
    std::vector<float> out(size_t(n), -12345.0f);
    Status s = dequantizeRow(type, b.bytes.data(), out.data(), n);
    if (!s.ok())
        qFatal("dequantizeRow failed: %s", s.error().message.c_str());
    return out;
}

// Packs eight 6-bit scales and mins the way Q4_K/Q5_K store them in 12 bytes: sub-blocks 0-3 in
// the low 6 bits of bytes 0-3 (scale) / 4-7 (min); sub-blocks 4-7 low nibbles in bytes 8-11
// (scale low, min high) and their top two bits in bits 6-7 of bytes 0-3 (scale) / 4-7 (min).
void packScalesK(Block &b, size_t at, const int sc[8], const int mn[8]) {
    for (int j = 0; j < 4; ++j) {
        b.u8(at + j, uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6)));
        b.u8(at + j + 4, uint8_t(mn[j] | ((mn[j + 4] >> 4) << 6)));
        b.u8(at + j + 8, uint8_t((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4)));
    }
}

} // namespace

class TestGgmlBlocks : public QObject {
    Q_OBJECT
private slots:
    void typeTable();
    void plainTypes();
    void q4_0();
    void q4_1();
    void q5_0();
    void q5_1();
    void q8_0();
    void q4_K();
    void q5_K();
    void q6_K();
    void multipleBlocks();
    void rejectsUnsupportedAndPartialBlocks();
    void quantizeQ8_0();
};

void TestGgmlBlocks::typeTable() {
    struct Row {
        uint32_t id;
        const char *name;
        int64_t block, bytes;
    };
    // ggml type_traits: block size and sizeof(block_*) per type.
    const Row rows[] = {{0, "F32", 1, 4},         {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
                        {3, "Q4_1", 32, 20},      {6, "Q5_0", 32, 22},    {7, "Q5_1", 32, 24},
                        {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 36},    {10, "Q2_K", 256, 84},
                        {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144}, {13, "Q5_K", 256, 176},
                        {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292}, {20, "IQ4_NL", 32, 18},
                        {23, "IQ4_XS", 256, 136}, {30, "BF16", 1, 2},     {35, "TQ2_0", 256, 66}};
    for (const Row &r : rows) {
        auto info = ggmlTypeInfo(r.id);
        QVERIFY2(info.has_value(), r.name);
        QCOMPARE(QString::fromUtf8(info->name.data(), int(info->name.size())), QString(r.name));
        QCOMPARE(info->blockSize, r.block);
        QCOMPARE(info->bytesPerBlock, r.bytes);
        QCOMPARE(uint32_t(*ggmlTypeFromName(r.name)), r.id);
    }
    for (uint32_t retired : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 40u, 1000u})
        QVERIFY(!ggmlTypeInfo(retired).has_value());
    QVERIFY(!ggmlTypeFromName("q4_0").has_value());
    QCOMPARE(*ggmlBytesFor(GgmlType::Q4_0, 64), uint64_t(36));
    QCOMPARE(*ggmlBytesFor(GgmlType::Q6_K, 512), uint64_t(420));
    QVERIFY(!ggmlBytesFor(GgmlType::Q4_0, 33).has_value());
    QVERIFY(!ggmlBytesFor(GgmlType::F32, uint64_t(1) << 63).has_value());
}

void TestGgmlBlocks::plainTypes() {
    const float f32[3] = {1.5f, -2.25f, 1e-3f};
    Block b32(12);
    std::memcpy(b32.bytes.data(), f32, 12);
    QCOMPARE(decode(GgmlType::F32, b32, 3), std::vector<float>(f32, f32 + 3));
    Block b16(6);
    b16.u16(0, kHalf0_5);
    b16.u16(2, kHalfMinus1_5);
    b16.u16(4, 0x7bff); // largest finite half
    QCOMPARE(decode(GgmlType::F16, b16, 3), (std::vector<float>{0.5f, -1.5f, 65504.0f}));
    Block bf(4);
    bf.u16(0, 0x3fc0); // 1.5
    bf.u16(2, 0xc010); // -2.25
    QCOMPARE(decode(GgmlType::BF16, bf, 2), (std::vector<float>{1.5f, -2.25f}));
}

void TestGgmlBlocks::q4_0() {
    Block b(18);
    b.u16(0, kHalf0_5);
    for (int j = 0; j < 16; ++j)
        b.u8(2 + j, uint8_t(j | ((15 - j) << 4)));
    const std::vector<float> y = decode(GgmlType::Q4_0, b, 32);
    for (int j = 0; j < 16; ++j) {
        QCOMPARE(y[j], float(j - 8) * 0.5f);
        QCOMPARE(y[j + 16], float(15 - j - 8) * 0.5f);
    }
}

void TestGgmlBlocks::q4_1() {
    Block b(20);
    b.u16(0, kHalf0_25);
    b.u16(2, kHalfMinus1_5);
    for (int j = 0; j < 16; ++j)
        b.u8(4 + j, uint8_t(((j * 5) % 16) | ((j * 3 % 16) << 4)));
    const std::vector<float> y = decode(GgmlType::Q4_1, b, 32);
    for (int j = 0; j < 16; ++j) {
        QCOMPARE(y[j], float((j * 5) % 16) * 0.25f - 1.5f);
        QCOMPARE(y[j + 16], float(j * 3 % 16) * 0.25f - 1.5f);
    }
}

void TestGgmlBlocks::q5_0() {
    // Element j (j < 16) takes bit j of qh as its fifth bit, element j + 16 bit j + 16.
    const uint32_t qh = 0xa5a53c0fu;
    Block b(22);
    b.u16(0, kHalf0_125);
    b.u32(2, qh);
    for (int j = 0; j < 16; ++j)
        b.u8(6 + j, uint8_t(((j * 7) % 16) | ((j * 11 % 16) << 4)));
    const std::vector<float> y = decode(GgmlType::Q5_0, b, 32);
    for (int j = 0; j < 16; ++j) {
        const int lo = (j * 7) % 16 + 16 * int((qh >> j) & 1);
        const int hi = (j * 11) % 16 + 16 * int((qh >> (j + 16)) & 1);
        QCOMPARE(y[j], float(lo - 16) * 0.125f);
        QCOMPARE(y[j + 16], float(hi - 16) * 0.125f);
    }
}

void TestGgmlBlocks::q5_1() {
    const uint32_t qh = 0x0ff0c3a1u;
    Block b(24);
    b.u16(0, kHalf2);
    b.u16(2, kHalf0_5);
    b.u32(4, qh);
    for (int j = 0; j < 16; ++j)
        b.u8(8 + j, uint8_t((15 - j) | ((j * 9 % 16) << 4)));
    const std::vector<float> y = decode(GgmlType::Q5_1, b, 32);
    for (int j = 0; j < 16; ++j) {
        const int lo = (15 - j) + 16 * int((qh >> j) & 1);
        const int hi = (j * 9) % 16 + 16 * int((qh >> (j + 16)) & 1);
        QCOMPARE(y[j], float(lo) * 2.0f + 0.5f);
        QCOMPARE(y[j + 16], float(hi) * 2.0f + 0.5f);
    }
}

void TestGgmlBlocks::q8_0() {
    Block b(34);
    b.u16(0, kHalf1_16th);
    for (int j = 0; j < 32; ++j)
        b.u8(2 + j, uint8_t(int8_t((j * 37) % 255 - 127)));
    const std::vector<float> y = decode(GgmlType::Q8_0, b, 32);
    for (int j = 0; j < 32; ++j)
        QCOMPARE(y[j], float((j * 37) % 255 - 127) / 16.0f);
}

// Q4_K: 256 values in 8 sub-blocks of 32; value = d * scale[sb] * q - dmin * min[sb]. The nibbles
// of sub-blocks 2c and 2c+1 share qs[32c .. 32c+31] (low nibble: sub-block 2c).
void TestGgmlBlocks::q4_K() {
    const int sc[8] = {1, 63, 17, 32, 45, 2, 60, 33}, mn[8] = {5, 0, 63, 12, 7, 40, 21, 50};
    auto q = [](int i) { return (i * 7 + 3) % 16; };
    Block b(144);
    b.u16(0, kHalf0_5);
    b.u16(2, kHalf0_25);
    packScalesK(b, 4, sc, mn);
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l)
            b.u8(16 + 32 * c + l, uint8_t(q(64 * c + l) | (q(64 * c + 32 + l) << 4)));
    const std::vector<float> y = decode(GgmlType::Q4_K, b, 256);
    for (int i = 0; i < 256; ++i)
        QCOMPARE(y[i], 0.5f * float(sc[i / 32] * q(i)) - 0.25f * float(mn[i / 32]));
}

// Q5_K: as Q4_K plus a fifth bit per value: bit (i / 32) of qh[i % 32].
void TestGgmlBlocks::q5_K() {
    const int sc[8] = {63, 9, 31, 48, 16, 1, 40, 27}, mn[8] = {0, 33, 62, 8, 19, 63, 4, 11};
    auto q = [](int i) { return (i * 13 + 5) % 32; };
    Block b(176);
    b.u16(0, kHalf0_25);
    b.u16(2, kHalf0_5);
    packScalesK(b, 4, sc, mn);
    for (int i = 0; i < 256; ++i)
        if (q(i) & 16)
            b.u8(16 + i % 32, uint8_t(b.get(16 + i % 32) | (1 << (i / 32))));
    for (int c = 0; c < 4; ++c)
        for (int l = 0; l < 32; ++l)
            b.u8(48 + 32 * c + l, uint8_t((q(64 * c + l) & 15) | ((q(64 * c + 32 + l) & 15) << 4)));
    const std::vector<float> y = decode(GgmlType::Q5_K, b, 256);
    for (int i = 0; i < 256; ++i)
        QCOMPARE(y[i], 0.25f * float(sc[i / 32] * q(i)) - 0.5f * float(mn[i / 32]));
}

// Q6_K: 256 values in 16 sub-blocks of 16 with signed 8-bit scales; value = d * scale * (q - 32)
// for 6-bit q. Value 128h + 32k + l keeps its low nibble in ql[64h + l + 32(k & 1)] (low nibble
// for k < 2) and its top two bits in bits 2k, 2k+1 of qh[32h + l].
void TestGgmlBlocks::q6_K() {
    const int8_t sc[16] = {1, -1, 127, -128, 5, 64, -33, 17, 2, -7, 100, 3, -90, 45, 8, -2};
    auto q = [](int i) { return (i * 29 + 11) % 64; };
    Block b(210);
    for (int i = 0; i < 256; ++i) {
        const int h = i / 128, k = (i % 128) / 32, l = i % 32;
        const size_t lowAt = size_t(64 * h + l + 32 * (k & 1));
        const uint8_t nibble = uint8_t(q(i) & 15);
        b.u8(lowAt, uint8_t(b.get(lowAt) | (k < 2 ? nibble : nibble << 4)));
        const size_t highAt = size_t(128 + 32 * h + l);
        b.u8(highAt, uint8_t(b.get(highAt) | ((q(i) >> 4) << (2 * k))));
    }
    for (int s = 0; s < 16; ++s)
        b.u8(192 + s, uint8_t(sc[s]));
    b.u16(208, kHalf1_128th);
    const std::vector<float> y = decode(GgmlType::Q6_K, b, 256);
    for (int i = 0; i < 256; ++i)
        QCOMPARE(y[i], float(sc[i / 16]) * float(q(i) - 32) / 128.0f);
}

void TestGgmlBlocks::multipleBlocks() {
    Block b(36);
    b.u16(0, kHalf0_5);
    b.u16(18, kHalf2);
    for (int j = 0; j < 16; ++j) {
        b.u8(2 + j, uint8_t(0x9f));  // lo 15, hi 9
        b.u8(20 + j, uint8_t(0x30)); // lo 0, hi 3
    }
    const std::vector<float> y = decode(GgmlType::Q4_0, b, 64);
    QCOMPARE(y[0], 3.5f);
    QCOMPARE(y[16], 0.5f);
    QCOMPARE(y[32], -16.0f);
    QCOMPARE(y[63], -10.0f);
}

void TestGgmlBlocks::rejectsUnsupportedAndPartialBlocks() {
    std::vector<std::byte> bytes(4096, std::byte{0x11});
    std::vector<float> out(512);
    Status s = dequantizeRow(GgmlType::Q3_K, bytes.data(), out.data(), 256);
    QVERIFY(!s.ok());
    QCOMPARE(s.error().code, ErrorCode::Unsupported);
    QVERIFY(s.error().message.find("Q3_K") != std::string::npos);
    s = dequantizeRow(GgmlType::Q4_0, bytes.data(), out.data(), 40);
    QVERIFY(!s.ok());
    QCOMPARE(s.error().code, ErrorCode::InvalidArgument);
}

// Q8_0 encoding: d = amax / 127 stored as F16; each code within half a step of x / d; decoding
// error within d/2 plus the F16 rounding of d (up to 127 steps of |d - d16|).
void TestGgmlBlocks::quantizeQ8_0() {
    std::mt19937 rng(1234);
    std::normal_distribution<float> normal(0.0f, 0.7f);
    std::vector<float> x(96);
    for (float &v : x)
        v = normal(rng);
    x[40] = 0.0f;
    std::vector<std::byte> q(3 * 34);
    quantizeRowQ8_0(x.data(), q.data(), 96);
    std::vector<float> y(96);
    QVERIFY(dequantizeRow(GgmlType::Q8_0, q.data(), y.data(), 96).ok());
    for (int blk = 0; blk < 3; ++blk) {
        double amax = 0;
        for (int j = 0; j < 32; ++j)
            amax = std::max(amax, std::fabs(double(x[32 * blk + j])));
        const double d = amax / 127.0;
        uint16_t dBits;
        std::memcpy(&dBits, q.data() + 34 * blk, 2);
        const double d16 = f16ToFloat(dBits);
        QVERIFY(std::fabs(d16 - d) <= d * std::ldexp(1.0, -11));
        int extreme = 0;
        for (int j = 0; j < 32; ++j) {
            const int code = int8_t(q[size_t(34 * blk + 2 + j)]);
            QVERIFY(std::fabs(double(x[32 * blk + j]) / d - code) <= 0.5 + 1e-5);
            extreme = std::max(extreme, std::abs(code));
            const double bound = d / 2 + 127 * std::fabs(d - d16) + 1e-7;
            QVERIFY(std::fabs(double(y[32 * blk + j]) - double(x[32 * blk + j])) <= bound);
        }
        QCOMPARE(extreme, 127); // the largest magnitude maps to the end of the range
    }
    // An all-zero block stores d = 0 and zero codes (no division by zero).
    std::vector<float> zeros(32, 0.0f);
    std::vector<std::byte> qz(34, std::byte{0x55});
    quantizeRowQ8_0(zeros.data(), qz.data(), 32);
    for (std::byte v : qz)
        QCOMPARE(int(v), 0);
}

QTEST_APPLESS_MAIN(TestGgmlBlocks)
#include "test_ggml_blocks.moc"
