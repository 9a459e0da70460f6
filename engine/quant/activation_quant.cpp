#include "quant/activation_quant.h"

#include "core/json_file.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cmath>

namespace lowbit {

void quantizeActivationsPerToken(float *x, int64_t rows, int64_t cols, int bits) {
    const float qmax = float((1 << (bits - 1)) - 1);
    for (int64_t r = 0; r < rows; ++r) {
        float *row = x + r * cols;
        float absMax = 0;
        for (int64_t j = 0; j < cols; ++j)
            absMax = std::max(absMax, std::abs(row[j]));
        const float scale = std::max(absMax, 1e-5f) / qmax;
        for (int64_t j = 0; j < cols; ++j)
            row[j] = std::nearbyint(row[j] / scale) * scale;
    }
}

namespace {

class ActivationQuantHook final : public LinearHook {
public:
    explicit ActivationQuantHook(int bits) : m_bits(bits) {}
    void onLinearInput(int64_t, LinearInput, float *input, int64_t rows, int64_t cols) override {
        quantizeActivationsPerToken(input, rows, cols, m_bits);
    }

private:
    const int m_bits;
};

} // namespace

LinearHook *activationQuantHook(int bits) {
    static std::array<ActivationQuantHook, 7> hooks = {
        ActivationQuantHook(2), ActivationQuantHook(3), ActivationQuantHook(4),
        ActivationQuantHook(5), ActivationQuantHook(6), ActivationQuantHook(7),
        ActivationQuantHook(8)};
    if (bits < 2 || bits > 8)
        return nullptr;
    return &hooks[size_t(bits - 2)];
}

Result<int> recordedActivationBits(const std::filesystem::path &checkpointDir) {
    const std::filesystem::path path = checkpointDir / "quantization_config.json";
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
        return kNoActivationQuant;
    LOWBIT_TRY(const nlohmann::json config, readJsonFile(path, "the quantization config"));
    if (!config.is_object())
        return makeError(ErrorCode::Format, path.string() + ": not a JSON object");
    const auto notes = config.find("layer_notes");
    if (notes == config.end() || !notes->is_array())
        return kNoActivationQuant;
    int bits = kNoActivationQuant;
    for (const nlohmann::json &entry : *notes) {
        if (!entry.is_object() || !entry.contains("notes") || !entry["notes"].is_object())
            continue;
        const nlohmann::json &n = entry["notes"];
        if (!n.contains("activation_bits"))
            continue;
        if (!n["activation_bits"].is_number_integer())
            return makeError(ErrorCode::Format,
                             path.string() + ": activation_bits must be an integer");
        const int b = n["activation_bits"].get<int>();
        if (b != kNoActivationQuant && (b < 2 || b > 8))
            return makeError(ErrorCode::Format, path.string() + ": activation_bits " +
                                                    std::to_string(b) + " outside 2..8");
        if (bits != kNoActivationQuant && b != bits)
            return makeError(ErrorCode::Format,
                             path.string() + ": layers record different activation_bits (" +
                                 std::to_string(bits) + ", " + std::to_string(b) + ")");
        bits = b;
    }
    return bits;
}

Result<int> installActivationQuant(Model &model) {
    LOWBIT_TRY(int bits, recordedActivationBits(model.checkpoint().path));
    if (bits != kNoActivationQuant)
        model.setLinearHook(activationQuantHook(bits));
    return bits;
}

} // namespace lowbit
