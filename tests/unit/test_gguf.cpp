// GGUF reader and llama loader: the real files in ../shared/data/gguf (checked against the raw
// floats of stories260K.bin and, for the quantized files, against the F32 file within each type's
// error bound), the vocabulary-only llama.cpp GGUF, and broken files built byte by byte here.
#include "core/dtype.h"
#include "io/gguf.h"
#include "io/gguf_checkpoint.h"
#include "model/checkpoint.h"
#include "shared_data.h"

#include <QtTest>

#include <cmath>
#include <cstring>
#include <fstream>

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

// Little-endian byte builder for hand-made GGUF files.
struct Bytes {
    std::string b;
    template <typename T> Bytes &put(T v) {
        b.append(reinterpret_cast<const char *>(&v), sizeof v);
        return *this;
    }
    Bytes &u32(uint32_t v) { return put(v); }
    Bytes &u64(uint64_t v) { return put(v); }
    Bytes &str(const std::string &s) {
        u64(s.size());
        b += s;
        return *this;
    }
    Bytes &kvU32(const std::string &key, uint32_t v) { return str(key).u32(4).u32(v); }
    Bytes &kvF32(const std::string &key, float v) { return str(key).u32(6).put(v); }
    Bytes &kvStr(const std::string &key, const std::string &v) { return str(key).u32(8).str(v); }
    Bytes &tensor(const std::string &name, std::vector<uint64_t> ne, uint32_t type,
                  uint64_t offset) {
        str(name).u32(uint32_t(ne.size()));
        for (uint64_t d : ne)
            u64(d);
        return u32(type).u64(offset);
    }
    Bytes &padTo(size_t alignment) {
        while (b.size() % alignment)
            b += '\0';
        return *this;
    }
    Bytes &data(size_t n) {
        for (size_t i = 0; i < n; ++i)
            b += char(0x3c + i % 7); // small positive floats
        return *this;
    }
};

Bytes header(uint32_t version, uint64_t tensors, uint64_t kvs) {
    Bytes h;
    h.b = "GGUF";
    return h.u32(version).u64(tensors).u64(kvs);
}

Result<GgufFile> parseBytes(const std::string &b) {
    return GgufFile::parse(std::as_bytes(std::span(b.data(), b.size())), "bad.gguf");
}

// A llama model of one layer, hidden 32, 2 heads of 16, ffn 32, vocab 4, all F32, complete except
// for the key `skip` and the tensor `skipTensor`; `emptyTensor` gets a zero outer dimension, and
// `q2kRopeFreqs` adds a rope_freqs.weight in IQ2_XS (which lowbit does not decode; Q2_K was
// used before ggml_blocks_extra learned it).
std::string tinyLlama(const std::string &skip, const std::string &arch = "llama",
                      const std::string &skipTensor = "", const std::string &emptyTensor = "",
                      bool q2kRopeFreqs = false) {
    const std::vector<std::pair<std::string, uint32_t>> counts = {
        {"llama.context_length", 64},
        {"llama.embedding_length", 32},
        {"llama.block_count", 1},
        {"llama.feed_forward_length", 32},
        {"llama.attention.head_count", 2}};
    struct T {
        std::string name;
        std::vector<uint64_t> ne;
    };
    std::vector<T> tensors = {
        {"token_embd.weight", {32, 4}},         {"output_norm.weight", {32}},
        {"blk.0.attn_norm.weight", {32}},       {"blk.0.attn_q.weight", {32, 32}},
        {"blk.0.attn_k.weight", {32, 32}},      {"blk.0.attn_v.weight", {32, 32}},
        {"blk.0.attn_output.weight", {32, 32}}, {"blk.0.ffn_norm.weight", {32}},
        {"blk.0.ffn_gate.weight", {32, 32}},    {"blk.0.ffn_up.weight", {32, 32}},
        {"blk.0.ffn_down.weight", {32, 32}}};
    std::erase_if(tensors, [&](const T &t) { return t.name == skipTensor; });
    for (T &t : tensors)
        if (t.name == emptyTensor)
            t.ne.back() = 0;
    uint64_t kvs = 2;
    for (const auto &c : counts)
        kvs += c.first != skip;
    Bytes b = header(3, tensors.size() + q2kRopeFreqs, kvs);
    b.kvStr("general.architecture", arch);
    for (const auto &[key, value] : counts)
        if (key != skip)
            b.kvU32(key, value);
    b.kvF32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    uint64_t offset = 0, total = 0;
    for (const T &t : tensors) {
        uint64_t n = 4;
        for (uint64_t d : t.ne)
            n *= d;
        b.tensor(t.name, t.ne, 0, offset);
        offset += (n + 31) / 32 * 32;
        total = offset;
    }
    if (q2kRopeFreqs) {
        b.tensor("rope_freqs.weight", {256}, 17, offset); // IQ2_XS
        total += 96; // 74 bytes, padded
    }
    return b.padTo(32).data(total).b;
}

