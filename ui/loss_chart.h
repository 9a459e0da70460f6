// LossChart: the training curve of one fine-tuning run (RunStore::trainingSteps): loss per step
// on the left axis, learning rate on the right, step on x; hovering shows the step's numbers.
// setSteps() only schedules a redraw on a single-shot kRedrawDelayMs timer, so a burst of
// updates while a run trains is one redraw.
//
// GUI thread only.
#pragma once

#include "run_records.h"

#include <QTimer>
#include <QWidget>

#include <vector>

class QCustomPlot;
class QLabel;
class QMouseEvent;

namespace lowbit::ui {

class LossChart : public QWidget {
    Q_OBJECT
public:
    static constexpr int kRedrawDelayMs = 45;

    explicit LossChart(QWidget *parent = nullptr);

    // Steps ordered by step (as the store returns them).
    void setSteps(std::vector<TrainingStepRecord> steps);
    const std::vector<TrainingStepRecord> &steps() const { return m_steps; }
    // Draws now if a redraw is pending (tests).
    void flush();
    QCustomPlot *plot() const { return m_plot; }

private:
    void redraw();
    void onMouseMove(QMouseEvent *event);

    QCustomPlot *m_plot = nullptr;
    QLabel *m_summary = nullptr;
    QTimer m_redraw;
    std::vector<TrainingStepRecord> m_steps;
};

} // namespace lowbit::ui
