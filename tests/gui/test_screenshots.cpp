// Renders the workbench's main views after a small real run (stories260K, tinystories with 20
// documents of 128 tokens: the FP baseline and RTN at 2, 3 and 4 bits). In the test suite it checks
// that every view renders to a non-blank image; scripts/screenshots.sh runs it under Xvfb with
// LOWBIT_SCREENSHOT_DIR set, and then the images are written there (docs/screenshots/*.png).
#include "compare_view.h"
#include "job_queue.h"
#include "layer_error_map.h"
#include "main_window.h"
#include "method_panel.h"
#include "metric_chart.h"
#include "model_panel.h"
#include "run_details.h"
#include "runs_browser.h"
#include "runs_model.h"
#include "shared_data.h"
#include "tasks_panel.h"
#include "workbench_settings.h"

#include <QDir>
#include <QSettings>
#include <QTabWidget>
#include <QTemporaryDir>
#include <QtTest>

using namespace lowbit;
using namespace lowbit::ui;

class TestScreenshots : public QObject {
    Q_OBJECT
private slots:
    void initTestCase();
    void mainViews();

private:
    void save(QWidget *widget, const QString &name);

    QTemporaryDir m_dir;
    QString m_outDir;
};

void TestScreenshots::initTestCase() {
    LOWBIT_REQUIRE_SHARED_FILE(model, "data/llama2c/stories260K.bin");
    LOWBIT_REQUIRE_SHARED_FILE(text, "data/tinystories/tinystories_val_first1000.txt");
    QVERIFY(m_dir.isValid());
    QSettings::setDefaultFormat(QSettings::IniFormat);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_dir.filePath("settings"));
    QCoreApplication::setOrganizationName(QStringLiteral("lowbit-test"));
    QCoreApplication::setApplicationName(QStringLiteral("test_screenshots"));
    QSettings settings;
    settings.setValue(kDatabaseKey, m_dir.filePath("runs.sqlite"));
    settings.setValue(kDataDirKey, toQString(test::sharedPath("data").string()));
    settings.setValue(kThreadsKey, 1);
    m_outDir = qEnvironmentVariable("LOWBIT_SCREENSHOT_DIR");
    if (!m_outDir.isEmpty())
        QVERIFY(QDir().mkpath(m_outDir));
}

void TestScreenshots::save(QWidget *widget, const QString &name) {
    QCoreApplication::processEvents();
    const QImage image = widget->grab().toImage();
    QVERIFY(!image.isNull());
    // Not blank: a rendered view has many distinct colours.
    QSet<QRgb> colours;
    for (int y = 0; y < image.height(); y += 7)
        for (int x = 0; x < image.width(); x += 7)
            colours.insert(image.pixel(x, y));
    QVERIFY2(colours.size() > 8, qPrintable(name));
    if (!m_outDir.isEmpty())
        QVERIFY(image.save(QDir(m_outDir).filePath(name + ".png")));
}

void TestScreenshots::mainViews() {
    MainWindow window;
    window.resize(1440, 900);
    window.show();
    const auto model = test::sharedPath("data/llama2c/stories260K.bin");
    window.modelPanel()->openCheckpoint(toQString(model.string()));
    QTRY_COMPARE_WITH_TIMEOUT(window.modelPanel()->state(), ModelPanel::State::Loaded, 30000);
    QVERIFY(window.tasksPanel()->setTaskChecked("tinystories", true));
    QVERIFY(window.tasksPanel()->setTaskLimit("tinystories", 20));
    QVERIFY(window.tasksPanel()->setTaskContext("tinystories", 128));
    QVERIFY(window.methodPanel()->selectMethod("rtn"));
    window.methodPanel()->setBits({2, 3, 4});
    window.methodPanel()->setGroupSize(32);
    window.methodPanel()->setIncludeBaseline(true);
    const std::vector<int64_t> runs = window.runExperiment();
    QCOMPARE(runs.size(), size_t(4));
    QTRY_VERIFY_WITH_TIMEOUT(window.jobQueue()->activeJobs() == 0, 300000);
    QTRY_COMPARE(window.runsModel()->rowCount(), 4);
    save(&window, "workbench");
    window.chart()->setMetric("tinystories", "ppl");
    window.views()->setCurrentWidget(window.chart());
    window.chart()->flush();
    save(&window, "chart_metric_vs_bits");
    window.chart()->setMode(MetricChart::Mode::Pareto);
    window.chart()->flush();
    save(window.chart(), "chart_pareto");
    window.runsBrowser()->selectRuns({runs[1]}); // RTN 2-bit
    QVERIFY(window.layerErrors()->layerCount() > 0);
    window.views()->setCurrentWidget(window.layerErrors());
    save(window.layerErrors(), "layer_errors");
    window.runsBrowser()->selectRuns({runs[0], runs[3]});
    emit window.runsBrowser()->compareRequested({runs[0], runs[3]});
    QVERIFY(window.compareView()->comparison().has_value());
    save(&window, "compare");
    RunDetails details(databasePath(), runs[3]);
    details.resize(900, 600);
    details.show();
    details.tabs()->setCurrentIndex(2);
    save(&details, "run_details");
}

QTEST_MAIN(TestScreenshots)
#include "test_screenshots.moc"
