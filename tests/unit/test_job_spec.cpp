// Job spec: parsing, defaults, canonical form and keys, and one rejection per kind of bad field,
// each message naming the field.
#include "backend/device.h"
#include "pipeline/job_spec.h"

#include <QtTest>

using namespace lowbit;
using nlohmann::json;

namespace {

json minimal() {
    return {{"version", 1},
            {"checkpoint", "/models/m.bin"},
            {"method", {{"name", "none"}}},
            {"tasks", json::array({"tinystories"})}};
}

// The error message of parsing `spec`, or "" when it parsed.
std::string errorOf(const json &spec) {
    auto parsed = parseJobSpec(spec);
    return parsed.ok() ? std::string() : parsed.error().message;
}

} // namespace

class TestJobSpec : public QObject {
    Q_OBJECT
private slots:
    void minimalSpecGetsDefaults();
    void fullSpecRoundTrips();
    void relativePathsBecomeAbsolute();
    void keysIgnoreFieldOrderAndDefaults();
    void rejections_data();
    void rejections();
};

void TestJobSpec::minimalSpecGetsDefaults() {
    auto spec = parseJobSpec(minimal());
    QVERIFY2(spec.ok(), spec.ok() ? "" : spec.error().message.c_str());
    QCOMPARE(spec->checkpoint.string(), std::string("/models/m.bin"));
    QVERIFY(spec->method.isNone());
    QCOMPARE(spec->tasks.size(), size_t(1));
    QCOMPARE(spec->tasks[0].name, std::string("tinystories"));
    QCOMPARE(spec->tasks[0].limit, int64_t(0));
    QCOMPARE(spec->tasks[0].shots, -1);
    QCOMPARE(spec->tasks[0].batchSize, 1);
    QCOMPARE(spec->device, std::string("cpu"));
    QCOMPARE(spec->threads, 0);
    QCOMPARE(spec->seed, uint64_t(0));
}

void TestJobSpec::fullSpecRoundTrips() {
    const json full = {
        {"version", 1},
        {"checkpoint", "/m"},
        {"tokenizer", "/t.bin"},
        {"method",
         {{"name", "gptq"},
          {"bits", 3},
          {"group_size", 128},
          {"symmetric", true},
          {"layers", "0-3,q"},
          {"calibration", {{"dataset", "c4"}, {"samples", 16}, {"tokens", 512}, {"seed", 7}}},
          {"options", {{"damp", 0.01}}}}},
        {"tasks",
         {{{"name", "wikitext2"}, {"limit", 40}, {"context", 2048}, {"batch_size", 4}},
          {{"name", "arc_easy"}, {"shots", 0}, {"options", {{"mode", "acc_norm"}}}}}},
        {"device", "cuda:1"},
        {"threads", 8},
        {"seed", 1234}};
    auto spec = parseJobSpec(full);
    QVERIFY2(spec.ok(), spec.ok() ? "" : spec.error().message.c_str());
    QCOMPARE(spec->method.bits, 3);
    QCOMPARE(spec->method.groupSize, int64_t(128));
    QVERIFY(spec->method.symmetric);
    QCOMPARE(spec->method.calibration->samples, int64_t(16));
    QCOMPARE(spec->method.calibration->seed, uint64_t(7));
    QCOMPARE(spec->tasks[0].contextTokens, int64_t(2048));
    QCOMPARE(spec->tasks[1].options["mode"].get<std::string>(), std::string("acc_norm"));
    QCOMPARE(parseDevice(spec->device)->index, 1);
    QVERIFY(parseDevice(spec->device)->isCuda());
    // Canonical JSON parses back to the same canonical JSON.
    auto again = parseJobSpec(toJson(*spec));
    QVERIFY(again.ok());
    QCOMPARE(toJson(*again).dump(), toJson(*spec).dump());
    // A calibration without a dataset (the quantizer's default) round-trips too.
    json noDataset = full;
    noDataset["method"]["calibration"].erase("dataset");
    auto parsedNoDataset = parseJobSpec(noDataset);
    QVERIFY(parsedNoDataset.ok());
    QVERIFY(parseJobSpec(toJson(*parsedNoDataset)).ok());
    QVERIFY(parsedNoDataset->method.calibration->dataset.empty());
    const TaskOptions options = taskOptions(*spec, spec->tasks[0]);
    QCOMPARE(options.limit, int64_t(40));
    QCOMPARE(options.seed, uint64_t(1234));
    QCOMPARE(options.batchSize, 4);
}

void TestJobSpec::relativePathsBecomeAbsolute() {
    json spec = minimal();
    spec["checkpoint"] = "models/m.bin";
    spec["tasks"] = json::array({"text:data/x.txt"});
    auto parsed = parseJobSpec(spec);
    QVERIFY(parsed.ok());
    QVERIFY(parsed->checkpoint.is_absolute());
    QCOMPARE(parsed->tasks[0].name,
             "text:" + (std::filesystem::current_path() / "data/x.txt").string());
}

