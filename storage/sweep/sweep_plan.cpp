#include "sweep/sweep_plan.h"

#include "core/json_file.h"

#include <cstdio>
#include <fstream>

namespace lowbit::sweep {

using nlohmann::json;

namespace {

std::string taskFileStem(int index) {
    char name[32];
    std::snprintf(name, sizeof name, "task-%04d", index);
    return name;
}

Status writeFile(const std::filesystem::path &path, const std::string &text) {
    // Written aside and renamed: a reader (a running task, `sweep status`) never sees half a file.
    const std::filesystem::path temporary = path.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush())
            return makeError(ErrorCode::Io, temporary.string() + ": cannot write");
    }
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec)
        return makeError(ErrorCode::Io, path.string() + ": cannot write: " + ec.message());
    return {};
}

std::string gridLabel(const JobSpec &job) {
    std::string label = job.checkpoint.filename().string() + " " + job.method.name;
    if (!job.method.isNone())
        label.append(" ").append(std::to_string(job.method.bits)).append("-bit");
    return label;
}

Error manifestError(const std::filesystem::path &path, const std::string &problem) {
    return makeError(ErrorCode::Format, path.string() + ": " + problem);
}

// Same grid: the same tasks with the same job specs (resources and backend may change between a
// submission and a retry).
bool sameTasks(const SweepPlan &a, const SweepPlan &b) {
    if (a.tasks.size() != b.tasks.size() || a.spec.output != b.spec.output)
        return false;
    for (size_t i = 0; i < a.tasks.size(); ++i)
        if (a.tasks[i].stage != b.tasks[i].stage || a.tasks[i].dependsOn != b.tasks[i].dependsOn ||
            toJson(a.tasks[i].job) != toJson(b.tasks[i].job))
            return false;
    return true;
}

// get<int>() of a float out of int's range is undefined behaviour, and of a large integer
// silently wraps: anything but an int-sized integer is a type error, as get<> reports others.
int intOf(const json &value) {
    if (!value.is_number_integer() || value.get<int64_t>() < INT32_MIN ||
        value.get<int64_t>() > INT32_MAX)
        throw json::type_error::create(302, "expected an integer, got " + value.dump(), &value);
    return value.get<int>();
}

} // namespace

const char *stageName(StageKind stage) {
    return stage == StageKind::Quantize ? "quantize" : "evaluate";
}

std::vector<int> SweepPlan::stageIndices(StageKind stage) const {
    std::vector<int> indices;
    for (const SweepTask &task : tasks)
        if (task.stage == stage)
            indices.push_back(task.index);
    return indices;
}

Result<SweepPlan> planSweep(const SweepSpec &spec) {
    // A few KB of spec can name a grid of billions of tasks; refuse it before expanding it.
    constexpr double kMaxTasks = 100'000;
    double perCheckpoint = 0;
    for (const json &method : spec.methods)
        perCheckpoint += methodName(method) == "none"
                             ? double(spec.tasks.size())
                             : double(spec.bits.size()) * double(1 + spec.tasks.size());
    if (double(spec.checkpoints.size()) * perCheckpoint > kMaxTasks)
        return makeError(ErrorCode::InvalidArgument,
                         "sweep: the grid has more than 100000 tasks; split it into several "
                         "sweeps");
    SweepPlan plan;
    plan.spec = spec;
    std::vector<SweepTask> quantize, evaluate;
    for (const SweepCheckpoint &checkpoint : spec.checkpoints)
        for (const json &method : spec.methods)
            for (int bits : spec.bits) {
                LOWBIT_TRY(JobSpec grid, gridJob(spec, checkpoint, method, bits, spec.tasks));
                std::vector<int> dependsOn;
                if (!grid.method.isNone()) {
                    SweepTask stage1;
                    stage1.stage = StageKind::Quantize;
                    stage1.label = gridLabel(grid);
                    stage1.job = grid;
                    quantize.push_back(std::move(stage1));
                    dependsOn.push_back(int(quantize.size()) - 1); // renumbered below
                }
                for (const TaskSpec &task : spec.tasks) {
                    SweepTask stage2;
                    stage2.label = gridLabel(grid) + " " + task.name;
                    stage2.job = grid;
                    stage2.job.tasks = {task};
                    stage2.dependsOn = dependsOn;
                    evaluate.push_back(std::move(stage2));
                }
                if (grid.method.isNone())
                    break; // the baseline runs once, whatever the bit-widths
            }
    // Stage 1 takes indices 0..Q-1, so a stage-2 dependency (a stage-1 position) is its index.
    for (SweepTask &task : quantize)
        plan.tasks.push_back(std::move(task));
    for (SweepTask &task : evaluate)
        plan.tasks.push_back(std::move(task));
    for (size_t i = 0; i < plan.tasks.size(); ++i) {
        SweepTask &task = plan.tasks[i];
        task.index = int(i);
        task.specPath = spec.output / "specs" / (taskFileStem(task.index) + ".json");
        task.dbPath = spec.output / "results" / (taskFileStem(task.index) + ".sqlite");
    }
    return plan;
}

