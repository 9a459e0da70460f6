// The sweep mode offscreen: a sweep spec on stories260K opens as its plan (one quantize task, two
// evaluate tasks), "Run here" runs it off the GUI thread with per-task states updating to done,
// and Collect merges its runs into the workbench database once (a second Collect adds nothing).
// The main window carries the panel as a tab.
#include "main_window.h"
#include "run_store.h"
#include "shared_data.h"
#include "sweep/slurm_client.h"
#include "sweep_panel.h"
#include "workbench_settings.h"

#include <QPushButton>
#include <QSettings>
#include <QSignalSpy>
#include <QStandardItemModel>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QtTest>

#include <fstream>

using lowbit::ui::SweepPanel;
using nlohmann::json;

class TestSweepPanel : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void runHereAndCollect();
    void mainWindowHasTheTab();

private:
    QTemporaryDir m_settingsDir;
};

void TestSweepPanel::initTestCase() {
    QVERIFY(m_settingsDir.isValid());
    QSettings::setDefaultFormat(QSettings::IniFormat);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settingsDir.path());
    QCoreApplication::setOrganizationName(QStringLiteral("lowbit-test"));
    QCoreApplication::setApplicationName(QStringLiteral("test_sweep_panel"));
}

void TestSweepPanel::runHereAndCollect() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(tokenizer, "data/llama2c/tok512.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    (void)text;
    QTemporaryDir dir;
    QVERIFY(dir.isValid());
    const std::filesystem::path root = dir.path().toStdString();
    const json spec = {
        {"name", "gui"},
        {"output", (root / "sweep").string()},
        {"checkpoints", {{{"checkpoint", model.string()}, {"tokenizer", tokenizer.string()}}}},
        {"methods", {"none", "rtn"}},
        {"bits", {4}},
        {"tasks", {{{"name", "tinystories"}, {"limit", 4}, {"context", 64}}}},
        {"threads", 1}};
    std::ofstream(root / "sweep.json") << spec.dump();

    SweepPanel panel;
    const std::filesystem::path db = root / "runs.sqlite";
    panel.setDatabase(db, lowbit::ui::workbenchPipelineContext(lowbit::test::sharedPath("data")));
    QSignalSpy errors(&panel, &SweepPanel::errorOccurred);
    // A missing file is an error naming it; nothing is listed.
    auto missing = panel.openSweep(root / "nope.json");
    QVERIFY(!missing.ok() && missing.error().message.find("nope.json") != std::string::npos);
    QCOMPARE(panel.model()->rowCount(), 0);

    QVERIFY(panel.openSweep(root / "sweep.json").ok());
    QCOMPARE(panel.model()->rowCount(), 3); // quantize rtn 4-bit; evaluate none, rtn
    QCOMPARE(panel.model()->item(0, SweepPanel::kStage)->text(), QStringLiteral("quantize"));
    QCOMPARE(panel.model()->item(2, SweepPanel::kStage)->text(), QStringLiteral("evaluate"));
    for (int row = 0; row < 3; ++row)
        QCOMPARE(panel.model()->item(row, SweepPanel::kState)->text(),
                 QStringLiteral("not-submitted"));
    // "Submit to Slurm" is offered exactly when Slurm's tools are there.
    auto *submit = panel.findChild<QPushButton *>(QStringLiteral("submitToSlurm"));
    QVERIFY(submit);
    QCOMPARE(submit->isEnabled(), lowbit::sweep::SlurmClient::detect().ok());

    QSignalSpy finished(&panel, &SweepPanel::localRunFinished);
    QVERIFY(panel.runHere().ok());
    QVERIFY(panel.runningHere());
    QVERIFY(!panel.runHere().ok()); // one local run at a time
    QVERIFY(finished.wait(120000));
    QVERIFY(!panel.runningHere());
    QVERIFY(errors.isEmpty());
    for (int row = 0; row < 3; ++row)
        QCOMPARE(panel.model()->item(row, SweepPanel::kState)->text(), QStringLiteral("done"));

    QSignalSpy changed(&panel, &SweepPanel::runsChanged);
    auto first = panel.collect();
    QVERIFY2(first.ok(), first.ok() ? "" : first.error().message.c_str());
    QCOMPARE(first->merged.runsImported, 2);
    auto second = panel.collect();
    QVERIFY(second.ok());
    QCOMPARE(second->merged.runsImported, 0);
    QCOMPARE(second->merged.runsPresent, 2);
    QCOMPARE(changed.count(), 1);
    auto store = lowbit::RunStore::open(db, {.readOnly = true});
    QVERIFY(store.ok());
    QCOMPARE(store->listRuns().value().size(), size_t(2));
}

void TestSweepPanel::mainWindowHasTheTab() {
    lowbit::ui::MainWindow window;
    QVERIFY(window.sweepPanel());
    QVERIFY(window.views()->indexOf(window.sweepPanel()) >= 0);
}

QTEST_MAIN(TestSweepPanel)
#include "test_sweep_panel.moc"