// The float32 values of stories260K.bin from `floatOffset` (after the 7-int header).
std::vector<float> binFloats(const fs::path &bin, int64_t floatOffset, int64_t count) {
    std::ifstream in(bin, std::ios::binary);
    in.seekg(28 + floatOffset * 4);
    std::vector<float> out(static_cast<size_t>(count));
    in.read(reinterpret_cast<char *>(out.data()), std::streamsize(count * 4));
    return in ? out : std::vector<float>{};
}

bool sameBits(const std::vector<float> &a, const std::vector<float> &b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

std::vector<float> decoded(const GgufTensorInfo &t) {
    std::vector<float> out(size_t(t.elements));
    if (!dequantizeRow(t.type, t.data.data(), out.data(), int64_t(t.elements)).ok())
        out.clear();
    return out;
}

} // namespace

class TestGguf : public QObject {
    Q_OBJECT
private slots:
    void readsStories260KMetadataAndTensors();
    void loadsStories260KAsTheLlama2cFileDoes();
    void quantizedFilesMatchF32WithinBound_data();
    void quantizedFilesMatchF32WithinBound();
    void q8_0FileBlocksAreOurQuantizer();
    void readsVocabOnlyFile();
    void loadsF16TinyRandom();
    void typedAccessorsReportMismatches();
    void parsesAllValueTypes();
    void rejectsBadFiles_data();
    void rejectsBadFiles();
    void everyTruncationIsAnError();
    void missingFileIsNotFound();
};

void TestGguf::readsStories260KMetadataAndTensors() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/gguf/stories260K.gguf");
    auto file = GgufFile::open(path);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->version(), 3u);
    QCOMPARE(file->alignment(), uint64_t(32));
    QCOMPARE(file->metadata().size(), size_t(19));
    QCOMPARE(file->tensors().size(), size_t(48));
    QCOMPARE(*file->getString("general.architecture"), std::string("llama"));
    QCOMPARE(*file->getU32("llama.block_count"), 5u);
    QCOMPARE(*file->getF32("llama.attention.layer_norm_rms_epsilon"), 1e-5f);
    QCOMPARE(*file->getU32("tokenizer.ggml.padding_token_id"), 0xffffffffu);
    auto tokens = file->getStringArray("tokenizer.ggml.tokens");
    QVERIFY(tokens.ok());
    QCOMPARE(tokens->size(), size_t(512));
    QCOMPARE((*tokens)[1], std::string("<s>"));
    QCOMPARE(file->getI32Array("tokenizer.ggml.token_type")->at(3), 6); // <0x00>: byte token
    const GgufTensorInfo *embd = file->findTensor("token_embd.weight");
    QVERIFY(embd);
    QCOMPARE(embd->ne, (std::vector<uint64_t>{64, 512}));
    QCOMPARE(embd->shape(), (std::vector<int64_t>{512, 64}));
    QCOMPARE(embd->type, GgmlType::F32);
    QCOMPARE(embd->data.size(), size_t(512 * 64 * 4));
    QCOMPARE(file->findTensor("blk.4.ffn_down.weight")->ne, (std::vector<uint64_t>{172, 64}));
    QVERIFY(!file->findTensor("blk.5.ffn_down.weight"));
}

