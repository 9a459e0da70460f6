// ModelPanel offscreen: a load runs off the GUI thread and ends as facts or as a readable error
// inside the panel; the recent list remembers what loaded.
#include "checkpoint_facts.h"
#include "main_window.h"
#include "model_panel.h"
#include "shared_data.h"

#include <QFile>
#include <QJsonDocument>
#include <QJsonObject>
#include <QLabel>
#include <QListWidget>
#include <QMimeData>
#include <QSettings>
#include <QSignalSpy>
#include <QTemporaryDir>
#include <QTreeWidget>
#include <QUrl>
#include <QtTest>

using lowbit::ui::ModelPanel;

class TestModelPanel : public QObject {
    Q_OBJECT

private slots:
    void initTestCase();
    void init();
    void missingPathShowsError();
    void badGgufMagicShowsErrorNamingTheFile();
    void droppedUrlIsOpened();
    void newestRequestWinsWhileLoading();
    void huggingFaceFixtureShowsArchitecture();
    void mainWindowWiresThePanel();
    void formatsAreReadable();

private:
    QTemporaryDir m_settingsDir;
    QTemporaryDir m_files;
};

void TestModelPanel::initTestCase() {
    QVERIFY(m_settingsDir.isValid());
    QVERIFY(m_files.isValid());
    // Keep the recent list of a real user untouched.
    QSettings::setDefaultFormat(QSettings::IniFormat);
    QSettings::setPath(QSettings::IniFormat, QSettings::UserScope, m_settingsDir.path());
    QCoreApplication::setOrganizationName(QStringLiteral("lowbit-test"));
    QCoreApplication::setApplicationName(QStringLiteral("test_model_panel"));
}

void TestModelPanel::init() {
    QSettings().remove(ModelPanel::kRecentKey);
}

void TestModelPanel::missingPathShowsError() {
    ModelPanel panel;
    const QString path = m_files.filePath(QStringLiteral("no-such-model.gguf"));
    panel.openCheckpoint(path);
    QTRY_COMPARE(panel.state(), ModelPanel::State::Failed);
    QVERIFY2(panel.statusText().contains(QStringLiteral("Could not open")),
             qPrintable(panel.statusText()));
    QVERIFY2(panel.statusText().contains(QStringLiteral("no-such-model.gguf")),
             qPrintable(panel.statusText()));
    QVERIFY(!panel.checkpoint());
    // The message is shown in the panel itself, not in a dialog.
    auto *label = panel.findChild<QLabel *>(QStringLiteral("modelStatus"));
    QVERIFY(label);
    QCOMPARE(label->text(), panel.statusText());
    QVERIFY(QApplication::topLevelWidgets().size() <= 1);
    QCOMPARE(panel.findChild<QListWidget *>(QStringLiteral("recentCheckpoints"))->count(), 0);
}

void TestModelPanel::badGgufMagicShowsErrorNamingTheFile() {
    const QString path = m_files.filePath(QStringLiteral("garbage.gguf"));
    QFile file(path);
    QVERIFY(file.open(QIODevice::WriteOnly));
    file.write("NOPE this is not a GGUF file at all");
    file.close();

    ModelPanel panel;
    panel.openCheckpoint(path);
    QTRY_COMPARE(panel.state(), ModelPanel::State::Failed);
    QVERIFY2(panel.statusText().contains(QStringLiteral("garbage.gguf")),
             qPrintable(panel.statusText()));
    QVERIFY2(panel.statusText().contains(QStringLiteral("magic"), Qt::CaseInsensitive),
             qPrintable(panel.statusText()));
}

