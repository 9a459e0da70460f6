#include "metric_chart.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QFileInfo>
#include <QHBoxLayout>
#include <QSvgGenerator>
#include <QToolTip>
#include <QVBoxLayout>

#include <algorithm>
#include <map>

namespace lowbit::ui {
namespace {

constexpr double kBaselineX = 16; // where the FP16 baseline point sits on the bits axis
constexpr double kHitRadiusPx = 8;

bool lowerIsBetter(const QString &metric) {
    return metric.contains(QStringLiteral("ppl")) ||
           metric.contains(QStringLiteral("perplexity")) ||
           metric.contains(QStringLiteral("nll")) || metric.contains(QStringLiteral("kld")) ||
           metric.contains(QStringLiteral("bpb"));
}

QString seriesOf(const RunRow &row) {
    if (row.method == QStringLiteral("none"))
        return QStringLiteral("FP baseline");
    return row.groupSize > 0 ? QStringLiteral("%1 g%2").arg(row.method).arg(row.groupSize)
                             : row.method;
}

QColor seriesColor(int index) {
    static const QColor kColors[] = {
        QColor(31, 119, 180),  QColor(255, 127, 14), QColor(44, 160, 44),   QColor(214, 39, 40),
        QColor(148, 103, 189), QColor(140, 86, 75),  QColor(227, 119, 194), QColor(127, 127, 127)};
    return kColors[index % 8];
}

} // namespace

MetricChart::MetricChart(QWidget *parent) : QWidget(parent) {
    m_mode = new QComboBox(this);
    m_mode->setObjectName(QStringLiteral("chartMode"));
    m_mode->addItems({tr("Metric vs bit-width"), tr("Bars per task (selected runs)"),
                      tr("Pareto: size vs metric")});
    m_metric = new QComboBox(this);
    m_metric->setObjectName(QStringLiteral("chartMetric"));
    m_metric->setToolTip(tr("Task and metric to plot"));
    m_plot = new QCustomPlot(this);
    m_plot->setObjectName(QStringLiteral("chartPlot"));
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_plot->legend->setVisible(true);
    m_plot->setMinimumSize(320, 240);
    auto *controls = new QHBoxLayout;
    controls->addWidget(m_mode);
    controls->addWidget(m_metric, 1);
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(controls);
    layout->addWidget(m_plot, 1);

    m_redraw.setSingleShot(true);
    m_redraw.setInterval(kRedrawDelayMs);
    connect(&m_redraw, &QTimer::timeout, this, &MetricChart::redraw);
    connect(m_mode, &QComboBox::currentIndexChanged, this, &MetricChart::scheduleRedraw);
    connect(m_metric, &QComboBox::currentIndexChanged, this, &MetricChart::scheduleRedraw);
    connect(m_plot, &QCustomPlot::mouseMove, this, &MetricChart::onMouseMove);
    connect(m_plot, &QCustomPlot::mousePress, this, [this](QMouseEvent *event) {
        if (const ChartPoint *point = pointAt(event->position()))
            emit runActivated(point->runId);
    });
    connect(m_plot, &QCustomPlot::plottableClick, this,
            [this](QCPAbstractPlottable *plottable, int index, QMouseEvent *) {
                onPlottableClick(plottable, index);
            });
}

void MetricChart::setRows(const std::vector<RunRow> &rows) {
    m_rows = rows;
    fillMetricChoices();
    scheduleRedraw();
}

void MetricChart::setSelectedRuns(const std::vector<int64_t> &runIds) {
    m_selected = runIds;
    scheduleRedraw();
}

void MetricChart::setMode(Mode mode) {
    m_mode->setCurrentIndex(int(mode));
    scheduleRedraw();
}

bool MetricChart::setMetric(const QString &task, const QString &metric) {
    const int index = m_metric->findData(QStringList{task, metric});
    if (index >= 0)
        m_metric->setCurrentIndex(index);
    return index >= 0;
}

void MetricChart::fillMetricChoices() {
    const QVariant current = m_metric->currentData();
    const QSignalBlocker blocker(m_metric);
    m_metric->clear();
    std::map<QStringList, bool> seen;
    for (const RunRow &row : m_rows)
        if (row.value && !seen[{row.task, row.metric}]) {
            seen[{row.task, row.metric}] = true;
            m_metric->addItem(QStringLiteral("%1 · %2").arg(row.task, row.metric),
                              QStringList{row.task, row.metric});
        }
    const int index = m_metric->findData(current);
    m_metric->setCurrentIndex(index >= 0 ? index : 0);
}

void MetricChart::scheduleRedraw() {
    if (!m_redraw.isActive())
        m_redraw.start();
}

void MetricChart::flush() {
    if (m_redraw.isActive()) {
        m_redraw.stop();
        redraw();
    }
}

bool MetricChart::matchesMetric(const RunRow &row) const {
    const QStringList choice = m_metric->currentData().toStringList();
    return row.value && row.status == RunStatus::Done && choice.size() == 2 &&
           row.task == choice[0] && row.metric == choice[1];
}

void MetricChart::redraw() {
    ++m_redrawCount;
    m_points.clear();
    m_plot->clearPlottables();
    m_plot->clearItems();
    m_plot->xAxis->setScaleType(QCPAxis::stLinear);
    m_plot->yAxis->setScaleType(QCPAxis::stLinear);
    m_plot->xAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTicker>(new QCPAxisTicker));
    switch (Mode(m_mode->currentIndex())) {
    case Mode::MetricVsBits: drawMetricVsBits(); break;
    case Mode::BarsPerTask: drawBarsPerTask(); break;
    case Mode::Pareto: drawPareto(); break;
    }
    m_plot->replot();
}