// Embedding bit-identical; Q/K rows permuted exactly as from the interleaved .bin rows.
void TestGguf::loadsStories260KAsTheLlama2cFileDoes() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/gguf/stories260K.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/stories260K.bin");
    auto ckpt = loadCheckpoint(path);
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->format, CheckpointFormat::Gguf);
    const ModelConfig &c = ckpt->config;
    QCOMPARE(c.vocabSize, 512);
    QCOMPARE(c.hiddenSize, 64);
    QCOMPARE(c.intermediateSize, 172);
    QCOMPARE(c.numLayers, 5);
    QCOMPARE(c.numHeads, 8);
    QCOMPARE(c.numKvHeads, 4);
    QCOMPARE(c.headDim, 8);
    QCOMPARE(c.maxPositions, 2048);
    QCOMPARE(c.ropeTheta, 10000.0);
    QCOMPARE(float(c.rmsNormEps), 1e-5f);
    QCOMPARE(c.bosId, 1);
    QCOMPARE(c.eosIds, std::vector<int32_t>{2});
    QVERIFY(ckpt->tokenizer);
    QCOMPARE(ckpt->tokenizer->vocabSize(), 512);
    QCOMPARE(ckpt->bytesByStoredType.at("F32"), uint64_t(1185376 - 14176)); // tensor bytes
    QCOMPARE(ckpt->metadata.at("general.architecture"), std::string("llama"));

    // stories260K.bin float offsets in run.c order (dim 64, kv dim 32, 5 layers, vocab 512).
    const int64_t dim = 64, kvDim = 32, L = 5, vocab = 512;
    const int64_t wq = vocab * dim + L * dim, wk = wq + L * dim * dim;
    QVERIFY(sameBits(tensorToFloats(ckpt->weights.tokenEmbedding), binFloats(bin, 0, vocab * dim)));
    for (int64_t l = 0; l < L; ++l) {
        const std::vector<float> q = binFloats(bin, wq + l * dim * dim, dim * dim);
        const std::vector<float> k = binFloats(bin, wk + l * kvDim * dim, kvDim * dim);
        const std::vector<float> gq = tensorToFloats(ckpt->weights.layers[size_t(l)].wq);
        const std::vector<float> gk = tensorToFloats(ckpt->weights.layers[size_t(l)].wk);
        // Rotate-half row h*8 + s*4 + j is interleaved row h*8 + 2j + s.
        for (int64_t r = 0; r < dim; ++r) {
            const int64_t h = r / 8, s = (r % 8) / 4, j = r % 4, src = h * 8 + 2 * j + s;
            QVERIFY(std::memcmp(&gq[size_t(r * dim)], &q[size_t(src * dim)], dim * 4) == 0);
            if (r < kvDim)
                QVERIFY(std::memcmp(&gk[size_t(r * dim)], &k[size_t(src * dim)], dim * 4) == 0);
        }
    }
    // And the llama2.c loader (another reader of the same weights) agrees bit for bit.
    auto other = loadCheckpoint(bin);
    QVERIFY2(other.ok(), other.ok() ? "" : other.error().message.c_str());
    QVERIFY(sameBits(tensorToFloats(other->weights.tokenEmbedding),
                     tensorToFloats(ckpt->weights.tokenEmbedding)));
    for (int64_t l = 0; l < L; ++l) {
        QVERIFY(sameBits(tensorToFloats(other->weights.layers[size_t(l)].wq),
                         tensorToFloats(ckpt->weights.layers[size_t(l)].wq)));
        QVERIFY(sameBits(tensorToFloats(other->weights.layers[size_t(l)].wk),
                         tensorToFloats(ckpt->weights.layers[size_t(l)].wk)));
    }
}

void TestGguf::quantizedFilesMatchF32WithinBound_data() {
    QTest::addColumn<QString>("file");
    QTest::addColumn<QString>("mainType");
    QTest::newRow("Q8_0") << "stories260K-Q8_0.gguf"
                          << "Q8_0";
    QTest::newRow("Q4_0") << "stories260K-Q4_0.gguf"
                          << "Q4_0";
    QTest::newRow("Q4_K_M") << "stories260K-Q4_K_M.gguf"
                            << "Q5_0";
}

