// Report export: the selected runs as HTML (self-contained: the chart is embedded as a base64
// PNG), PDF (the same document through QPdfWriter), CSV, JSON or Markdown (the store's exports,
// storage/export.h), each with a reproducibility manifest: per run the checkpoint path and
// content hash, the datasets with their hashes, the job spec (seeds included), the engine
// version and commit, the device and host.
//
// Plain functions; GUI thread (QTextDocument/QPdfWriter). The format follows the file's suffix.
#pragma once

#include "core/result.h"
#include "run_store.h"

#include <QByteArray>
#include <QString>

#include <nlohmann/json.hpp>

#include <span>

namespace lowbit::ui {

Result<nlohmann::json> reproducibilityManifest(const RunStore &store,
                                               std::span<const int64_t> runIds);
// `chartPng` may be empty (no chart section); `comparisonText` may be empty.
Result<QString> reportHtml(const RunStore &store, std::span<const int64_t> runIds,
                           const QByteArray &chartPng, const QString &comparisonText);
// .html/.htm, .pdf, .csv, .json, .md; written to a temporary name and renamed.
Status exportReport(const RunStore &store, std::span<const int64_t> runIds, const QString &path,
                    const QByteArray &chartPng, const QString &comparisonText = {});

} // namespace lowbit::ui
