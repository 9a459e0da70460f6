// Fine-tuning in the workbench, offscreen (issue 8, "the same from job specs and the GUI's method
// panel"; "the GUI draws the loss curve"): the method panel offers qlora, irqlora and dbllm with
// the job spec's option names and defaults (every default the catalog shows is accepted by
// finetuneOptions and equals the engine's), produces a spec the workbench pipeline validates;
// the run details of a run with stored training steps draw loss and learning rate per step, and
// a running fine-tuning run's curve grows on refresh.
#include "loss_chart.h"
#include "method_catalog.h"
#include "method_panel.h"
#include "pipeline/engine_finetune.h"
#include "run_details.h"
#include "run_store.h"
#include "shared_data.h"
#include "temp_dir.h"
#include "workbench_settings.h"

#include "core/sha256.h"

#include <qcustomplot.h>

#include <QLineEdit>
#include <QTabWidget>
#include <QtTest>

#include <random>

using namespace lowbit;
using namespace lowbit::ui;
using lowbit::test::TempDir;
using nlohmann::json;

namespace {

json jsonOf(const QVariant &value) {
    switch (value.typeId()) {
    case QMetaType::Bool: return value.toBool();
    case QMetaType::Double: return value.toDouble();
    case QMetaType::QString: return value.toString().toStdString();
    default: return value.toLongLong();
    }
}

NewRun newRun(const std::string &method) {
    NewRun run;
    run.spec = {{"checkpoint", "/models/m.bin"}, {"method", {{"name", method}, {"bits", 4}}}};
    run.model = "/models/m.bin";
    run.checkpointHash = sha256Hex(run.model);
    run.method = method;
    run.methodKey = run.spec["method"].dump();
    run.device = "cpu";
    run.tasks = {{"tinystories", R"({"name":"tinystories"})", {{"name", "tinystories"}}}};
    return run;
}

std::vector<TrainingStepRecord> randomSteps(int64_t first, int64_t last) {
    static std::mt19937_64 rng(std::random_device{}());
    std::uniform_real_distribution<double> u(0.1, 1.0);
    std::vector<TrainingStepRecord> steps;
    for (int64_t s = first; s <= last; ++s)
        steps.push_back({s, 1 + 8 * u(rng), 1e-4 * u(rng), 3 * u(rng), 1000 * u(rng)});
    return steps;
}

} // namespace

class TestFinetuneGui : public QObject {
    Q_OBJECT
private slots:
    void catalogMatchesJobSpecOptions();
    void methodPanelMakesQloraSpec();
    void dbllmNeedsNoDataQloraDoes();
    void runDetailsDrawsLossCurve();
    void runningRunCurveGrows();
    void constantLearningRateIsVisible();
};

// Every option the panel shows, at its shown default, is a key finetuneOptions knows, and gives
// the same options as leaving it out (the catalog cannot drift from the engine's defaults).
void TestFinetuneGui::catalogMatchesJobSpecOptions() {
    for (const char *name : {"qlora", "irqlora", "dbllm"}) {
        const MethodInfo *info = findMethod(QString::fromLatin1(name));
        QVERIFY2(info, name);
        QVERIFY(info->finetune);
        QCOMPARE(info->validBits.size(), size_t(1));
        MethodSpec bare;
        bare.name = name;
        bare.bits = info->validBits[0];
        bare.options = {{"data", "/x.json"}};
        MethodSpec full = bare;
        for (const MethodOptionInfo &option : info->options)
            full.options[option.key.toStdString()] = jsonOf(option.defaultValue);
        auto a = finetuneOptions(bare, 1);
        auto b = finetuneOptions(full, 1);
        QVERIFY2(b.ok(), b.ok() ? "" : b.error().toString().c_str());
        QCOMPARE(b->trainer.steps, a->trainer.steps);
        QCOMPARE(b->trainer.batchSize, a->trainer.batchSize);
        QCOMPARE(b->trainer.schedule.peak, a->trainer.schedule.peak);
        QCOMPARE(b->trainer.maxGradNorm, a->trainer.maxGradNorm);
        QCOMPARE(b->trainer.saveEverySteps, a->trainer.saveEverySteps);
        QCOMPARE(b->lora.rank, a->lora.rank);
        QCOMPARE(b->lora.alpha, a->lora.alpha);
        QCOMPARE(b->data.textWindowTokens, a->data.textWindowTokens);
        QCOMPARE(b->data.sourceMaxTokens, a->data.sourceMaxTokens);
        QCOMPARE(b->data.targetMaxTokens, a->data.targetMaxTokens);
        QCOMPARE(b->dualBinary.groupSize, a->dualBinary.groupSize);
        QCOMPARE(b->distillData.sequences, a->distillData.sequences);
    }
}