// Per block of 32 with amax = max |x| of the F32 original, llama.cpp's reference quantizers give
// |error| <= amax/254 (Q8_0: half a step of amax/127), amax/8 (Q4_0: d = max/-8; the far end
// clamps to 7 steps, a whole step off), amax/16 (Q5_0), each plus the F16 rounding of d.
void TestGguf::quantizedFilesMatchF32WithinBound() {
    QFETCH(QString, file);
    QFETCH(QString, mainType);
    LOWBIT_REQUIRE_SHARED_FILE(f32Path, "data/gguf/stories260K.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(qPath, "data/gguf/" + file.toStdString());
    auto ref = GgufFile::open(f32Path);
    auto quant = GgufFile::open(qPath);
    QVERIFY(ref.ok() && quant.ok());
    QCOMPARE(quant->tensors().size(), ref->tensors().size());
    size_t mainTypeCount = 0;
    for (const GgufTensorInfo &t : quant->tensors()) {
        const GgufTensorInfo *r = ref->findTensor(t.name);
        QVERIFY2(r, t.name.c_str());
        QCOMPARE(t.ne, r->ne);
        const std::vector<float> x = decoded(*r), y = decoded(t);
        QVERIFY2(!y.empty(), t.name.c_str());
        mainTypeCount += ggmlTypeName(t.type) == mainType.toStdString();
        double stepsOfAmax = 0;
        switch (t.type) {
        case GgmlType::F32: QVERIFY(sameBits(x, y)); continue;
        case GgmlType::F16:
            for (size_t i = 0; i < x.size(); ++i)
                QVERIFY(std::fabs(x[i] - y[i]) <= std::fabs(x[i]) * std::ldexp(1.0, -11) + 1e-7);
            continue;
        case GgmlType::Q8_0: stepsOfAmax = 1.0 / 254; break;
        case GgmlType::Q4_0: stepsOfAmax = 1.0 / 8; break;
        case GgmlType::Q5_0: stepsOfAmax = 1.0 / 16; break;
        default: QFAIL(("unexpected type in " + t.name).c_str());
        }
        double worstRatio = 0;
        bool anyError = false;
        for (size_t b = 0; b < x.size(); b += 32) {
            double amax = 0;
            for (size_t j = b; j < b + 32; ++j)
                amax = std::max(amax, std::fabs(double(x[j])));
            const double bound = amax * (stepsOfAmax + std::ldexp(1.0, -10)) + 1e-9;
            for (size_t j = b; j < b + 32; ++j) {
                const double err = std::fabs(double(x[j]) - double(y[j]));
                worstRatio = std::max(worstRatio, err / bound);
                anyError |= err > 0;
            }
        }
        QVERIFY2(worstRatio <= 1.0, (t.name + " error exceeds the bound").c_str());
        QVERIFY2(anyError, (t.name + " decoded exactly: quantization not exercised").c_str());
    }
    QVERIFY(mainTypeCount >= 10);
    // The quantized model loads as a checkpoint (dequantized, Q/K permuted).
    auto ckpt = loadGgufCheckpoint(qPath, {});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->weights.layers[0].wq.dtype, DType::F32);
    QVERIFY(ckpt->bytesByStoredType.count(mainType.toStdString()));
}

// llama-quantize made stories260K-Q8_0.gguf from the same F32 weights with ggml's reference
// quantizer, which quantizeRowQ8_0 claims to reproduce byte for byte.
void TestGguf::q8_0FileBlocksAreOurQuantizer() {
    LOWBIT_REQUIRE_SHARED_FILE(f32Path, "data/gguf/stories260K.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(qPath, "data/gguf/stories260K-Q8_0.gguf");
    auto ref = GgufFile::open(f32Path);
    auto quant = GgufFile::open(qPath);
    QVERIFY(ref.ok() && quant.ok());
    int compared = 0;
    for (const GgufTensorInfo &t : quant->tensors()) {
        if (t.type != GgmlType::Q8_0)
            continue;
        const std::vector<float> x = decoded(*ref->findTensor(t.name));
        std::vector<std::byte> ours(t.data.size());
        quantizeRowQ8_0(x.data(), ours.data(), int64_t(x.size()));
        QVERIFY2(std::memcmp(ours.data(), t.data.data(), ours.size()) == 0, t.name.c_str());
        ++compared;
    }
    QCOMPARE(compared, 2 + 5 * 6); // token_embd, output, 6 matrices per layer (not ffn_down)
}

void TestGguf::readsVocabOnlyFile() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf");
    auto file = GgufFile::open(path);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->tensors().size(), size_t(0));
    QCOMPARE(file->metadata().size(), size_t(22));
    QCOMPARE(file->getStringArray("tokenizer.ggml.tokens")->size(), size_t(32000));
    QCOMPARE(*file->getBool("tokenizer.ggml.add_bos_token"), true);
    QCOMPARE(*file->getString("tokenizer.ggml.pre"), std::string("default"));
    auto ckpt = loadGgufCheckpoint(path, {});
    QVERIFY(!ckpt.ok());
    QCOMPARE(ckpt.error().code, ErrorCode::Format);
    QVERIFY(ckpt.error().message.find(path.string()) != std::string::npos);
    QVERIFY(ckpt.error().message.find("no tensors") != std::string::npos);
}

