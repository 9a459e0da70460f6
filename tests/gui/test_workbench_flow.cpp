// The workbench end to end, offscreen, on the real widgets (issue 6, "Done when" 1 and 2):
// open stories260K, choose RTN 4-bit plus the FP baseline, tick the tinystories perplexity task
// with a small limit, run both, wait; the chart shows two points equal to the stored ppl values;
// compare the two runs; export HTML and CSV whose numbers equal the database's. Every item model
// runs under QAbstractItemModelTester. A second case checks that a 50 ms GUI timer is never late
// by more than 100 ms while a job runs on the engine thread.
#include "compare_view.h"
#include "job_queue.h"
#include "layer_error_map.h"
#include "main_window.h"
#include "method_panel.h"
#include "metric_chart.h"
#include "model_panel.h"
#include "run_store.h"
#include "runs_browser.h"
#include "runs_model.h"
#include "shared_data.h"
#include "tasks_panel.h"
#include "workbench_settings.h"

#include <QAbstractItemModelTester>
#include <QElapsedTimer>
#include <QFile>
#include <QRegularExpression>
#include <QSettings>
#include <QSortFilterProxyModel>
#include <QTableWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <map>
#include <memory>

using namespace lowbit;
using namespace lowbit::ui;

namespace {

constexpr int kJobTimeoutMs = 300000;

bool jobsFinished(const JobQueue &queue, const std::vector<int64_t> &runs) {
    for (int64_t run : runs) {
        const JobRow *job = queue.model()->job(run);
        if (!job || job->status == RunStatus::Queued || job->status == RunStatus::Running)
            return false;
    }
    return true;
}

QString readText(const QString &path) {
    QFile file(path);
    return file.open(QIODevice::ReadOnly) ? QString::fromUtf8(file.readAll()) : QString();
}

} // namespace

class TestWorkbenchFlow : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void init();
    void methodPanelOffersValidBitsOnly();
    void tasksPanelShowsDataState();
    void endToEnd();
    void guiStaysResponsiveWhileAJobRuns();
    void cancelThenResume();
    void windowStateIsRestored();

private:
    // Opens the model and ticks tinystories with `limit` documents of 128 tokens.
    void prepare(MainWindow &window, int limit);
    std::vector<std::unique_ptr<QAbstractItemModelTester>> testModels(MainWindow &window);

    QTemporaryDir m_dir;
    std::filesystem::path m_model;
    int m_case = 0;
};

void TestWorkbenchFlow::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    m_model = model;
    QVERIFY(m_dir.isValid());
    QSettings::setDefaultFormat(QSettings::IniFormat);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_dir.filePath("settings"));
    QCoreApplication::setOrganizationName(QStringLiteral("lowbit-test"));
    QCoreApplication::setApplicationName(QStringLiteral("test_workbench_flow"));
}

void TestWorkbenchFlow::init() {
    // A fresh database per case; the datasets from the shared folder; one engine thread.
    QSettings settings;
    settings.clear();
    settings.setValue(kDatabaseKey, m_dir.filePath(QStringLiteral("runs%1.sqlite").arg(++m_case)));
    settings.setValue(kDataDirKey, toQString(test::sharedPath("data").string()));
    settings.setValue(kThreadsKey, 1);
}

std::vector<std::unique_ptr<QAbstractItemModelTester>>
TestWorkbenchFlow::testModels(MainWindow &window) {
    std::vector<std::unique_ptr<QAbstractItemModelTester>> testers;
    const auto mode = QAbstractItemModelTester::FailureReportingMode::QtTest;
    for (QAbstractItemModel *model :
         {static_cast<QAbstractItemModel *>(window.runsModel()),
          static_cast<QAbstractItemModel *>(window.runsBrowser()->proxy()),
          static_cast<QAbstractItemModel *>(window.jobQueue()->model()),
          window.tasksPanel()->table()->model(),
          window.methodPanel()->findChild<QTableWidget *>("methodOptions")->model(),
          window.compareView()->metricsTable()->model(),
          window.compareView()->testsTable()->model(), window.compareView()->flipsTable()->model()})
        testers.push_back(std::make_unique<QAbstractItemModelTester>(model, mode));
    return testers;
}