json manifestJson(const SweepPlan &plan) {
    json tasks = json::array();
    for (const SweepTask &task : plan.tasks)
        tasks.push_back({{"index", task.index},
                         {"stage", int(task.stage)},
                         {"kind", stageName(task.stage)},
                         {"label", task.label},
                         {"spec", task.specPath.string()},
                         {"db", task.dbPath.string()},
                         {"depends_on", task.dependsOn}});
    json submissions = json::array();
    for (const SweepSubmission &s : plan.submissions)
        submissions.push_back({{"stage", s.stage},
                               {"job_id", s.jobId},
                               {"indices", s.indices},
                               {"submitted_at", s.submittedAt}});
    return {{"version", 1},
            {"sweep", toJson(plan.spec)},
            {"tasks", tasks},
            {"submissions", submissions}};
}

Status writePlan(const SweepPlan &plan) {
    std::error_code ec;
    for (const char *sub : {"specs", "results", "artifacts"}) {
        std::filesystem::create_directories(plan.spec.output / sub, ec);
        if (ec)
            return makeError(ErrorCode::Io, (plan.spec.output / sub).string() +
                                                ": cannot create: " + ec.message());
    }
    for (const SweepTask &task : plan.tasks)
        LOWBIT_CHECK(writeFile(task.specPath, toJson(task.job).dump(2) + "\n"));
    return writeFile(plan.manifestPath(), manifestJson(plan).dump(2) + "\n");
}

namespace {

bool isManifest(const json &value) {
    return value.is_object() && value.contains("sweep") && value.contains("tasks");
}

// The plan a manifest document read from `path` records.
Result<SweepPlan> manifestOfJson(const std::filesystem::path &path, const json &value) {
    if (!value.is_object())
        return manifestError(path, "not a JSON object");
    if (!value.contains("sweep"))
        return manifestError(path, "manifest.sweep: missing");
    auto spec = parseSweepSpec(value["sweep"]);
    if (!spec.ok())
        return manifestError(path, "manifest." + spec.error().message);
    // The plan is recomputed from the recorded sweep and must match the recorded tasks: a
    // hand-edited manifest is caught here rather than by a task running the wrong spec.
    LOWBIT_TRY(SweepPlan plan, planSweep(*spec));
    const json expected = manifestJson(plan)["tasks"];
    if (value.value("tasks", json()) != expected)
        return manifestError(path, "manifest.tasks: differ from the plan of manifest.sweep");
    try {
        for (const json &s : value.value("submissions", json::array())) {
            SweepSubmission submission;
            submission.stage = intOf(s.at("stage"));
            submission.jobId = s.at("job_id").get<std::string>();
            if (!s.at("indices").is_array())
                throw json::type_error::create(302, "indices must be a list", &s);
            for (const json &index : s.at("indices"))
                submission.indices.push_back(intOf(index));
            submission.submittedAt = s.value("submitted_at", "");
            plan.submissions.push_back(std::move(submission));
        }
    } catch (const json::exception &e) {
        return manifestError(path, std::string("manifest.submissions: ") + e.what());
    }
    return plan;
}

} // namespace

Result<SweepPlan> readManifest(const std::filesystem::path &path) {
    LOWBIT_TRY(const json value, readJsonFile(path, "the sweep manifest (run `sweep plan`)"));
    return manifestOfJson(path, value);
}

Result<SweepPlan> loadSweep(const std::filesystem::path &path) {
    LOWBIT_TRY(const json value, readJsonFile(path, "the sweep spec"));
    if (isManifest(value))
        return manifestOfJson(path, value);
    LOWBIT_TRY(SweepSpec spec, sweepSpecOfFile(path, value));
    return planWithManifest(spec);
}

Result<SweepPlan> planWithManifest(const SweepSpec &spec) {
    LOWBIT_TRY(SweepPlan plan, planSweep(spec));
    std::error_code ec;
    if (!std::filesystem::exists(plan.manifestPath(), ec))
        return plan;
    auto previous = readManifest(plan.manifestPath());
    if (!previous.ok() || !sameTasks(*previous, plan)) {
        if (previous.ok() && previous->submissions.empty())
            return plan; // planned but never submitted: the new plan replaces it
        return makeError(ErrorCode::InvalidArgument,
                         plan.manifestPath().string() +
                             ": the sweep folder holds a different sweep that was submitted; "
                             "give this sweep another output folder" +
                             (previous.ok() ? "" : " (" + previous.error().message + ")"));
    }
    plan.submissions = previous->submissions;
    return plan;
}

} // namespace lowbit::sweep
