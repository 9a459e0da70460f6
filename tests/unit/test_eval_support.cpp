// The evaluators' support code against independent references: CPython's random module (values
// printed by CPython 3.11), lm-eval's mean_stderr by hand, the --limit subsample, the data readers'
// errors (file:line), and the task registry.
#include "shared_data.h"

#include "dataset_io.h"
#include "python_random.h"
#include "task.h"
#include "task_support.h"

#include <QtTest>
#include <cmath>
#include <fstream>

using namespace lowbit;

class TestEvalSupport : public QObject {
    Q_OBJECT
private slots:
    void pythonRandomMatchesCPython();
    void subsampleIsSeededAndSorted();
    void meanStderr();
    void bootstrapOfAMean();
    void csvQuotingAndLines();
    void jsonLinesErrorsNameTheLine();
    void bzip2Reader();
    void registry();
};

void TestEvalSupport::pythonRandomMatchesCPython() {
    // r = random.Random(0); [r.randint(0, 1999) for _ in range(5)], r.getrandbits(40), r.random()
    PythonRandom r(0);
    std::vector<int64_t> ints;
    for (int i = 0; i < 5; ++i)
        ints.push_back(r.randint(0, 1999));
    QCOMPARE(ints, (std::vector<int64_t>{1729, 788, 1552, 1823, 861}));
    QCOMPARE(r.getrandbits(40), uint64_t(283641720628));
    QCOMPARE(r.random(), 0.9654648863619172);
    // r = random.Random(2**40 + 5): a two-word seed; sample() by pool (n=10) and by set (n=100).
    PythonRandom big((uint64_t(1) << 40) + 5);
    QCOMPARE(big.sample(10, 4), (std::vector<int64_t>{8, 9, 4, 5}));
    QCOMPARE(big.sample(100, 10), (std::vector<int64_t>{3, 67, 97, 5, 21, 10, 17, 30, 83, 87}));
}

void TestEvalSupport::subsampleIsSeededAndSorted() {
    QCOMPARE(subsampleIndices(5, 0, 1), (std::vector<int64_t>{0, 1, 2, 3, 4}));
    QCOMPARE(subsampleIndices(5, 9, 1), (std::vector<int64_t>{0, 1, 2, 3, 4}));
    // sorted(random.Random(2**40 + 5).sample(range(10), 4))
    QCOMPARE(subsampleIndices(10, 4, (uint64_t(1) << 40) + 5), (std::vector<int64_t>{4, 5, 8, 9}));
    QCOMPARE(subsampleIndices(1000, 20, 7), subsampleIndices(1000, 20, 7));
    QVERIFY(subsampleIndices(1000, 20, 7) != subsampleIndices(1000, 20, 8));
}

void TestEvalSupport::meanStderr() {
    // [1, 0, 1, 1]: mean 0.75, sample variance 0.25, stderr sqrt(0.25)/sqrt(4) = 0.25.
    const std::vector<double> values = {1, 0, 1, 1};
    const MetricValue m = meanMetric("acc", values);
    QCOMPARE(m.value, 0.75);
    QVERIFY(std::abs(m.stderr_ - 0.25) < 1e-12);
    QCOMPARE(m.n, int64_t(4));
    QCOMPARE(meanMetric("x", std::vector<double>{3.0}).stderr_, 0.0);
}

void TestEvalSupport::bootstrapOfAMean() {
    // The bootstrap spread of a mean approaches the population std / sqrt(n).
    std::vector<double> values;
    for (int i = 0; i < 400; ++i)
        values.push_back(double(i % 2));
    const double spread = bootstrapStderr(400, [&](std::span<const int64_t> pick) {
        double sum = 0;
        for (int64_t i : pick)
            sum += values[size_t(i)];
        return sum / double(pick.size());
    }, 2000, 5);
    QVERIFY2(std::abs(spread - 0.5 / std::sqrt(400.0)) < 0.003, qPrintable(QString::number(spread)));
}