void TestWorkbenchFlow::methodPanelOffersValidBitsOnly() {
    MethodPanel panel;
    QVERIFY(panel.selectMethod("rtn"));
    for (int bits = 1; bits <= 8; ++bits)
        QVERIFY(panel.isBitEnabled(bits)); // RTN: 1-8 bits (rtn.cpp)
    QVERIFY(panel.selectMethod("nf4"));    // NormalFloat is a 4-bit code book only
    for (int bits = 1; bits <= 8; ++bits)
        QCOMPARE(panel.isBitEnabled(bits), bits == 4);
    QCOMPARE(panel.optionValue("dq_block").toLongLong(), 256LL);
    QVERIFY(panel.selectMethod("billm")); // BiLLM binarizes: 1 bit
    for (int bits = 1; bits <= 8; ++bits)
        QCOMPARE(panel.isBitEnabled(bits), bits == 1);
    QVERIFY(panel.selectMethod("gptq"));
    panel.setBits({2, 3, 4});
    panel.setGroupSize(128);
    panel.setIncludeBaseline(true);
    const std::vector<MethodSpec> sweep = panel.methodSpecs();
    QCOMPARE(sweep.size(), size_t(4)); // baseline + three widths
    QVERIFY(sweep[0].isNone());
    QCOMPARE(sweep[1].bits, 2);
    QCOMPARE(sweep[3].bits, 4);
    QCOMPARE(sweep[2].groupSize, int64_t(128));
    QVERIFY(sweep[2].options.empty()); // defaults are not written into the spec
    // A sweep across methods: GPTQ 2-4 + baseline, then NF4; the baseline is not repeated.
    panel.addToSweep();
    QVERIFY(panel.selectMethod("nf4"));
    panel.setBits({4});
    panel.addToSweep();
    QCOMPARE(panel.sweepSize(), size_t(5));
    const std::vector<MethodSpec> methods = panel.methodSpecs();
    QCOMPARE(methods.size(), size_t(5));
    QCOMPARE(methods.back().name, std::string("nf4"));
    panel.clearSweep();
    QVERIFY(panel.selectMethod("none"));
    const std::vector<MethodSpec> baseline = panel.methodSpecs();
    QCOMPARE(baseline.size(), size_t(1));
    QVERIFY(baseline[0].isNone());
}

void TestWorkbenchFlow::tasksPanelShowsDataState() {
    TasksPanel panel;
    QAbstractItemModelTester tester(panel.table()->model(),
                                    QAbstractItemModelTester::FailureReportingMode::QtTest);
    panel.reload(test::sharedPath("data"));
    QCOMPARE(panel.dataState("tinystories"), QStringLiteral("found"));
    QTemporaryDir empty;
    panel.reload(empty.path().toStdString());
    QVERIFY(panel.table()->rowCount() > 3);
    QCOMPARE(panel.dataState("tinystories"), QStringLiteral("missing"));
    QVERIFY(panel.setTaskChecked("tinystories", true));
    QVERIFY(panel.setTaskLimit("tinystories", 7));
    const auto specs = panel.taskSpecs();
    QCOMPARE(specs.size(), size_t(1));
    QCOMPARE(specs[0].limit, int64_t(7));
    QVERIFY(!panel.setTaskChecked("no-such-task", true));
}

void TestWorkbenchFlow::prepare(MainWindow &window, int limit) {
    window.modelPanel()->openCheckpoint(toQString(m_model.string()));
    QTRY_COMPARE_WITH_TIMEOUT(window.modelPanel()->state(), ModelPanel::State::Loaded, 30000);
    QVERIFY(window.tasksPanel()->setTaskChecked("tinystories", true));
    QVERIFY(window.tasksPanel()->setTaskLimit("tinystories", limit));
    QVERIFY(window.tasksPanel()->setTaskContext("tinystories", 128));
}

