// Calibration for post-training quantization: the windows of calibration tokens, the per-linear
// input statistics (GPTQ's Hessian H = 2 X^T X / N, AWQ's mean |x|, SmoothQuant's max |x|), and the
// layer-by-layer runner that keeps one layer's activations in memory and feeds each layer the
// outputs of the already-quantized layers before it (GPTQ's sequential scheme, llama.py).
//
// Call order (engine/quant/quantize.cpp):
//   LOWBIT_TRY(auto set, loadCalibration(tokenizer, options));
//   LayerRunner runner(model, set, options.batchTokens);   LOWBIT_CHECK(runner.embed());
//   for each layer: StatsHook hook(...); runner.run(layer, weights, &hook); auto stats =
//   hook.finish();
//                   ... quantize ...; runner.advance(layer, quantizedWeights);
// Single-threaded API; the forward pass and BLAS inside use options.threads.
#pragma once

#include "core/result.h"
#include "runtime/linear_hook.h"
#include "runtime/model.h"
#include "tokenizer/tokenizer.h"

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace lowbit {

class QuantDevice;

// How H is accumulated. Float64: every batch converted to float64, dsyrk into a float64 sum.
// BlockedFloat32: ssyrk of each batch (<= batchTokens rows) into a float32 block, the block added
// to a float64 sum, so rounding error grows with the batch, not with the whole calibration set.
enum class HessianPrecision { Float64, BlockedFloat32 };

struct CalibrationOptions {
    // A text file (whole file is one document) or a .jsonl/.json file (one document per line, the
    // "text" field, as the C4 sample). Empty: <data dir>/wikitext2/wiki.train.raw.prefix, where
    // the data dir is $LOWBIT_DATA_DIR, else $LOWBIT_SHARED_DIR/data, else ../shared/data.
    std::filesystem::path textPath;
    int64_t samples = 128; // windows
    int64_t tokens = 2048; // tokens per window
    uint64_t seed = 0;
    int64_t batchTokens = 4096; // tokens per forward call (whole windows, at least one)
    HessianPrecision precision = HessianPrecision::BlockedFloat32;
    // Evaluation texts the caller will score the model on; calibrating on one of them (or on a
    // file known to be an evaluation split) adds a warning.
    std::vector<std::filesystem::path> evaluationTexts;
};

std::filesystem::path defaultCalibrationText();

struct CalibrationSet {
    std::filesystem::path source;
    std::vector<std::vector<int32_t>> windows; // samples x tokens
    int64_t documentTokens = 0;                // tokens in the text the windows were drawn from
    std::vector<std::string> warnings;
};

// Tokenizes the calibration text (no BOS, as GPTQ's get_wikitext2/get_c4) and draws `samples`
// windows of `tokens` tokens with a seeded std::mt19937_64: for a plain text, uniform start
// positions over the whole token stream; for JSONL, GPTQ's get_c4 scheme (a random document
// longer than the window, then a random window inside it). Errors: missing file, a text shorter
// than one window, a JSONL line without a "text" string.
Result<CalibrationSet> loadCalibration(const Tokenizer &tokenizer,
                                       const CalibrationOptions &options);

// Statistics of one linear input (cols = its width), over N calibration tokens.
struct LinearStats {
    int64_t cols = 0;
    int64_t tokens = 0;            // N
    std::vector<double> hessian;   // cols*cols, symmetric, H = 2/N * sum_t x_t x_t^T
    std::vector<double> meanAbs;   // per input channel, mean_t |x_tj|
    std::vector<double> maxAbs;    // per input channel, max_t |x_tj|
    std::vector<float> sampleRows; // up to kStatsSampleRows input rows, for output errors
    int64_t sampleCount = 0;       // rows in sampleRows

    bool hasHessian() const { return !hessian.empty(); }
};

inline constexpr int64_t kStatsSampleRows = 256;

using LayerStatistics = std::map<LinearInput, LinearStats>;

struct StatsWanted {
    bool hessian = true;
    bool channelStats = true;
    bool samples = true; // keep a seeded reservoir of input rows
};

// A LinearHook that accumulates LinearStats for the chosen inputs of one layer. Inputs are not
// modified. BLAS runs with `threads` threads inside onLinearInput (restored to 1 afterwards, as
// the CPU backend expects). With a `device`, the BlockedFloat32 Hessians are summed on it
// (engine/quant/quant_device.h; Float64 ones stay on the CPU and are recorded so).
class StatsHook final : public LinearHook {
public:
    StatsHook(std::set<LinearInput> inputs, StatsWanted wanted, HessianPrecision precision,
              int threads, uint64_t seed = 0, QuantDevice *device = nullptr);
    ~StatsHook() override;
    void onLinearInput(int64_t layer, LinearInput kind, float *input, int64_t rows,
                       int64_t cols) override;
    // The first device failure (onLinearInput cannot return one); later device work is skipped.
    // Check it before finish(): after a failure the Hessians are incomplete.
    Status status() const { return m_status; }
    // Normalised statistics (H symmetrised and divided by N). The hook is spent afterwards.
    // Device Hessians are downloaded here; a failure there also lands in status().
    LayerStatistics finish();

private:
    struct Accumulator;
    std::set<LinearInput> m_inputs;
    StatsWanted m_wanted;
    HessianPrecision m_precision;
    int m_threads;
    uint64_t m_seed;
    QuantDevice *m_device;
    Status m_status;
    std::map<LinearInput, std::shared_ptr<Accumulator>> m_acc;
};

// The calibration windows' hidden states at the input of the current layer, and the means to run
// one decoder layer over all of them in batches of whole windows (a one-layer KV cache, reused).
class LayerRunner {
public:
    LayerRunner(Model &model, const CalibrationSet &set, int64_t batchTokens);

    Status embed();
    int64_t rows() const { return m_rows; } // windows * tokens
    int64_t hiddenSize() const { return m_hidden; }
    int64_t windowTokens() const { return m_windowTokens; }
    const float *hidden() const { return m_state.data(); } // rows x hiddenSize
    Model &model() { return m_model; }

    // Runs decoder layer `layer` with `weights` over every window (the hook sees its linear
    // inputs) without changing the stored hidden states; onOutput, when set, receives each
    // batch's output rows [firstRow, firstRow + rows).
    using OutputFn = std::function<void(int64_t firstRow, int64_t rows, const float *out)>;
    Status run(int64_t layer, const LayerWeights &weights, LinearHook *hook,
               const OutputFn &onOutput = {});
    // Runs the layer and keeps its output as the next layer's input.
    Status advance(int64_t layer, const LayerWeights &weights);

private:
    Status runBatches(int64_t layer, const LayerWeights &weights, LinearHook *hook, bool inPlace,
                      const OutputFn &onOutput);
    Model &m_model;
    const CalibrationSet &m_set;
    int64_t m_windowsPerBatch = 1;
    int64_t m_windowTokens = 0;
    int64_t m_rows = 0;
    int64_t m_hidden = 0;
    std::vector<float> m_state;
    std::vector<float> m_scratch;
    KvCache m_cache;
};

} // namespace lowbit
