// Byte-level BPE (Llama 3 tokenizer.json) against llama.cpp's tokenizer test vectors, plus small
// hand-built tokenizers whose segmentation follows from the merge rules by hand.
#include "shared_data.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/tokenizer_loaders.h"

#include <QtTest>

#include <fstream>
#include <sstream>

using namespace lowbit;

namespace {

using test::readVocabCases;
using test::VocabCase;

QByteArray idsText(const std::vector<int32_t> &ids) {
    QByteArray text;
    for (int32_t id : ids)
        text += QByteArray::number(id) + ' ';
    return text;
}

// A tokenizer.json with the given vocab/merges objects (JSON text) and the GPT-2 byte-level setup.
std::string tinyJson(const std::string &vocab, const std::string &merges, bool ignoreMerges = false,
                     const std::string &preTokenizer =
                         R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": true})") {
    return R"({"version": "1.0", "normalizer": null, "pre_tokenizer": )" + preTokenizer +
           R"(, "added_tokens": [{"id": 100, "content": "<|end|>", "special": true}],
              "model": {"type": "BPE", "ignore_merges": )" +
           (ignoreMerges ? "true" : "false") + R"(, "vocab": )" + vocab + R"(, "merges": )" +
           merges + "}}";
}

} // namespace

class TestBpeTokenizer : public QObject {
    Q_OBJECT

private slots:
    void llamaCppVectors();
    void exportedVocabReproducesVectors();
    void specialTokens();
    void bosEosAndConfig();
    void wikitextRoundTrip();
    void mergeRankOrder();
    void ignoreMergesEmitsWholePiece();
    void badInputNamesTheFile();
    void unsupportedPreTokenizerNames();

private:
    std::shared_ptr<const Tokenizer> llama3();
    std::shared_ptr<const Tokenizer> m_llama3;
};

std::shared_ptr<const Tokenizer> TestBpeTokenizer::llama3() {
    if (!m_llama3) {
        auto loaded =
            loadHfTokenizer(test::sharedPath("data/llama3_tokenizer/tokenizer.json"),
                            test::sharedPath("data/llama3_tokenizer/tokenizer_config.json"));
        if (!loaded.ok())
            qWarning("%s", loaded.error().toString().c_str());
        else
            m_llama3 = *loaded;
    }
    return m_llama3;
}

void TestBpeTokenizer::llamaCppVectors() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    LOWBIT_REQUIRE_SHARED_FILE(inp, "data/llama_cpp_vocab/ggml-vocab-llama-bpe.gguf.inp");
    LOWBIT_REQUIRE_SHARED_FILE(out, "data/llama_cpp_vocab/ggml-vocab-llama-bpe.gguf.out");
    auto tok = llama3();
    QVERIFY(tok);
    QCOMPARE(tok->vocabSize(), 128256);
    QCOMPARE(tok->kind(), std::string_view("bpe"));
    const auto cases = readVocabCases(inp, out);
    QCOMPARE(cases.size(), size_t(47));
    for (const VocabCase &c : cases) {
        const auto ids = tok->encode(c.text, {});
        if (ids != c.ids)
            qWarning("text '%s': got %s expected %s", c.text.c_str(), idsText(ids).constData(),
                     idsText(c.ids).constData());
        QCOMPARE(ids, c.ids);
        QCOMPARE(tok->decode(ids), c.text);
    }
}

void TestBpeTokenizer::exportedVocabReproducesVectors() {
    LOWBIT_REQUIRE_SHARED_FILE(inp, "data/llama_cpp_vocab/ggml-vocab-llama-bpe.gguf.inp");
    LOWBIT_REQUIRE_SHARED_FILE(out, "data/llama_cpp_vocab/ggml-vocab-llama-bpe.gguf.out");
    auto tok = llama3();
    QVERIFY(tok);
    VocabExport vocab = tok->exportVocab();
    QCOMPARE(vocab.model, std::string("gpt2"));
    QCOMPARE(vocab.pre, std::string("llama-bpe"));
    QCOMPARE(vocab.tokens.size(), size_t(128256));
    QCOMPARE(vocab.merges.size(), size_t(280147));
    QCOMPARE(vocab.merges[0], std::string("\xC4\xA0 \xC4\xA0")); // "Ġ Ġ", the first merge
    QCOMPARE(vocab.tokenTypes[128009], 3);
    QCOMPARE(vocab.tokenTypes[9906], 1);
    QCOMPARE(vocab.bosId, 128000);
    // The GGUF path (what a writer stores and a GGUF reader hands back) must tokenize identically.
    auto rebuilt = makeTokenizerFromVocab(std::move(vocab));
    QVERIFY2(rebuilt.ok(), rebuilt.ok() ? "" : rebuilt.error().toString().c_str());
    for (const VocabCase &c : readVocabCases(inp, out))
        QCOMPARE((*rebuilt)->encode(c.text, {}), c.ids);
    VocabExport other;
    other.model = "gpt2";
    other.pre = "qwen2";
    other.tokens = {"a"};
    auto refused = makeTokenizerFromVocab(other);
    QVERIFY(!refused.ok());
    QCOMPARE(refused.error().code, ErrorCode::Unsupported);
    QVERIFY(refused.error().message.find("qwen2") != std::string::npos);
}

