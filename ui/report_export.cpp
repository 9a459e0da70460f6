#include "report_export.h"

#include "compare.h"
#include "core/build_info.h"
#include "export.h"
#include "workbench_settings.h"

#include <QDateTime>
#include <QFileInfo>
#include <QImage>
#include <QPdfWriter>
#include <QSaveFile>
#include <QTextDocument>
#include <QUrl>

namespace lowbit::ui {
namespace {

using nlohmann::json;

QString escaped(const std::string &text) {
    return toQString(text).toHtmlEscaped();
}

Status writeFile(const QString &path, const QByteArray &bytes) {
    QSaveFile file(path);
    if (!file.open(QIODevice::WriteOnly) || file.write(bytes) != bytes.size() || !file.commit())
        return makeError(ErrorCode::Io, path.toStdString() + ": could not write: " +
                                            file.errorString().toStdString());
    return {};
}

QString metricsRows(const RunStore &store, std::span<const int64_t> runIds) {
    QString rows;
    for (int64_t id : runIds) {
        auto run = store.run(id);
        auto metrics = store.metrics(id);
        if (!run.ok() || !metrics.ok())
            continue;
        for (const StoredMetric &m : *metrics)
            rows += QStringLiteral("<tr><td>%1</td><td>%2</td><td>%3</td><td>%4</td><td>%5</td>"
                                   "<td>%6</td><td>%7</td><td>%8</td></tr>\n")
                        .arg(id)
                        .arg(escaped(std::filesystem::path(run->model).filename().string()),
                             escaped(methodLabel(*run)), escaped(m.task), escaped(m.metric.name),
                             QString::number(m.metric.value, 'g', 17),
                             QString::number(m.metric.stderr_, 'g', 6))
                        .arg(m.metric.n);
    }
    return rows;
}

// The report as HTML with the chart's <img> source given (a data: URI or a resource name).
Result<QString> htmlWithImage(const RunStore &store, std::span<const int64_t> runIds,
                              const QString &imageSource, const QString &comparisonText) {
    LOWBIT_TRY(json manifest, reproducibilityManifest(store, runIds));
    QString html = QStringLiteral(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>lowbit report</title>\n"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:3px 8px;text-align:left}"
        "pre{background:#f4f4f4;padding:1em;overflow:auto}</style></head><body>\n");
    html += QStringLiteral("<h1>lowbit report</h1>\n<p>Generated %1 by lowbit %2 (%3).</p>\n")
                .arg(QDateTime::currentDateTimeUtc().toString(Qt::ISODate),
                     QStringLiteral(LOWBIT_VERSION), QStringLiteral(LOWBIT_GIT_COMMIT));
    html += QStringLiteral("<h2>Metrics</h2>\n<table id=\"metrics\"><tr><th>Run</th><th>Model</th>"
                           "<th>Method</th><th>Task</th><th>Metric</th><th>Value</th>"
                           "<th>Stderr</th><th>n</th></tr>\n") +
            metricsRows(store, runIds) + QStringLiteral("</table>\n");
    if (!imageSource.isEmpty())
        html +=
            QStringLiteral("<h2>Chart</h2>\n<p><img alt=\"chart\" width=\"720\" src=\"%1\"></p>\n")
                .arg(imageSource);
    if (!comparisonText.isEmpty())
        html += QStringLiteral("<h2>Comparison</h2>\n<pre>%1</pre>\n")
                    .arg(comparisonText.toHtmlEscaped());
    html += QStringLiteral("<h2>Reproducibility manifest</h2>\n<pre id=\"manifest\">%1</pre>\n")
                .arg(escaped(manifest.dump(2)));
    html += QStringLiteral("</body></html>\n");
    return html;
}

Status writePdf(const RunStore &store, std::span<const int64_t> runIds, const QString &path,
                const QByteArray &chartPng, const QString &comparisonText) {
    // QTextDocument does not read data: URIs, so the chart goes in as a named resource.
    const QString image = chartPng.isEmpty() ? QString() : QStringLiteral("chart.png");
    LOWBIT_TRY(QString html, htmlWithImage(store, runIds, image, comparisonText));
    QTextDocument document;
    if (!chartPng.isEmpty())
        document.addResource(QTextDocument::ImageResource, QUrl(image),
                             QImage::fromData(chartPng, "PNG"));
    document.setHtml(html);
    const QString partial = path + QStringLiteral(".part");
    {
        QPdfWriter writer(partial);
        writer.setTitle(QStringLiteral("lowbit report"));
        writer.setPageSize(QPageSize(QPageSize::A4));
        document.print(&writer);
    }
    QFile::remove(path);
    if (!QFileInfo::exists(partial) || !QFile::rename(partial, path))
        return makeError(ErrorCode::Io, path.toStdString() + ": could not write the PDF");
    return {};
}

} // namespace

Result<json> reproducibilityManifest(const RunStore &store, std::span<const int64_t> runIds) {
    json runs = json::array();
    for (int64_t id : runIds) {
        LOWBIT_TRY(RunRecord run, store.run(id));
        json datasets = json::array();
        LOWBIT_TRY(std::vector<RunTaskRecord> tasks, store.runTasks(id));
        for (const RunTaskRecord &task : tasks) {
            if (!task.datasetId)
                continue;
            LOWBIT_TRY(DatasetRecord dataset, store.dataset(*task.datasetId));
            datasets.push_back({{"task", task.task},
                                {"path", dataset.path},
                                {"content_hash", dataset.contentHash},
                                {"rows", dataset.rowCount}});
        }
        runs.push_back({{"run", run.id},
                        {"checkpoint", run.model},
                        {"checkpoint_hash", run.checkpointHash},
                        {"method", run.methodKey},
                        {"spec", run.spec},
                        {"seed", run.spec.value("seed", 0)},
                        {"datasets", datasets},
                        {"device", run.device},
                        {"host", run.host},
                        {"engine_version", run.engineVersion},
                        {"engine_commit", run.engineCommit}});
    }
    return json{{"format", "lowbit-manifest"},
                {"version", 1},
                {"exporter_version", LOWBIT_VERSION},
                {"exporter_commit", LOWBIT_GIT_COMMIT},
                {"runs", runs}};
}

Result<QString> reportHtml(const RunStore &store, std::span<const int64_t> runIds,
                           const QByteArray &chartPng, const QString &comparisonText) {
    const QString image = chartPng.isEmpty() ? QString()
                                             : QStringLiteral("data:image/png;base64,") +
                                                   QString::fromLatin1(chartPng.toBase64());
    return htmlWithImage(store, runIds, image, comparisonText);
}

Status exportReport(const RunStore &store, std::span<const int64_t> runIds, const QString &path,
                    const QByteArray &chartPng, const QString &comparisonText) {
    if (runIds.empty())
        return makeError(ErrorCode::InvalidArgument, "no runs selected for the report");
    const QString suffix = QFileInfo(path).suffix().toLower();
    if (suffix == QStringLiteral("html") || suffix == QStringLiteral("htm")) {
        LOWBIT_TRY(QString html, reportHtml(store, runIds, chartPng, comparisonText));
        return writeFile(path, html.toUtf8());
    }
    if (suffix == QStringLiteral("pdf"))
        return writePdf(store, runIds, path, chartPng, comparisonText);
    LOWBIT_TRY(json manifest, reproducibilityManifest(store, runIds));
    if (suffix == QStringLiteral("json")) {
        LOWBIT_TRY(json document, exportJson(store, runIds));
        document["manifest"] = manifest;
        return writeFile(path, QByteArray::fromStdString(document.dump(2) + "\n"));
    }
    if (suffix == QStringLiteral("md")) {
        LOWBIT_TRY(std::string markdown, exportMarkdown(store, runIds));
        markdown += "\n## Reproducibility manifest\n\n```json\n" + manifest.dump(2) + "\n```\n";
        return writeFile(path, QByteArray::fromStdString(markdown));
    }
    if (suffix == QStringLiteral("csv")) {
        // CSV stays a plain table; the manifest goes beside it.
        LOWBIT_TRY(std::string csv, exportCsv(store, runIds));
        LOWBIT_CHECK(writeFile(path, QByteArray::fromStdString(csv)));
        return writeFile(path + QStringLiteral(".manifest.json"),
                         QByteArray::fromStdString(manifest.dump(2) + "\n"));
    }
    return makeError(ErrorCode::InvalidArgument,
                     path.toStdString() + ": report needs a .html, .pdf, .csv, .json or .md name");
}

} // namespace lowbit::ui
