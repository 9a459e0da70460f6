// QuantizeOptions::device on any machine (the GPU agreement is test_cuda_quantize_stories260k):
// a CUDA device that this machine does not have fails before any work, with cudaDeviceCount's
// reason, and nothing is written to the output folder; `lowbit quantize --device` refuses bad
// device strings; the CPU path reports "cpu"; the report's device wording.
#include "shared_data.h"
#include "temp_dir.h"

#include "backend/device.h"
#include "cli_commands.h"
#include "model/checkpoint.h"
#include "quant/quant_device.h"
#include "quant/quantize.h"

#include <QtTest>

#include <cstdio>
#include <unistd.h>

using namespace lowbit;

namespace {

// A CUDA device this machine does not have: cuda:0 without a GPU, else an index past the last.
DeviceSpec missingDevice() {
    const int count = cudaDeviceCount();
    return {DeviceSpec::Kind::Cuda, count == 0 ? 0 : 999};
}

struct Output {
    int code = -1;
    std::string err;
};

// Runs `lowbit quantize ARGS` with stderr captured into a file of `dir`.
Output quantizeCli(const std::vector<std::string> &args, const std::filesystem::path &dir) {
    const auto errPath = dir / "stderr.txt";
    std::fflush(stderr);
    const int saved = dup(2);
    FILE *err = std::fopen(errPath.c_str(), "w");
    dup2(fileno(err), 2);
    Output result;
    result.code = cli::runQuantize(args);
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::fclose(err);
    result.err = test::readFile(errPath);
    return result;
}

} // namespace

class TestQuantDevice : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void describe();
    void openCpu();
    void openMissingDevice();
    void missingDeviceWritesNothing();
    void cliDeviceStrings();
    void cpuReport();

private:
    std::filesystem::path m_fixture;
    std::shared_ptr<const Checkpoint> m_model;
};

void TestQuantDevice::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(fixture, "fixtures/tiny-llama3-a");
    m_fixture = fixture;
    auto checkpoint = loadCheckpoint(fixture);
    QVERIFY2(checkpoint.ok(), checkpoint.ok() ? "" : checkpoint.error().message.c_str());
    m_model = std::make_shared<const Checkpoint>(std::move(*checkpoint));
}

void TestQuantDevice::describe() {
    QCOMPARE(QuantDevice::describe("gptq", "cuda:0", {"hessian", "cholesky", "sweep"}, {"forward"}),
             std::string("gptq: hessian+cholesky+sweep on cuda:0; forward on cpu"));
    QCOMPARE(
        QuantDevice::describe("pb-llm", "cuda:1", {"hessian", "cholesky"}, {"forward", "sweep"}),
        std::string("pb-llm: hessian+cholesky on cuda:1; forward+sweep on cpu"));
    QCOMPARE(QuantDevice::describe("gptq", "cuda:0", {"cholesky", "sweep"}, {}),
             std::string("gptq: cholesky+sweep on cuda:0"));
    // Nothing ran on the device: said so, whatever ran on the CPU.
    QCOMPARE(QuantDevice::describe("awq", "cuda:0", {}, {"forward"}),
             std::string("awq: cpu (no device path)"));
}

void TestQuantDevice::openCpu() {
    auto device = QuantDevice::open(DeviceSpec{});
    QVERIFY(device.ok());
    QVERIFY(!*device);
}

void TestQuantDevice::openMissingDevice() {
    const DeviceSpec spec = missingDevice();
    auto device = QuantDevice::open(spec);
    QVERIFY(!device.ok());
    const std::string &message = device.error().message;
    qInfo("%s", message.c_str());
    QVERIFY2(message.find(spec.toString()) != std::string::npos, message.c_str());
    std::string why;
    if (cudaDeviceCount(&why) == 0) { // the reason cudaDeviceCount gives, word for word
        QCOMPARE(device.error().code, ErrorCode::Unsupported);
        QVERIFY2(message.find(why) != std::string::npos, message.c_str());
    }
}

void TestQuantDevice::missingDeviceWritesNothing() {
    test::TempDir dir;
    const auto out = dir / "quantized";
    QuantizeOptions options;
    options.method = "rtn";
    options.bits = 4;
    options.groupSize = 32;
    options.threads = 1;
    options.device = missingDevice();
    NullProgress progress;
    auto report = quantizeCheckpoint(*m_model, options, out, progress);
    QVERIFY(!report.ok());
    QVERIFY2(report.error().message.find(options.device.toString()) != std::string::npos,
             report.error().message.c_str());
    QVERIFY(!std::filesystem::exists(out));
}

void TestQuantDevice::cliDeviceStrings() {
    test::TempDir dir;
    const auto out = dir / "quantized";
    const std::vector<std::string> base = {
        "--model", m_fixture.string(), "--method", "rtn",   "--bits",    "4", "--group",
        "32",      "--threads",        "1",        "--out", out.string()};
    for (const char *bad :
         {"gpu", "CUDA", "cuda:", "cuda:-1", "cuda:1000", "cuda:0x", "cuda0", ""}) {
        auto args = base;
        args.insert(args.end(), {"--device", bad});
        const Output r = quantizeCli(args, dir.path());
        QVERIFY2(r.code != 0, bad);
        QVERIFY2(r.err.find("device \"" + std::string(bad) + "\"") != std::string::npos,
                 r.err.c_str());
        QVERIFY(!std::filesystem::exists(out));
    }
    auto args = base;
    args.insert(args.end(), {"--device", missingDevice().toString()});
    const Output r = quantizeCli(args, dir.path());
    QVERIFY(r.code != 0);
    QVERIFY2(r.err.find(missingDevice().toString()) != std::string::npos, r.err.c_str());
    QVERIFY(!std::filesystem::exists(out));

    args = base;
    args.insert(args.end(), {"--device", "cpu"});
    const Output cpu = quantizeCli(args, dir.path());
    QVERIFY2(cpu.code == 0, cpu.err.c_str());
    QVERIFY(std::filesystem::exists(out / "quantization_config.json"));
}

void TestQuantDevice::cpuReport() {
    QuantizeOptions options;
    options.method = "rtn";
    options.bits = 3;
    options.groupSize = 32;
    options.threads = 1;
    NullProgress progress;
    auto model = quantizeModel(*m_model, options, progress);
    QVERIFY2(model.ok(), model.ok() ? "" : model.error().message.c_str());
    QCOMPARE(model->report.device, std::string("cpu"));
    QCOMPARE(model->report.toJson()["device"].get<std::string>(), std::string("cpu"));
}

QTEST_APPLESS_MAIN(TestQuantDevice)
#include "test_quant_device.moc"
