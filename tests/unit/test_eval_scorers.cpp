// Hand-computable checks of every scorer: acc vs acc_norm, WinoGrande partial evaluation, the MMLU
// prompt byte for byte, GSM8K's strict and flexible filters, the refusal matchers, HellaSwag
// preprocessing, Llama Guard prompts and verdicts, and KL-divergence in closed form.
#include "shared_data.h"

#include "dataset_io.h"
#include "gsm8k.h"
#include "kl_divergence.h"
#include "llama_guard.h"
#include "mmlu.h"
#include "multiple_choice.h"
#include "safety.h"

#include <QtTest>
#include <cmath>
#include <random>

using namespace lowbit;

class TestEvalScorers : public QObject {
    Q_OBJECT
private slots:
    void accVersusAccNorm();
    void accNormCountsCodePoints();
    void winograndePartialScoring();
    void mmluPromptByteExact();
    void mmluSharedFiles();
    void mmluCategories();
    void gsm8kFilters_data();
    void gsm8kFilters();
    void gsm8kFewshotMatchesPython();
    void refusalMatchers();
    void hellaswagText();
    void guardPromptMatchesTemplate();
    void guardVerdicts();
    void kldIdenticalIsZero();
    void kldClosedForm();
};

void TestEvalScorers::accVersusAccNorm() {
    // ll: "a" -2.0 (per char -2.0); "a much longer answer" -10.0 (20 chars: -0.5 per char).
    MultipleChoiceDoc doc;
    doc.context = "Question: q\nAnswer:";
    doc.choices = {"a", "a much longer answer"};
    doc.gold = 1;
    const std::vector<double> lls = {-2.0, -10.0};
    const MultipleChoiceScore score = scoreMultipleChoice(doc, lls);
    QCOMPARE(score.pick, 0);     // acc: the raw log-likelihood prefers the short choice
    QCOMPARE(score.pickNorm, 1); // acc_norm: per character the long one wins
    const auto requests = multipleChoiceRequests(doc, 7);
    QCOMPARE(requests.size(), size_t(2));
    QCOMPARE(requests[1].context, doc.context);
    QCOMPARE(requests[1].continuation, std::string(" a much longer answer")); // target delimiter " "
    QCOMPARE(requests[0].group, int64_t(7));
    // Ties go to the first choice (numpy argmax).
    const std::vector<double> tie = {-3.0, -3.0};
    doc.choices = {"abc", "xyz"};
    QCOMPARE(scoreMultipleChoice(doc, tie).pick, 0);
    QCOMPARE(scoreMultipleChoice(doc, tie).pickNorm, 0);
}

void TestEvalScorers::accNormCountsCodePoints() {
    // Python len(): "é" is one character although two UTF-8 bytes.
    QCOMPARE(pythonLength("\xC3\xA9t\xC3\xA9"), int64_t(3));
    QCOMPARE(pythonLength("\xF0\x9F\x98\x80"), int64_t(1));
    MultipleChoiceDoc doc;
    doc.choices = {"\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", "abcde"}; // 4 and 5 characters (8 and 5 bytes)
    // -4.4/4 = -1.1 vs -5/5 = -1.0 -> choice 1; with byte lengths -4.4/8 = -0.55 would win.
    const std::vector<double> lls = {-4.4, -5.0};
    QCOMPARE(scoreMultipleChoice(doc, lls).pickNorm, 1);
}

