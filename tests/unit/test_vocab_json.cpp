// lowbit_vocab.json (engine/tokenizer/vocab_json.h): a vocabulary written as JSON and read back
// builds a tokenizer that encodes and decodes exactly as the original, for the Llama 3 byte-level
// BPE and the llama2.c SentencePiece-style vocabularies; pieces that are not UTF-8 survive; broken
// documents are errors naming the field.
#include "shared_data.h"

#include "tokenizer/tokenizer_loaders.h"
#include "tokenizer/vocab_json.h"

#include <QtTest>

using namespace lowbit;

namespace {

const char *kSample =
    "Once upon a time, Lily saw a big dog.\n  It said \"hi\" -- 42 times! ümlaut 日本";

void checkRoundTrip(const Tokenizer &original) {
    const VocabExport vocab = original.exportVocab();
    auto back = vocabFromJson(vocabToJson(vocab), "vocab");
    QVERIFY2(back.ok(), back.ok() ? "" : back.error().message.c_str());
    QCOMPARE(back->tokens, vocab.tokens);
    QCOMPARE(back->merges, vocab.merges);
    QCOMPARE(back->scores, vocab.scores);
    QCOMPARE(back->tokenTypes, vocab.tokenTypes);
    QCOMPARE(back->bosId, vocab.bosId);
    QCOMPARE(back->addBos, vocab.addBos);
    auto rebuilt = makeTokenizerFromVocab(std::move(*back));
    QVERIFY2(rebuilt.ok(), rebuilt.ok() ? "" : rebuilt.error().message.c_str());
    const auto ids = original.encode(kSample, {true, false});
    QCOMPARE((*rebuilt)->encode(kSample, {true, false}), ids);
    QCOMPARE((*rebuilt)->decode(ids), original.decode(ids));
}

} // namespace

class TestVocabJson : public QObject {
    Q_OBJECT
private slots:
    void llama3Bpe();
    void llama2cSpm();
    void nonUtf8Pieces();
    void brokenDocuments();
};

void TestVocabJson::llama3Bpe() {
    LOWBIT_REQUIRE_SHARED_FILE(json, "data/llama3_tokenizer/tokenizer.json");
    LOWBIT_REQUIRE_SHARED_FILE(config, "data/llama3_tokenizer/tokenizer_config.json");
    auto tokenizer = loadHfTokenizer(json, config);
    QVERIFY(tokenizer.ok());
    checkRoundTrip(**tokenizer);
}

void TestVocabJson::llama2cSpm() {
    LOWBIT_REQUIRE_SHARED_FILE(bin, "data/llama2c/tok512.bin");
    auto tokenizer = loadLlama2cTokenizer(bin, 512);
    QVERIFY(tokenizer.ok());
    checkRoundTrip(**tokenizer);
}

void TestVocabJson::nonUtf8Pieces() {
    VocabExport v;
    v.model = "llama";
    v.tokens = {"<unk>", "\xff\xfe", "a\xc3", "\xe6\x97\xa5"};
    v.scores = {0, 1, 2, 3};
    v.tokenTypes = {2, 1, 1, 1};
    const std::string json = vocabToJson(v);
    QVERIFY(json.find("\"hex\":\"fffe\"") != std::string::npos);
    QVERIFY(json.find("\"hex\":\"61c3\"") != std::string::npos);
    auto back = vocabFromJson(json, "v");
    QVERIFY(back.ok());
    QCOMPARE(back->tokens, v.tokens);
}

void TestVocabJson::brokenDocuments() {
    const std::pair<const char *, const char *> cases[] = {
        {"[1, 2]", "not a JSON object"},
        {"{\"format\": \"other\"}", "'format'"},
        {"{\"format\": \"lowbit-vocab\", \"model\": \"llama\", \"tokens\": 3}", "'tokens'"},
        {"{\"format\": \"lowbit-vocab\", \"model\": \"llama\", \"tokens\": [{\"hex\": \"zz\"}]}",
         "tokens[0]"},
        {"{\"format\": \"lowbit-vocab\", \"model\": \"llama\", \"tokens\": []}", "no tokens"},
        {"{\"format\": \"lowbit-vocab\", \"tokens\": [\"a\"]}", "malformed"},
        {"{\"format\": \"lowbit-vocab\", \"model\": \"llama\", \"tokens\": [\"a\"], \"scores\": "
         "\"x\"}",
         "malformed"},
    };
    for (const auto &[text, expected] : cases) {
        auto r = vocabFromJson(text, "bad.json");
        QVERIFY2(!r.ok(), text);
        QVERIFY2(r.error().message.find(expected) != std::string::npos, r.error().message.c_str());
        QVERIFY(r.error().message.find("bad.json") != std::string::npos);
    }
}

QTEST_APPLESS_MAIN(TestVocabJson)
#include "test_vocab_json.moc"
