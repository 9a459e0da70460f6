// The log-likelihood and generation request engines on the real stories260K model: scores against
// a float64 re-computation from one plain forward per request, a document's scores independent of
// what else is scored with it (order, subsets), the shared-prefix reuse actually saving work, left
// truncation, and generation determinism across batch sizes.
#include "shared_data.h"

#include "generation.h"
#include "loglikelihood.h"
#include "model/checkpoint.h"
#include "runtime/model.h"

#include <QtTest>
#include <cmath>
#include <random>

using namespace lowbit;

namespace {

std::unique_ptr<Model> loadStories() {
    const auto model = test::sharedPath("data/llama2c/stories260K.bin");
    LoadOptions options;
    options.tokenizerPath = test::sharedPath("data/llama2c/tok512.bin");
    auto checkpoint = loadCheckpoint(model, options);
    if (!checkpoint)
        return nullptr;
    auto m = Model::create(std::make_shared<const Checkpoint>(std::move(*checkpoint)), {2});
    return m ? std::move(*m) : nullptr;
}

// log P(continuation | context) from one forward over context + continuation, log-softmax in
// float64 here (independent of the engine's slots, reuse and batching).
double referenceLogLikelihood(Model &model, const TokenizedRequest &r) {
    std::vector<int32_t> all(r.context);
    all.insert(all.end(), r.continuation.begin(), r.continuation.end());
    all.pop_back();
    KvCache cache = model.makeCache(1, int64_t(all.size()));
    const SequenceInput input{0, all, LogitsWanted::All, 0};
    auto logits = model.forward(cache, {&input, 1});
    if (!logits)
        return NAN;
    double total = 0;
    const size_t first = r.context.size() - 1;
    for (size_t t = 0; t < r.continuation.size(); ++t) {
        const float *row = logits->row(int64_t(first + t));
        double maxValue = row[0];
        for (int64_t j = 1; j < logits->vocab; ++j)
            maxValue = std::max(maxValue, double(row[j]));
        double sum = 0;
        for (int64_t j = 0; j < logits->vocab; ++j)
            sum += std::exp(double(row[j]) - maxValue);
        total += double(row[r.continuation[t]]) - maxValue - std::log(sum);
    }
    return total;
}

// Multiple-choice-like groups (a shared context, 2..5 continuations) and singletons, drawn fresh.
std::vector<LoglikelihoodRequest> randomRequests(std::mt19937 &rng) {
    const char *words[] = {"Lily", "saw", "a", "big", "red", "ball", "the", "park", "and", "she", "was", "happy", "dog",
                           "ran", "to", "mom", "said", "One", "day", "tree"};
    auto phrase = [&](int n) {
        std::string s;
        for (int i = 0; i < n; ++i) {
            if (i)
                s += ' ';
            s += words[rng() % 20];
        }
        return s;
    };
    std::vector<LoglikelihoodRequest> requests;
    for (int64_t g = 0; g < 9; ++g) {
        const std::string context = phrase(3 + int(rng() % 12)) + (g % 3 == 0 ? " " : "");
        const int choices = g % 4 == 3 ? 1 : 2 + int(rng() % 4);
        for (int c = 0; c < choices; ++c) {
            std::string continuation(g % 3 == 0 ? "" : " "); // a trailing space moves here from the context
            continuation += phrase(1 + int(rng() % 4));
            requests.push_back({context, continuation, choices > 1 ? g : -1});
        }
    }
    return requests;
}

} // namespace

class TestEvalEngine : public QObject {
    Q_OBJECT
private slots:
    void encodeMovesTrailingSpace();
    void matchesPlainForward();
    void independentOfNeighbours();
    void prefixIsReused();
    void leftTruncation();
    void generationDeterministic();
};

