// LayerErrorMap: the per-layer quantization error of one run as a heat map (decoder layer × linear
// q/k/v/o/gate/up/down), read from the quantization_config.json the method wrote into the run's
// quantized-weights artifact (engine/quant/quantize.cpp, QuantizeReport: weight_rel_error =
// ||W - Q(W)||_F / ||W||_F, output_rel_error on the calibration inputs where measured). Runs
// without such an artifact (the FP baseline, a method that recorded nothing) show a message.
//
// GUI thread only; showRun reads the store and one JSON file.
#pragma once

#include "core/result.h"

#include <QWidget>

#include <filesystem>
#include <optional>
#include <vector>

class QComboBox;
class QCPColorScale;
class QCustomPlot;
class QLabel;
class QMouseEvent;

namespace lowbit::ui {

class LayerErrorMap : public QWidget {
    Q_OBJECT
public:
    static constexpr int kLinearCount = 7; // q, k, v, o, gate, up, down

    explicit LayerErrorMap(QWidget *parent = nullptr);

    // Errors: the run or its config cannot be read. A run without an artifact is not an error.
    Status showRun(const std::filesystem::path &database, int64_t runId);
    int64_t runId() const { return m_runId; }
    int layerCount() const { return int(m_weightError.size()); }
    // The shown error of (layer, linear), nullopt where not recorded.
    std::optional<double> errorAt(int layer, int linear) const;

private:
    void redraw();
    void onMouseMove(QMouseEvent *event);
    const std::vector<std::vector<double>> &shown() const;

    QComboBox *m_kind = nullptr;
    QLabel *m_message = nullptr;
    QCustomPlot *m_plot = nullptr;
    QCPColorScale *m_scale = nullptr;
    int64_t m_runId = 0;
    // [layer][linear]; NaN where not recorded.
    std::vector<std::vector<double>> m_weightError, m_outputError;
};

} // namespace lowbit::ui
