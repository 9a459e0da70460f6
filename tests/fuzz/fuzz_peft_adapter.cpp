// libFuzzer target: arbitrary bytes as a PEFT LoRA adapter directory (engine/train/peft_adapter.h).
// The input is split at the first "\n@@SAFETENSORS@@\n": before it adapter_config.json, after it
// adapter_model.safetensors (absent separator: the config alone, no weights file). Every input
// must load or give an error, never a crash; a loaded adapter is applied to a tiny rank-2 LoRA
// parameter set, which must succeed or fail with an error and keep the parameters' sizes.
#include "train/peft_adapter.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using lowbit::train::Parameter;

void writeBytes(const fs::path &path, std::string_view bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

std::vector<Parameter<float>> tinyLora() {
    const std::string prefix = "base_model.model.model.layers.0.self_attn.q_proj.";
    std::vector<Parameter<float>> params(2);
    params[0].name = prefix + "lora_A.weight";
    params[0].shape = {2, 4};
    params[1].name = prefix + "lora_B.weight";
    params[1].shape = {4, 2};
    for (Parameter<float> &p : params) {
        p.value.assign(8, 0.5f);
        p.grad.assign(8, 0.0f);
    }
    return params;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() /
                     ("lowbit_fuzz_peft_adapter_" + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    constexpr std::string_view kSeparator = "\n@@SAFETENSORS@@\n";
    const std::string_view input(reinterpret_cast<const char *>(data), size);
    const size_t split = input.find(kSeparator);
    std::error_code ec;
    writeBytes(dir / lowbit::train::kAdapterConfigFile, input.substr(0, split));
    if (split == std::string_view::npos)
        fs::remove(dir / lowbit::train::kAdapterWeightsFile, ec);
    else
        writeBytes(dir / lowbit::train::kAdapterWeightsFile,
                   input.substr(split + kSeparator.size()));
    auto adapter = lowbit::train::loadPeftAdapter(dir);
    if (!adapter.ok())
        return 0;
    if (adapter->info.lora.rank < 1 || adapter->tensors.size() != adapter->shapes.size())
        std::abort();
    for (const auto &[name, values] : adapter->tensors) {
        int64_t count = 1;
        for (int64_t d : adapter->shapes.at(name))
            count *= d;
        if (count != int64_t(values.size()))
            std::abort();
    }
    std::vector<Parameter<float>> params = tinyLora();
    std::vector<Parameter<float> *> pointers;
    for (Parameter<float> &p : params)
        pointers.push_back(&p);
    (void)lowbit::train::applyPeftAdapter(*adapter, pointers);
    for (const Parameter<float> &p : params)
        if (p.value.size() != 8)
            std::abort();
    return 0;
}