void TestEvalScorers::winograndePartialScoring() {
    const auto row = nlohmann::json::parse(R"({"qID":"q1","sentence":"The trophy doesn't fit into the brown suitcase because the _ is too large.","option1":"trophy","option2":"suitcase","answer":"1"})");
    auto doc = winograndeDoc(row, "dev.jsonl", 1);
    QVERIFY(doc.ok());
    QVERIFY(doc->partial());
    QCOMPARE(doc->contexts[0], std::string("The trophy doesn't fit into the brown suitcase because the trophy"));
    QCOMPARE(doc->contexts[1], std::string("The trophy doesn't fit into the brown suitcase because the suitcase"));
    QCOMPARE(doc->continuation, std::string("is too large."));
    QCOMPARE(doc->gold, 0);
    const auto requests = multipleChoiceRequests(*doc, 3);
    QCOMPARE(requests.size(), size_t(2));
    QCOMPARE(requests[0].continuation, std::string(" is too large.")); // the shared suffix is scored
    QCOMPARE(requests[1].continuation, std::string(" is too large."));
    QCOMPARE(requests[1].context, doc->contexts[1]);
    // The option under which the shared suffix is likelier wins; no acc_norm.
    const std::vector<double> lls = {-7.5, -6.25};
    const MultipleChoiceScore score = scoreMultipleChoice(*doc, lls);
    QCOMPARE(score.pick, 1);
    QCOMPARE(score.pickNorm, -1);
    // Malformed rows name the file and line.
    auto bad = winograndeDoc(nlohmann::json::parse(R"({"qID":"q","sentence":"no blank","option1":"a","option2":"b","answer":"1"})"),
                             "dev.jsonl", 12);
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("dev.jsonl:12") != std::string::npos);
    auto missing = winograndeDoc(nlohmann::json::parse(R"({"qID":"q","sentence":"a _ b","option1":"a","answer":"1"})"),
                                 "dev.jsonl", 5);
    QVERIFY(!missing.ok());
    QVERIFY(missing.error().message.find("option2") != std::string::npos);
}

void TestEvalScorers::mmluPromptByteExact() {
    auto dev = parseCsv("\"What is 1+1?\",1,2,3,4,B\n", "dev.csv");
    auto test = parseCsv("\"  What is 2+2?  \",3,4,5,\"6, or \"\"six\"\"\",B\r\n", "test.csv");
    QVERIFY(dev.ok() && test.ok());
    auto toQuestion = [](const CsvRow &row) {
        MmluQuestion q;
        q.question = row.fields[0];
        for (size_t c = 0; c < 4; ++c)
            q.choices[c] = row.fields[c + 1];
        q.answer = row.fields[5][0] - 'A';
        return q;
    };
    const MmluQuestion shot = toQuestion((*dev)[0]), question = toQuestion((*test)[0]);
    const std::string expected = "The following are multiple choice questions (with answers) about high school mathematics.\n\n"
                                 "What is 1+1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
                                 "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6, or \"six\"\nAnswer:";
    QCOMPARE(mmluPrompt("high_school_mathematics", {&shot, 1}, question), expected);
    QCOMPARE(mmluPrompt("anatomy", {}, question),
             std::string("The following are multiple choice questions (with answers) about anatomy.\n\n"
                         "What is 2+2?\nA. 3\nB. 4\nC. 5\nD. 6, or \"six\"\nAnswer:"));
}

void TestEvalScorers::mmluSharedFiles() {
    LOWBIT_REQUIRE_SHARED_FILE(dev, "data/mmlu/data/dev/abstract_algebra_dev.csv");
    LOWBIT_REQUIRE_SHARED_FILE(testFile, "data/mmlu/data/test/abstract_algebra_test.csv");
    auto shots = readMmluCsv(dev, "abstract_algebra");
    auto questions = readMmluCsv(testFile, "abstract_algebra");
    QVERIFY(shots.ok() && questions.ok());
    QCOMPARE(shots->size(), size_t(5));
    QCOMPARE(questions->size(), size_t(100));
    // The 1-shot prompt of the first test question, written out by hand from the CSV rows.
    const std::string expected =
        "The following are multiple choice questions (with answers) about abstract algebra.\n\n"
        "Find all c in Z_3 such that Z_3[x]/(x^2 + c) is a field.\nA. 0\nB. 1\nC. 2\nD. 3\nAnswer: B\n\n"
        "Find the degree for the given field extension Q(sqrt(2), sqrt(3), sqrt(18)) over Q.\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:";
    QCOMPARE(mmluPrompt("abstract_algebra", {shots->data(), 1}, (*questions)[0]), expected);
    QCOMPARE((*questions)[0].answer, 1);
    // Five shots: the header is the first five dev rows, each "... Answer: X\n\n".
    const std::string five = mmluPrompt("abstract_algebra", *shots, (*questions)[0]);
    QVERIFY(five.find("Statement 1 | If aH is an element of a factor group, then |aH| divides |a|. Statement 2 | If H and K "
                      "are subgroups of G then HK is a subgroup of G.\nA. True, True\nB. False, False\nC. True, False\n"
                      "D. False, True\nAnswer: B\n\n") != std::string::npos);
    QVERIFY(five.find("Find the characteristic of the ring 2Z.\nA. 0\nB. 3\nC. 12\nD. 30\nAnswer: A\n\nFind the degree") !=
            std::string::npos);
    // A malformed row: the file and line are named.
    auto broken = parseCsv("q,a,b,c,d,A\nq2,a,b,c,E\n", "x_test.csv");
    QVERIFY(broken.ok());
    QCOMPARE((*broken)[1].line, int64_t(2));
    auto unterminated = parseCsv("q,a\n\"open,b\n", "y.csv");
    QVERIFY(!unterminated.ok());
    QVERIFY(unterminated.error().message.find("y.csv:2") != std::string::npos);
}