void TestWorkbenchFlow::endToEnd() {
    MainWindow window;
    const auto testers = testModels(window);
    prepare(window, 12);
    QVERIFY(window.methodPanel()->selectMethod("rtn"));
    window.methodPanel()->setBits({4});
    window.methodPanel()->setGroupSize(32);
    window.methodPanel()->setIncludeBaseline(true);
    const std::vector<int64_t> runs = window.runExperiment();
    QCOMPARE(runs.size(), size_t(2));
    QTRY_VERIFY_WITH_TIMEOUT(jobsFinished(*window.jobQueue(), runs), kJobTimeoutMs);
    for (int64_t run : runs)
        QVERIFY2(window.jobQueue()->model()->job(run)->status == RunStatus::Done,
                 qPrintable(window.jobQueue()->logText()));

    // The stored perplexities, read from the database itself.
    RunStore store = RunStore::open(databasePath(), {.readOnly = true}).value();
    std::map<int64_t, double> stored;
    for (int64_t run : runs) {
        // Held in a local: a range-for over value() of a temporary Result would dangle.
        const std::vector<StoredMetric> metrics = store.metrics(run).value();
        for (const StoredMetric &m : metrics)
            if (m.task == "tinystories" && m.metric.name == "ppl")
                stored[run] = m.metric.value;
    }
    QVERIFY2(stored.size() == 2, qPrintable(window.jobQueue()->logText()));
    QVERIFY(stored[runs[0]] != stored[runs[1]]); // 4-bit RTN moves the perplexity

    // Chart: two points (RTN at 4 bits, FP baseline at 16) with exactly the stored values.
    QTRY_VERIFY(window.runsModel()->rowCount() == 2);
    QVERIFY(window.chart()->setMetric("tinystories", "ppl"));
    window.chart()->flush();
    const auto &points = window.chart()->points();
    QCOMPARE(points.size(), size_t(2));
    for (const ChartPoint &point : points) {
        QCOMPARE(point.y, stored.at(point.runId));
        QCOMPARE(point.x, point.series == "FP baseline" ? 16.0 : 4.0);
    }
    // Pareto (size vs ppl) has both runs; bars show the runs selected for comparison.
    window.chart()->setMode(MetricChart::Mode::Pareto);
    window.chart()->flush();
    QCOMPARE(window.chart()->points().size(), size_t(2));
    for (const ChartPoint &point : window.chart()->points())
        QVERIFY(point.x > 0);
    window.chart()->setSelectedRuns(runs);
    window.chart()->setMode(MetricChart::Mode::BarsPerTask);
    window.chart()->flush();
    QCOMPARE(window.chart()->points().size(), size_t(2));
    window.chart()->setMode(MetricChart::Mode::MetricVsBits);
    // A burst of data changes is one redraw.
    const int redraws = window.chart()->redrawCount();
    for (int i = 0; i < 5; ++i)
        window.chart()->setRows(window.runsModel()->rows());
    QTRY_VERIFY(!window.chart()->redrawPending());
    QCOMPARE(window.chart()->redrawCount(), redraws + 1);
    // The filter box narrows the browser to matching rows.
    window.runsBrowser()->setFilterText("rtn");
    QCOMPARE(window.runsBrowser()->proxy()->rowCount(), 1);
    window.runsBrowser()->setFilterText(QString());

    QTemporaryDir out;
    for (const char *name : {"chart.png", "chart.pdf", "chart.svg"}) {
        QVERIFY(window.chart()->exportTo(out.filePath(name)).ok());
        QVERIFY(QFileInfo(out.filePath(name)).size() > 1000);
    }
    QVERIFY(readText(out.filePath("chart.svg")).contains("<svg"));

    // Compare the two runs: a paired bootstrap on the same 12 documents, same protocol.
    window.runsBrowser()->selectRuns(runs);
    QCOMPARE(window.runsBrowser()->selectedRuns().size(), size_t(2));
    emit window.runsBrowser()->compareRequested(runs);
    const auto &comparison = window.compareView()->comparison();
    QVERIFY(comparison.has_value());
    QCOMPARE(comparison->pairs.size(), size_t(1));
    QCOMPARE(comparison->pairs[0].test, std::string("bootstrap"));
    QCOMPARE(comparison->pairs[0].pairedDocuments, int64_t(12));
    QVERIFY(comparison->pairs[0].protocolDifferences.empty());
    QVERIFY(window.compareView()->metricsTable()->rowCount() >= 1);

    // HTML report: the metrics table's numbers equal the database's (printed with 17 digits).
    const QString html = out.filePath("report.html");
    QVERIFY(window.exportReport(html).ok());
    const QString page = readText(html);
    QVERIFY(page.contains("data:image/png;base64,"));
    QVERIFY(page.contains("lowbit-manifest"));
    int checked = 0;
    const QRegularExpression row(
        "<tr><td>(\\d+)</td><td>[^<]*</td><td>[^<]*</td><td>tinystories</td><td>ppl</td>"
        "<td>([^<]+)</td>");
    for (auto match = row.globalMatch(page); match.hasNext(); ++checked) {
        const auto m = match.next();
        QCOMPARE(m.captured(2).toDouble(), stored.at(m.captured(1).toLongLong()));
    }
    QCOMPARE(checked, 2);

    // CSV: run_id,...,metric,value; the ppl rows equal the database's.
    const QString csv = out.filePath("report.csv");
    QVERIFY(window.exportReport(csv).ok());
    QVERIFY(QFileInfo::exists(csv + ".manifest.json"));
    checked = 0;
    for (const QString &line : readText(csv).split('\n', Qt::SkipEmptyParts).mid(1)) {
        const QStringList cells = line.split(',');
        QVERIFY(cells.size() >= 7);
        if (cells[4] == "tinystories" && cells[5] == "ppl") {
            QCOMPARE(cells[6].toDouble(), stored.at(cells[0].toLongLong()));
            ++checked;
        }
    }
    QCOMPARE(checked, 2);
    for (const char *name : {"report.json", "report.md", "report.pdf"}) {
        QVERIFY(window.exportReport(out.filePath(name)).ok());
        QVERIFY(QFileInfo(out.filePath(name)).size() > 200);
    }

    // Layer errors: selecting the RTN run shows its recorded per-linear errors (RTN 4-bit: a few
    // percent of the weight norm, never zero); the FP baseline recorded none.
    window.runsBrowser()->selectRuns({runs[1]});
    QCOMPARE(window.layerErrors()->runId(), runs[1]);
    QVERIFY(window.layerErrors()->layerCount() >= 1);
    for (int layer = 0; layer < window.layerErrors()->layerCount(); ++layer)
        for (int linear = 0; linear < LayerErrorMap::kLinearCount; ++linear) {
            const auto error = window.layerErrors()->errorAt(layer, linear);
            QVERIFY(error.has_value());
            QVERIFY2(*error > 0 && *error < 0.5, qPrintable(QString::number(*error)));
        }
    window.runsBrowser()->selectRuns({runs[0]});
    QCOMPARE(window.layerErrors()->layerCount(), 0);

    // Delete one run: the browser and the store agree.
    window.runsBrowser()->selectRuns({runs[1]});
    window.runsBrowser()->deleteSelected(false);
    QCOMPARE(window.runsModel()->rowCount(), 1);
    QVERIFY(!RunStore::open(databasePath(), {.readOnly = true}).value().run(runs[1]).ok());
}

