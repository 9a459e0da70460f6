#include "compare_view.h"

#include "workbench_settings.h"

#include <QHeaderView>
#include <QLabel>
#include <QSplitter>
#include <QTableWidget>
#include <QVBoxLayout>

#include <map>

namespace lowbit::ui {
namespace {

QTableWidget *makeTable(const QString &name, QWidget *parent) {
    auto *table = new QTableWidget(parent);
    table->setObjectName(name);
    table->setEditTriggers(QAbstractItemView::NoEditTriggers);
    table->horizontalHeader()->setStretchLastSection(true);
    table->verticalHeader()->hide();
    return table;
}

void setCell(QTableWidget *table, int row, int column, const QString &text,
             const QColor &color = QColor()) {
    auto *item = new QTableWidgetItem(text);
    item->setToolTip(text);
    if (color.isValid())
        item->setForeground(color);
    table->setItem(row, column, item);
}

QString valueText(const MetricValue &value) {
    QString text = QString::number(value.value, 'g', 6);
    if (value.stderr_ > 0)
        text += QStringLiteral(" ± %1").arg(QString::number(1.96 * value.stderr_, 'g', 3));
    return text;
}

} // namespace

CompareView::CompareView(QWidget *parent) : QWidget(parent) {
    m_header =
        new QLabel(tr("Select two or more runs in the runs browser and press Compare."), this);
    m_header->setWordWrap(true);
    m_metrics = makeTable(QStringLiteral("compareMetrics"), this);
    m_tests = makeTable(QStringLiteral("compareTests"), this);
    m_flips = makeTable(QStringLiteral("compareFlips"), this);
    auto *split = new QSplitter(Qt::Vertical, this);
    split->addWidget(m_metrics);
    split->addWidget(m_tests);
    split->addWidget(m_flips);
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_header);
    layout->addWidget(split, 1);
}

Status CompareView::compare(const std::filesystem::path &database,
                            const std::vector<int64_t> &runIds) {
    LOWBIT_TRY(RunStore store, RunStore::open(database, {.readOnly = true}));
    LOWBIT_TRY(Comparison comparison, compareRuns(store, runIds));
    m_runIds = runIds;
    QStringList names;
    for (const RunRecord &run : comparison.runs)
        names << QStringLiteral("run %1 (%2)").arg(run.id).arg(toQString(methodLabel(run)));
    m_header->setText(tr("Baseline: %1. Compared: %2.")
                          .arg(names.value(0), names.mid(1).join(QStringLiteral(", "))));
    showMetrics(comparison);
    showTests(comparison);
    showFlips(store, comparison);
    m_comparison = std::move(comparison);
    return {};
}

void CompareView::showMetrics(const Comparison &comparison) {
    QStringList headers = {tr("Task"), tr("Metric")};
    for (size_t i = 0; i < comparison.runs.size(); ++i)
        headers << (i == 0 ? tr("run %1 (base)") : tr("run %1 (Δ)")).arg(comparison.runs[i].id);
    m_metrics->clear();
    m_metrics->setColumnCount(int(headers.size()));
    m_metrics->setHorizontalHeaderLabels(headers);
    m_metrics->setRowCount(int(comparison.metrics.size()));
    for (int row = 0; row < int(comparison.metrics.size()); ++row) {
        const MetricComparison &m = comparison.metrics[size_t(row)];
        setCell(m_metrics, row, 0, toQString(m.task));
        setCell(m_metrics, row, 1, toQString(m.metric));
        const auto &base = m.values.empty() ? std::nullopt : m.values.front();
        for (size_t i = 0; i < m.values.size(); ++i) {
            QString text = m.values[i] ? valueText(*m.values[i]) : tr("—");
            if (i > 0 && base && m.values[i])
                text += QStringLiteral("  (%1%2)")
                            .arg(m.values[i]->value >= base->value ? "+" : "")
                            .arg(QString::number(m.values[i]->value - base->value, 'g', 4));
            setCell(m_metrics, row, int(2 + i), text);
        }
    }
    m_metrics->resizeColumnsToContents();
}