void TestGguf::loadsF16TinyRandom() {
    LOWBIT_REQUIRE_SHARED_FILE(path, "data/gguf/llama-2-tiny-random.gguf");
    auto ckpt = loadGgufCheckpoint(path, {});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->config.vocabSize, 32000);
    QCOMPARE(ckpt->config.hiddenSize, 8);
    QCOMPARE(ckpt->config.headDim, 4);
    QCOMPARE(ckpt->weights.tokenEmbedding.dtype, DType::F16);
    QCOMPARE(ckpt->weights.layers[0].wq.dtype, DType::F16);
    QCOMPARE(ckpt->weights.layers[0].attnNorm.dtype, DType::F32);
    QCOMPARE(ckpt->tokenizer->vocabSize(), 32000);
    // F16 weights view the file: token_embd's first value is the file's first data half.
    auto file = GgufFile::open(path);
    uint16_t h;
    std::memcpy(&h, file->findTensor("token_embd.weight")->data.data(), 2);
    QCOMPARE(tensorToFloats(ckpt->weights.tokenEmbedding)[0], f16ToFloat(h));
    QVERIFY(ckpt->weights.output.data != ckpt->weights.tokenEmbedding.data);
}

void TestGguf::typedAccessorsReportMismatches() {
    Bytes b = header(3, 0, 4);
    b.kvStr("a.name", "x").kvU32("a.count", 7).str("a.neg").u32(5).put(int32_t(-3));
    b.str("a.big").u32(10).u64(uint64_t(1) << 40);
    auto file = parseBytes(b.b);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(*file->getU32("a.count"), 7u);
    QCOMPARE(*file->getI64("a.neg"), int64_t(-3));
    QCOMPARE(*file->getU64("a.big"), uint64_t(1) << 40);
    auto wrong = file->getU32("a.name");
    QVERIFY(!wrong.ok());
    QCOMPARE(wrong.error().code, ErrorCode::Format);
    QVERIFY(wrong.error().message.find("bad.gguf: metadata key 'a.name' has type string") == 0);
    QVERIFY(file->getU32("a.big").error().message.find("does not fit in u32") != std::string::npos);
    QVERIFY(file->getU32("a.neg").error().message.find("negative") != std::string::npos);
    QCOMPARE(file->getString("a.absent").error().code, ErrorCode::NotFound);
    QVERIFY(!file->getF32("a.count").ok());
}

void TestGguf::parsesAllValueTypes() {
    Bytes b = header(2, 0, 14);
    b.str("t.u8").u32(0).put(uint8_t(250)).str("t.i8").u32(1).put(int8_t(-5));
    b.str("t.u16").u32(2).put(uint16_t(65000)).str("t.i16").u32(3).put(int16_t(-30000));
    b.str("t.u32").u32(4).u32(4000000000u).str("t.i32").u32(5).put(int32_t(-7));
    b.str("t.f32").u32(6).put(2.5f).str("t.bool").u32(7).put(uint8_t(1));
    b.str("t.str").u32(8).str("héllo").str("t.u64").u32(10).u64(~uint64_t(0));
    b.str("t.i64").u32(11).put(int64_t(-1) << 40).str("t.f64").u32(12).put(0.1);
    b.str("t.arr").u32(9).u32(8).u64(2).str("a").str(""); // array of strings
    b.str("t.nested").u32(9).u32(9).u64(2);               // array of arrays of i16
    b.u32(3).u64(1).put(int16_t(-2)).u32(3).u64(0);
    auto file = parseBytes(b.b);
    QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
    QCOMPARE(file->version(), 2u);
    QCOMPARE(file->find("t.u8")->u, uint64_t(250));
    QCOMPARE(file->find("t.i8")->i, int64_t(-5));
    QCOMPARE(file->find("t.u16")->u, uint64_t(65000));
    QCOMPARE(file->find("t.i16")->i, int64_t(-30000));
    QCOMPARE(*file->getU32("t.u32"), 4000000000u);
    QCOMPARE(file->find("t.i32")->i, int64_t(-7));
    QCOMPARE(*file->getF32("t.f32"), 2.5f);
    QCOMPARE(*file->getBool("t.bool"), true);
    QCOMPARE(*file->getString("t.str"), std::string("héllo"));
    QCOMPARE(*file->getU64("t.u64"), ~uint64_t(0));
    QCOMPARE(*file->getI64("t.i64"), int64_t(-1) << 40);
    QCOMPARE(*file->getF64("t.f64"), 0.1);
    QCOMPARE(*file->getStringArray("t.arr"), (std::vector<std::string>{"a", ""}));
    const GgufValue *nested = *file->getArray("t.nested");
    QCOMPARE(nested->array.size(), size_t(2));
    QCOMPARE(nested->array[0].elementType, GgufValueType::I16);
    QCOMPARE(nested->array[0].array[0].i, int64_t(-2));
    QCOMPARE(nested->array[1].array.size(), size_t(0));
    QCOMPARE(file->dataOffset(), uint64_t((b.b.size() + 31) / 32 * 32));
}

