// Quantizing a whole checkpoint: the entry point for the CLI (`lowbit quantize`), the job runner
// and the workbench.
//
//   NullProgress progress;
//   LOWBIT_TRY(QuantizeReport report,
//              quantizeCheckpoint(checkpoint, options, "out/stories-gptq3", progress, stop));
//
// quantizeCheckpoint writes a quantized checkpoint directory (engine/quant/quantized_checkpoint.h)
// that every command accepts as MODEL. quantizeModel does the same work in memory only.
//
// Progress: phase "calibrate" (done/total windows tokenized), then "quantize" with done/total =
// decoder layers finished, reported after every layer. Cancellation: the stop token is checked
// between linears and inside long method loops; a stopped run returns ErrorCode::Cancelled and
// writes nothing. Runs on the caller's thread; options.threads threads inside.
//
// Device: with options.device = cuda:N the GPU is opened first (an error before any work or
// output when the build has no CUDA or there is no such device); see engine/quant/quant_device.h.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "model/checkpoint.h"
#include "quant/quantizer.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct LinearReport {
    std::string name; // "model.layers.0.self_attn.q_proj.weight"
    int64_t rows = 0, cols = 0;
    double bitsPerWeight = 0;
    double weightRelError = 0;  // ||W - Q||_F^2 / ||W||_F^2
    double outputRelError = -1; // ||(W - Q) X||^2 / ||W X||^2 on sampled calibration rows;
                                // -1 without calibration
    double seconds = 0;
    nlohmann::json notes = nlohmann::json::object(); // method facts (GPTQ loss, damping used)
};

struct QuantizeReport {
    std::string method;
    int bits = 0;
    int64_t groupSize = 0; // 0: per-channel
    bool symmetric = false;
    std::string selection; // LayerSelection::toString()
    bool trueSequential = false;
    nlohmann::json methodOptions = nlohmann::json::object();
    double bitsPerWeight = 0; // over the quantized linears, everything stored counted
    int64_t quantizedWeights = 0;
    bool calibrated = false;
    nlohmann::json calibration = nlohmann::json::object(); // source, samples, tokens, seed, ...
    std::vector<LinearReport> linears;
    nlohmann::json layerNotes = nlohmann::json::array(); // prepareLayer notes, one per layer
    std::vector<std::string> warnings;
    // Where each stage ran: "cpu", or with QuantizeOptions::device a QuantDevice::summary such as
    // "gptq: hessian+cholesky+sweep on cuda:0; forward on cpu".
    std::string device = "cpu";
    double seconds = 0;
    std::filesystem::path outDir; // empty for quantizeModel

    nlohmann::json toJson() const; // the body of quantization_config.json
};

struct QuantizedModel {
    std::shared_ptr<const Checkpoint> checkpoint; // fake-quant weights in the source dtypes
    std::vector<QuantizedTensor> tensors;         // in layer, kind order
    QuantizeReport report;
};

Result<QuantizedModel> quantizeModel(const Checkpoint &source, const QuantizeOptions &options,
                                     ProgressSink &progress, std::stop_token stop = {});

// quantizeModel, then writeQuantizedCheckpoint(outDir, ...). outDir is created; files already in
// it are replaced one by one (each written to a temporary name and renamed).
Result<QuantizeReport> quantizeCheckpoint(const Checkpoint &source, const QuantizeOptions &options,
                                          const std::filesystem::path &outDir,
                                          ProgressSink &progress, std::stop_token stop = {});

} // namespace lowbit
