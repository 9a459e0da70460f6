// Q2_K, Q3_K and IQ4_NL decoders on hand-built blocks: every field set from chosen values
// following the block layouts of ggml-common.h (element e of a super-block = 128 * half +
// 32 * j + 16 * part + l, its 2 bits at shift 2j of qs[32 * half + 16 * part + l]); the expected
// values are the closed forms of the header.
#include "quant/ggml_blocks_extra.h"

#include <QtTest>

#include <cstring>
#include <vector>

using namespace lowbit;

namespace {

void putHalf(std::vector<std::byte> &b, size_t at, uint16_t bits) {
    std::memcpy(&b[at], &bits, 2);
}

// Where element e's 2-bit field lives: byte index within the 64 qs bytes and the shift.
void fieldOf(int e, int &byte, int &shift) {
    const int half = e / 128, r = e % 128, j = r / 32, part = (r % 32) / 16, l = r % 16;
    byte = 32 * half + 16 * part + l;
    shift = 2 * j;
}

} // namespace

class TestGgmlBlocksExtra : public QObject {
    Q_OBJECT
private slots:
    void iq4nl();
    void q2k();
    void q3k();
    void rejectsOtherTypes();
};

void TestGgmlBlocksExtra::iq4nl() {
    const int table[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                           1,    13,   25,  38,  53,  69,  89,  113};
    std::vector<std::byte> b(36);
    for (int blk = 0; blk < 2; ++blk) {
        putHalf(b, size_t(18 * blk), blk == 0 ? 0x3800 : 0xC000); // 0.5, -2
        for (int j = 0; j < 16; ++j)
            b[size_t(18 * blk + 2 + j)] = std::byte(uint8_t(j | ((15 - j) << 4)));
    }
    float y[64];
    QVERIFY(dequantizeRowExtra(GgmlType::IQ4_NL, b.data(), y, 64).ok());
    for (int blk = 0; blk < 2; ++blk) {
        const float d = blk == 0 ? 0.5f : -2.0f;
        for (int j = 0; j < 16; ++j) {
            QCOMPARE(y[32 * blk + j], d * float(table[j]));
            QCOMPARE(y[32 * blk + 16 + j], d * float(table[15 - j]));
        }
    }
}

void TestGgmlBlocksExtra::q2k() {
    std::vector<std::byte> b(84, std::byte{0});
    for (int s = 0; s < 16; ++s)
        b[size_t(s)] = std::byte(uint8_t((1 + s % 15) | ((s % 4) << 4)));
    auto code = [](int e) { return (e * 7 + e / 16) % 4; };
    for (int e = 0; e < 256; ++e) {
        int byte, shift;
        fieldOf(e, byte, shift);
        b[size_t(16 + byte)] |= std::byte(uint8_t(code(e) << shift));
    }
    putHalf(b, 80, 0x3400); // d = 0.25
    putHalf(b, 82, 0x3800); // dmin = 0.5
    std::vector<float> y(256);
    QVERIFY(dequantizeRowExtra(GgmlType::Q2_K, b.data(), y.data(), 256).ok());
    for (int e = 0; e < 256; ++e) {
        const int s = e / 16;
        QCOMPARE(y[size_t(e)], 0.25f * float(1 + s % 15) * float(code(e)) - 0.5f * float(s % 4));
    }
}

void TestGgmlBlocksExtra::q3k() {
    std::vector<std::byte> b(110, std::byte{0});
    auto scale6 = [](int s) { return (s * 5 + 3) % 64; };
    for (int s = 0; s < 16; ++s) {
        const int v = scale6(s);
        if (s < 8)
            b[size_t(96 + s)] |= std::byte(uint8_t(v & 15));
        else
            b[size_t(96 + s - 8)] |= std::byte(uint8_t((v & 15) << 4));
        b[size_t(96 + 8 + s % 4)] |= std::byte(uint8_t((v >> 4) << (2 * (s / 4))));
    }
    auto value = [](int e) { return (e * 3 + 1) % 8 - 4; }; // in [-4, 3]
    for (int e = 0; e < 256; ++e) {
        int byte, shift;
        fieldOf(e, byte, shift);
        const int stored = value(e) + 4; // low 2 bits in qs, bit 2 in hmask (set: no -4)
        b[size_t(32 + byte)] |= std::byte(uint8_t((stored & 3) << shift));
        const int half = e / 128, j = (e % 128) / 32;
        if (stored & 4)
            b[size_t(byte % 32)] |= std::byte(uint8_t(1 << (4 * half + j)));
    }
    putHalf(b, 108, 0x3000); // d = 0.125
    std::vector<float> y(256);
    QVERIFY(dequantizeRowExtra(GgmlType::Q3_K, b.data(), y.data(), 256).ok());
    for (int e = 0; e < 256; ++e)
        QCOMPARE(y[size_t(e)], 0.125f * float(scale6(e / 16) - 32) * float(value(e)));
}

void TestGgmlBlocksExtra::rejectsOtherTypes() {
    std::vector<std::byte> b(256);
    float y[32];
    QVERIFY(!dequantizeRowExtra(GgmlType::Q4_0, b.data(), y, 32).ok());
    QVERIFY(!dequantizeRowExtra(GgmlType::IQ4_NL, b.data(), y, 31).ok());
    QVERIFY(canDequantizeExtra(GgmlType::Q3_K) && !canDequantizeExtra(GgmlType::IQ2_XS));
}

QTEST_APPLESS_MAIN(TestGgmlBlocksExtra)
#include "test_ggml_blocks_extra.moc"