void TestEvalEngine::encodeMovesTrailingSpace() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    const Tokenizer &tok = *m->tokenizer();
    // lm-eval _encode_pair: "Answer: " + "A" is split as "Answer:" + " A".
    auto r = encodeRequest(tok, {"Once upon a time ", "there was", -1}, false);
    QVERIFY(r.ok());
    QCOMPARE(r->context, tok.encode("Once upon a time", {false, false}));
    const auto whole = tok.encode("Once upon a time there was", {false, false});
    std::vector<int32_t> joined(r->context);
    joined.insert(joined.end(), r->continuation.begin(), r->continuation.end());
    QCOMPARE(joined, whole);
    // Empty context: [BOS] + the continuation's own tokens.
    auto empty = encodeRequest(tok, {"", "Lily", -1}, false);
    QVERIFY(empty.ok());
    QCOMPARE(empty->context, std::vector<int32_t>{tok.bosId()});
    QCOMPARE(empty->continuation, tok.encode("Lily", {false, false}));
    QVERIFY(!encodeRequest(tok, {"Lily", "", -1}, false).ok());
}

void TestEvalEngine::matchesPlainForward() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    std::mt19937 rng(std::random_device{}());
    const auto requests = randomRequests(rng);
    LoglikelihoodEngine engine(*m, {false, 0});
    auto results = engine.score(requests);
    QVERIFY(results.ok());
    for (size_t i = 0; i < requests.size(); ++i) {
        auto tokenized = encodeRequest(*m->tokenizer(), requests[i], false);
        QVERIFY(tokenized.ok());
        const double expected = referenceLogLikelihood(*m, *tokenized);
        QVERIFY2(std::abs((*results)[i].logLikelihood - expected) < 1e-4,
                 qPrintable(QString("request %1: %2 vs %3").arg(i).arg((*results)[i].logLikelihood).arg(expected)));
        QCOMPARE((*results)[i].tokens, int64_t(tokenized->continuation.size()));
        QVERIFY((*results)[i].logLikelihood < 0);
    }
}

void TestEvalEngine::independentOfNeighbours() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    std::mt19937 rng(std::random_device{}());
    const auto requests = randomRequests(rng);
    LoglikelihoodEngine engine(*m, {false, 0});
    auto all = engine.score(requests);
    QVERIFY(all.ok());
    // The same requests group by group, in reverse order, each through a fresh engine or the
    // same one: every score is bit-identical (no forward mixes two documents' rows).
    LoglikelihoodEngine again(*m, {false, 0});
    size_t end = requests.size();
    while (end > 0) {
        size_t begin = end - 1;
        while (begin > 0 && requests[begin].group >= 0 && requests[begin - 1].group == requests[begin].group)
            --begin;
        for (LoglikelihoodEngine *e : {&again, &engine}) {
            auto part = e->score({requests.data() + begin, end - begin});
            QVERIFY(part.ok());
            for (size_t i = begin; i < end; ++i) {
                QVERIFY2(std::abs((*part)[i - begin].logLikelihood - (*all)[i].logLikelihood) <= 1e-6,
                         qPrintable(QString("request %1: %2 vs %3").arg(i).arg((*part)[i - begin].logLikelihood, 0, 'g', 17)
                                        .arg((*all)[i].logLikelihood, 0, 'g', 17)));
                QCOMPARE((*part)[i - begin].logLikelihood, (*all)[i].logLikelihood);
                QCOMPARE((*part)[i - begin].isGreedy, (*all)[i].isGreedy);
            }
        }
        end = begin;
    }
}

