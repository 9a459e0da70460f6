// AWQ GEMM checkpoint import end to end: the shared tiny-llama3-a fixture with every linear
// replaced by hand-packed AWQ tensors (codes, zeros and F16-exact scales chosen here, words built
// with AutoAWQ's order map), config.json carrying quantization_config; loadCheckpoint must give
// each linear as exactly scale * (code - zero) and keep every other tensor.
#include "shared_data.h"

#include "io/safetensors.h"
#include "model/checkpoint.h"

#include <nlohmann/json.hpp>

#include <QTemporaryDir>
#include <QtTest>

#include <cstring>
#include <deque>
#include <fstream>

using namespace lowbit;

namespace {

const int kOrderMap[8] = {0, 2, 4, 6, 1, 3, 5, 7};
constexpr int64_t kGroup = 32;

int code(int64_t layer, int64_t o, int64_t k) {
    return int((o * 7 + k * 3 + layer) % 16);
}
int zeroOf(int64_t g, int64_t o) {
    return int((o + g) % 16);
}
float scaleOf(int64_t g, int64_t o) {
    return 0.0078125f * float(1 + (o + g) % 5);
}

struct Store {
    std::deque<std::vector<std::byte>> bytes;
    std::vector<RawTensor> tensors;
    void add(std::string name, const char *dtype, std::vector<int64_t> shape, const void *data,
             size_t size) {
        bytes.emplace_back(size);
        std::memcpy(bytes.back().data(), data, size);
        tensors.push_back({std::move(name), dtype, std::move(shape), bytes.back()});
    }
};

void addAwqLinear(Store &store, const std::string &stem, int64_t layer, int64_t rows,
                  int64_t cols) {
    const int64_t words = rows / 8, groups = (cols + kGroup - 1) / kGroup;
    std::vector<int32_t> qweight(size_t(cols * words), 0), qzeros(size_t(groups * words), 0);
    std::vector<uint16_t> scales(size_t(groups * rows));
    for (int64_t k = 0; k < cols; ++k)
        for (int64_t c = 0; c < words; ++c)
            for (int i = 0; i < 8; ++i)
                qweight[size_t(k * words + c)] |=
                    int32_t(uint32_t(code(layer, 8 * c + kOrderMap[i], k)) << (4 * i));
    for (int64_t g = 0; g < groups; ++g) {
        for (int64_t c = 0; c < words; ++c)
            for (int i = 0; i < 8; ++i)
                qzeros[size_t(g * words + c)] |=
                    int32_t(uint32_t(zeroOf(g, 8 * c + kOrderMap[i])) << (4 * i));
        for (int64_t o = 0; o < rows; ++o)
            scales[size_t(g * rows + o)] = floatToF16(scaleOf(g, o));
    }
    store.add(stem + ".qweight", "I32", {cols, words}, qweight.data(), qweight.size() * 4);
    store.add(stem + ".qzeros", "I32", {groups, words}, qzeros.data(), qzeros.size() * 4);
    store.add(stem + ".scales", "F16", {groups, rows}, scales.data(), scales.size() * 2);
}

} // namespace

class TestAwqImportFixture : public QObject {
    Q_OBJECT
private slots:
    void loadsHandPackedAwq();
};

void TestAwqImportFixture::loadsHandPackedAwq() {
    LOWBIT_REQUIRE_SHARED_FILE(fixture, "fixtures/tiny-llama3-a");
    auto source = loadCheckpoint(fixture);
    QVERIFY(source.ok());
    QTemporaryDir tmp;
    const std::filesystem::path dir = tmp.path().toStdString();
    std::ifstream configIn(fixture / "config.json");
    nlohmann::json config = nlohmann::json::parse(configIn);
    config["torch_dtype"] = "float32";
    config["quantization_config"] = {{"quant_method", "awq"},
                                     {"bits", 4},
                                     {"group_size", kGroup},
                                     {"zero_point", true},
                                     {"version", "gemm"}};
    std::ofstream(dir / "config.json") << config.dump();

    Store store;
    const ModelWeights &w = source->weights;
    auto addFloat = [&](const std::string &name, const Tensor &t) {
        const std::vector<float> v = tensorToFloats(t);
        store.add(name, "F32", t.shape, v.data(), v.size() * 4);
    };
    addFloat("model.embed_tokens.weight", w.tokenEmbedding);
    addFloat("model.norm.weight", w.finalNorm);
    addFloat("lm_head.weight", w.output);
    const char *names[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                            "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                            "mlp.down_proj"};
    for (size_t l = 0; l < w.layers.size(); ++l) {
        const LayerWeights &lw = w.layers[l];
        const std::string p = "model.layers." + std::to_string(l) + ".";
        addFloat(p + "input_layernorm.weight", lw.attnNorm);
        addFloat(p + "post_attention_layernorm.weight", lw.ffnNorm);
        const Tensor *linears[7] = {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.wGate, &lw.wUp, &lw.wDown};
        for (int i = 0; i < 7; ++i)
            addAwqLinear(store, p + names[i], int64_t(l), linears[i]->rows(), linears[i]->cols());
    }
    QVERIFY(writeSafetensorsRaw(dir / "model.safetensors", store.tensors).ok());

    auto loaded = loadCheckpoint(dir);
    QVERIFY2(loaded.ok(), loaded.ok() ? "" : loaded.error().message.c_str());
    QCOMPARE(loaded->metadata["packed_linears"], std::to_string(7 * w.layers.size()));
    QVERIFY(tensorToFloats(loaded->weights.tokenEmbedding) == tensorToFloats(w.tokenEmbedding));
    for (size_t l = 0; l < w.layers.size(); ++l) {
        const LayerWeights &lw = loaded->weights.layers[l];
        const Tensor *linears[7] = {&lw.wq, &lw.wk, &lw.wv, &lw.wo, &lw.wGate, &lw.wUp, &lw.wDown};
        for (const Tensor *t : linears) {
            QCOMPARE(t->dtype, DType::F32);
            const std::vector<float> v = tensorToFloats(*t);
            for (int64_t o = 0; o < t->rows(); ++o)
                for (int64_t k = 0; k < t->cols(); ++k) {
                    const int64_t g = k / kGroup;
                    const float expected =
                        scaleOf(g, o) * float(code(int64_t(l), o, k) - zeroOf(g, o));
                    if (v[size_t(o * t->cols() + k)] != expected)
                        QFAIL(qPrintable(QString::fromStdString(t->name)));
                }
        }
    }
}

QTEST_APPLESS_MAIN(TestAwqImportFixture)
#include "test_awq_import_fixture.moc"
