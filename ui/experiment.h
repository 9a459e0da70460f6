// An experiment as the panels describe it: one checkpoint, one or more method specs (a sweep),
// the ticked tasks. Each method spec becomes one job spec (one run).
#pragma once

#include "core/result.h"
#include "pipeline/job_spec.h"

#include <filesystem>
#include <vector>

namespace lowbit::ui {

struct Experiment {
    std::filesystem::path checkpoint;
    std::vector<MethodSpec> methods;
    std::vector<TaskSpec> tasks;
    std::string device = "cpu";
    int threads = 0;
};

// Errors name what is missing: no checkpoint loaded, no task ticked, no method.
Result<std::vector<JobSpec>> jobSpecs(const Experiment &experiment);

} // namespace lowbit::ui