void TestBpeTokenizer::specialTokens() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    auto tok = llama3();
    QVERIFY(tok);
    const std::string text = "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>";
    // Ids from the Llama 3 tokenizer: "user" 882, "\n\n" 271, "Hello" 9906.
    const std::vector<int32_t> parsed = {128006, 882, 128007, 271, 9906, 128009};
    QCOMPARE(tok->encode(text, {.addBos = false, .parseSpecial = true}), parsed);
    const auto plain = tok->encode(text, {});
    for (int32_t id : plain)
        QVERIFY(id < 128000); // special text is ordinary text without parseSpecial
    QCOMPARE(tok->decode(plain), text);
    QCOMPARE(tok->decode(parsed), text);
    QVERIFY(tok->isSpecial(128009));
    QVERIFY(!tok->isSpecial(9906));
    QCOMPARE(tok->piece(128009), std::string_view("<|eot_id|>"));
    QCOMPARE(tok->piece(22691), std::string_view("\xC4\xA0Hello")); // "ĠHello"
    QCOMPARE(tok->piece(-1), std::string_view());
    QCOMPARE(tok->piece(128256), std::string_view());
}

void TestBpeTokenizer::bosEosAndConfig() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    auto tok = llama3();
    QVERIFY(tok);
    QCOMPARE(tok->bosId(), 128000);
    const auto eos = tok->eosIds();
    QVERIFY(std::find(eos.begin(), eos.end(), 128001) != eos.end()); // <|end_of_text|>
    QVERIFY(std::find(eos.begin(), eos.end(), 128009) != eos.end()); // <|eot_id|>
    QCOMPARE(tok->encode("Hello", {.addBos = true}), (std::vector<int32_t>{128000, 9906}));
    // Without tokenizer_config.json the Llama 3 names are found by convention.
    auto bare = loadHfTokenizer(json);
    QVERIFY(bare.ok());
    QCOMPARE((*bare)->bosId(), 128000);
    QCOMPARE((*bare)->exportVocab().eosId, 128001);
}

void TestBpeTokenizer::wikitextRoundTrip() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    LOWBIT_REQUIRE_SHARED_FILE(wiki, "data/wikitext2/wiki.test.raw");
    auto tok = llama3();
    QVERIFY(tok);
    const std::string text = test::readFile(wiki);
    QVERIFY(text.size() > 1'000'000);
    const auto ids = tok->encode(text, {});
    // Llama 3 packs English at roughly 4 bytes per token; WikiText-2 test is ~290k tokens.
    QVERIFY(ids.size() > text.size() / 6 && ids.size() < text.size() / 3);
    QCOMPARE(tok->decode(ids), text);
}

void TestBpeTokenizer::mergeRankOrder() {
    // Byte symbols a b c d; merges by rank: "b c" (0), "a bc" (1), "a b" (2), "c d" (3).
    // "abcd" -> b+c first (rank 0) -> a+bc (rank 1) -> "abc" "d" ("c d" is gone with c).
    const std::string vocab =
        R"({"a": 0, "b": 1, "c": 2, "d": 3, "bc": 4, "abc": 5, "ab": 6, "cd": 7})";
    auto tok = loadHfTokenizerFromJson(tinyJson(vocab, R"(["b c", ["a", "bc"], "a b", "c d"])"),
                                       "tiny.json");
    QVERIFY2(tok.ok(), tok.ok() ? "" : tok.error().toString().c_str());
    QCOMPARE((*tok)->encode("abcd", {}), (std::vector<int32_t>{5, 3}));
    QCOMPARE((*tok)->encode("abd", {}), (std::vector<int32_t>{6, 3}));
    QCOMPARE((*tok)->encode("cdab", {}), (std::vector<int32_t>{7, 6}));
    // Only "a b" applies in "aab".
    QCOMPARE((*tok)->encode("aab", {}), (std::vector<int32_t>{0, 6}));
    QCOMPARE((*tok)->decode(std::vector<int32_t>{5, 3}), std::string("abcd"));
    QCOMPARE((*tok)->encode("x<|end|>a", {.parseSpecial = true}), (std::vector<int32_t>{100, 0}));
}