void TestFinetuneGui::methodPanelMakesQloraSpec() {
    LOWBIT_REQUIRE_SHARED_FILE(alpaca, "data/alpaca/alpaca_data_first1727.json");
    MethodPanel panel;
    QVERIFY(panel.selectMethod(QStringLiteral("qlora")));
    QVERIFY(panel.isBitEnabled(4));
    QVERIFY(!panel.isBitEnabled(3));
    QCOMPARE(panel.optionValue(QStringLiteral("rank")).toLongLong(), qlonglong(64));
    QCOMPARE(panel.optionValue(QStringLiteral("schedule")).toString(), QStringLiteral("constant"));
    auto *data = panel.findChild<QLineEdit *>(QStringLiteral("trainingData"));
    QVERIFY(data && data->isEnabled());
    panel.setTrainingData(QString::fromStdString(alpaca.string()));
    panel.setOptionValue(QStringLiteral("steps"), qlonglong(3));
    panel.setOptionValue(QStringLiteral("rank"), qlonglong(8));
    panel.setOptionValue(QStringLiteral("schedule"), QStringLiteral("cosine"));
    const std::vector<MethodSpec> specs = panel.methodSpecs();
    QCOMPARE(specs.size(), size_t(1));
    const MethodSpec &spec = specs[0];
    QCOMPARE(spec.name, std::string("qlora"));
    QCOMPARE(spec.bits, 4);
    QCOMPARE(spec.options,
             (json{{"data", alpaca.string()}, {"steps", 3}, {"rank", 8}, {"schedule", "cosine"}}));
    auto options = finetuneOptions(spec, 1);
    QVERIFY2(options.ok(), options.ok() ? "" : options.error().toString().c_str());
    QCOMPARE(options->trainer.steps, int64_t(3));
    QCOMPARE(options->lora.rank, 8);
    QCOMPARE(options->dataPath, alpaca);
    // The workbench's pipeline takes it (withFinetuneMethods around the engine hooks).
    const PipelineContext context = workbenchPipelineContext(test::sharedPath("data"));
    QVERIFY(context.quantization.validate(spec).ok());
    // Back on a quantizer, the training data row is off and no "data" option leaks.
    QVERIFY(panel.selectMethod(QStringLiteral("rtn")));
    QVERIFY(!data->isEnabled());
    QVERIFY(!panel.methodSpecs()[0].options.contains("data"));
}

void TestFinetuneGui::dbllmNeedsNoDataQloraDoes() {
    MethodPanel panel;
    const PipelineContext context = workbenchPipelineContext(test::sharedPath("data"));
    QVERIFY(panel.selectMethod(QStringLiteral("dbllm")));
    QVERIFY(panel.isBitEnabled(2));
    QVERIFY(!panel.isBitEnabled(4));
    const MethodSpec dbllm = panel.methodSpecs().at(0);
    QCOMPARE(dbllm.bits, 2);
    QVERIFY(context.quantization.validate(dbllm).ok()); // distills on FP-written text
    QVERIFY(panel.selectMethod(QStringLiteral("irqlora")));
    const Status refused = context.quantization.validate(panel.methodSpecs().at(0));
    QVERIFY(!refused.ok());
    QVERIFY2(refused.error().message.find("spec.method.options.data") != std::string::npos,
             refused.error().message.c_str());
}