void TestGguf::rejectsBadFiles_data() {
    QTest::addColumn<QByteArray>("bytes");
    QTest::addColumn<int>("code");
    QTest::addColumn<QString>("phrase");
    QTest::addColumn<bool>("asCheckpoint");
    const int format = int(ErrorCode::Format), unsupported = int(ErrorCode::Unsupported);
    auto row = [](const char *name, const std::string &b, int code, const char *phrase,
                  bool checkpoint = false) {
        QTest::newRow(name) << QByteArray(b.data(), qsizetype(b.size())) << code << phrase
                            << checkpoint;
    };
    // A valid single-tensor file with one kv, built with a patchable tensor-info tail.
    auto oneTensor = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset,
                        size_t dataBytes) {
        return header(3, 1, 1)
            .kvStr("general.name", "t")
            .tensor("w", ne, type, offset)
            .padTo(32)
            .data(dataBytes)
            .b;
    };
    row("bad magic", "GGUX" + header(3, 0, 0).b.substr(4), format, "bad magic 'GGUX'");
    row("version 1", header(1, 0, 0).b, unsupported, "GGUF version 1");
    row("version 99", header(99, 0, 0).b, unsupported, "GGUF version 99");
    row("truncated header", header(3, 0, 0).b.substr(0, 10), format, "truncated");
    row("tensor count huge", header(3, uint64_t(1) << 62, 0).b, format,
        "tensor count 4611686018427387904");
    row("kv count huge", header(3, 0, ~uint64_t(0)).b, format,
        "metadata count 18446744073709551615");
    row("string length past end", header(3, 0, 1).u64(1000).b + "general", format,
        "string length 1000");
    row("key length overflow", header(3, 0, 1).u64(~uint64_t(0)).b + "k.k.k.k.k.k.k", format,
        "string length 18446744073709551615");
    row("array length overflow", header(3, 0, 1).str("a").u32(9).u32(4).u64(uint64_t(1) << 62).b,
        format, "array of 4611686018427387904 u32");
    row("unknown value type", header(3, 0, 1).str("a").u32(13).u32(0).b, format,
        "unknown value type 13");
    row("unknown array element type", header(3, 0, 1).str("a").u32(9).u32(77).u64(0).b, format,
        "unknown array element type 77");
    row("bool not 0/1", header(3, 0, 1).str("a").u32(7).put(uint8_t(2)).b, format,
        "bool byte is 2");
    row("duplicate key", header(3, 0, 2).kvU32("a.b", 1).kvU32("a.b", 2).b, format,
        "duplicate metadata key 'a.b'");
    Bytes deep = header(3, 0, 1).str("deep").u32(9);
    for (int i = 0; i < 12; ++i)
        deep.u32(9).u64(1);
    row("arrays nested too deep", deep.u32(0).u64(0).b, format, "nested deeper than 8");
    row("alignment 0", header(3, 0, 1).kvU32("general.alignment", 0).b, format,
        "general.alignment 0 ");
    row("alignment 48", header(3, 0, 1).kvU32("general.alignment", 48).b, format,
        "general.alignment 48 is not a power of two");
    row("alignment as string", header(3, 0, 1).kvStr("general.alignment", "32").b, format,
        "general.alignment has type string");
    row("n_dims 5", oneTensor({2, 2, 2, 2, 2}, 0, 0, 128), format, "has 5 dimensions");
    row("n_dims 0", oneTensor({}, 0, 0, 32), format, "has 0 dimensions");
    row("dims product overflow", oneTensor({uint64_t(1) << 32, uint64_t(1) << 32}, 0, 0, 32),
        format, "dimensions overflow");
    row("tensor data past end", oneTensor({1024}, 0, 0, 64), format,
        "ends past the end of the file");
    row("tensor offset past end", oneTensor({8}, 0, uint64_t(1) << 60, 64), format,
        "ends past the end of the file");
    row("unaligned offset", oneTensor({8}, 0, 4, 64), format,
        "data offset 4 is not a multiple of the alignment 32");
    row("unknown ggml type", oneTensor({8}, 4, 0, 64), format, "unknown GGML type id 4");
    row("row not whole blocks", oneTensor({33}, 2, 0, 64), format,
        "not a multiple of the Q4_0 block size");
    row("overlapping tensors",
        header(3, 2, 0).tensor("a", {16}, 0, 0).tensor("b", {16}, 0, 32).padTo(32).data(96).b,
        format, "tensors 'a' and 'b' overlap");
    row("duplicate tensor name",
        header(3, 2, 0).tensor("a", {8}, 0, 0).tensor("a", {8}, 0, 32).padTo(32).data(64).b, format,
        "duplicate tensor name 'a'");
    row("missing llama key", tinyLlama("llama.block_count"), int(ErrorCode::NotFound),
        "metadata key 'llama.block_count' is missing", true);
    row("missing architecture", header(3, 1, 0).tensor("w", {8}, 0, 0).padTo(32).data(32).b, format,
        "'general.architecture' is missing", true);
    row("other architecture", tinyLlama("", "gpt2"), unsupported, "architecture 'gpt2'", true);
    row("missing tensor", tinyLlama("", "llama", "output_norm.weight"), int(ErrorCode::NotFound),
        "tensor 'output_norm.weight' is missing", true);
    row("empty tensor", tinyLlama("", "llama", "", "blk.0.attn_v.weight"), format,
        "tensor 'blk.0.attn_v.weight' has a zero dimension", true);
    row("undecodable type", tinyLlama("", "llama", "", "", true), unsupported,
        "tensor 'rope_freqs.weight' has type IQ2_XS, which lowbit cannot decode yet", true);
}