void TestBpeTokenizer::ignoreMergesEmitsWholePiece() {
    // "abc" is a vocabulary entry no merge produces (only "a b" exists).
    const std::string vocab = R"({"a": 0, "b": 1, "c": 2, "ab": 3, "abc": 4})";
    auto with = loadHfTokenizerFromJson(tinyJson(vocab, R"(["a b"])", true), "with.json");
    auto without = loadHfTokenizerFromJson(tinyJson(vocab, R"(["a b"])", false), "without.json");
    QVERIFY(with.ok() && without.ok());
    QCOMPARE((*with)->encode("abc", {}), (std::vector<int32_t>{4}));
    QCOMPARE((*without)->encode("abc", {}), (std::vector<int32_t>{3, 2}));
}

void TestBpeTokenizer::badInputNamesTheFile() {
    const std::string vocab = R"({"a": 0, "b": 1, "ab": 2})";
    struct Bad {
        std::string json;
        std::string expect;
    } cases[] = {
        {"{\"model\": {\"vocab\": ", "invalid JSON"},
        {"[1, 2]", "not a JSON object"},
        {R"({"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", "vocob": {}}})",
         "model.vocab"},
        {tinyJson(vocab, R"(["a z"])"), "unknown token 'z'"},
        {tinyJson(vocab, R"(["a b c"])"), "model.merges[0]"},
        {tinyJson(R"({"a": 0, "b": 1})", R"(["a b"])"), "unknown token 'ab'"},
        {tinyJson(R"({"a": "zero"})", "[]"), "model.vocab['a']"},
        {tinyJson(R"({"a": 0, "b": 0})", "[]"), "used twice"},
        {tinyJson(R"({"a": 99999999})", "[]"), "far beyond"},
        {tinyJson(
             vocab, "[]", false,
             R"({"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(\\p{L"}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]})"),
         "regex"},
    };
    for (const Bad &bad : cases) {
        auto result = loadHfTokenizerFromJson(bad.json, "bad/tokenizer.json");
        QVERIFY2(!result.ok(), bad.expect.c_str());
        const std::string &message = result.error().message;
        QVERIFY2(message.find("bad/tokenizer.json") != std::string::npos, message.c_str());
        QVERIFY2(message.find(bad.expect) != std::string::npos, message.c_str());
    }
    const auto dir = std::filesystem::temp_directory_path() / "lowbit_test_bpe_tokenizer";
    std::filesystem::create_directories(dir);
    const auto path = dir / "tokenizer.json";
    std::ofstream(path) << "{ not json";
    auto fromFile = loadHfTokenizer(path);
    QVERIFY(!fromFile.ok());
    QCOMPARE(fromFile.error().code, ErrorCode::Format);
    QVERIFY(fromFile.error().message.find(path.string()) != std::string::npos);
    auto missing = loadHfTokenizer(dir / "absent.json");
    QVERIFY(!missing.ok());
    QCOMPARE(missing.error().code, ErrorCode::NotFound);
    std::filesystem::remove_all(dir);
}

void TestBpeTokenizer::unsupportedPreTokenizerNames() {
    const std::string vocab = R"({"a": 0})";
    auto digits = loadHfTokenizerFromJson(
        tinyJson(vocab, "[]", false, R"({"type": "Digits", "individual_digits": true})"), "d.json");
    QVERIFY(!digits.ok());
    QCOMPARE(digits.error().code, ErrorCode::Unsupported);
    QVERIFY(digits.error().message.find("Digits") != std::string::npos);
    auto wordPiece =
        loadHfTokenizerFromJson(R"({"model": {"type": "WordPiece", "vocab": {}}})", "w.json");
    QVERIFY(!wordPiece.ok());
}

QTEST_APPLESS_MAIN(TestBpeTokenizer)
#include "test_bpe_tokenizer.moc"
