// GGUF block encoding of quantized tensors from their codes: hand-chosen codes, F16-exact scales
// and integer zeros; the blocks (decoded by the llama.cpp-checked GGUF dequantizers) must give
// scale * (code - zero) exactly, in the requested row order, with the smallest exact type.
#include "io/gguf_export.h"
#include "quant/ggml_blocks.h"
#include "quant/quantized_tensor.h"

#include <QtTest>

#include <cstring>

using namespace lowbit;

namespace {

QuantizedTensor make(int bits, int64_t group, bool symmetric, int rows, int cols,
                     std::vector<uint8_t> codes, float zero) {
    auto t = QuantizedTensor::create("t", "rtn", rows, cols, bits, group, symmetric);
    QuantizedTensor q = std::move(t).value();
    [[maybe_unused]] const Status set = q.setCodes(codes);
    for (int64_t r = 0; r < q.rows; ++r)
        for (int64_t g = 0; g < q.groups(); ++g) {
            q.scale(r, g) = 0.125f * float(1 + r + 2 * g); // exact in F16
            q.zero(r, g) = zero;
        }
    return q;
}

std::vector<float> decode(const GgufEncodedRows &rows, int64_t n) {
    std::vector<float> out(static_cast<size_t>(n));
    const auto type = ggmlTypeFromName(rows.type);
    if (!type || !dequantizeRow(*type, rows.data.data(), out.data(), n))
        return {};
    return out;
}

} // namespace

class TestGgufExport : public QObject {
    Q_OBJECT
private slots:
    void symmetric4BitIsQ4_0();
    void asymmetric4BitIsQ5_0OrQ4_1();
    void eightBitIsQ8_0WithRowOrder();
    void refusesWhatBlocksCannotHold();
};

void TestGgufExport::symmetric4BitIsQ4_0() {
    std::vector<uint8_t> codes(2 * 64);
    for (size_t i = 0; i < codes.size(); ++i)
        codes[i] = uint8_t((i * 7 + 3) % 16);
    const QuantizedTensor t = make(4, 32, true, 2, 64, codes, 8);
    auto rows = encodeGgufBlocks(t, {0, 1}, {});
    QVERIFY(rows.ok());
    QCOMPARE(rows->type, std::string("Q4_0"));
    QCOMPARE(rows->data.size(), size_t(4 * 18));
    // First block: d = 0.125 as F16 (0x3000), byte 0 = code0 + code16 << 4.
    uint16_t d;
    std::memcpy(&d, rows->data.data(), 2);
    QCOMPARE(d, uint16_t(0x3000));
    QCOMPARE(uint8_t(rows->data[2]), uint8_t(codes[0] | (codes[16] << 4)));
    const auto values = decode(*rows, 128);
    for (int r = 0; r < 2; ++r)
        for (int c = 0; c < 64; ++c)
            QCOMPARE(values[size_t(r * 64 + c)],
                     0.125f * float(1 + r + 2 * (c / 32)) * (float(codes[size_t(r * 64 + c)]) - 8));
}

void TestGgufExport::asymmetric4BitIsQ5_0OrQ4_1() {
    std::vector<uint8_t> codes(64);
    for (size_t i = 0; i < codes.size(); ++i)
        codes[i] = uint8_t((i * 5) % 16); // 0..15 with zero 3: code - zero in [-3, 12]
    const QuantizedTensor t = make(4, 0, false, 1, 64, codes, 3);
    auto exact = encodeGgufBlocks(t, {0}, {});
    QVERIFY(exact.ok());
    QCOMPARE(exact->type, std::string("Q5_0"));
    const auto values = decode(*exact, 64);
    for (int c = 0; c < 64; ++c)
        QCOMPARE(values[size_t(c)], 0.125f * (float(codes[size_t(c)]) - 3));
    GgufExportOptions compact;
    compact.compact = true;
    auto q41 = encodeGgufBlocks(t, {0}, compact);
    QVERIFY(q41.ok());
    QCOMPARE(q41->type, std::string("Q4_1"));
    const auto approx = decode(*q41, 64);
    for (int c = 0; c < 64; ++c) // d * q + m with m = -0.375 (exact in F16 here)
        QCOMPARE(approx[size_t(c)], 0.125f * float(codes[size_t(c)]) - 0.375f);
}

void TestGgufExport::eightBitIsQ8_0WithRowOrder() {
    std::vector<uint8_t> codes(3 * 32);
    for (size_t i = 0; i < codes.size(); ++i)
        codes[i] = uint8_t((i * 37 + 11) % 256);
    const QuantizedTensor t = make(8, 32, true, 3, 32, codes, 128);
    auto rows = encodeGgufBlocks(t, {2, 0, 1}, {});
    QVERIFY(rows.ok());
    QCOMPARE(rows->type, std::string("Q8_0"));
    const auto values = decode(*rows, 96);
    const int order[3] = {2, 0, 1};
    for (int i = 0; i < 3; ++i)
        for (int c = 0; c < 32; ++c) {
            const int r = order[i];
            QCOMPARE(values[size_t(i * 32 + c)],
                     0.125f * float(1 + r) * (float(codes[size_t(r * 32 + c)]) - 128));
        }
}

void TestGgufExport::refusesWhatBlocksCannotHold() {
    std::vector<uint8_t> codes(48, 1);
    QuantizedTensor odd = make(4, 0, true, 1, 48, codes, 8); // 48 is not a multiple of 32
    auto r1 = encodeGgufBlocks(odd, {0}, {});
    QVERIFY(!r1.ok() && r1.error().code == ErrorCode::Unsupported);
    std::vector<uint8_t> codes64(64, 2);
    QuantizedTensor half = make(4, 32, false, 1, 64, codes64, 8);
    half.zero(0, 0) = 2.5f;
    QVERIFY(!encodeGgufBlocks(half, {0}, {}).ok());
    QuantizedTensor permuted = make(4, 32, true, 1, 64, codes64, 8);
    permuted.permutation.resize(64);
    for (int i = 0; i < 64; ++i)
        permuted.permutation[size_t(i)] = 63 - i;
    auto r3 = encodeGgufBlocks(permuted, {0}, {});
    QVERIFY(!r3.ok());
    QVERIFY(r3.error().message.find("act-order") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestGgufExport)
#include "test_gguf_export.moc"
