// MetricChart: QCustomPlot views of the stored runs (RunsModel rows, status done):
//   - Metric vs bit-width: one line per method (and group size), the FP baseline as a dashed
//     horizontal line plus its point at x = 16 ("FP16"); log-scaled y for perplexities.
//   - Bars per task: the headline metric of the selected runs, grouped by task.
//   - Pareto: model size (GB, the quantized artifact or the checkpoint) vs the metric, with the
//     frontier (no other run both smaller and better) drawn as a line.
// Hovering a point shows its exact value; clicking one emits runActivated. Data changes only
// schedule a redraw on a single-shot kRedrawDelayMs timer, so a burst of results is one redraw.
//
// GUI thread only.
#pragma once

#include "core/result.h"
#include "runs_model.h"

#include <QTimer>
#include <QWidget>

#include <vector>

class QComboBox;
class QCustomPlot;
class QCPAbstractPlottable;
class QMouseEvent;

namespace lowbit::ui {

struct ChartPoint {
    int64_t runId = 0;
    QString series; // "rtn", "rtn g32", "FP baseline", run label for bars
    double x = 0, y = 0;
};

class MetricChart : public QWidget {
    Q_OBJECT
public:
    enum class Mode { MetricVsBits, BarsPerTask, Pareto };
    static constexpr int kRedrawDelayMs = 45;

    explicit MetricChart(QWidget *parent = nullptr);

    void setRows(const std::vector<RunRow> &rows);
    void setSelectedRuns(const std::vector<int64_t> &runIds);
    void setMode(Mode mode);
    // "task · metric" to plot; false when no stored row has it.
    bool setMetric(const QString &task, const QString &metric);
    // Draws now if a redraw is pending (tests, export).
    void flush();
    bool redrawPending() const { return m_redraw.isActive(); }
    // The points drawn by the last redraw.
    const std::vector<ChartPoint> &points() const { return m_points; }
    int redrawCount() const { return m_redrawCount; }
    QCustomPlot *plot() const { return m_plot; }

    // PNG, PDF or SVG by the file's suffix.
    Status exportTo(const QString &path, int width = 900, int height = 600);
    QByteArray pngBytes(int width = 900, int height = 600);

signals:
    void runActivated(qint64 runId);

private:
    void scheduleRedraw();
    void redraw();
    void drawMetricVsBits();
    void drawBarsPerTask();
    void drawPareto();
    void fillMetricChoices();
    void onMouseMove(QMouseEvent *event);
    void onPlottableClick(QCPAbstractPlottable *plottable, int dataIndex);
    const ChartPoint *pointAt(const QPointF &pixel) const;
    bool matchesMetric(const RunRow &row) const;

    QComboBox *m_mode = nullptr;
    QComboBox *m_metric = nullptr;
    QCustomPlot *m_plot = nullptr;
    QTimer m_redraw;
    std::vector<RunRow> m_rows;
    std::vector<int64_t> m_selected;
    std::vector<ChartPoint> m_points;
    int m_redrawCount = 0;
};

} // namespace lowbit::ui