void TestGguf::rejectsBadFiles() {
    QFETCH(QByteArray, bytes);
    QFETCH(int, code);
    QFETCH(QString, phrase);
    QFETCH(bool, asCheckpoint);
    const std::string b(bytes.constData(), size_t(bytes.size()));
    auto file = parseBytes(b);
    Error error;
    if (asCheckpoint) {
        QVERIFY2(file.ok(), file.ok() ? "" : file.error().message.c_str());
        auto ckpt = checkpointFromGguf(*file, {});
        QVERIFY(!ckpt.ok());
        error = ckpt.error();
    } else {
        QVERIFY(!file.ok());
        error = file.error();
    }
    const QString message = QString::fromStdString(error.message);
    QVERIFY2(message.startsWith("bad.gguf: "), qPrintable(message));
    QVERIFY2(message.contains(phrase), qPrintable(message));
    QCOMPARE(int(error.code), code);
}

// Every proper prefix of a valid file with tensors is rejected cleanly.
void TestGguf::everyTruncationIsAnError() {
    const std::string whole = tinyLlama("");
    QVERIFY(parseBytes(whole).ok());
    auto ckpt = checkpointFromGguf(*parseBytes(whole), {});
    QVERIFY2(ckpt.ok(), ckpt.ok() ? "" : ckpt.error().message.c_str());
    QCOMPARE(ckpt->config.vocabSize, 4);
    QCOMPARE(ckpt->config.tieWordEmbeddings, true);
    const size_t dataStart = size_t(parseBytes(whole)->dataOffset());
    for (size_t n = 0; n < whole.size(); n += (n < dataStart ? 1 : 97)) {
        auto file = parseBytes(whole.substr(0, n));
        QVERIFY2(!file.ok(), qPrintable(QString("prefix of %1 bytes parsed").arg(n)));
        QVERIFY(file.error().message.rfind("bad.gguf: ", 0) == 0);
    }
}

void TestGguf::missingFileIsNotFound() {
    auto file = GgufFile::open("/nonexistent/dir/model.gguf");
    QVERIFY(!file.ok());
    QCOMPARE(file.error().code, ErrorCode::NotFound);
    QVERIFY(file.error().message.find("/nonexistent/dir/model.gguf") != std::string::npos);
}

QTEST_APPLESS_MAIN(TestGguf)
#include "test_gguf.moc"