void CompareView::showTests(const Comparison &comparison) {
    m_tests->clear();
    m_tests->setColumnCount(6);
    m_tests->setHorizontalHeaderLabels(
        {tr("Task"), tr("Runs"), tr("Paired docs"), tr("Test"), tr("Result"), tr("Protocol")});
    m_tests->setRowCount(int(comparison.pairs.size()));
    for (int row = 0; row < int(comparison.pairs.size()); ++row) {
        const PairComparison &pair = comparison.pairs[size_t(row)];
        setCell(m_tests, row, 0, toQString(pair.task));
        setCell(m_tests, row, 1, QStringLiteral("%1 → %2").arg(pair.baseRun).arg(pair.otherRun));
        setCell(m_tests, row, 2,
                QStringLiteral("%1 (+%2 unpaired)")
                    .arg(pair.pairedDocuments)
                    .arg(pair.unpairedDocuments));
        QString result;
        if (pair.test == "mcnemar")
            result = tr("right→wrong %1, wrong→right %2, p = %3")
                         .arg(pair.rightToWrong)
                         .arg(pair.wrongToRight)
                         .arg(QString::number(pair.pValue, 'g', 3));
        else if (pair.test == "bootstrap")
            result = tr("Δppl %1 [%2, %3], Δnll/token %4")
                         .arg(QString::number(pair.nll.pplDelta.estimate, 'g', 4))
                         .arg(QString::number(pair.nll.pplDelta.low, 'g', 4))
                         .arg(QString::number(pair.nll.pplDelta.high, 'g', 4))
                         .arg(QString::number(pair.nll.meanNllDelta.estimate, 'g', 4));
        setCell(m_tests, row, 3, toQString(pair.test.empty() ? "—" : pair.test));
        setCell(m_tests, row, 4, result);
        QStringList differences;
        for (const std::string &d : pair.protocolDifferences)
            differences << toQString(d);
        setCell(m_tests, row, 5,
                differences.isEmpty() ? tr("same") : tr("MISMATCH: ") + differences.join("; "),
                differences.isEmpty() ? QColor() : QColor(Qt::red));
    }
    m_tests->resizeColumnsToContents();
}

void CompareView::showFlips(const RunStore &store, const Comparison &comparison) {
    m_flips->clear();
    m_flips->setColumnCount(6);
    m_flips->setHorizontalHeaderLabels({tr("Task"), tr("Document"), tr("Flip"), tr("Target"),
                                        tr("Base output"), tr("Other output")});
    m_flips->setRowCount(0);
    for (const PairComparison &pair : comparison.pairs) {
        if (pair.test != "mcnemar")
            continue;
        auto base = store.samples(pair.baseRun, pair.task);
        auto other = store.samples(pair.otherRun, pair.task);
        if (!base.ok() || !other.ok())
            continue;
        std::map<std::string, const SampleRecord *> byDoc;
        for (const SampleRecord &s : *base)
            byDoc[s.docId] = &s;
        for (const SampleRecord &s : *other) {
            const auto found = byDoc.find(s.docId);
            if (found == byDoc.end() || found->second->docHash != s.docHash ||
                found->second->correct < 0 || s.correct < 0 || found->second->correct == s.correct)
                continue;
            const int row = m_flips->rowCount();
            m_flips->insertRow(row);
            setCell(m_flips, row, 0, toQString(pair.task));
            setCell(m_flips, row, 1, toQString(s.docId));
            setCell(m_flips, row, 2, s.correct ? tr("wrong→right") : tr("right→wrong"),
                    s.correct ? QColor(Qt::darkGreen) : QColor(Qt::red));
            setCell(m_flips, row, 3, toQString(s.target));
            setCell(m_flips, row, 4, toQString(found->second->output));
            setCell(m_flips, row, 5, toQString(s.output));
        }
    }
}

} // namespace lowbit::ui
