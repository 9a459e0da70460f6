// Trainer checkpoints (the file layout is described in trainer.h).
#include "train/trainer.h"

#include "io/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>

namespace lowbit::train {

namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::string hex64(uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

Error stateError(const fs::path &file, const std::string &what) {
    return makeError(ErrorCode::Format, file.string() + ": " + what);
}

Result<std::vector<float>> floatsOf(const SafetensorsFile &file, const std::string &name,
                                    size_t size, const fs::path &path) {
    const auto it = file.tensors.find(name);
    if (it == file.tensors.end())
        return stateError(path, "tensor '" + name + "' missing");
    if (it->second.dtype != DType::F32 || size_t(it->second.numel()) != size)
        return stateError(path, "tensor '" + name + "' is not F32 with " + std::to_string(size) +
                                    " values (the model or LoRA options changed?)");
    return tensorToFloats(it->second);
}

} // namespace

Status Trainer::saveState(int64_t step) const {
    std::error_code ec;
    fs::create_directories(m_options.checkpointDir, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         m_options.checkpointDir.string() +
                             ": cannot create the checkpoint directory: " + ec.message());
    std::vector<Tensor> tensors;
    const auto &m = m_adam.firstMoments();
    const auto &v = m_adam.secondMoments();
    for (size_t i = 0; i < m_params.size(); ++i) {
        const Parameter<float> &p = *m_params[i];
        const std::vector<int64_t> shape = {int64_t(p.value.size())};
        tensors.push_back(Tensor::fromFloats(p.name, shape, p.value.data()));
        // Before the first step the moments are zero and not yet sized.
        const std::vector<float> zeros(p.value.size(), 0.0f);
        const float *mi = i < m.size() ? m[i].data() : zeros.data();
        const float *vi = i < v.size() ? v[i].data() : zeros.data();
        tensors.push_back(Tensor::fromFloats(p.name + ".exp_avg", shape, mi));
        tensors.push_back(Tensor::fromFloats(p.name + ".exp_avg_sq", shape, vi));
    }
    json history = json::array();
    for (const StepMetrics &s : m_history)
        if (s.step <= step)
            history.push_back({s.step, s.loss, s.learningRate, s.gradNorm, s.scoredTokens});
    const json meta = {{"step", step},
                       {"adam_steps", m_adam.steps()},
                       {"seed", m_options.seed},
                       {"batch_size", m_options.batchSize},
                       {"examples", m_data.size()},
                       {"data_fingerprint", hex64(fingerprint(m_data))},
                       {"history", history}};
    return writeSafetensors(m_options.checkpointDir / kTrainerStateFile, tensors,
                            {{"lowbit.trainer", meta.dump()}});
}

Result<int64_t> Trainer::loadState() {
    const fs::path path = m_options.checkpointDir / kTrainerStateFile;
    std::error_code ec;
    if (!fs::exists(path, ec))
        return int64_t(0);
    LOWBIT_TRY(SafetensorsFile file, readSafetensors(path));
    const auto metaIt = file.metadata.find("lowbit.trainer");
    const json meta =
        metaIt == file.metadata.end() ? json() : json::parse(metaIt->second, nullptr, false);
    if (!meta.is_object() || !meta.contains("step") || !meta["step"].is_number_integer() ||
        !meta.contains("history") || !meta["history"].is_array())
        return stateError(path, "no valid 'lowbit.trainer' metadata");
    const auto same = [&](const char *key, const json &expected) {
        return meta.contains(key) && meta[key] == expected;
    };
    if (!same("seed", m_options.seed) || !same("batch_size", m_options.batchSize) ||
        !same("examples", m_data.size()) || !same("data_fingerprint", hex64(fingerprint(m_data))))
        return makeError(ErrorCode::InvalidArgument,
                         path.string() + ": written for other data, seed or batch size; resuming "
                                         "would not continue the same data order");
    std::vector<std::vector<float>> m, v;
    for (Parameter<float> *p : m_params) {
        LOWBIT_TRY(std::vector<float> value, floatsOf(file, p->name, p->value.size(), path));
        LOWBIT_TRY(std::vector<float> mi,
                   floatsOf(file, p->name + ".exp_avg", p->value.size(), path));
        LOWBIT_TRY(std::vector<float> vi,
                   floatsOf(file, p->name + ".exp_avg_sq", p->value.size(), path));
        p->value = std::move(value);
        m.push_back(std::move(mi));
        v.push_back(std::move(vi));
    }
    const int64_t step = meta["step"].get<int64_t>();
    const bool hasAdamSteps = meta.contains("adam_steps") && meta["adam_steps"].is_number_integer();
    const int64_t adamSteps = hasAdamSteps ? meta["adam_steps"].get<int64_t>() : step;
    if (step < 0 || adamSteps < 0)
        return stateError(path, "negative step count");
    if (adamSteps > 0)
        m_adam.restore(adamSteps, std::move(m), std::move(v));
    m_target.afterStep();
    m_history.clear();
    for (const json &h : meta["history"]) {
        // The step and token counts must be integers: get<int64_t>() of a float out of range is
        // undefined behaviour.
        if (!h.is_array() || h.size() != 5 ||
            !std::all_of(h.begin(), h.end(), [](const json &x) { return x.is_number(); }) ||
            !h[0].is_number_integer() || !h[4].is_number_integer())
            return stateError(path, "malformed history entry");
        StepMetrics s;
        s.step = h[0].get<int64_t>();
        s.loss = h[1].get<double>();
        s.learningRate = h[2].get<double>();
        s.gradNorm = h[3].get<double>();
        s.scoredTokens = h[4].get<int64_t>();
        m_history.push_back(s);
    }
    return step;
}

} // namespace lowbit::train
