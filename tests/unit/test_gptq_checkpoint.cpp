// GPTQ / AWQ packing conventions on hand-made tensors: the int32 words are built here from chosen
// codes following AutoGPTQ's QuantLinear.pack loops (the 3-bit one literally, with its split
// codes 10 and 21) and AutoAWQ's order map, and the expected weights are scale * (code - zero).
#include "io/gptq_checkpoint.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QtTest>

#include <fstream>

using namespace lowbit;

namespace {

PackedQuantConfig gptq(int bits, int64_t group, bool offset = true) {
    PackedQuantConfig c;
    c.bits = bits;
    c.groupSize = group;
    c.zeroOffset = offset;
    return c;
}

// AutoGPTQ's 3-bit pack of 32 codes (one column) into 3 words.
std::array<uint32_t, 3> pack3(const std::array<uint32_t, 32> &v) {
    std::array<uint32_t, 3> w{};
    for (int j = 0; j < 10; ++j)
        w[0] |= v[size_t(j)] << (3 * j);
    w[0] |= v[10] << 30;
    w[1] |= (v[10] >> 2) & 1;
    for (int j = 0; j < 10; ++j)
        w[1] |= v[size_t(11 + j)] << (3 * j + 1);
    w[1] |= v[21] << 31;
    w[2] |= (v[21] >> 1) & 3;
    for (int j = 0; j < 10; ++j)
        w[2] |= v[size_t(22 + j)] << (3 * j + 2);
    return w;
}

void writeText(const std::filesystem::path &path, const std::string &text) {
    std::ofstream(path) << text;
}

} // namespace

class TestGptqCheckpoint : public QObject {
    Q_OBJECT
private slots:
    void gptq4BitCodesAndOffset();
    void gptq3BitCrossWord();
    void gptq2And8Bit();
    void actOrderGroupIndex();
    void awqOrder();
    void configDetection();
    void badShapesAreErrors();
};

void TestGptqCheckpoint::gptq4BitCodesAndOffset() {
    // 2 outputs, 8 inputs, one group. Column o codes: k + o (mod 16) chosen by hand.
    PackedLinear p;
    p.name = "l";
    p.rows = 2;
    p.cols = 8;
    p.groups = 1;
    p.qweight.assign(2, 0);
    for (int o = 0; o < 2; ++o)
        for (int k = 0; k < 8; ++k)
            p.qweight[size_t(o)] |= int32_t(uint32_t((k * 3 + o * 5) % 16) << (4 * k));
    // zeros stored as zero - 1: 7 (-> 8) for output 0, 2 (-> 3) for output 1.
    p.qzeros = {int32_t(7u | (2u << 4))};
    p.scales = {0.5f, 0.25f};
    auto w = dequantizeGptqLinear(gptq(4, 0), p);
    QVERIFY(w.ok());
    for (int o = 0; o < 2; ++o)
        for (int k = 0; k < 8; ++k) {
            const float code = float((k * 3 + o * 5) % 16);
            const float expected = o == 0 ? 0.5f * (code - 8) : 0.25f * (code - 3);
            QCOMPARE(w.value()[size_t(o * 8 + k)], expected);
        }
    // gptq_v2 stores the zero itself.
    auto v2 = dequantizeGptqLinear(gptq(4, 0, false), p);
    QCOMPARE(v2.value()[0], 0.5f * (0 - 7));
    // A stored 15 is zero 16 under the AutoGPTQ convention (its kernels add 1 after masking).
    p.qzeros = {int32_t(15u | (15u << 4))};
    auto wrapped = dequantizeGptqLinear(gptq(4, 0), p);
    QCOMPARE(wrapped.value()[1], 0.5f * (3 - 16));
}

