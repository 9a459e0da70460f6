// SentencePiece-style BPE: llama.cpp's Llama 2 test vectors (vocab from the vocab-only GGUF and
// from llama2.c's tokenizer.bin), llama2.c's stories260K tokenizer against its greedy reference
// run, and malformed llama2.c tokenizer files.
#include "io/gguf.h"
#include "shared_data.h"
#include "tokenizer/spm_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <QtTest>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

using namespace lowbit;

namespace {

using test::readVocabCases;
using test::VocabCase;

// The tokenizer arrays of a GGUF file, read with the engine's GGUF reader.
Result<VocabExport> readGgufVocab(const std::filesystem::path &path) {
    VocabExport vocab;
    LOWBIT_TRY(const GgufFile file, GgufFile::open(path));
    LOWBIT_TRY(vocab.model, file.getString("tokenizer.ggml.model"));
    LOWBIT_TRY(vocab.tokens, file.getStringArray("tokenizer.ggml.tokens"));
    LOWBIT_TRY(vocab.scores, file.getF32Array("tokenizer.ggml.scores"));
    LOWBIT_TRY(vocab.tokenTypes, file.getI32Array("tokenizer.ggml.token_type"));
    LOWBIT_TRY(const uint32_t bos, file.getU32("tokenizer.ggml.bos_token_id"));
    LOWBIT_TRY(const uint32_t eos, file.getU32("tokenizer.ggml.eos_token_id"));
    LOWBIT_TRY(const uint32_t unk, file.getU32("tokenizer.ggml.unknown_token_id"));
    vocab.bosId = static_cast<int32_t>(bos);
    vocab.eosId = static_cast<int32_t>(eos);
    vocab.unkId = static_cast<int32_t>(unk);
    if (file.has("tokenizer.ggml.add_bos_token")) {
        LOWBIT_TRY(vocab.addBos, file.getBool("tokenizer.ggml.add_bos_token"));
    }
    return vocab;
}

void checkCases(const Tokenizer &tok, const std::vector<VocabCase> &cases) {
    QCOMPARE(cases.size(), size_t(47));
    for (const VocabCase &c : cases) {
        const auto ids = tok.encode(c.text, {});
        if (ids != c.ids)
            qWarning("mismatch for '%s'", c.text.c_str());
        QCOMPARE(ids, c.ids);
        QCOMPARE(tok.decode(ids), c.text);
    }
}

} // namespace

class TestSpmTokenizer : public QObject {
    Q_OBJECT

private slots:
    void llamaCppVectorsFromGguf();
    void llamaCppVectorsFromLlama2cBin();
    void stories260KGreedyReference();
    void llama2cVocabMatchesGguf();
    void specialTokensAndDecode();
    void byteFallbackWithoutBytePieces();
    void badLlama2cFiles();
};

