#include "experiment.h"

namespace lowbit::ui {

Result<std::vector<JobSpec>> jobSpecs(const Experiment &experiment) {
    if (experiment.checkpoint.empty())
        return makeError(ErrorCode::InvalidArgument, "open a checkpoint first (File > Open)");
    if (experiment.tasks.empty())
        return makeError(ErrorCode::InvalidArgument, "tick at least one task in the Tasks panel");
    if (experiment.methods.empty())
        return makeError(ErrorCode::InvalidArgument, "choose a method and a bit-width");
    std::vector<JobSpec> specs;
    for (const MethodSpec &method : experiment.methods) {
        JobSpec spec;
        spec.checkpoint = experiment.checkpoint;
        spec.method = method;
        spec.tasks = experiment.tasks;
        spec.device = experiment.device;
        spec.threads = experiment.threads;
        specs.push_back(std::move(spec));
    }
    return specs;
}

} // namespace lowbit::ui
