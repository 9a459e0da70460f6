// libFuzzer target: arbitrary bytes as the text Slurm's tools print (storage/sweep/slurm_client.h):
// the first byte picks squeue -o, scontrol -o show job or sacct -P, the rest is their output for
// job 4242. Every input must give a list of tasks, never a crash; the list must be sorted by array
// index without duplicates, and compactArrayRange of those indices, read back through scontrol's
// ArrayTaskId syntax, must give the same indices.
#include "sweep/slurm_client.h"

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view kJob = "4242";

void checkSortedUnique(const std::vector<lowbit::sweep::SlurmTaskStatus> &tasks) {
    for (size_t i = 0; i < tasks.size(); ++i) {
        if (tasks[i].arrayIndex < 0)
            std::abort();
        if (i > 0 && tasks[i - 1].arrayIndex >= tasks[i].arrayIndex)
            std::abort();
    }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    const std::string_view text(reinterpret_cast<const char *>(data + 1), size - 1);
    std::vector<lowbit::sweep::SlurmTaskStatus> tasks;
    switch (data[0] % 3) {
    case 0: tasks = lowbit::sweep::parseSqueueTasks(text, kJob); break;
    case 1: tasks = lowbit::sweep::parseScontrolTasks(text, kJob); break;
    default: tasks = lowbit::sweep::parseSacctTasks(text, kJob); break;
    }
    checkSortedUnique(tasks);
    std::vector<int> indices;
    for (const auto &task : tasks)
        indices.push_back(task.arrayIndex);
    const std::string range = lowbit::sweep::compactArrayRange(indices);
    const auto back = lowbit::sweep::parseScontrolTasks(
        "ArrayJobId=4242 ArrayTaskId=" + range + " JobState=PENDING\n", kJob);
    if (back.size() != indices.size())
        std::abort();
    for (size_t i = 0; i < back.size(); ++i)
        if (back[i].arrayIndex != indices[i])
            std::abort();
    return 0;
}
