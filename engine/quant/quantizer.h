// Quantizer: the interface every post-training quantization method implements, the options they
// share, the layer selection, and the method registry.
//
// How a method plugs in
//   1. Write engine/quant/<method>.{h,cpp}: a class deriving from Quantizer plus a factory
//      `Result<std::unique_ptr<Quantizer>> make<Method>Quantizer(const QuantizeOptions &)` that
//      validates options.bits / groupSize / methodOptions (a JSON object; unknown keys are an
//      error) and returns InvalidArgument with a readable message on bad input.
//   2. Add one row to kMethods in engine/quant/quantizer_registry.cpp (name, factory, summary).
//   3. needs(): say what calibration the method wants. The pipeline (engine/quant/quantize.cpp)
//      then, for each decoder layer in order:
//        a. copies the layer's weights to float32 (FloatLayer, mutable);
//        b. if needs().any(): runs the layer over the calibration windows (whose hidden states
//           come from the already-quantized previous layers) and accumulates LinearStats for the
//           four linear inputs (all at once, or group by group with trueSequential);
//        c. calls prepareLayer(LayerContext&) once: the place for cross-linear transforms that
//           must see the whole layer (AWQ / SmoothQuant scale folding into the RMSNorm weights and
//           the previous linear; QuIP would not need it). It may run the layer itself through
//           context.runner;
//        d. calls quantize(LinearJob) for each selected linear (q,k,v,o,gate,up,down order) on
//           the current float weights and that linear's input statistics, then stores
//           dequantize(result) back into the float layer ("fake quant");
//        e. re-runs the quantized layer to produce the next layer's inputs.
//   4. quantize() returns a QuantizedTensor (engine/quant/quantized_tensor.h). Put anything that
//      is not codes/scales/zeros/permutation into QuantizedTensor::extra with its storage width,
//      so bits/weight stays exact; override dequantize() when the weight is not the plain grid
//      value (residual binary planes, rotations); the storage loader calls it by method name.
//   5. Record per-linear facts for quantization_config.json in LinearJob::notes (JSON object).
//
// Quantizers are used from one thread; a Quantizer may keep state across calls within one run.
#pragma once

#include "backend/device.h"
#include "core/result.h"
#include "model/weights.h"
#include "quant/calibration.h"
#include "quant/quantized_tensor.h"
#include "runtime/linear_hook.h"

#include <nlohmann/json.hpp>

#include <array>
#include <functional>
#include <memory>
#include <set>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

class QuantDevice;

// The seven linear layers of a LLaMA decoder layer, in the order the pipeline visits them.
enum class LinearKind : uint8_t { Q, K, V, O, Gate, Up, Down };
inline constexpr std::array<LinearKind, 7> kAllLinearKinds = {
    LinearKind::Q,    LinearKind::K,  LinearKind::V,   LinearKind::O,
    LinearKind::Gate, LinearKind::Up, LinearKind::Down};

const char *linearKindName(LinearKind kind); // "q_proj", ..., "down_proj"
LinearInput linearInputOf(LinearKind kind);  // q/k/v -> Attention, o -> AttentionOutput, ...
// Hugging Face tensor name: "model.layers.3.self_attn.q_proj.weight".
std::string linearTensorName(int64_t layer, LinearKind kind);
const Tensor &linearWeight(const LayerWeights &weights, LinearKind kind);
Tensor &linearWeight(LayerWeights &weights, LinearKind kind);

// Which linears are quantized. Default: all seven kinds in every layer; the token embedding and
// the output head are kept in full precision.
struct LayerSelection {
    std::set<LinearKind> kinds = {kAllLinearKinds.begin(), kAllLinearKinds.end()};
    std::set<int64_t> layers; // empty: every layer

    bool contains(int64_t layer, LinearKind kind) const {
        return kinds.count(kind) && (layers.empty() || layers.count(layer));
    }
    // "all", or a comma list of kinds (q, k, v, o, gate, up, down, with or without "_proj") and
    // layer indices or ranges ("0-3"); kinds and layers given together are intersected:
    // "0-3,q,v" = q_proj and v_proj of layers 0..3.
    static Result<LayerSelection> parse(std::string_view spec);
    std::string toString() const;
};