void TestEvalEngine::prefixIsReused() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    // Two questions behind a long shared header, 4 one-token choices each (MMLU's shape): the
    // header runs once, each question's own part once, and each choice one token.
    const std::string header = "Once upon a time, there was a little girl named Lily. She loved to play outside.\n\n";
    const std::string questions[] = {"What did she see?\nAnswer:", "Where did she go?\nAnswer:"};
    std::vector<LoglikelihoodRequest> requests;
    for (int q = 0; q < 2; ++q)
        for (const char *choice : {" A", " B", " C", " D"})
            requests.push_back({header + questions[q], choice, q, header});
    LoglikelihoodEngine engine(*m, {false, 0});
    auto results = engine.score(requests);
    QVERIFY(results.ok());
    const Tokenizer &tok = *m->tokenizer();
    const int64_t headerTokens = int64_t(tok.encode(header, {false, false}).size());
    int64_t prompts = 0, expected = headerTokens;
    for (const auto &q : questions) {
        const int64_t prompt = int64_t(tok.encode(header + q, {false, false}).size());
        prompts += prompt;
        expected += prompt - headerTokens; // the question's own tokens, then each choice's but its last
        for (const char *choice : {" A", " B", " C", " D"}) {
            auto r = encodeRequest(tok, {header + q, choice, 0, header}, false);
            QVERIFY(r.ok());
            QCOMPARE(r->sharedPrefix, headerTokens);
            expected += int64_t(r->continuation.size()) - 1;
        }
    }
    QCOMPARE(engine.tokensEvaluated(), expected);
    QVERIFY(double(engine.tokensEvaluated()) <= 1.3 * double(prompts));
    // Reuse changes nothing: the same requests without a shared prefix score the same.
    for (auto &r : requests)
        r.sharedPrefix.clear();
    LoglikelihoodEngine plain(*m, {false, 0});
    auto unshared = plain.score(requests);
    QVERIFY(unshared.ok());
    for (size_t i = 0; i < requests.size(); ++i)
        QVERIFY(std::abs((*unshared)[i].logLikelihood - (*results)[i].logLikelihood) < 1e-4);
}

void TestEvalEngine::leftTruncation() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    // maxLength 16: the input is the last 16 tokens of context + continuation (minus the last).
    TokenizedRequest r;
    for (int i = 0; i < 40; ++i)
        r.context.push_back(int32_t(10 + (i * 37) % 400));
    r.continuation = {300, 301, 302};
    LoglikelihoodEngine engine(*m, {false, 16});
    auto results = engine.scoreTokens({&r, 1});
    QVERIFY(results.ok());
    TokenizedRequest truncated;
    truncated.context.assign(r.context.end() - 14, r.context.end());
    truncated.continuation = r.continuation;
    QVERIFY(std::abs((*results)[0].logLikelihood - referenceLogLikelihood(*m, truncated)) < 1e-4);
    r.continuation.assign(17, 5);
    QVERIFY(!engine.scoreTokens({&r, 1}).ok()); // a continuation longer than the context length
}

void TestEvalEngine::generationDeterministic() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    auto m = loadStories();
    QVERIFY(m);
    std::vector<GenerationRequest> requests = {{"Once upon a time", false, ""}, {"Lily saw a", false, ""},
                                               {"The dog", false, ""}};
    GenerationOptions options;
    options.generate.maxTokens = 24;
    options.generate.stopStrings = {"."};
    options.addBos = true;
    std::vector<std::vector<GenerationOutput>> runs;
    for (int batch : {1, 1, 3}) {
        options.batchSize = batch;
        GenerationEngine engine(*m, options);
        auto out = engine.run(requests);
        QVERIFY(out.ok());
        runs.push_back(*out);
    }
    for (size_t i = 0; i < requests.size(); ++i) {
        QCOMPARE(runs[1][i].text, runs[0][i].text);
        QCOMPARE(runs[2][i].tokens, runs[0][i].tokens);
        QVERIFY(runs[0][i].text.find('.') == std::string::npos); // cut before the stop string
        // The single-request generator agrees.
        auto prompt = m->tokenizer()->encode(requests[i].prompt, {true, false});
        auto single = generate(*m, prompt, options.generate);
        QVERIFY(single.ok());
        QCOMPARE(single->text, runs[0][i].text);
    }
}

QTEST_APPLESS_MAIN(TestEvalEngine)
#include "test_eval_engine.moc"