void TestModelPanel::droppedUrlIsOpened() {
    ModelPanel panel;
    const QString path = m_files.filePath(QStringLiteral("dropped-missing.bin"));
    QMimeData mime;
    mime.setUrls({QUrl::fromLocalFile(path)});
    QDragEnterEvent enter(QPoint(5, 5), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(&panel, &enter);
    QVERIFY(enter.isAccepted());
    QDropEvent drop(QPointF(5, 5), Qt::CopyAction, &mime, Qt::LeftButton, Qt::NoModifier);
    QCoreApplication::sendEvent(&panel, &drop);
    QTRY_COMPARE(panel.state(), ModelPanel::State::Failed);
    QVERIFY2(panel.statusText().contains(QStringLiteral("dropped-missing.bin")),
             qPrintable(panel.statusText()));
}

void TestModelPanel::newestRequestWinsWhileLoading() {
    ModelPanel panel;
    panel.openCheckpoint(m_files.filePath(QStringLiteral("first-missing.gguf")));
    panel.openCheckpoint(m_files.filePath(QStringLiteral("second-missing.gguf")));
    panel.openCheckpoint(m_files.filePath(QStringLiteral("third-missing.gguf")));
    QTRY_COMPARE(panel.state(), ModelPanel::State::Failed);
    // Either the first load had already finished (each request ran) or the later ones queued:
    // in both cases the panel ends on the newest request.
    QTRY_VERIFY2(panel.statusText().contains(QStringLiteral("third-missing.gguf")),
                 qPrintable(panel.statusText()));
    QCOMPARE(panel.state(), ModelPanel::State::Failed);
}

void TestModelPanel::huggingFaceFixtureShowsArchitecture() {
    LOWBIT_REQUIRE_SHARED_FILE(configPath, "fixtures/tiny-llama3-a/config.json");
    // Independent reference: the numbers as config.json states them.
    QFile configFile(QString::fromStdString(configPath.string()));
    QVERIFY(configFile.open(QIODevice::ReadOnly));
    const QJsonObject config = QJsonDocument::fromJson(configFile.readAll()).object();
    QVERIFY(config.contains(QStringLiteral("hidden_size")));

    ModelPanel panel;
    QSignalSpy loaded(&panel, &ModelPanel::checkpointLoaded);
    const QString dir = QString::fromStdString(configPath.parent_path().string());
    panel.openCheckpoint(dir);
    QTRY_VERIFY2_WITH_TIMEOUT(panel.state() != ModelPanel::State::Loading, "load did not finish",
                              30000);
    QVERIFY2(panel.state() == ModelPanel::State::Loaded, qPrintable(panel.statusText()));
    QCOMPARE(loaded.count(), 1);

    const auto number = [&](const char *key) {
        return QString::number(config.value(QLatin1String(key)).toInteger());
    };
    QCOMPARE(panel.factValue(QStringLiteral("Hidden size")), number("hidden_size"));
    QCOMPARE(panel.factValue(QStringLiteral("Layers")), number("num_hidden_layers"));
    QCOMPARE(panel.factValue(QStringLiteral("Attention heads")), number("num_attention_heads"));
    QCOMPARE(panel.factValue(QStringLiteral("Format")), QStringLiteral("huggingface"));
    QVERIFY(!panel.factValue(QStringLiteral("Parameters")).isEmpty());

    // A successful load goes on the recent list (absolute path, newest first).
    auto *recent = panel.findChild<QListWidget *>(QStringLiteral("recentCheckpoints"));
    QCOMPARE(recent->count(), 1);
    QCOMPARE(recent->item(0)->data(Qt::UserRole).toString(), QFileInfo(dir).absoluteFilePath());

    // A later failure keeps the loaded checkpoint and says so.
    panel.openCheckpoint(m_files.filePath(QStringLiteral("missing-after.gguf")));
    QTRY_COMPARE(panel.state(), ModelPanel::State::Failed);
    QVERIFY(panel.checkpoint());
    QCOMPARE(panel.factValue(QStringLiteral("Hidden size")), number("hidden_size"));
    QVERIFY2(panel.statusText().contains(QStringLiteral("Still showing")),
             qPrintable(panel.statusText()));
}

void TestModelPanel::mainWindowWiresThePanel() {
    lowbit::ui::MainWindow window;
    QVERIFY(window.modelPanel());
    window.modelPanel()->openCheckpoint(m_files.filePath(QStringLiteral("window-missing.gguf")));
    QTRY_COMPARE(window.modelPanel()->state(), ModelPanel::State::Failed);
}

void TestModelPanel::formatsAreReadable() {
    using lowbit::ui::formatBytes;
    using lowbit::ui::formatCount;
    QCOMPARE(formatBytes(512), std::string("512 B"));
    QCOMPARE(formatBytes(1536), std::string("1.50 KiB"));
    QCOMPARE(formatBytes(uint64_t(16) * 1024 * 1024 * 1024 + uint64_t(512) * 1024 * 1024),
             std::string("16.5 GiB"));
    QCOMPARE(formatCount(999), std::string("999"));
    QCOMPARE(formatCount(8030261248), std::string("8.03 B (8030261248)"));
    QCOMPARE(formatCount(260224), std::string("260 K (260224)"));

    lowbit::ModelConfig config;
    config.numLayers = 32;
    config.numKvHeads = 8;
    config.headDim = 128;
    // Llama 3 8B: 2 x 32 layers x 8 x 128 floats x 4 bytes = 256 KiB per token.
    QCOMPARE(lowbit::ui::kvCacheBytes(config, 2048), uint64_t(2048) * 256 * 1024);
}

QTEST_MAIN(TestModelPanel)
#include "test_model_panel.moc"