struct QuantizeOptions {
    std::string method = "rtn";
    int bits = 4;
    int64_t groupSize = 0; // 0: per-channel (one group per output row); else 32, 64, 128, ...
    bool symmetric = false;
    LayerSelection selection;
    CalibrationOptions calibration;
    // GPTQ's --true-sequential: within a layer, statistics of o_proj's input are taken after
    // q/k/v are quantized, and so on (4 passes over the calibration set per layer instead of 1).
    bool trueSequential = true;
    int threads = 0; // 0: every hardware thread (forward pass and BLAS)
    nlohmann::json methodOptions = nlohmann::json::object(); // method-specific keys
    // cuda:N: calibration Hessians, Cholesky factors and GPTQ's grid sweep on that GPU
    // (engine/quant/quant_device.h); the report's `device` says which stages ran where.
    DeviceSpec device;
};

// What calibration a method needs. Nothing: the calibration text is never read.
struct CalibrationNeeds {
    bool hessian = false;      // H = 2 X^T X / N of each linear input
    bool channelStats = false; // per-input-channel mean |x| and max |x|
    bool layerInputs = false;  // prepareLayer runs the layer itself via LayerContext::runner
    bool any() const { return hessian || channelStats || layerInputs; }
};

// Mutable float32 copies of one decoder layer's weights; view() lends them as a LayerWeights
// (F32 tensors pointing into these vectors: valid while this object lives and is not resized).
struct FloatLayer {
    std::vector<float> attnNorm, ffnNorm;
    std::array<std::vector<float>, 7> linears; // indexed by LinearKind
    std::array<int64_t, 7> rows{}, cols{};

    static FloatLayer fromWeights(const LayerWeights &weights);
    std::vector<float> &weight(LinearKind kind) { return linears[size_t(kind)]; }
    const std::vector<float> &weight(LinearKind kind) const { return linears[size_t(kind)]; }
    LayerWeights view() const;
};

// Handed to prepareLayer.
struct LayerContext {
    int64_t layer = 0;
    FloatLayer &weights;           // edit in place (fold scales into norms / linears)
    LayerStatistics &stats;        // the statistics gathered for this layer (may be empty)
    LayerRunner *runner = nullptr; // the calibration windows at this layer's input; null
                                   // when the method needs no calibration
    nlohmann::json &notes;         // per-layer facts for quantization_config.json
    std::stop_token stop;
    // Set when the weights were changed in a way that changes linear inputs (scales folded into
    // a norm or a previous linear): the pipeline then gathers the statistics again.
    bool weightsChanged = false;
};

// One linear weight to quantize.
struct LinearJob {
    int64_t layer = 0;
    LinearKind kind = LinearKind::Q;
    std::string name; // "model.layers.3.mlp.down_proj.weight"
    int64_t rows = 0, cols = 0;
    std::span<const float> weight;      // rows * cols, row-major {out, in}
    const LinearStats *stats = nullptr; // its input's statistics; null without calibration
    nlohmann::json *notes = nullptr;    // per-linear facts for quantization_config.json
    std::stop_token stop;
    QuantDevice *device = nullptr; // the job's GPU (QuantizeOptions::device); null: the CPU
};

class Quantizer {
public:
    virtual ~Quantizer() = default;
    virtual std::string_view name() const = 0;
    virtual CalibrationNeeds needs() const = 0;
    virtual Status prepareLayer(LayerContext &context) { return {}; }
    virtual Result<QuantizedTensor> quantize(const LinearJob &job) = 0;
    // The float32 weights (original column order) a quantized tensor stands for.
    virtual Result<std::vector<float>> dequantize(const QuantizedTensor &tensor) const {
        return tensor.dequantize();
    }
};

using QuantizerFactory = Result<std::unique_ptr<Quantizer>> (*)(const QuantizeOptions &options);

struct QuantizerInfo {
    std::string_view name; // "rtn", "gptq", "nf4", ...
    QuantizerFactory factory;
    std::string_view summary; // one line for `lowbit quantize --help`
};

std::span<const QuantizerInfo> quantizerRegistry();
// The method named options.method, configured by options; NotFound lists the known names.
Result<std::unique_ptr<Quantizer>> makeQuantizer(const QuantizeOptions &options);

// Helpers for factories: reads methodOptions keys with a default; errors name method and key.
class MethodOptions {
public:
    MethodOptions(std::string method, const nlohmann::json &json)
        : m_method(std::move(method)), m_json(json) {}
    Result<double> number(const char *key, double fallback);
    Result<int64_t> integer(const char *key, int64_t fallback);
    Result<bool> boolean(const char *key, bool fallback);
    // Errors on any key not read so far (a typo must not pass silently).
    Status finish() const;

private:
    std::string m_method;
    const nlohmann::json &m_json;
    std::set<std::string> m_read;
};

} // namespace lowbit