void TestEvalSupport::csvQuotingAndLines() {
    auto rows = parseCsv("a,\"b,\"\"c\"\"\",d\r\n\r\n\"multi\nline\",x,\n", "t.csv");
    QVERIFY(rows.ok());
    QCOMPARE(rows->size(), size_t(2));
    QCOMPARE((*rows)[0].fields, (std::vector<std::string>{"a", "b,\"c\"", "d"}));
    QCOMPARE((*rows)[1].line, int64_t(3));
    QCOMPARE((*rows)[1].fields, (std::vector<std::string>{"multi\nline", "x", ""}));
    auto junk = parseCsv("ok\n\"quoted\"junk,1\n", "t.csv");
    QVERIFY(!junk.ok());
    QVERIFY(junk.error().message.find("t.csv:2") != std::string::npos);
}

void TestEvalSupport::jsonLinesErrorsNameTheLine() {
    const auto path = std::filesystem::temp_directory_path() / "lowbit_eval_support.jsonl";
    {
        std::ofstream out(path);
        out << "{\"a\": 1}\n\n{\"a\": 2}\n{broken\n";
    }
    auto rows = readJsonLines(path);
    QVERIFY(!rows.ok());
    QVERIFY2(rows.error().message.find(path.string() + ":4") != std::string::npos, rows.error().message.c_str());
    auto field = jsonString(nlohmann::json::parse("{\"a\": 1}"), "a", path, 3);
    QVERIFY(!field.ok());
    QVERIFY(field.error().message.find(":3: field 'a' is not a string") != std::string::npos);
    std::filesystem::remove(path);
    QVERIFY(!readJsonLines(path).ok()); // missing file
}

void TestEvalSupport::bzip2Reader() {
    LOWBIT_REQUIRE_SHARED_FILE(file, "data/hellaswag/hellaswag_val_full.txt.bz2");
    auto text = readBzip2File(file);
    if (!text.ok() && text.error().code == ErrorCode::Unsupported)
        QSKIP("built without libbz2");
    QVERIFY(text.ok());
    // SOURCES.md: 7770677 bytes, 60252 lines.
    QCOMPARE(text->size(), size_t(7770677));
    QCOMPARE(std::count(text->begin(), text->end(), '\n'), long(60252));
    QVERIFY(text->rfind("Roof shingle removal: A man is sitting on a roof. he\n3\n", 0) == 0);
    // A truncated stream is an error, not a crash.
    const auto cut = std::filesystem::temp_directory_path() / "lowbit_cut.bz2";
    {
        const std::string packed = test::readFile(file);
        std::ofstream(cut, std::ios::binary).write(packed.data(), 5000);
    }
    QVERIFY(!readBzip2File(cut).ok());
    std::filesystem::remove(cut);
}

void TestEvalSupport::registry() {
    const auto dir = test::sharedPath("data");
    for (const char *name : {"wikitext2", "c4", "ptb", "tinystories", "text:/tmp/x.txt", "kld", "kld:c4", "piqa",
                             "arc_easy", "arc_challenge", "hellaswag", "winogrande", "mmlu", "gsm8k", "advbench",
                             "harmbench", "xstest"}) {
        auto task = makeTask(name, dir);
        QVERIFY2(task.ok(), name);
        QCOMPARE((*task)->name(), std::string(name));
    }
    QVERIFY(!makeTask("nope", dir).ok());
    QVERIFY(!makeTask("kld:nope", dir).ok());
    const auto tasks = listTasks(dir);
    QVERIFY(tasks.size() >= 16);
    const auto missing = listTasks("/nonexistent");
    for (const TaskInfo &info : missing)
        if (!info.dataFiles.empty())
            QVERIFY2(!info.dataFound, info.name.c_str());
}

QTEST_APPLESS_MAIN(TestEvalSupport)
#include "test_eval_support.moc"
