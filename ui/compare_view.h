// CompareView: two or more runs side by side, from the store's compareRuns (storage/compare.h):
// each metric per run with its delta against the first run (± 1.96 stderr), each paired test
// (McNemar for accuracy tasks, paired bootstrap for perplexity) with protocol mismatches flagged,
// and for accuracy tasks the list of flipped samples with their texts.
//
// GUI thread only; compare() reads the store read-only while it runs (bootstrap included: a few
// thousand resamples of at most a few thousand documents, well under a second).
#pragma once

#include "compare.h"
#include "core/result.h"

#include <QWidget>

#include <filesystem>
#include <optional>
#include <vector>

class QLabel;
class QTableWidget;

namespace lowbit::ui {

class CompareView : public QWidget {
    Q_OBJECT
public:
    explicit CompareView(QWidget *parent = nullptr);

    Status compare(const std::filesystem::path &database, const std::vector<int64_t> &runIds);
    const std::optional<Comparison> &comparison() const { return m_comparison; }
    const std::vector<int64_t> &runIds() const { return m_runIds; }
    QTableWidget *metricsTable() const { return m_metrics; }
    QTableWidget *testsTable() const { return m_tests; }
    QTableWidget *flipsTable() const { return m_flips; }

private:
    void showMetrics(const Comparison &comparison);
    void showTests(const Comparison &comparison);
    void showFlips(const RunStore &store, const Comparison &comparison);

    QLabel *m_header = nullptr;
    QTableWidget *m_metrics = nullptr;
    QTableWidget *m_tests = nullptr;
    QTableWidget *m_flips = nullptr;
    std::optional<Comparison> m_comparison;
    std::vector<int64_t> m_runIds;
};

} // namespace lowbit::ui