void MetricChart::drawMetricVsBits() {
    const QString metric = m_metric->currentData().toStringList().value(1);
    // Latest done run per (series, bits): rows come newest last from listRuns' id order.
    std::map<QString, std::map<int, const RunRow *>> series;
    for (const RunRow &row : m_rows)
        if (matchesMetric(row))
            series[seriesOf(row)][row.bits] = &row;
    auto ticker = QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText);
    for (int bits : {1, 2, 3, 4, 5, 6, 8})
        ticker->addTick(bits, QString::number(bits));
    ticker->addTick(kBaselineX, QStringLiteral("FP16"));
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setScaleType(QCPAxis::stLogarithmic);
    m_plot->xAxis->setLabel(tr("bits per weight"));
    m_plot->xAxis->setRange(0.8, 20);
    const bool logY = lowerIsBetter(metric) && metric.contains(QStringLiteral("ppl"));
    if (logY) {
        m_plot->yAxis->setScaleType(QCPAxis::stLogarithmic);
        m_plot->yAxis->setTicker(QSharedPointer<QCPAxisTickerLog>(new QCPAxisTickerLog));
    }
    m_plot->yAxis->setLabel(metric);
    int colorIndex = 0;
    for (const auto &[name, byBits] : series) {
        const bool baseline = name == QStringLiteral("FP baseline");
        QCPGraph *graph = m_plot->addGraph();
        graph->setName(name);
        QPen pen(baseline ? QColor(60, 60, 60) : seriesColor(colorIndex++), 2);
        graph->setPen(pen);
        graph->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, 7));
        for (const auto &[bits, row] : byBits) {
            const double x = baseline ? kBaselineX : double(bits);
            graph->addData(x, *row->value);
            m_points.push_back({row->runId, name, x, *row->value});
        }
        if (baseline && !byBits.empty()) {
            auto *line = new QCPItemStraightLine(m_plot);
            pen.setStyle(Qt::DashLine);
            pen.setWidth(1);
            line->setPen(pen);
            const double y = *byBits.rbegin()->second->value;
            line->point1->setCoords(0.5, y);
            line->point2->setCoords(kBaselineX, y);
        }
    }
    m_plot->yAxis->rescale();
    if (m_plot->yAxis->range().size() <= 0 || logY)
        m_plot->yAxis->scaleRange(1.2, m_plot->yAxis->range().center());
    else
        m_plot->yAxis->scaleRange(1.15, m_plot->yAxis->range().center());
}

void MetricChart::drawBarsPerTask() {
    std::vector<QString> tasks;
    std::map<int64_t, std::vector<const RunRow *>> byRun;
    for (const RunRow &row : m_rows) {
        if (!row.value ||
            std::find(m_selected.begin(), m_selected.end(), row.runId) == m_selected.end())
            continue;
        if (std::find(tasks.begin(), tasks.end(), row.task) == tasks.end())
            tasks.push_back(row.task);
        byRun[row.runId].push_back(&row);
    }
    auto ticker = QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText);
    for (size_t i = 0; i < tasks.size(); ++i)
        ticker->addTick(double(i + 1), tasks[i]);
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setLabel(tr("task"));
    m_plot->yAxis->setLabel(tr("headline metric"));
    auto *group = new QCPBarsGroup(m_plot);
    int colorIndex = 0;
    for (const auto &[runId, rows] : byRun) {
        auto *bars = new QCPBars(m_plot->xAxis, m_plot->yAxis);
        const QString name = QStringLiteral("run %1: %2").arg(runId).arg(seriesOf(*rows.front()));
        bars->setName(name);
        bars->setBrush(seriesColor(colorIndex++));
        bars->setWidth(0.8 / double(std::max<size_t>(1, byRun.size())));
        bars->setBarsGroup(group);
        bars->setProperty("runId", qlonglong(runId));
        for (const RunRow *row : rows) {
            const double x =
                double(std::find(tasks.begin(), tasks.end(), row->task) - tasks.begin() + 1);
            bars->addData(x, *row->value);
            m_points.push_back({runId, name, x, *row->value});
        }
    }
    m_plot->xAxis->setRange(0.3, double(tasks.size()) + 0.7);
    m_plot->yAxis->rescale();
    m_plot->yAxis->setRangeLower(0);
    m_plot->yAxis->scaleRange(1.1, m_plot->yAxis->range().lower);
}

