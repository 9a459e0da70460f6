// The pure half of SlurmClient: array-range syntax, Slurm's state words, and the text the
// command-line tools print (squeue -o, scontrol -o show job, sacct -P). Formats follow the
// Slurm 22.05 man pages of squeue (%F %K %T %r), scontrol (one "Key=Value" record per line with
// -o) and sacct (--parsable2: '|'-separated, array tasks as JOBID_INDEX or JOBID_[RANGE]).
#include "sweep/slurm_client.h"

#include <algorithm>
#include <charconv>
#include <map>
#include <utility>

namespace lowbit::sweep {

namespace {

std::vector<std::string_view> split(std::string_view text, char separator) {
    std::vector<std::string_view> parts;
    size_t start = 0;
    while (true) {
        const size_t end = text.find(separator, start);
        parts.push_back(text.substr(start, end == std::string_view::npos ? end : end - start));
        if (end == std::string_view::npos)
            return parts;
        start = end + 1;
    }
}

std::string_view trim(std::string_view text) {
    const auto isSpace = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!text.empty() && isSpace(text.front()))
        text.remove_prefix(1);
    while (!text.empty() && isSpace(text.back()))
        text.remove_suffix(1);
    return text;
}

std::optional<int> parseIndex(std::string_view text) {
    int value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value < 0)
        return std::nullopt;
    return value;
}

// Tasks one parse may report, so that corrupt output cannot eat memory: the jobs parsed are a
// sweep's arrays, and planSweep refuses grids of more than 100000 tasks.
constexpr int64_t kMaxTasks = 100'000;

// Slurm's array-range syntax "0,2,5-7", "0-9:2", "3-5%2" (the % part caps concurrency) ->
// indices; empty when malformed or when more than `limit` (at most kMaxTasks) indices.
std::vector<int> expandArrayRange(std::string_view range, int64_t limit) {
    if (const size_t percent = range.find('%'); percent != std::string_view::npos)
        range = range.substr(0, percent);
    std::vector<int> indices;
    for (std::string_view part : split(range, ',')) {
        int step = 1;
        if (const size_t colon = part.find(':'); colon != std::string_view::npos) {
            const auto parsed = parseIndex(part.substr(colon + 1));
            if (!parsed || *parsed == 0)
                return {};
            step = *parsed;
            part = part.substr(0, colon);
        }
        const size_t dash = part.find('-');
        const auto first = parseIndex(part.substr(0, dash));
        const auto last =
            dash == std::string_view::npos ? first : parseIndex(part.substr(dash + 1));
        if (!first || !last || *last < *first ||
            int64_t(indices.size()) + (*last - *first) / step >= limit)
            return {};
        // 64-bit: i + step would overflow int past a last index near INT_MAX.
        for (int64_t i = *first; i <= *last; i += step)
            indices.push_back(int(i));
    }
    return indices;
}

std::string reasonOrEmpty(std::string_view reason) {
    reason = trim(reason);
    return reason == "None" || reason == "(null)" ? std::string() : std::string(reason);
}

// Adds "exit code N:S" to a reason when a finished task exited non-zero.
std::string withExitCode(std::string reason, std::string_view exitCode) {
    exitCode = trim(exitCode);
    if (exitCode.empty() || exitCode == "0:0")
        return reason;
    return (reason.empty() ? std::string() : reason + ", ") + "exit code " + std::string(exitCode);
}

std::vector<SlurmTaskStatus> sortedTasks(std::map<int, SlurmTaskStatus> byIndex) {
    std::vector<SlurmTaskStatus> tasks;
    tasks.reserve(byIndex.size());
    for (auto &[index, task] : byIndex)
        tasks.push_back(std::move(task));
    return tasks;
}

} // namespace

std::string compactArrayRange(std::vector<int> indices) {
    std::sort(indices.begin(), indices.end());
    indices.erase(std::unique(indices.begin(), indices.end()), indices.end());
    std::string range;
    for (size_t i = 0; i < indices.size();) {
        size_t j = i;
        while (j + 1 < indices.size() && indices[j + 1] == indices[j] + 1)
            ++j;
        if (!range.empty())
            range += ',';
        range += std::to_string(indices[i]);
        if (j > i)
            range += '-' + std::to_string(indices[j]);
        i = j + 1;
    }
    return range;
}

