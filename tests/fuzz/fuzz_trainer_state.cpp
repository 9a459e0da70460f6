// libFuzzer target: arbitrary bytes as a trainer checkpoint (checkpointDir/trainer_state.safetensors,
// engine/train/trainer.h), read by Trainer::run when resuming. The trainer drives a stub target
// with two parameters ("w" {3}, "lora.b" {2}) over one fixed example, seed 7, batch size 1 and
// 0 steps, so a run is: load the state, then save it again. Every input must resume or give an
// error, never a crash; a resumed run must report a non-negative step and a history of steps.
#include "train/trainer.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

namespace {

namespace fs = std::filesystem;
using namespace lowbit::train;

class StubTarget final : public TrainTarget {
public:
    StubTarget() {
        m_params[0].name = "w";
        m_params[0].shape = {3};
        m_params[1].name = "lora.b";
        m_params[1].shape = {2};
        for (Parameter<float> &p : m_params) {
            p.value.assign(size_t(p.shape[0]), 0.25f);
            p.grad.assign(size_t(p.shape[0]), 0.0f);
        }
    }
    std::vector<Parameter<float> *> parameters() override { return {&m_params[0], &m_params[1]}; }
    void zeroGrad() override {}
    lowbit::Result<LossStats> accumulate(std::span<const TrainExample>) override {
        return LossStats{1.0, 1};
    }
    void afterStep() override {}

private:
    Parameter<float> m_params[2];
};

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() /
                     ("lowbit_fuzz_trainer_state_" + std::to_string(::getpid()));
        fs::create_directories(d);
        return d;
    }();
    {
        std::ofstream out(dir / kTrainerStateFile, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char *>(data), std::streamsize(size));
    }
    static const std::vector<TrainExample> examples = [] {
        TrainExample e;
        e.tokens = {1, 2, 3};
        e.targets = {2, 3, kIgnoreTarget};
        return std::vector<TrainExample>{e};
    }();
    StubTarget target;
    TrainerOptions options;
    options.steps = 0;
    options.batchSize = 1;
    options.seed = 7;
    options.checkpointDir = dir;
    options.resume = true;
    Trainer trainer(target, examples, options);
    lowbit::NullProgress progress;
    auto report = trainer.run(progress);
    if (!report.ok())
        return 0;
    if (report->stepsDone < 0)
        std::abort();
    for (Parameter<float> *p : target.parameters())
        if (p->value.size() != size_t(p->shape[0]))
            std::abort();
    return 0;
}
