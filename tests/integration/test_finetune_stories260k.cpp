// QLoRA end to end on the real stories260K (llama2.c .bin + tok512): the TinyStories validation
// sample is split by story — the first 300 stories evaluate (paper-protocol PPL, ctx 512, 100
// chunks), the other 700 train. Asserts: QLoRA's merged model ends below the NF4 model's PPL; the
// PEFT adapter reloaded into a fresh TrainableModel gives the merged model's logits; and the CLI
// resumes a run killed with SIGKILL into exactly the parameters of an uninterrupted run.
#include "paper_perplexity.h"
#include "shared_data.h"
#include "temp_dir.h"

#include "cli_commands.h"
#include "perplexity.h"
#include "runtime/log_prob.h"
#include "runtime/model.h"
#include "train/finetune.h"
#include "train/peft_adapter.h"
#include "train/trainable_model.h"

#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <QtTest>

#include <cmath>
#include <csignal>
#include <fstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

using namespace lowbit;
using namespace lowbit::train;

namespace {

constexpr int64_t kContext = 512;
constexpr int64_t kPplChunks = 100;
constexpr size_t kEvalStories = 300;

// Captures the logits of every scored position (unmerged forward of TrainableModel).
class CapturingLoss final : public LossFunction<float> {
public:
    double score(int64_t, int64_t position, int32_t target, std::span<const float> logits,
                 std::span<float> dLogits) override {
        if (rows.size() <= size_t(position))
            rows.resize(size_t(position) + 1);
        rows[size_t(position)].assign(logits.begin(), logits.end());
        std::fill(dLogits.begin(), dLogits.end(), 0.0f);
        return logSumExp(logits.data(), int64_t(logits.size())) - logits[size_t(target)];
    }
    std::vector<std::vector<float>> rows;
};

} // namespace

class TestFinetuneStories260K : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void qloraLowersPplBelowNf4();
    void adapterReloadMatchesMergedLogits();
    void killNineThenResume();
    void irqloraAndDbllmDrivers();
    void sigtermSavesAndExits130();

private:
    double ppl(std::shared_ptr<const Checkpoint> checkpoint);
    std::vector<std::string> cliArgs(const std::filesystem::path &out, int64_t steps) const;

    std::filesystem::path m_modelPath, m_tokPath;
    std::shared_ptr<const Checkpoint> m_fp;
    std::vector<int32_t> m_evalTokens;
    test::TempDir m_dir;
    FinetuneOptions m_options;
    std::shared_ptr<const Checkpoint> m_nf4;
};

void TestFinetuneStories260K::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tok, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    m_modelPath = model;
    m_tokPath = tok;
    auto fp = loadCheckpoint(model, {tok});
    QVERIFY(fp.ok());
    m_fp = std::make_shared<const Checkpoint>(std::move(*fp));
    const std::string all = test::readFile(text);
    const std::string sep = "<|endoftext|>\n";
    size_t cut = 0;
    for (size_t s = 0; s < kEvalStories; ++s)
        cut = all.find(sep, cut) + sep.size();
    QVERIFY(cut > sep.size() && cut < all.size());
    m_evalTokens = m_fp->tokenizer->encode(all.substr(0, cut), {true, false});
    QVERIFY(int64_t(m_evalTokens.size()) > kPplChunks * kContext);
    std::ofstream(m_dir / "train.txt", std::ios::binary) << all.substr(cut);

    m_options.dataPath = m_dir / "train.txt";
    m_options.data.textWindowTokens = 256;
    m_options.lora.rank = 8;
    m_options.lora.alpha = 16;
    m_options.trainer.steps = 40;
    m_options.trainer.batchSize = 8;
    m_options.trainer.schedule.peak = 2e-3;
    m_options.threads = 2;
    NullProgress progress;
    auto base = finetuneBase(*m_fp, m_options, progress);
    QVERIFY(base.ok());
    m_nf4 = *base;
}

double TestFinetuneStories260K::ppl(std::shared_ptr<const Checkpoint> checkpoint) {
    return test::paperPerplexity(std::move(checkpoint), m_evalTokens, kContext, kPplChunks);
}

void TestFinetuneStories260K::qloraLowersPplBelowNf4() {
    m_options.outDir = m_dir / "qlora";
    NullProgress progress;
    auto report = runFinetune(m_fp, m_options, progress);
    QVERIFY2(report.ok(), report.ok() ? "" : report.error().message.c_str());
    QCOMPARE(report->train.stepsDone, int64_t(40));
    auto merged = loadCheckpoint(report->mergedDir);
    QVERIFY2(merged.ok(), merged.ok() ? "" : merged.error().message.c_str());
    const double fp = ppl(m_fp), nf4 = ppl(m_nf4),
                 qlora = ppl(std::make_shared<const Checkpoint>(std::move(*merged)));
    const auto &h = report->train.history;
    qInfo("stories260K PPL (ctx 512, %lld tokens): FP %.4f  NF4 %.4f  QLoRA r8 40x8x256 %.4f; "
          "loss %.4f -> %.4f, %.0f tok/s",
          static_cast<long long>(kPplChunks * (kContext - 1)), fp, nf4, qlora, h.front().loss,
          h.back().loss, report->train.tokensPerSecond);
    QVERIFY(nf4 > fp);
    QVERIFY2(qlora > 0 && qlora < nf4,
             qPrintable(QString("QLoRA %1 vs NF4 %2").arg(qlora).arg(nf4)));
}

