#include "loss_chart.h"

#include <qcustomplot.h>

#include <QLabel>
#include <QToolTip>
#include <QVBoxLayout>

#include <algorithm>
#include <cmath>

namespace lowbit::ui {

LossChart::LossChart(QWidget *parent) : QWidget(parent) {
    m_plot = new QCustomPlot(this);
    m_plot->setObjectName(QStringLiteral("lossPlot"));
    m_plot->setInteractions(QCP::iRangeDrag | QCP::iRangeZoom);
    m_plot->setMinimumSize(320, 240);
    m_plot->legend->setVisible(true);
    m_plot->xAxis->setLabel(tr("step"));
    m_plot->yAxis->setLabel(tr("loss"));
    m_plot->yAxis2->setLabel(tr("learning rate"));
    m_plot->yAxis2->setVisible(true);
    QCPGraph *loss = m_plot->addGraph(m_plot->xAxis, m_plot->yAxis);
    loss->setName(tr("loss"));
    loss->setPen(QPen(QColor(31, 119, 180), 2));
    QCPGraph *lr = m_plot->addGraph(m_plot->xAxis, m_plot->yAxis2);
    lr->setName(tr("learning rate"));
    lr->setPen(QPen(QColor(255, 127, 14), 1, Qt::DashLine));
    m_summary = new QLabel(this);
    m_summary->setObjectName(QStringLiteral("lossSummary"));
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addWidget(m_summary);
    layout->addWidget(m_plot, 1);

    m_redraw.setSingleShot(true);
    m_redraw.setInterval(kRedrawDelayMs);
    connect(&m_redraw, &QTimer::timeout, this, &LossChart::redraw);
    connect(m_plot, &QCustomPlot::mouseMove, this, &LossChart::onMouseMove);
}

void LossChart::setSteps(std::vector<TrainingStepRecord> steps) {
    m_steps = std::move(steps);
    if (!m_redraw.isActive())
        m_redraw.start();
}

void LossChart::flush() {
    if (m_redraw.isActive()) {
        m_redraw.stop();
        redraw();
    }
}

void LossChart::redraw() {
    QVector<double> x, loss, lr;
    for (const TrainingStepRecord &s : m_steps) {
        x.push_back(double(s.step));
        loss.push_back(s.loss);
        lr.push_back(s.learningRate);
    }
    m_plot->graph(0)->setData(x, loss, true);
    m_plot->graph(1)->setData(x, lr, true);
    m_plot->rescaleAxes();
    // A constant schedule is a flat line: QCustomPlot keeps the old range's width around it, so
    // give it an explicit one (±50 %) instead.
    auto widenFlat = [](QCPAxis *axis, const QVector<double> &values) {
        if (values.isEmpty())
            return;
        const auto [lo, hi] = std::minmax_element(values.begin(), values.end());
        if (*hi - *lo > 1e-12 * std::abs(*hi))
            return;
        const double half = *lo == 0 ? 1.0 : 0.5 * std::abs(*lo);
        axis->setRange(*lo - half, *lo + half);
    };
    widenFlat(m_plot->yAxis, loss);
    widenFlat(m_plot->yAxis2, lr);
    widenFlat(m_plot->xAxis, x); // a single step
    if (m_steps.empty()) {
        m_summary->setText(tr("No training steps stored yet"));
    } else {
        const auto best =
            std::min_element(m_steps.begin(), m_steps.end(),
                             [](const auto &a, const auto &b) { return a.loss < b.loss; });
        m_summary->setText(tr("%1 steps · loss %2 → %3 (min %4 at step %5)")
                               .arg(m_steps.size())
                               .arg(m_steps.front().loss, 0, 'g', 5)
                               .arg(m_steps.back().loss, 0, 'g', 5)
                               .arg(best->loss, 0, 'g', 5)
                               .arg(best->step));
    }
    m_plot->replot();
}

void LossChart::onMouseMove(QMouseEvent *event) {
    if (m_steps.empty())
        return;
    const double step = m_plot->xAxis->pixelToCoord(event->position().x());
    const auto it = std::lower_bound(
        m_steps.begin(), m_steps.end(), step,
        [](const TrainingStepRecord &s, double value) { return double(s.step) < value; });
    const TrainingStepRecord &s = it == m_steps.end() ? m_steps.back() : *it;
    QString text = tr("step %1\nloss %2\nlr %3\ngrad norm %4")
                       .arg(s.step)
                       .arg(s.loss, 0, 'g', 6)
                       .arg(s.learningRate, 0, 'g', 4)
                       .arg(s.gradNorm, 0, 'g', 4);
    if (s.tokensPerSecond > 0)
        text += tr("\n%1 tok/s").arg(s.tokensPerSecond, 0, 'f', 0);
    QToolTip::showText(event->globalPosition().toPoint(), text, m_plot);
}

} // namespace lowbit::ui