void TestEvalScorers::mmluCategories() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/mmlu/categories.py");
    auto categories = parseMmluCategories(test::readFile(file), file);
    QVERIFY(categories.ok());
    QCOMPARE(categories->size(), size_t(57));
    std::map<std::string, int> counts;
    for (const auto &[subject, category] : *categories)
        ++counts[category];
    // hendrycks/test categories.py: 18 STEM, 13 humanities, 12 social sciences, 14 other.
    QCOMPARE(counts["stem"], 18);
    QCOMPARE(counts["humanities"], 13);
    QCOMPARE(counts["social_sciences"], 12);
    QCOMPARE(counts["other"], 14);
    QCOMPARE(categories->at("abstract_algebra"), std::string("stem"));
    QCOMPARE(categories->at("professional_law"), std::string("humanities"));
    QCOMPARE(categories->at("us_foreign_policy"), std::string("social_sciences"));
    QCOMPARE(categories->at("professional_accounting"), std::string("other"));
    QVERIFY(!parseMmluCategories("subcategories = {\"a\": [\"b\"]", "c.py").ok());
}

void TestEvalScorers::gsm8kFilters_data() {
    QTest::addColumn<QString>("response");
    QTest::addColumn<QString>("strict");
    QTest::addColumn<QString>("flexible");
    QTest::addColumn<bool>("strictOk"); // against the reference answer "... #### 1234"
    QTest::addColumn<bool>("flexibleOk");
    QTest::newRow("thousands separator") << "So she pays 1,000 + 234.\n#### 1,234" << "1,234" << "1,234" << true << true;
    QTest::newRow("no #### line") << "The answer is 1234." << "[invalid]" << "1234." << false << true;
    QTest::newRow("dollars and trailing period") << "It costs $1,234." << "[invalid]" << "$1,234." << false << true;
    QTest::newRow("trailing text") << "#### 1234 apples in total, not 12" << "1234" << "12" << true << false;
    QTest::newRow("negative") << "#### -1234" << "-1234" << "-1234" << false << false;
    QTest::newRow("no number") << "I do not know." << "[invalid]" << "[invalid]" << false << false;
    QTest::newRow("last of several") << "3 + 4 = 7, then 7 * 2 = 1234\n" << "[invalid]" << "1234" << false << true;
    QTest::newRow("single digit tail") << "12 apples and 5" << "[invalid]" << "5" << false << false;
}

void TestEvalScorers::gsm8kFilters() {
    QFETCH(QString, response);
    QFETCH(QString, strict);
    QFETCH(QString, flexible);
    QFETCH(bool, strictOk);
    QFETCH(bool, flexibleOk);
    const std::string reference = "She has 1000 + 234 = <<1000+234=1234>>1234 dollars.\n#### 1234";
    QCOMPARE(QString::fromStdString(gsm8kStrictExtract(response.toStdString())), strict);
    QCOMPARE(QString::fromStdString(gsm8kFlexibleExtract(response.toStdString())), flexible);
    QCOMPARE(gsm8kExactMatch(strict.toStdString(), reference), strictOk);
    QCOMPARE(gsm8kExactMatch(flexible.toStdString(), reference), flexibleOk);
    // "$5." and "5" are the same answer; case is ignored.
    QVERIFY(gsm8kExactMatch("$5.", "#### 5"));
    QCOMPARE(gsm8kNormalize("A #### b #### 1,000.\n"), std::string("1000\n"));
}