SlurmTaskState mapSlurmState(std::string_view state) {
    state = trim(state);
    // sacct decorates: "CANCELLED by 0", "CANCELLED+" (cancelled by someone else).
    state = state.substr(0, state.find(' '));
    if (!state.empty() && state.back() == '+')
        state.remove_suffix(1);
    static const std::map<std::string_view, SlurmTaskState, std::less<>> kStates = {
        {"PENDING", SlurmTaskState::Pending},       {"PD", SlurmTaskState::Pending},
        {"REQUEUED", SlurmTaskState::Pending},      {"RQ", SlurmTaskState::Pending},
        {"REQUEUE_HOLD", SlurmTaskState::Pending},  {"RH", SlurmTaskState::Pending},
        {"REQUEUE_FED", SlurmTaskState::Pending},   {"RF", SlurmTaskState::Pending},
        {"RESV_DEL_HOLD", SlurmTaskState::Pending}, {"RD", SlurmTaskState::Pending},
        {"RUNNING", SlurmTaskState::Running},       {"R", SlurmTaskState::Running},
        {"CONFIGURING", SlurmTaskState::Running},   {"CF", SlurmTaskState::Running},
        {"COMPLETING", SlurmTaskState::Running},    {"CG", SlurmTaskState::Running},
        {"SUSPENDED", SlurmTaskState::Running},     {"S", SlurmTaskState::Running},
        {"STOPPED", SlurmTaskState::Running},       {"ST", SlurmTaskState::Running},
        {"SIGNALING", SlurmTaskState::Running},     {"SI", SlurmTaskState::Running},
        {"STAGE_OUT", SlurmTaskState::Running},     {"SO", SlurmTaskState::Running},
        {"RESIZING", SlurmTaskState::Running},      {"RS", SlurmTaskState::Running},
        {"COMPLETED", SlurmTaskState::Completed},   {"CD", SlurmTaskState::Completed},
        {"CANCELLED", SlurmTaskState::Cancelled},   {"CA", SlurmTaskState::Cancelled},
        {"FAILED", SlurmTaskState::Failed},         {"F", SlurmTaskState::Failed},
        {"TIMEOUT", SlurmTaskState::Failed},        {"TO", SlurmTaskState::Failed},
        {"NODE_FAIL", SlurmTaskState::Failed},      {"NF", SlurmTaskState::Failed},
        {"OUT_OF_MEMORY", SlurmTaskState::Failed},  {"OOM", SlurmTaskState::Failed},
        {"BOOT_FAIL", SlurmTaskState::Failed},      {"BF", SlurmTaskState::Failed},
        {"DEADLINE", SlurmTaskState::Failed},       {"DL", SlurmTaskState::Failed},
        {"PREEMPTED", SlurmTaskState::Failed},      {"PR", SlurmTaskState::Failed},
        {"SPECIAL_EXIT", SlurmTaskState::Failed},   {"SE", SlurmTaskState::Failed},
        {"REVOKED", SlurmTaskState::Cancelled},     {"RV", SlurmTaskState::Cancelled},
    };
    const auto it = kStates.find(state);
    return it == kStates.end() ? SlurmTaskState::Unknown : it->second;
}

std::vector<SlurmTaskStatus> parseSqueueTasks(std::string_view output, std::string_view jobId) {
    std::map<int, SlurmTaskStatus> byIndex;
    for (std::string_view line : split(output, '\n')) {
        line = trim(line);
        const auto fields = split(line, '|');
        if (fields.size() < 3 || trim(fields[0]) != jobId)
            continue;
        const auto index = parseIndex(trim(fields[1])); // "N/A" for a job that is no array
        if (!index)
            continue;
        SlurmTaskStatus task;
        task.arrayIndex = *index;
        task.rawState = std::string(trim(fields[2]));
        task.state = mapSlurmState(task.rawState);
        // The reason may itself hold '|' (free text): rejoin the rest.
        if (fields.size() > 3)
            task.reason = reasonOrEmpty(line.substr(fields[3].data() - line.data()));
        byIndex[task.arrayIndex] = std::move(task);
    }
    return sortedTasks(std::move(byIndex));
}

std::vector<SlurmTaskStatus> parseScontrolTasks(std::string_view output, std::string_view jobId) {
    std::map<int, SlurmTaskStatus> byIndex;
    for (std::string_view line : split(output, '\n')) {
        std::map<std::string_view, std::string_view> fields;
        for (std::string_view token : split(trim(line), ' ')) {
            const size_t equals = token.find('=');
            if (equals != std::string_view::npos)
                fields.emplace(token.substr(0, equals), token.substr(equals + 1));
        }
        if (fields["ArrayJobId"] != jobId || !fields.count("ArrayTaskId"))
            continue;
        const std::string rawState(fields["JobState"]);
        const std::string reason =
            withExitCode(reasonOrEmpty(fields["Reason"]), fields["ExitCode"]);
        for (int index :
             expandArrayRange(fields["ArrayTaskId"], kMaxTasks - int64_t(byIndex.size()))) {
            SlurmTaskStatus task{index, mapSlurmState(rawState), rawState, reason};
            byIndex[index] = std::move(task);
        }
    }
    return sortedTasks(std::move(byIndex));
}

std::vector<SlurmTaskStatus> parseSacctTasks(std::string_view output, std::string_view jobId) {
    std::map<int, SlurmTaskStatus> byIndex;
    const std::string prefix = std::string(jobId) + "_";
    for (std::string_view line : split(output, '\n')) {
        const auto fields = split(trim(line), '|');
        if (fields.size() < 2 || !fields[0].starts_with(prefix))
            continue;
        std::string_view range = fields[0].substr(prefix.size());
        if (range.size() >= 2 && range.front() == '[' && range.back() == ']')
            range = range.substr(1, range.size() - 2);
        const std::string rawState(trim(fields[1]).substr(0, trim(fields[1]).find(' ')));
        const std::string reason = withExitCode({}, fields.size() > 2 ? fields[2] : "");
        for (int index : expandArrayRange(range, kMaxTasks - int64_t(byIndex.size()))) {
            std::string word = rawState;
            if (!word.empty() && word.back() == '+')
                word.pop_back();
            byIndex[index] = SlurmTaskStatus{index, mapSlurmState(word), word, reason};
        }
    }
    return sortedTasks(std::move(byIndex));
}

} // namespace lowbit::sweep
