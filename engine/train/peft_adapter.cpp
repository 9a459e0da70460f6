#include "train/peft_adapter.h"

#include "core/json_file.h"
#include "io/safetensors.h"
#include "quant/quantize.h"
#include "quant/quantized_checkpoint.h"

#include <nlohmann/json.hpp>

#include <fstream>

namespace lowbit::train {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

Status writeTextAtomically(const fs::path &path, const std::string &text) {
    const fs::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        out.flush();
        if (!out)
            return makeError(ErrorCode::Io, tmp.string() + ": cannot write");
    }
    std::error_code ec;
    fs::rename(tmp, path, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         path.string() + ": cannot rename into place: " + ec.message());
    return {};
}

json adapterConfig(const AdapterInfo &info) {
    return {{"peft_type", "LORA"},
            {"task_type", "CAUSAL_LM"},
            {"base_model_name_or_path", info.baseModel},
            {"r", info.lora.rank},
            {"lora_alpha", info.lora.alpha},
            {"lora_dropout", 0.0},
            {"target_modules", info.lora.targets},
            {"bias", "none"},
            {"fan_in_fan_out", false},
            {"inference_mode", true},
            {"init_lora_weights", true},
            {"modules_to_save", nullptr},
            {"lowbit",
             {{"method", info.method},
              {"elastic_connection", info.lora.elasticConnection},
              {"seed", info.lora.seed}}}};
}

// nlohmann's value() throws on a present key of another type: bad input must be an error.
std::string stringOr(const json &object, const char *key, const std::string &fallback) {
    const auto it = object.find(key);
    return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

bool boolOr(const json &object, const char *key, bool fallback) {
    const auto it = object.find(key);
    return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

Result<AdapterInfo> parseAdapterConfig(const fs::path &path) {
    LOWBIT_TRY(const json c, readJsonFile(path, "the adapter config"));
    if (!c.is_object())
        return makeError(ErrorCode::Format, path.string() + ": not a JSON object");
    if (stringOr(c, "peft_type", "") != "LORA")
        return makeError(ErrorCode::Unsupported, path.string() + ": peft_type is not \"LORA\"");
    // An r past INT32_MAX would wrap in get<int>() (2^32 + 2 read as rank 2).
    if (!c.contains("r") || !c["r"].is_number_integer() || c["r"].get<int64_t>() < 1 ||
        c["r"].get<int64_t>() > INT32_MAX || !c.contains("lora_alpha") ||
        !c["lora_alpha"].is_number())
        return makeError(ErrorCode::Format,
                         path.string() + ": 'r' or 'lora_alpha' missing or out of range");
    AdapterInfo info;
    info.lora.rank = c["r"].get<int>();
    info.lora.alpha = c["lora_alpha"].get<double>();
    if (c.contains("target_modules") && c["target_modules"].is_array()) {
        info.lora.targets.clear();
        for (const json &t : c["target_modules"])
            if (t.is_string())
                info.lora.targets.push_back(t.get<std::string>());
    }
    info.baseModel = stringOr(c, "base_model_name_or_path", "");
    if (c.contains("lowbit") && c["lowbit"].is_object()) {
        info.method = stringOr(c["lowbit"], "method", "qlora");
        info.lora.elasticConnection = boolOr(c["lowbit"], "elastic_connection", false);
    }
    return info;
}

Result<LinearKind> kindOf(const std::string &proj) {
    for (LinearKind kind : kAllLinearKinds)
        if (proj == linearKindName(kind))
            return kind;
    return makeError(ErrorCode::InvalidArgument, "unknown LoRA target module '" + proj + "'");
}

} // namespace

Status savePeftAdapter(const fs::path &dir, std::span<Parameter<float> *const> params,
                       const AdapterInfo &info) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec)
        return makeError(ErrorCode::Io, dir.string() + ": cannot create: " + ec.message());
    std::vector<Tensor> tensors;
    for (const Parameter<float> *p : params)
        tensors.push_back(Tensor::fromFloats(p->name, p->shape, p->value.data()));
    LOWBIT_CHECK(writeSafetensors(dir / kAdapterWeightsFile, tensors, {{"format", "pt"}}));
    return writeTextAtomically(dir / kAdapterConfigFile, adapterConfig(info).dump(2) + "\n");
}

Result<PeftAdapter> loadPeftAdapter(const fs::path &dir) {
    PeftAdapter adapter;
    LOWBIT_TRY(adapter.info, parseAdapterConfig(dir / kAdapterConfigFile));
    LOWBIT_TRY(SafetensorsFile file, readSafetensors(dir / kAdapterWeightsFile));
    for (const auto &[name, tensor] : file.tensors) {
        adapter.tensors[name] = tensorToFloats(tensor);
        adapter.shapes[name] = tensor.shape;
    }
    return adapter;
}

Status applyPeftAdapter(const PeftAdapter &adapter, std::span<Parameter<float> *const> params) {
    for (Parameter<float> *p : params) {
        const auto it = adapter.tensors.find(p->name);
        if (it == adapter.tensors.end())
            return makeError(ErrorCode::NotFound, "adapter has no tensor '" + p->name + "'");
        if (it->second.size() != p->value.size() || adapter.shapes.at(p->name) != p->shape)
            return makeError(ErrorCode::InvalidArgument,
                             "adapter tensor '" + p->name +
                                 "' has another shape than the model's (rank or model differ)");
        p->value = it->second;
    }
    return {};
}

Status writeMergedCheckpoint(const fs::path &dir, const Checkpoint &source, const Checkpoint &base,
                             const TrainableModel<float> &model, const AdapterInfo &info) {
    Checkpoint merged = base;
    for (int64_t layer = 0; layer < int64_t(merged.weights.layers.size()); ++layer) {
        for (const std::string &proj : info.lora.targets) {
            LOWBIT_TRY(LinearKind kind, kindOf(proj));
            LOWBIT_TRY(std::vector<float> values, model.mergedWeight(layer, proj));
            Tensor &w = linearWeight(merged.weights.layers[size_t(layer)], kind);
            if (int64_t(values.size()) != w.numel())
                return makeError(ErrorCode::Internal, "merged " + proj + " of layer " +
                                                          std::to_string(layer) +
                                                          " has the wrong size");
            w = Tensor::fromFloats(w.name, w.shape, values.data(), w.dtype);
        }
    }
    QuantizeReport report;
    report.method = info.method + "+lora-merged";
    report.bits = 16;
    report.methodOptions = adapterConfig(info);
    report.outDir = dir;
    return writeQuantizedCheckpoint(dir, source, merged, {}, report);
}

} // namespace lowbit::train