void MetricChart::drawPareto() {
    const QString metric = m_metric->currentData().toStringList().value(1);
    const bool lower = lowerIsBetter(metric);
    std::vector<const RunRow *> rows;
    for (const RunRow &row : m_rows)
        if (matchesMetric(row) && row.sizeGb > 0)
            rows.push_back(&row);
    std::sort(rows.begin(), rows.end(),
              [](const RunRow *a, const RunRow *b) { return a->sizeGb < b->sizeGb; });
    QCPGraph *all = m_plot->addGraph();
    all->setName(tr("runs"));
    all->setLineStyle(QCPGraph::lsNone);
    all->setScatterStyle(QCPScatterStyle(QCPScatterStyle::ssCircle, QColor(31, 119, 180),
                                         QColor(31, 119, 180, 80), 8));
    QCPGraph *frontier = m_plot->addGraph();
    frontier->setName(tr("Pareto frontier"));
    frontier->setPen(QPen(QColor(214, 39, 40), 2));
    frontier->setLineStyle(QCPGraph::lsStepLeft);
    std::optional<double> best;
    for (const RunRow *row : rows) {
        all->addData(row->sizeGb, *row->value);
        m_points.push_back({row->runId, seriesOf(*row), row->sizeGb, *row->value});
        const bool better = !best || (lower ? *row->value < *best : *row->value > *best);
        if (better) {
            best = *row->value;
            frontier->addData(row->sizeGb, *row->value);
        }
    }
    m_plot->xAxis->setLabel(tr("model size (GB)"));
    m_plot->yAxis->setLabel(metric);
    m_plot->rescaleAxes();
    m_plot->xAxis->scaleRange(1.2, m_plot->xAxis->range().center());
    m_plot->yAxis->scaleRange(1.2, m_plot->yAxis->range().center());
}

const ChartPoint *MetricChart::pointAt(const QPointF &pixel) const {
    if (Mode(m_mode->currentIndex()) == Mode::BarsPerTask)
        return nullptr; // bars are hit through plottableClick
    const ChartPoint *nearest = nullptr;
    double nearestDistance = kHitRadiusPx;
    for (const ChartPoint &point : m_points) {
        const QPointF at(m_plot->xAxis->coordToPixel(point.x),
                         m_plot->yAxis->coordToPixel(point.y));
        const double distance = QLineF(at, pixel).length();
        if (distance <= nearestDistance) {
            nearestDistance = distance;
            nearest = &point;
        }
    }
    return nearest;
}

void MetricChart::onMouseMove(QMouseEvent *event) {
    const ChartPoint *point = pointAt(event->position());
    if (!point) {
        QToolTip::hideText();
        return;
    }
    QToolTip::showText(event->globalPosition().toPoint(),
                       tr("%1\n%2 = %3\nrun %4 (click to open)")
                           .arg(point->series)
                           .arg(m_plot->xAxis->label())
                           .arg(QString::number(point->y, 'g', 8))
                           .arg(point->runId),
                       m_plot);
}

void MetricChart::onPlottableClick(QCPAbstractPlottable *plottable, int) {
    const QVariant runId = plottable->property("runId");
    if (runId.isValid())
        emit runActivated(runId.toLongLong());
}

QByteArray MetricChart::pngBytes(int width, int height) {
    flush();
    const QPixmap pixmap = m_plot->toPixmap(width, height);
    QByteArray bytes;
    QBuffer buffer(&bytes);
    buffer.open(QIODevice::WriteOnly);
    pixmap.save(&buffer, "PNG");
    return bytes;
}

Status MetricChart::exportTo(const QString &path, int width, int height) {
    flush();
    const QString suffix = QFileInfo(path).suffix().toLower();
    bool ok = false;
    if (suffix == QStringLiteral("png")) {
        ok = m_plot->savePng(path, width, height);
    } else if (suffix == QStringLiteral("pdf")) {
        ok = m_plot->savePdf(path, width, height);
    } else if (suffix == QStringLiteral("svg")) {
        QSvgGenerator svg;
        svg.setFileName(path);
        svg.setSize(QSize(width, height));
        svg.setViewBox(QRect(0, 0, width, height));
        QCPPainter painter;
        ok = painter.begin(&svg);
        if (ok) {
            m_plot->toPainter(&painter, width, height);
            ok = painter.end();
        }
    } else {
        return makeError(ErrorCode::InvalidArgument,
                         path.toStdString() + ": chart export needs a .png, .pdf or .svg name");
    }
    if (!ok)
        return makeError(ErrorCode::Io, path.toStdString() + ": could not write the chart");
    return {};
}

} // namespace lowbit::ui