void TestJobSpec::keysIgnoreFieldOrderAndDefaults() {
    json a = minimal();
    a["method"] = {{"name", "rtn"}, {"bits", 4}, {"group_size", -1}};
    json b = minimal();
    b["method"] = {{"group_size", 0}, {"symmetric", false}, {"bits", 4}, {"name", "rtn"}};
    auto specA = parseJobSpec(a), specB = parseJobSpec(b);
    QVERIFY(specA.ok() && specB.ok());
    QCOMPARE(methodKey(specA->method), methodKey(specB->method));
    json c = b;
    c["method"]["bits"] = 3;
    QVERIFY(methodKey(parseJobSpec(c)->method) != methodKey(specA->method));
    // The job seed picks a task's subsample, so it is part of the task key.
    json d = minimal();
    d["seed"] = 5;
    auto specD = parseJobSpec(d);
    auto specM = parseJobSpec(minimal());
    QVERIFY(taskKey(*specD, specD->tasks[0]) != taskKey(*specM, specM->tasks[0]));
}

void TestJobSpec::rejections_data() {
    QTest::addColumn<QByteArray>("patch"); // JSON merge patch applied to minimal()
    QTest::addColumn<QString>("field");    // what the message must name
    QTest::newRow("newer version") << QByteArray(R"({"version": 2})") << "spec.version";
    QTest::newRow("no checkpoint") << QByteArray(R"({"checkpoint": null})") << "spec.checkpoint";
    QTest::newRow("checkpoint not a string")
        << QByteArray(R"({"checkpoint": 3})") << "spec.checkpoint";
    QTest::newRow("no method") << QByteArray(R"({"method": null})") << "spec.method";
    QTest::newRow("bits too high")
        << QByteArray(R"({"method": {"name": "gptq", "bits": 9}})") << "spec.method.bits";
    QTest::newRow("bits zero") << QByteArray(R"({"method": {"name": "gptq", "bits": 0}})")
                               << "spec.method.bits";
    QTest::newRow("bits missing") << QByteArray(R"({"method": {"name": "gptq"}})")
                                  << "spec.method.bits";
    QTest::newRow("bits as text") << QByteArray(R"({"method": {"name": "rtn", "bits": "4"}})")
                                  << "spec.method.bits";
    QTest::newRow("group negative")
        << QByteArray(R"({"method": {"name": "rtn", "bits": 4, "group_size": -2}})")
        << "spec.method.group_size";
    QTest::newRow("symmetric not bool")
        << QByteArray(R"({"method": {"name": "rtn", "bits": 4, "symmetric": 1}})")
        << "spec.method.symmetric";
    QTest::newRow("calibration samples")
        << QByteArray(R"({"method": {"name": "gptq", "bits": 4, "calibration": {"samples": 0}}})")
        << "spec.method.calibration.samples";
    QTest::newRow("calibration typo")
        << QByteArray(R"({"method": {"name": "gptq", "bits": 4, "calibration": {"sampels": 4}}})")
        << "spec.method.calibration.sampels";
    QTest::newRow("bits with none")
        << QByteArray(R"({"method": {"name": "none", "bits": 4}})") << "spec.method.bits";
    QTest::newRow("method name") << QByteArray(R"({"method": {"name": "GPTQ!"}})")
                                 << "spec.method.name";
    QTest::newRow("no tasks") << QByteArray(R"({"tasks": []})") << "spec.tasks";
    QTest::newRow("negative limit")
        << QByteArray(R"({"tasks": [{"name": "arc_easy", "limit": -3}]})") << "spec.tasks[0].limit";
    QTest::newRow("shots") << QByteArray(R"({"tasks": ["x", {"name": "mmlu", "shots": -2}]})")
                           << "spec.tasks[1].shots";
    QTest::newRow("batch zero") << QByteArray(R"({"tasks": [{"name": "x", "batch_size": 0}]})")
                                << "spec.tasks[0].batch_size";
    QTest::newRow("task twice") << QByteArray(R"({"tasks": ["x", "x"]})") << "spec.tasks[1].name";
    QTest::newRow("empty text path")
        << QByteArray(R"({"tasks": ["text:"]})") << "spec.tasks[0].name";
    QTest::newRow("task options") << QByteArray(R"({"tasks": [{"name": "x", "options": 3}]})")
                                  << "spec.tasks[0].options";
    QTest::newRow("device") << QByteArray(R"({"device": "tpu"})") << "spec.device";
    QTest::newRow("threads") << QByteArray(R"({"threads": -1})") << "spec.threads";
    QTest::newRow("seed") << QByteArray(R"({"seed": 1.5})") << "spec.seed";
    QTest::newRow("unknown top field") << QByteArray(R"({"chekpoint": "/m"})") << "spec.chekpoint";
}

void TestJobSpec::rejections() {
    QFETCH(QByteArray, patch);
    QFETCH(QString, field);
    json spec = minimal();
    spec.merge_patch(json::parse(patch.toStdString()));
    const std::string message = errorOf(spec);
    QVERIFY2(!message.empty(), "accepted");
    QVERIFY2(message.rfind(field.toStdString() + ":", 0) == 0, message.c_str());
}

QTEST_APPLESS_MAIN(TestJobSpec)
#include "test_job_spec.moc"