void TestFinetuneGui::runDetailsDrawsLossCurve() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    int64_t trained = 0, plain = 0;
    const auto steps = randomSteps(1, 37);
    {
        RunStore store = RunStore::open(db).value();
        trained = store.createRun(newRun("qlora")).value();
        plain = store.createRun(newRun("rtn")).value();
        QVERIFY(store.appendTrainingSteps(trained, steps).ok());
        QVERIFY(store.finishRun(trained, RunStatus::Done).ok());
        QVERIFY(store.finishRun(plain, RunStatus::Done).ok());
    }
    RunDetails details(db, trained);
    LossChart *chart = details.lossChart();
    QVERIFY(chart);
    QVERIFY(!details.refreshing()); // done: nothing to follow
    bool hasTab = false;
    for (int i = 0; i < details.tabs()->count(); ++i)
        hasTab = hasTab || details.tabs()->tabText(i) == QStringLiteral("Training");
    QVERIFY(hasTab);
    chart->flush();
    QCPGraph *loss = chart->plot()->graph(0);
    QCPGraph *lr = chart->plot()->graph(1);
    QCOMPARE(loss->dataCount(), int(steps.size()));
    QCOMPARE(lr->dataCount(), int(steps.size()));
    QCOMPARE(lr->valueAxis(), chart->plot()->yAxis2);
    for (int i = 0; i < int(steps.size()); ++i) {
        QCOMPARE(loss->data()->at(i)->key, double(steps[size_t(i)].step));
        QCOMPARE(loss->data()->at(i)->value, steps[size_t(i)].loss);
        QCOMPARE(lr->data()->at(i)->value, steps[size_t(i)].learningRate);
    }
    RunDetails other(db, plain);
    QVERIFY(!other.lossChart());
}

void TestFinetuneGui::runningRunCurveGrows() {
    TempDir dir;
    const auto db = dir / "runs.sqlite";
    RunStore store = RunStore::open(db).value();
    const int64_t run = store.createRun(newRun("irqlora")).value();
    QVERIFY(store.claimRun(run, ProcessIdentity::current()).ok());
    RunDetails details(db, run);
    LossChart *chart = details.lossChart();
    QVERIFY(chart); // a training run gets its tab before the first step
    QVERIFY(details.refreshing());
    chart->flush();
    QCOMPARE(chart->plot()->graph(0)->dataCount(), 0);
    const auto steps = randomSteps(1, 12);
    QVERIFY(store.appendTrainingSteps(run, std::span(steps).first(5)).ok());
    details.refreshTraining();
    chart->flush();
    QCOMPARE(chart->plot()->graph(0)->dataCount(), 5);
    QVERIFY(store.appendTrainingSteps(run, std::span(steps).subspan(5)).ok());
    QVERIFY(store.finishRun(run, RunStatus::Done).ok());
    QTRY_VERIFY_WITH_TIMEOUT(!details.refreshing(), 3 * RunDetails::kRefreshMs); // timer-driven
    chart->flush();
    QCOMPARE(chart->plot()->graph(0)->dataCount(), 12);
    QCOMPARE(chart->steps().back().loss, steps.back().loss);
}

// QLoRA's constant 2e-4: the flat learning-rate line gets an axis around its value.
void TestFinetuneGui::constantLearningRateIsVisible() {
    LossChart chart;
    auto steps = randomSteps(1, 20);
    for (auto &s : steps)
        s.learningRate = 2e-4;
    chart.setSteps(steps);
    chart.flush();
    const QCPRange range = chart.plot()->yAxis2->range();
    QVERIFY(range.contains(2e-4));
    QVERIFY(range.lower >= 0 && range.upper <= 4e-4);
    QVERIFY(range.size() >= 1e-4);
}

QTEST_MAIN(TestFinetuneGui)
#include "test_finetune_gui.moc"
