// --device on every command that runs a model (eval, ppl, logits, generate, run) and the job
// spec's "device", on stories260K: a GPU this build or machine lacks (here: cuda:0 without a
// driver or device; on a GPU machine an index past its devices) fails with a non-zero exit and
// cudaDeviceCount's reason, a malformed device is a usage error (exit 2), and nothing is stored:
// no run is created, and a stored run that names such a device fails before it writes a sample.
// --device cpu runs and reports the device. Subcommands are called as functions (lowbit_cli).
#include "cli_capture.h"
#include "cli_commands.h"

#include "backend/device.h"
#include "pipeline/run_executor.h"
#include "run_store.h"
#include "shared_data.h"
#include "task.h"
#include "temp_dir.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cstdio>

using namespace lowbit;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

using Output = test::CliOutput;

// A CUDA device this machine cannot give, and the words its refusal must contain.
struct Unavailable {
    std::string device;
    std::string reason;
};
Unavailable unavailableGpu() {
    std::string why;
    const int count = cudaDeviceCount(&why);
    if (count == 0)
        return {"cuda:0", why};
    return {"cuda:" + std::to_string(count), "no such device"};
}

using Command = int (*)(const std::vector<std::string> &);

} // namespace

class TestDeviceRefusals : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void commandsRefuseAnUnavailableGpu();
    void malformedDeviceIsAUsageError();
    void runStoresNothing();
    void storedRunNamingAnUnavailableGpuFails();
    void cpuRunsAndSaysSo();

private:
    struct Case {
        const char *name;
        Command command;
        std::vector<std::string> args;
    };
    std::vector<Case> cases(const std::string &device, const std::string &db) const;

    std::filesystem::path m_model, m_tokenizer, m_text;
};

void TestDeviceRefusals::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    m_model = model;
    m_tokenizer = tokenizer;
    m_text = text;
    qputenv("LOWBIT_DATA_DIR", test::sharedPath("data").c_str());
}

std::vector<TestDeviceRefusals::Case> TestDeviceRefusals::cases(const std::string &device,
                                                                const std::string &db) const {
    const std::string model = m_model.string(), tokenizer = m_tokenizer.string();
    return {
        {"eval",
         cli::runEval,
         {model, "--tokenizer", tokenizer, "--tasks", "tinystories", "--limit", "2", "--ctx", "64",
          "--device", device}},
        {"ppl",
         cli::runPerplexity,
         {model, "--tokenizer", tokenizer, "--text", m_text.string(), "--ctx", "64", "--chunks",
          "2", "--device", device}},
        {"logits", cli::runLogits, {model, "--tokens", "1,2,3", "--device", device}},
        {"generate",
         cli::runGenerate,
         {model, "--tokenizer", tokenizer, "-p", "Once", "-n", "4", "--device", device}},
        {"run",
         cli::runRun,
         {"--model", model, "--tokenizer", tokenizer, "--tasks", "tinystories", "--limit", "2",
          "--ctx", "64", "--device", device, "--db", db}},
    };
}

void TestDeviceRefusals::commandsRefuseAnUnavailableGpu() {
    TempDir dir;
    const Unavailable gpu = unavailableGpu();
    for (const Case &c : cases(gpu.device, (dir / "runs.sqlite").string())) {
        const Output out = test::runCli(c.command, c.args, dir.path());
        QVERIFY2(out.code != 0, c.name);
        QVERIFY2(out.err.find(gpu.device) != std::string::npos,
                 (c.name + (": " + out.err)).c_str());
        QVERIFY2(out.err.find(gpu.reason) != std::string::npos,
                 (c.name + (": " + out.err)).c_str());
        QVERIFY2(out.out.empty(), c.name); // no partial results
    }
}

void TestDeviceRefusals::malformedDeviceIsAUsageError() {
    TempDir dir;
    for (const char *bad : {"gpu", "cuda:x", "cuda:-1"})
        for (const Case &c : cases(bad, (dir / "runs.sqlite").string())) {
            const Output out = test::runCli(c.command, c.args, dir.path());
            QVERIFY2(out.code == 2, (c.name + (": " + out.err)).c_str());
            QVERIFY2(out.err.find("cuda:N") != std::string::npos,
                     (c.name + (": " + out.err)).c_str());
        }
}