void TestWorkbenchFlow::guiStaysResponsiveWhileAJobRuns() {
    MainWindow window;
    prepare(window, 300);
    QVERIFY(window.methodPanel()->selectMethod("none"));
    const std::vector<int64_t> runs = window.runExperiment();
    QCOMPARE(runs.size(), size_t(1));
    QTimer ticker;
    ticker.setInterval(50);
    QElapsedTimer clock;
    qint64 last = 0, worstLateMs = 0;
    int ticks = 0;
    connect(&ticker, &QTimer::timeout, this, [&] {
        const qint64 now = clock.elapsed();
        worstLateMs = std::max(worstLateMs, now - last - 50);
        last = now;
        ++ticks;
    });
    clock.start();
    ticker.start();
    QTRY_VERIFY_WITH_TIMEOUT(jobsFinished(*window.jobQueue(), runs), kJobTimeoutMs);
    ticker.stop();
    QCOMPARE(window.jobQueue()->model()->job(runs[0])->status, RunStatus::Done);
    qInfo("timer ticks while the job ran: %d, worst lateness %lld ms", ticks, worstLateMs);
    QVERIFY(ticks >= 2);
    QVERIFY2(worstLateMs <= 100, qPrintable(QString::number(worstLateMs)));
}

void TestWorkbenchFlow::cancelThenResume() {
    MainWindow window;
    const auto testers = testModels(window);
    prepare(window, 1000);
    QVERIFY(window.methodPanel()->selectMethod("none"));
    const std::vector<int64_t> runs = window.runExperiment();
    QCOMPARE(runs.size(), size_t(1));
    JobQueue &queue = *window.jobQueue();
    QTRY_VERIFY_WITH_TIMEOUT(queue.model()->job(runs[0])->status == RunStatus::Running, 30000);
    queue.cancel(runs[0]);
    QTRY_VERIFY_WITH_TIMEOUT(jobsFinished(queue, runs), kJobTimeoutMs);
    // Either the cancel landed (the usual case) or the job had already finished.
    const RunStatus ended = queue.model()->job(runs[0])->status;
    QVERIFY2(ended == RunStatus::Cancelled || ended == RunStatus::Done, runStatusName(ended));
    qInfo("after cancel: %s", runStatusName(ended));
    if (ended == RunStatus::Cancelled) {
        QVERIFY(queue.resume(runs[0]).ok());
        QTRY_VERIFY_WITH_TIMEOUT(jobsFinished(queue, runs), kJobTimeoutMs);
        QCOMPARE(queue.model()->job(runs[0])->status, RunStatus::Done);
    }
    RunStore store = RunStore::open(databasePath(), {.readOnly = true}).value();
    const auto tasks = store.runTasks(runs[0]).value();
    QCOMPARE(tasks.size(), size_t(1));
    QCOMPARE(tasks[0].samples, int64_t(1000)); // resumed after the committed samples, no repeats
    // Retry: the same spec again, as a new run.
    QVERIFY(queue.retry(runs[0]).ok());
    QCOMPARE(queue.model()->rowCount(), 2);
    const int64_t retried = queue.model()->jobAt(1).runId;
    QTRY_VERIFY_WITH_TIMEOUT(jobsFinished(queue, {retried}), kJobTimeoutMs);
    QCOMPARE(queue.model()->job(retried)->status, RunStatus::Done);
}

void TestWorkbenchFlow::windowStateIsRestored() {
    QSize saved;
    {
        MainWindow window;
        window.show();
        window.resize(1333, 1011); // not the default 1280 x 800; docks may enlarge it further
        QVERIFY(QTest::qWaitForWindowExposed(&window));
        saved = window.size();
        window.close(); // closeEvent saves geometry and dock layout
    }
    QVERIFY(saved != QSize(1280, 800));
    MainWindow again;
    QCOMPARE(again.size(), saved);
}

QTEST_MAIN(TestWorkbenchFlow)
#include "test_workbench_flow.moc"