void TestSpmTokenizer::llamaCppVectorsFromGguf() {
    LOWBIT_REQUIRE_SHARED_FILE(gguf, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf");
    LOWBIT_REQUIRE_SHARED_FILE(inp, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf.inp");
    LOWBIT_REQUIRE_SHARED_FILE(out, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf.out");
    auto read = readGgufVocab(gguf);
    QVERIFY2(read.ok(), read.ok() ? "" : read.error().toString().c_str());
    const VocabExport vocab = *read;
    QCOMPARE(vocab.tokens.size(), size_t(32000));
    QCOMPARE(vocab.tokenTypes.size(), size_t(32000));
    auto tok = makeTokenizerFromVocab(vocab);
    QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
    QCOMPARE((*tok)->kind(), std::string_view("spm"));
    QCOMPARE((*tok)->bosId(), 1);
    QCOMPARE((*tok)->eosIds(), std::vector<int32_t>{2});
    checkCases(**tok, readVocabCases(inp, out));
    const VocabExport back = (*tok)->exportVocab();
    QCOMPARE(back.tokens, vocab.tokens);
    QCOMPARE(back.scores, vocab.scores);
    QCOMPARE(back.tokenTypes, vocab.tokenTypes);
    QCOMPARE(back.addBos, vocab.addBos);
}

void TestSpmTokenizer::llamaCppVectorsFromLlama2cBin() {
    // llama2.c's tokenizer.bin is the same Llama 2 vocabulary in another container.
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/tokenizer.bin");
    LOWBIT_REQUIRE_SHARED_FILE(inp, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf.inp");
    LOWBIT_REQUIRE_SHARED_FILE(out, "data/llama_cpp_vocab/ggml-vocab-llama-spm.gguf.out");
    auto tok = loadLlama2cTokenizer(bin, 32000);
    QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
    checkCases(**tok, readVocabCases(inp, out));
}

void TestSpmTokenizer::stories260KGreedyReference() {
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(ref, "data/llama2c/stories260K.greedy_reference.json");
    auto tok = loadLlama2cTokenizer(bin, 512);
    QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
    const auto reference = nlohmann::json::parse(test::readFile(ref));
    const auto generated = reference["generated_ids"].get<std::vector<int32_t>>();
    const std::string text = reference["text"].get<std::string>();
    QCOMPARE((*tok)->decode(generated), text);
    // The story's first two sentences, encoded as run.c does (BOS, dummy prefix), are the ids
    // the model generated for them.
    const std::string prefix = "Once upon a time, there was a little girl named Lily. She loved to "
                               "play outside in the park.";
    QVERIFY(text.rfind(prefix, 0) == 0);
    auto ids = (*tok)->encode(prefix, {.addBos = true});
    QCOMPARE(ids.front(), 1);
    ids.erase(ids.begin());
    QCOMPARE(ids.size(), size_t(31));
    QCOMPARE(ids, std::vector<int32_t>(generated.begin(), generated.begin() + 31));
    QCOMPARE((*tok)->encode("", {.addBos = true}), std::vector<int32_t>{1});
}

void TestSpmTokenizer::llama2cVocabMatchesGguf() {
    // stories260K.gguf carries the same 512 pieces as tok512.bin: the llama2.c conversion must
    // bring back the GGUF spelling ("▁", "<s>") and infer the same token types.
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(gguf, "data/gguf/stories260K.gguf");
    auto read = readGgufVocab(gguf);
    QVERIFY2(read.ok(), read.ok() ? "" : read.error().toString().c_str());
    const VocabExport fromGguf = *read;
    QCOMPARE(fromGguf.tokens.size(), size_t(512));
    auto tok = loadLlama2cTokenizer(bin, 512);
    QVERIFY(tok.ok());
    const VocabExport fromBin = (*tok)->exportVocab();
    QCOMPARE(fromBin.tokens, fromGguf.tokens);
    QCOMPARE(fromBin.scores, fromGguf.scores);
    QCOMPARE(fromBin.tokenTypes, fromGguf.tokenTypes);
    QCOMPARE(fromBin.model, std::string("llama"));
    QCOMPARE(fromBin.bosId, 1);
    QCOMPARE(fromBin.eosId, 2);
    QCOMPARE(fromBin.unkId, 0);
}

void TestSpmTokenizer::specialTokensAndDecode() {
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/tokenizer.bin");
    auto loaded = loadLlama2cTokenizer(bin, 32000);
    QVERIFY(loaded.ok());
    const Tokenizer &tok = **loaded;
    // Llama 2: "▁Hello" 15043, "▁world" 3186, "</s>" 2, "<0x0A>" 13.
    QCOMPARE(tok.encode("Hello world</s>", {.parseSpecial = true}),
             (std::vector<int32_t>{15043, 3186, 2}));
    const auto plain = tok.encode("</s>", {});
    QVERIFY(std::find(plain.begin(), plain.end(), 2) == plain.end());
    QCOMPARE(tok.decode(plain), std::string("</s>"));
    QCOMPARE(tok.piece(15043), std::string_view("\xE2\x96\x81Hello"));
    QCOMPARE(tok.decode(std::vector<int32_t>{1, 15043, 13, 3186}), std::string("<s>Hello\n world"));
    QVERIFY(tok.isSpecial(1) && tok.isSpecial(2) && !tok.isSpecial(15043));
}

void TestSpmTokenizer::byteFallbackWithoutBytePieces() {
    // A vocabulary with no <0xNN> pieces: unknown characters become UNK; merges by score.
    VocabExport vocab;
    vocab.model = "llama";
    vocab.tokens = {"<unk>",
                    "<s>",
                    "</s>",
                    "\xE2\x96\x81",
                    "a",
                    "b",
                    "ab",
                    "\xE2\x96\x81"
                    "a",
                    "\xE2\x96\x81"
                    "ab"};
    vocab.scores = {0, 0, 0, -1, -1, -1, -5, -2, -3};
    vocab.tokenTypes = {2, 3, 3, 1, 1, 1, 1, 1, 1};
    vocab.unkId = 0;
    vocab.bosId = 1;
    vocab.eosId = 2;
    auto tok = makeTokenizerFromVocab(vocab);
    QVERIFY(tok.ok());
    // "▁ab": "▁a" (-2) beats "ab" (-5), then "▁ab" (-3).
    QCOMPARE((*tok)->encode("ab", {}), std::vector<int32_t>{8});
    QCOMPARE((*tok)->encode("ba", {}), (std::vector<int32_t>{3, 5, 4}));
    QCOMPARE((*tok)->encode("a\xC3\xA9", {}), (std::vector<int32_t>{7, 0, 0}));
    vocab.addSpacePrefix = false;
    auto noPrefix = makeTokenizerFromVocab(vocab);
    QVERIFY(noPrefix.ok());
    QCOMPARE((*noPrefix)->encode("ab", {}), std::vector<int32_t>{6});
    QCOMPARE((*noPrefix)->decode(std::vector<int32_t>{8}), std::string(" ab"));
}

void TestSpmTokenizer::badLlama2cFiles() {
    const auto dir = std::filesystem::temp_directory_path() / "lowbit_test_spm_tokenizer";
    std::filesystem::create_directories(dir);
    const auto write = [&](const std::string &name, const std::vector<char> &bytes) {
        const auto path = dir / name;
        std::ofstream(path, std::ios::binary)
            .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
        return path;
    };
    const auto append = [](std::vector<char> &bytes, auto value) {
        const char *raw = reinterpret_cast<const char *>(&value);
        bytes.insert(bytes.end(), raw, raw + sizeof(value));
    };
    std::vector<char> good;
    append(good, int32_t(5));
    for (const char *piece : {"<unk>", "<s>", "</s>", " a"}) {
        append(good, -1.0f);
        append(good, int32_t(std::strlen(piece)));
        good.insert(good.end(), piece, piece + std::strlen(piece));
    }
    QVERIFY(loadLlama2cTokenizer(write("good.bin", good), 4).ok());
    auto wholeFile = loadLlama2cTokenizer(write("good.bin", good), 0);
    QVERIFY(wholeFile.ok());
    QCOMPARE((*wholeFile)->vocabSize(), 4);

    std::vector<char> truncated(good.begin(), good.end() - 1);
    std::vector<char> negative;
    append(negative, int32_t(5));
    append(negative, 0.0f);
    append(negative, int32_t(-3));
    std::vector<char> pastEnd;
    append(pastEnd, int32_t(1000));
    append(pastEnd, 0.0f);
    append(pastEnd, int32_t(900));
    struct Bad {
        std::string name;
        std::vector<char> bytes;
        int32_t vocabSize;
        std::string expect;
    } cases[] = {
        {"truncated.bin", truncated, 4, "truncated"}, {"more_tokens.bin", good, 5, "truncated"},
        {"negative.bin", negative, 4, "length -3"},   {"past_end.bin", pastEnd, 4, "truncated"},
        {"empty.bin", {}, 4, "max_token_length"},     {"tail.bin", truncated, 0, "truncated"}};
    for (const Bad &bad : cases) {
        const auto path = write(bad.name, bad.bytes);
        auto result = loadLlama2cTokenizer(path, bad.vocabSize);
        QVERIFY2(!result.ok(), bad.name.c_str());
        QCOMPARE(result.error().code, ErrorCode::Format);
        QVERIFY2(result.error().message.find(path.string()) != std::string::npos,
                 result.error().message.c_str());
        QVERIFY2(result.error().message.find(bad.expect) != std::string::npos,
                 result.error().message.c_str());
    }
    auto missing = loadLlama2cTokenizer(dir / "absent.bin", 4);
    QVERIFY(!missing.ok());
    QCOMPARE(missing.error().code, ErrorCode::NotFound);
    std::filesystem::remove_all(dir);
}

QTEST_APPLESS_MAIN(TestSpmTokenizer)
#include "test_spm_tokenizer.moc"