void TestGptqCheckpoint::gptq3BitCrossWord() {
    // One output, 32 inputs; codes chosen so the split codes 10 and 21 use all their bits.
    std::array<uint32_t, 32> codes{};
    for (int k = 0; k < 32; ++k)
        codes[size_t(k)] = uint32_t((k * 5 + 1) % 8);
    codes[10] = 5; // 0b101: low bits 01 in word 0, high bit 1 in word 1
    codes[21] = 6; // 0b110: low bit 0 in word 1, high bits 11 in word 2
    const auto words = pack3(codes);
    PackedLinear p;
    p.name = "l3";
    p.rows = 1;
    p.cols = 32;
    p.groups = 2;
    p.qweight = {int32_t(words[0]), int32_t(words[1]), int32_t(words[2])};
    p.qzeros = {3, 1}; // zeros 4 and 2 (offset convention)
    p.scales = {0.125f, 2.0f};
    auto w = dequantizeGptqLinear(gptq(3, 16), p);
    QVERIFY(w.ok());
    for (int k = 0; k < 32; ++k) {
        const float expected =
            k < 16 ? 0.125f * (float(codes[size_t(k)]) - 4) : 2.0f * (float(codes[size_t(k)]) - 2);
        QCOMPARE(w.value()[size_t(k)], expected);
    }
    // The exporter's writer produces the same words.
    std::vector<int32_t> rewritten(3, 0);
    for (int k = 0; k < 32; ++k)
        writePackedCode(rewritten, 1, k, 3, codes[size_t(k)]);
    QCOMPARE(uint32_t(rewritten[0]), words[0]);
    QCOMPARE(uint32_t(rewritten[1]), words[1]);
    QCOMPARE(uint32_t(rewritten[2]), words[2]);
    // 3-bit qzeros of 11 outputs: output 10 crosses into the second word.
    std::vector<int32_t> z(2, 0);
    writePackedCode(z, 1, 10, 3, 7);
    QCOMPARE(uint32_t(z[0]), 3u << 30);
    QCOMPARE(uint32_t(z[1]), 1u);
}

void TestGptqCheckpoint::gptq2And8Bit() {
    for (int bits : {2, 8}) {
        const int perWord = 32 / bits;
        PackedLinear p;
        p.name = "l";
        p.rows = 1;
        p.cols = perWord;
        p.groups = 1;
        uint32_t word = 0;
        const uint32_t maxq = (1u << bits) - 1;
        for (int k = 0; k < perWord; ++k)
            word |= ((uint32_t(k) * 7 + 1) & maxq) << (bits * k);
        p.qweight = {int32_t(word)};
        p.qzeros = {int32_t(1)}; // zero 2
        p.scales = {0.75f};
        auto w = dequantizeGptqLinear(gptq(bits, 0), p);
        QVERIFY(w.ok());
        for (int k = 0; k < perWord; ++k)
            QCOMPARE(w.value()[size_t(k)], 0.75f * (float((uint32_t(k) * 7 + 1) & maxq) - 2));
    }
}

void TestGptqCheckpoint::actOrderGroupIndex() {
    // 8 inputs, groups of 4 by act order: inputs {5, 0, 7, 2} in group 0, the rest in group 1.
    PackedLinear p;
    p.name = "act";
    p.rows = 1;
    p.cols = 8;
    p.groups = 2;
    p.gIdx = {0, 1, 0, 1, 1, 0, 1, 0};
    uint32_t word = 0;
    for (int k = 0; k < 8; ++k)
        word |= uint32_t(k + 4) << (4 * k);
    p.qweight = {int32_t(word)};
    p.qzeros = {7, 3}; // zeros 8 and 4
    p.scales = {1.0f, 0.5f};
    auto w = dequantizeGptqLinear(gptq(4, 4), p);
    QVERIFY(w.ok());
    for (int k = 0; k < 8; ++k) {
        const float expected = p.gIdx[size_t(k)] == 0 ? float(k + 4 - 8) : 0.5f * float(k + 4 - 4);
        QCOMPARE(w.value()[size_t(k)], expected);
    }
    p.gIdx[3] = 2; // outside the scales' groups
    QVERIFY(!dequantizeGptqLinear(gptq(4, 4), p).ok());
}

