// libFuzzer target: arbitrary bytes as a sweep spec (storage/sweep/sweep_spec.h), parsed and, when
// accepted, expanded into its plan (sweep_plan.h, pure: no file is written). Every input must give
// a spec or an error, never a crash or an exception; an accepted spec must survive its canonical
// JSON (parseSweepSpec(toJson(s)) accepts it again) and plan into tasks whose dependencies point
// at stage-1 tasks.
#include "sweep/sweep_plan.h"
#include "sweep/sweep_spec.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const nlohmann::json value =
        nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
    if (value.is_discarded())
        return 0;
    auto spec = lowbit::sweep::parseSweepSpec(value);
    if (!spec.ok())
        return 0;
    if (!lowbit::sweep::parseSweepSpec(lowbit::sweep::toJson(*spec)).ok())
        std::abort();
    auto plan = lowbit::sweep::planSweep(*spec);
    if (!plan.ok())
        return 0;
    for (size_t i = 0; i < plan->tasks.size(); ++i) {
        const lowbit::sweep::SweepTask &task = plan->tasks[i];
        if (task.index != int(i))
            std::abort();
        for (int d : task.dependsOn)
            if (d < 0 || size_t(d) >= plan->tasks.size() ||
                plan->tasks[size_t(d)].stage != lowbit::sweep::StageKind::Quantize)
                std::abort();
    }
    (void)lowbit::sweep::manifestJson(*plan).dump();
    return 0;
}
