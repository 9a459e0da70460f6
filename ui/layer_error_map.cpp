#include "layer_error_map.h"

#include "run_store.h"
#include "workbench_settings.h"

#include <qcustomplot.h>

#include <QComboBox>
#include <QHBoxLayout>
#include <QLabel>
#include <QToolTip>
#include <QVBoxLayout>

#include <cmath>
#include <fstream>
#include <regex>

namespace lowbit::ui {
namespace {

const char *const kLinearNames[] = {"q", "k", "v", "o", "gate", "up", "down"};

int linearIndex(const std::string &name) {
    for (int i = 0; i < LayerErrorMap::kLinearCount; ++i)
        if (name == kLinearNames[i])
            return i;
    return -1;
}

void put(std::vector<std::vector<double>> &grid, size_t layer, int linear, double value) {
    while (grid.size() <= layer)
        grid.emplace_back(LayerErrorMap::kLinearCount, qQNaN());
    grid[layer][size_t(linear)] = value;
}

} // namespace

LayerErrorMap::LayerErrorMap(QWidget *parent) : QWidget(parent) {
    m_kind = new QComboBox(this);
    m_kind->addItems({tr("Weight relative error ‖W−Q(W)‖/‖W‖"),
                      tr("Output relative error (calibration inputs)")});
    m_message = new QLabel(tr("Select a quantized run in the Runs tab."), this);
    m_plot = new QCustomPlot(this);
    m_plot->setObjectName(QStringLiteral("layerErrorPlot"));
    auto *top = new QHBoxLayout;
    top->addWidget(m_kind);
    top->addWidget(m_message, 1);
    auto *layout = new QVBoxLayout(this);
    layout->setContentsMargins(0, 0, 0, 0);
    layout->addLayout(top);
    layout->addWidget(m_plot, 1);
    m_scale = new QCPColorScale(m_plot); // kept across redraws; each new map attaches to it
    m_plot->plotLayout()->addElement(0, 1, m_scale);
    connect(m_kind, &QComboBox::currentIndexChanged, this, &LayerErrorMap::redraw);
    connect(m_plot, &QCustomPlot::mouseMove, this, &LayerErrorMap::onMouseMove);
}

Status LayerErrorMap::showRun(const std::filesystem::path &database, int64_t runId) {
    m_runId = runId;
    m_weightError.clear();
    m_outputError.clear();
    LOWBIT_TRY(RunStore store, RunStore::open(database, {.readOnly = true}));
    LOWBIT_TRY(std::vector<ArtifactRecord> artifacts, store.artifacts(runId));
    std::filesystem::path config;
    for (const ArtifactRecord &artifact : artifacts)
        if (std::filesystem::exists(std::filesystem::path(artifact.path) /
                                    "quantization_config.json"))
            config = std::filesystem::path(artifact.path) / "quantization_config.json";
    if (config.empty()) {
        m_message->setText(
            tr("Run %1 recorded no per-layer errors (no quantized artifact).").arg(runId));
        redraw();
        return {};
    }
    std::ifstream in(config);
    const nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
    if (json.is_discarded() || !json.contains("linears") || !json["linears"].is_array())
        return makeError(ErrorCode::Format, config.string() + ": not a quantization config");
    static const std::regex kName(R"(model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)_proj\.weight)");
    for (const nlohmann::json &linear : json["linears"]) {
        std::smatch match;
        const std::string name = linear.value("name", std::string());
        const int index = std::regex_match(name, match, kName) ? linearIndex(match[2]) : -1;
        if (index < 0)
            continue;
        const size_t layer = std::stoul(match[1]);
        put(m_weightError, layer, index, linear.value("weight_rel_error", qQNaN()));
        put(m_outputError, layer, index, linear.value("output_rel_error", qQNaN()));
    }
    m_message->setText(tr("Run %1: %2 layers").arg(runId).arg(m_weightError.size()));
    redraw();
    return {};
}

const std::vector<std::vector<double>> &LayerErrorMap::shown() const {
    return m_kind->currentIndex() == 0 ? m_weightError : m_outputError;
}

std::optional<double> LayerErrorMap::errorAt(int layer, int linear) const {
    const auto &grid = shown();
    if (layer < 0 || layer >= int(grid.size()) || linear < 0 || linear >= kLinearCount ||
        std::isnan(grid[size_t(layer)][size_t(linear)]))
        return std::nullopt;
    return grid[size_t(layer)][size_t(linear)];
}

void LayerErrorMap::redraw() {
    m_plot->clearPlottables();
    const auto &grid = shown();
    const int layers = int(grid.size());
    auto ticker = QSharedPointer<QCPAxisTickerText>(new QCPAxisTickerText);
    for (int i = 0; i < kLinearCount; ++i)
        ticker->addTick(i, QString::fromLatin1(kLinearNames[i]));
    m_plot->xAxis->setTicker(ticker);
    m_plot->xAxis->setLabel(tr("linear"));
    m_plot->yAxis->setLabel(tr("decoder layer"));
    if (layers > 0) {
        auto *map = new QCPColorMap(m_plot->xAxis, m_plot->yAxis);
        map->data()->setSize(kLinearCount, layers);
        map->data()->setRange(QCPRange(0, kLinearCount - 1), QCPRange(0, std::max(1, layers - 1)));
        for (int layer = 0; layer < layers; ++layer)
            for (int linear = 0; linear < kLinearCount; ++linear)
                map->data()->setCell(linear, layer, grid[size_t(layer)][size_t(linear)]);
        QCPColorGradient gradient(QCPColorGradient::gpThermal);
        gradient.setNanHandling(QCPColorGradient::nhTransparent); // unrecorded cells stay blank
        map->setGradient(gradient);
        map->setInterpolate(false); // one flat cell per linear: no invented in-between values
        map->setColorScale(m_scale);
        m_scale->setGradient(gradient);
        map->rescaleDataRange(true);
        m_plot->rescaleAxes();
        m_plot->xAxis->setRange(-0.5, kLinearCount - 0.5);
        m_plot->yAxis->setRange(-0.5, layers - 0.5);
    }
    m_plot->replot();
}

void LayerErrorMap::onMouseMove(QMouseEvent *event) {
    const int linear = int(std::lround(m_plot->xAxis->pixelToCoord(event->position().x())));
    const int layer = int(std::lround(m_plot->yAxis->pixelToCoord(event->position().y())));
    if (const auto error = errorAt(layer, linear))
        QToolTip::showText(event->globalPosition().toPoint(),
                           tr("layer %1 %2_proj: %3")
                               .arg(layer)
                               .arg(QString::fromLatin1(kLinearNames[linear]))
                               .arg(QString::number(*error, 'g', 6)),
                           m_plot);
    else
        QToolTip::hideText();
}

} // namespace lowbit::ui