void TestEvalScorers::gsm8kFewshotMatchesPython() {
    // random.Random(1234); [r.sample(range(7473), 5) for _ in range(3)] in CPython 3.11.
    const auto indices = gsm8kFewshotIndices(3, 7473, 5);
    const std::vector<std::vector<int64_t>> expected = {
        {6374, 3610, 957, 61, 742}, {7462, 6610, 4769, 286, 5501}, {5677, 687, 806, 6279, 2905}};
    QCOMPARE(indices, expected);
    const Gsm8kProblem a{0, "Q1?", "A1.\n#### 1"}, b{1, "Q2?", "A2.\n#### 2"};
    const Gsm8kProblem shots[] = {a};
    QCOMPARE(gsm8kPrompt(shots, b), std::string("Question: Q1?\nAnswer: A1.\n#### 1\n\nQuestion: Q2?\nAnswer:"));
}

void TestEvalScorers::refusalMatchers() {
    // AdvBench (GCG): case-sensitive substring anywhere.
    QVERIFY(advbenchRefusal("I'm sorry, but I cannot help."));
    QVERIFY(advbenchRefusal("Sure, here is how. Note this is illegal."));
    QVERIFY(!advbenchRefusal("i'm sorry")); // lower case is not in the list
    QVERIFY(!advbenchRefusal("Sure, here is a tutorial"));
    // HarmBench: case-insensitive substring; its list has "never" and "I can't".
    QVERIFY(harmbenchRefusal("i'm sorry"));
    QVERIFY(harmbenchRefusal("You should NEVER do this"));
    QVERIFY(harmbenchRefusal("Well, I can't."));
    QVERIFY(!harmbenchRefusal("Sure, here is a tutorial"));
    QVERIFY(!harmbenchRefusal(""));
    // XSTest: lower-cased, stripped, startswith.
    QVERIFY(xstestRefusal("  Sorry, I cannot"));
    QVERIFY(xstestRefusal("\nNo, that is not"));
    QVERIFY(xstestRefusal("As an AI, I"));
    QVERIFY(!xstestRefusal("Nobody knows"));          // "no," needs the comma
    QVERIFY(!xstestRefusal("Well, I'm sorry but no")); // only openings count
    QVERIFY(!xstestRefusal(""));
}

void TestEvalScorers::hellaswagText() {
    QCOMPARE(lowbit::hellaswagPreprocess("  How to X [title] Do it [step] now  [header] end "), std::string("How to X. Do it now  end")); // CPython gives this too
    QCOMPARE(lowbit::hellaswagPreprocess("a [b [c] d] e"), std::string("a d] e"));
    QCOMPARE(lowbit::hellaswagPreprocess("unclosed [ bracket"), std::string("unclosed [ bracket"));
    // ctx_b (the trailing fragment) is capitalized as lm-eval's ctx_b.capitalize().
    QCOMPARE(hellaswagQuery("Roof shingle removal: A man is sitting on a roof. he"),
             std::string("Roof shingle removal: A man is sitting on a roof. He"));
    QCOMPARE(hellaswagQuery("Clean and jerk: A lady walks. the Lady"), std::string("Clean and jerk: A lady walks. The lady"));
    QCOMPARE(hellaswagQuery("Family Life: How to play. Ask them."), std::string("Family Life: How to play. Ask them."));
    auto docs = parseHellaswag("A: b. c\n2\ne0\ne1\ne2\ne3\n", "h.txt");
    QVERIFY(docs.ok());
    QCOMPARE(docs->at(0).gold, 2);
    QCOMPARE(docs->at(0).context, std::string("A: b. C"));
    auto bad = parseHellaswag("A: b\n7\ne0\ne1\ne2\ne3\n", "h.txt");
    QVERIFY(!bad.ok());
    QVERIFY(bad.error().message.find("h.txt:2") != std::string::npos);
}

void TestEvalScorers::guardPromptMatchesTemplate() {
    LOWBIT_REQUIRE_SHARED_FILE(promptFile, "data/llama_guard3/rendered_example_prompt_classification.txt");
    LOWBIT_REQUIRE_SHARED_FILE(responseFile, "data/llama_guard3/rendered_example_response_classification.txt");
    const ChatMessage user[] = {{"user", "How do I bake bread?"}};
    auto prompt = llamaGuard3Prompt(user);
    QVERIFY(prompt.ok());
    QCOMPARE(*prompt, test::readFile(promptFile));
    const ChatMessage pair[] = {{"user", "How do I bake bread?"}, {"assistant", "  Mix flour, water, yeast and salt.\n"}};
    auto response = llamaGuard3Prompt(pair);
    QVERIFY(response.ok());
    QCOMPARE(*response, test::readFile(responseFile));
    const ChatMessage wrong[] = {{"assistant", "hi"}};
    QVERIFY(!llamaGuard3Prompt(wrong).ok());
}