// The run command and the pipeline refuse before a run exists: the database, if created at all,
// holds no run; a spec file naming the device is refused the same way.
void TestDeviceRefusals::runStoresNothing() {
    TempDir dir;
    const Unavailable gpu = unavailableGpu();
    const auto db = dir / "runs.sqlite";
    const json spec = {{"checkpoint", m_model.string()},
                       {"tokenizer", m_tokenizer.string()},
                       {"method", {{"name", "none"}}},
                       {"tasks", {{{"name", "tinystories"}, {"limit", 2}, {"context", 64}}}},
                       {"device", gpu.device}};
    const auto specPath = dir / "spec.json";
    {
        std::FILE *f = std::fopen(specPath.c_str(), "w");
        QVERIFY(f);
        const std::string text = spec.dump();
        std::fwrite(text.data(), 1, text.size(), f);
        std::fclose(f);
    }
    const Output out =
        test::runCli(cli::runRun, {specPath.string(), "--db", db.string()}, dir.path());
    QVERIFY(out.code != 0);
    QVERIFY2(out.err.find(gpu.reason) != std::string::npos, out.err.c_str());
    auto parsed = parseJobSpec(spec);
    QVERIFY(parsed.ok());
    RunStore store = RunStore::open(db).value();
    PipelineContext context;
    context.makeTask = [](const std::string &name) { return makeTask(name, defaultDataDir()); };
    auto submission = submitJob(store, *parsed, context);
    QVERIFY(!submission.ok());
    QCOMPARE(submission.error().code, ErrorCode::Unsupported);
    QVERIFY2(submission.error().message.find("spec.device: " + gpu.device + " is not available") !=
                 std::string::npos,
             submission.error().message.c_str());
    QVERIFY(store.listRuns()->empty());
}

// A run stored elsewhere (a GPU host) and executed here: it fails at its first step, with the
// reason, before any sample or metric is written.
void TestDeviceRefusals::storedRunNamingAnUnavailableGpuFails() {
    TempDir dir;
    const Unavailable gpu = unavailableGpu();
    RunStore store = RunStore::open(dir / "runs.sqlite").value();
    JobSpec spec;
    spec.checkpoint = m_model;
    spec.tokenizer = m_tokenizer;
    spec.tasks = {{"tinystories", 2, -1, 64, 1, json::object()}};
    NewRun run;
    run.spec = toJson(spec);
    run.spec["device"] = gpu.device;
    run.model = m_model.string();
    run.checkpointHash = "0123456789abcdef";
    run.method = "none";
    run.methodKey = methodKey(spec.method);
    run.device = gpu.device;
    run.tasks.push_back({"tinystories", taskKey(spec, spec.tasks[0]), toJson(spec.tasks[0])});
    const int64_t id = store.createRun(run).value();
    PipelineContext context;
    context.makeTask = [](const std::string &name) { return makeTask(name, defaultDataDir()); };
    NullProgress progress;
    auto outcome = executeRun(store, id, context, progress);
    QVERIFY(outcome.ok());
    QCOMPARE(outcome->status, RunStatus::Failed);
    QVERIFY2(outcome->error.find(gpu.reason) != std::string::npos, outcome->error.c_str());
    QVERIFY(store.samples(id, "tinystories")->empty());
    QVERIFY(store.metrics(id)->empty());
    QCOMPARE(store.run(id)->device, gpu.device);
}

void TestDeviceRefusals::cpuRunsAndSaysSo() {
    TempDir dir;
    const Output ppl = test::runCli(cli::runPerplexity,
                                    {m_model.string(), "--tokenizer", m_tokenizer.string(),
                                     "--text", m_text.string(), "--ctx", "64", "--chunks", "2",
                                     "--threads", "1", "--device", "cpu", "--json"},
                                    dir.path());
    QVERIFY2(ppl.code == 0, ppl.err.c_str());
    const json result = json::parse(ppl.out);
    QCOMPARE(result["device"].get<std::string>(), std::string("cpu"));
    QVERIFY(result["ppl"].get<double>() > 1);
    const Output eval =
        test::runCli(cli::runEval,
                     {m_model.string(), "--tokenizer", m_tokenizer.string(), "--tasks",
                      "tinystories", "--limit", "2", "--ctx", "64", "--threads", "1", "--json"},
                     dir.path());
    QVERIFY2(eval.code == 0, eval.err.c_str());
    QCOMPARE(json::parse(eval.out)["device"].get<std::string>(), std::string("cpu"));
}

QTEST_APPLESS_MAIN(TestDeviceRefusals)
#include "test_device_refusals.moc"