void TestFinetuneStories260K::adapterReloadMatchesMergedLogits() {
    const auto dir = m_dir / "qlora";
    auto adapter = loadPeftAdapter(dir);
    QVERIFY2(adapter.ok(), adapter.ok() ? "" : adapter.error().message.c_str());
    QCOMPARE(adapter->info.lora.rank, 8);
    QCOMPARE(adapter->info.lora.targets.size(), size_t(7));
    const auto config = nlohmann::json::parse(test::readFile(dir / kAdapterConfigFile));
    QCOMPARE(config["peft_type"].get<std::string>(), std::string("LORA"));
    QCOMPARE(config["lora_alpha"].get<double>(), 16.0);
    // A trained B is not zero: the comparison below is not trivially the base.
    const auto &b =
        adapter->tensors.at("base_model.model.model.layers.2.mlp.down_proj.lora_B.weight");
    QVERIFY(std::any_of(b.begin(), b.end(), [](float v) { return std::abs(v) > 1e-4f; }));

    auto fresh = TrainableModel<float>::create(*m_nf4, adapter->info.lora);
    QVERIFY(fresh.ok());
    const auto params = (*fresh)->parameters();
    QVERIFY(applyPeftAdapter(*adapter, params).ok());
    TrainExample e;
    e.tokens.assign(m_evalTokens.begin(), m_evalTokens.begin() + 128);
    e.targets.assign(m_evalTokens.begin() + 1, m_evalTokens.begin() + 129);
    CapturingLoss capture;
    QVERIFY((*fresh)->evaluate({&e, 1}, &capture).ok());
    QCOMPARE(capture.rows.size(), size_t(128));

    auto merged = loadCheckpoint(dir / "merged");
    QVERIFY(merged.ok());
    auto model = Model::create(std::make_shared<const Checkpoint>(std::move(*merged)), {2});
    QVERIFY(model.ok());
    KvCache cache = (*model)->makeCache(1, 128);
    SequenceInput in{0, e.tokens, LogitsWanted::All, 0};
    auto logits = (*model)->forward(cache, {&in, 1});
    QVERIFY(logits.ok());
    double maxDiff = 0, maxAbs = 0;
    for (int64_t t = 0; t < 128; ++t)
        for (int64_t v = 0; v < logits->vocab; ++v) {
            const double a = capture.rows[size_t(t)][size_t(v)], m = logits->row(t)[v];
            maxDiff = std::max(maxDiff, std::abs(a - m));
            maxAbs = std::max(maxAbs, std::abs(m));
        }
    qInfo("merged vs unmerged logits: max |diff| %.3g (max |logit| %.3g)", maxDiff, maxAbs);
    // float32 sums in a different order (W x + s B(A x) vs (W + s BA) x) over 64..172 terms.
    QVERIFY2(maxDiff < 1e-3 * std::max(1.0, maxAbs), qPrintable(QString::number(maxDiff)));
}

std::vector<std::string> TestFinetuneStories260K::cliArgs(const std::filesystem::path &out,
                                                          int64_t steps) const {
    return {m_modelPath.string(),
            "--tokenizer",
            m_tokPath.string(),
            "--data",
            (m_dir / "train.txt").string(),
            "--out",
            out.string(),
            "--steps",
            std::to_string(steps),
            "--batch",
            "4",
            "--rank",
            "4",
            "--seq-len",
            "128",
            "--lr",
            "2e-3",
            "--save-every",
            "2",
            "--seed",
            "5",
            "--no-merge",
            "--threads",
            "1"};
}