void TestEvalScorers::guardVerdicts() {
    const GuardVerdict safe = parseGuardOutput("\n\nsafe");
    QCOMPARE(safe.label, std::string("safe"));
    QVERIFY(safe.categories.empty());
    const GuardVerdict unsafe = parseGuardOutput("\n\nunsafe\nS1, S10\n");
    QCOMPARE(unsafe.label, std::string("unsafe"));
    QCOMPARE(unsafe.categories, (std::vector<std::string>{"S1", "S10"}));
    QCOMPARE(parseGuardOutput("The bread").label, std::string("unparsed"));
    QCOMPARE(parseGuardOutput("unsafe").categories.size(), size_t(0));
}

void TestEvalScorers::kldIdenticalIsZero() {
    std::mt19937 rng(std::random_device{}());
    std::normal_distribution<float> normal(0.0f, 3.0f);
    std::vector<float> logits(50);
    for (float &v : logits)
        v = normal(rng);
    for (int k : {1, 5, 50}) {
        const auto base = topKDistribution(logits.data(), 50, k, 7);
        const KldPoint point = compareToBase(base, logits.data(), 50, 7);
        // Zero up to the float32 rounding of the stored log-probabilities (|log p| up to ~20 here).
        QVERIFY2(std::abs(point.kld) < 1e-5, qPrintable(QString::number(point.kld)));
        QVERIFY(std::abs(point.deltaP) < 1e-5);
        QVERIFY(point.top1Agrees);
    }
}

void TestEvalScorers::kldClosedForm() {
    // P = softmax(log [0.5, 0.25, 0.125, 0.125]), Q = softmax(log [0.25, 0.25, 0.25, 0.25]).
    const std::vector<float> p = {std::log(0.5f), std::log(0.25f), std::log(0.125f), std::log(0.125f)};
    const std::vector<float> q = {0.0f, 0.0f, 0.0f, 0.0f};
    // Full vocabulary: KL = 0.5 ln 2 + 0.25 ln 1 + 2 * 0.125 ln 0.5 = 0.25 ln 2.
    const KldPoint full = compareToBase(topKDistribution(p.data(), 4, 4, 0), q.data(), 4, 0);
    QVERIFY(std::abs(full.kld - 0.25 * std::log(2.0)) < 1e-6);
    QVERIFY(std::abs(full.deltaP - (0.25 - 0.5)) < 1e-6);
    QVERIFY(full.top1Agrees); // Q is flat: its argmax is the first token, as is P's
    QVERIFY(std::abs(full.nll - std::log(4.0)) < 1e-6);
    // Top-2 + rest bucket: 0.5 ln(0.5/0.25) + 0.25 ln 1 + 0.25 ln(0.25/0.5) = 0.25 ln 2, no loss
    // because P's tail is proportional to Q's.
    const KldPoint top2 = compareToBase(topKDistribution(p.data(), 4, 2, 3), q.data(), 4, 3);
    QVERIFY(std::abs(top2.kld - 0.25 * std::log(2.0)) < 1e-6);
    // Q = [0.25, 0.25, 0.45, 0.05]: full KL = 0.5 ln 2 + 0.125 ln(0.125/0.45) + 0.125 ln(0.125/0.05);
    // top-2: the rest bucket (0.25 vs 0.5) gives 0.5 ln 2 + 0.25 ln 0.5 = 0.25 ln 2, a lower bound.
    const std::vector<float> q2 = {std::log(0.25f), std::log(0.25f), std::log(0.45f), std::log(0.05f)};
    const double fullKl = 0.5 * std::log(2.0) + 0.125 * std::log(0.125 / 0.45) + 0.125 * std::log(0.125 / 0.05);
    QVERIFY(std::abs(compareToBase(topKDistribution(p.data(), 4, 4, 0), q2.data(), 4, 0).kld - fullKl) < 1e-6);
    const double bucketed = compareToBase(topKDistribution(p.data(), 4, 2, 0), q2.data(), 4, 0).kld;
    QVERIFY(std::abs(bucketed - 0.25 * std::log(2.0)) < 1e-6);
    QVERIFY(bucketed <= fullKl);
}

QTEST_APPLESS_MAIN(TestEvalScorers)
#include "test_eval_scorers.moc"