void TestGptqCheckpoint::awqOrder() {
    // 8 outputs, 2 inputs, one group; output o's code at input k is (o + 3k) % 16.
    PackedLinear p;
    p.name = "awq";
    p.rows = 8;
    p.cols = 2;
    p.groups = 1;
    const int orderMap[8] = {0, 2, 4, 6, 1, 3, 5, 7}; // AutoAWQ's pack order
    for (int k = 0; k < 2; ++k) {
        uint32_t word = 0;
        for (int i = 0; i < 8; ++i)
            word |= uint32_t((orderMap[i] + 3 * k) % 16) << (4 * i);
        p.qweight.push_back(int32_t(word));
    }
    uint32_t zw = 0;
    for (int i = 0; i < 8; ++i)
        zw |= uint32_t(orderMap[i] + 1) << (4 * i); // zero of output o: o + 1
    p.qzeros = {int32_t(zw)};
    for (int o = 0; o < 8; ++o)
        p.scales.push_back(0.0625f * float(o + 1));
    PackedQuantConfig c;
    c.method = PackedQuantMethod::Awq;
    c.groupSize = 0;
    c.zeroOffset = false;
    auto w = dequantizeAwqLinear(c, p);
    QVERIFY(w.ok());
    for (int o = 0; o < 8; ++o)
        for (int k = 0; k < 2; ++k)
            QCOMPARE(w.value()[size_t(o * 2 + k)],
                     0.0625f * float(o + 1) * (float((o + 3 * k) % 16) - float(o + 1)));
}

void TestGptqCheckpoint::configDetection() {
    QTemporaryDir tmp;
    const std::filesystem::path dir = tmp.path().toStdString();
    auto none = detectPackedQuantization(dir, nlohmann::json::object());
    QVERIFY(none.ok() && !none.value());

    nlohmann::json config = {{"quantization_config",
                              {{"quant_method", "gptq"},
                               {"bits", 3},
                               {"group_size", -1},
                               {"desc_act", true},
                               {"sym", false},
                               {"checkpoint_format", "gptq_v2"}}}};
    auto c = detectPackedQuantization(dir, config);
    QVERIFY(c.ok() && c.value());
    QCOMPARE(c.value()->bits, 3);
    QCOMPARE(c.value()->groupSize, int64_t(0));
    QVERIFY(c.value()->descAct && !c.value()->symmetric && !c.value()->zeroOffset);

    config["quantization_config"]["bits"] = 5;
    auto bad = detectPackedQuantization(dir, config);
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("bits 5") != std::string::npos);

    writeText(dir / "quantize_config.json", R"({"bits": 4, "group_size": 128, "desc_act": false})");
    auto file = detectPackedQuantization(dir, nlohmann::json::object());
    QVERIFY(file.ok() && file.value());
    QCOMPARE(file.value()->groupSize, int64_t(128));
    QVERIFY(file.value()->zeroOffset);
    std::filesystem::remove(dir / "quantize_config.json");

    writeText(dir / "quant_config.json",
              R"({"w_bit": 4, "q_group_size": 64, "zero_point": true, "version": "GEMM"})");
    auto awq = detectPackedQuantization(dir, nlohmann::json::object());
    QVERIFY(awq.ok() && awq.value());
    QVERIFY(awq.value()->method == PackedQuantMethod::Awq);
    QCOMPARE(awq.value()->groupSize, int64_t(64));
    writeText(dir / "quant_config.json", R"({"w_bit": 4, "q_group_size": 64, "version": "gemv"})");
    QVERIFY(!detectPackedQuantization(dir, nlohmann::json::object()).ok());
    writeText(dir / "quant_config.json", R"({"w_bit": 4, )");
    QVERIFY(!detectPackedQuantization(dir, nlohmann::json::object()).ok());
}

void TestGptqCheckpoint::badShapesAreErrors() {
    PackedLinear p;
    p.name = "short";
    p.rows = 2;
    p.cols = 8;
    p.groups = 1;
    p.qweight = {0}; // needs 2 words
    p.qzeros = {0};
    p.scales = {1, 1};
    auto w = dequantizeGptqLinear(gptq(4, 0), p);
    QVERIFY(!w.ok());
    QVERIFY(w.error().message.find("short") != std::string::npos);
    p.groups = 2; // group_size 0 implies one group
    p.qweight = {0, 0};
    p.qzeros = {0, 0};
    p.scales = {1, 1, 1, 1};
    QVERIFY(!dequantizeGptqLinear(gptq(4, 0), p).ok());
}

QTEST_APPLESS_MAIN(TestGptqCheckpoint)
#include "test_gptq_checkpoint.moc"