void TestFinetuneStories260K::killNineThenResume() {
    const auto straight = m_dir / "straight", killed = m_dir / "killed";
    QCOMPARE(cli::runFinetune(cliArgs(straight, 24)), 0);

    const pid_t child = fork();
    QVERIFY(child >= 0);
    if (child == 0) {
        std::freopen("/dev/null", "w", stderr);
        std::freopen("/dev/null", "w", stdout);
        _exit(cli::runFinetune(cliArgs(killed, 24)));
    }
    const auto state = killed / "checkpoint" / kTrainerStateFile;
    for (int i = 0; i < 6000 && !std::filesystem::exists(state); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    QVERIFY(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    QVERIFY(std::filesystem::exists(state));
    QVERIFY(!std::filesystem::exists(killed / kAdapterWeightsFile)); // killed before the end

    auto args = cliArgs(killed, 24);
    args.push_back("--resume");
    QCOMPARE(cli::runFinetune(args), 0);
    const auto report = nlohmann::json::parse(test::readFile(killed / "finetune.json"));
    QVERIFY(report["resumed_from_step"].get<int64_t>() >= 2);
    auto a = readSafetensors(straight / kAdapterWeightsFile);
    auto b = readSafetensors(killed / kAdapterWeightsFile);
    QVERIFY(a.ok() && b.ok());
    QCOMPARE(a->tensors.size(), b->tensors.size());
    for (const auto &[name, t] : a->tensors) {
        QVERIFY(b->tensors.count(name));
        QCOMPARE(tensorToFloats(t), tensorToFloats(b->tensors.at(name))); // bit for bit
    }
}

// The other two methods through the same driver, briefly: IR-QLoRA (ICQ base + elastic
// connection) ends below its ICQ base; DB-LLM (no data file: FP-generated text) writes a merged
// 2-bit model below RTN 2-bit, with no adapter files.
void TestFinetuneStories260K::irqloraAndDbllmDrivers() {
    NullProgress progress;
    FinetuneOptions ir = m_options;
    ir.method = FinetuneMethod::IrQLora;
    ir.outDir = m_dir / "irqlora";
    ir.trainer.steps = 20;
    auto icq = finetuneBase(*m_fp, ir, progress);
    QVERIFY(icq.ok());
    auto irReport = runFinetune(m_fp, ir, progress);
    QVERIFY2(irReport.ok(), irReport.ok() ? "" : irReport.error().message.c_str());
    auto adapter = loadPeftAdapter(ir.outDir);
    QVERIFY(adapter.ok() && adapter->info.lora.elasticConnection);
    QVERIFY(adapter->tensors.count(
        "base_model.model.model.layers.0.self_attn.q_proj.lora_default_A_scale"));
    auto irMerged = loadCheckpoint(irReport->mergedDir);
    QVERIFY(irMerged.ok());
    const double icqPpl = ppl(*icq),
                 irPpl = ppl(std::make_shared<const Checkpoint>(std::move(*irMerged)));

    FinetuneOptions db = m_options;
    db.method = FinetuneMethod::DbLlm;
    db.dataPath.clear();
    db.outDir = m_dir / "dbllm";
    db.trainer.steps = 12;
    db.trainer.schedule.peak = 1e-3;
    db.distillData.sequences = 16;
    db.distillData.tokensPerSequence = 127;
    auto rtn2 = finetuneBase(*m_fp, db, progress);
    QVERIFY(rtn2.ok());
    auto dbReport = runFinetune(m_fp, db, progress);
    QVERIFY2(dbReport.ok(), dbReport.ok() ? "" : dbReport.error().message.c_str());
    QCOMPARE(dbReport->examples, int64_t(16));
    QVERIFY(!std::filesystem::exists(db.outDir / kAdapterWeightsFile));
    auto dbMerged = loadCheckpoint(dbReport->mergedDir);
    QVERIFY(dbMerged.ok());
    const double rtnPpl = ppl(*rtn2),
                 dbPpl = ppl(std::make_shared<const Checkpoint>(std::move(*dbMerged)));
    qInfo("ICQ %.4f -> IR-QLoRA (20 steps) %.4f; RTN 2-bit g64 %.4f -> DB-LLM (12 steps, 16 "
          "generated sequences) %.4f",
          icqPpl, irPpl, rtnPpl, dbPpl);
    QVERIFY(irPpl > 0 && irPpl < icqPpl);
    QVERIFY(dbPpl > 0 && dbPpl < rtnPpl);
}

// SIGTERM (as Ctrl-C's SIGINT) requests the stop token: the CLI saves the state of its last
// completed step and exits 130 without writing the adapter.
void TestFinetuneStories260K::sigtermSavesAndExits130() {
    const auto out = m_dir / "terminated";
    const pid_t child = fork();
    QVERIFY(child >= 0);
    if (child == 0) {
        std::freopen("/dev/null", "w", stderr);
        std::freopen("/dev/null", "w", stdout);
        _exit(cli::runFinetune(cliArgs(out, 100000)));
    }
    const auto state = out / "checkpoint" / kTrainerStateFile;
    for (int i = 0; i < 6000 && !std::filesystem::exists(state); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ::kill(child, SIGTERM);
    int status = 0;
    ::waitpid(child, &status, 0);
    QVERIFY(WIFEXITED(status));
    QCOMPARE(WEXITSTATUS(status), 130);
    QVERIFY(!std::filesystem::exists(out / kAdapterWeightsFile));
    auto saved = readSafetensors(state);
    QVERIFY(saved.ok());
    const auto meta = nlohmann::json::parse(saved->metadata.at("lowbit.trainer"));
    QVERIFY(meta["step"].get<int64_t>() >= 2);
    QCOMPARE(meta["history"].size(), size_t(meta["step"].get<int64_t>()));
}

QTEST_APPLESS_MAIN(TestFinetuneStories260K)
#include "test_finetune_stories260k.moc"
