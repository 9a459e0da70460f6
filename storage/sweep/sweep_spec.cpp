#include "sweep/sweep_spec.h"

#include "core/json_file.h"
#include "json_fields.h"

#include <algorithm>
#include <regex>
#include <set>

namespace lowbit::sweep {

using nlohmann::json;

namespace {

std::filesystem::path absolutePath(const std::string &path) {
    return std::filesystem::absolute(path).lexically_normal();
}

// A job spec's error with its "spec.<from>" prefix renamed to the sweep field it came from.
Error renamed(const Error &error, const std::string &from, const std::string &to) {
    std::string message = error.message;
    if (message.rfind(from, 0) == 0)
        message = to + message.substr(from.size());
    return makeError(error.code, message);
}

Result<SweepCheckpoint> parseCheckpoint(const json &value, const std::string &path) {
    SweepCheckpoint checkpoint;
    if (value.is_string() && !value.get<std::string>().empty()) {
        checkpoint.checkpoint = absolutePath(value.get<std::string>());
        return checkpoint;
    }
    JsonFields fields(value, path);
    if (!value.is_object())
        return fieldError(path, "must be a path or {\"checkpoint\": P, \"tokenizer\": T}, got " +
                                    shownJson(value));
    std::string model, tokenizer;
    LOWBIT_CHECK(fields.text("checkpoint", model));
    if (model.empty())
        return fieldError(path + ".checkpoint", "missing (a HF directory, .gguf or llama2.c .bin)");
    LOWBIT_CHECK(fields.text("tokenizer", tokenizer));
    LOWBIT_CHECK(fields.finish());
    checkpoint.checkpoint = absolutePath(model);
    if (!tokenizer.empty())
        checkpoint.tokenizer = absolutePath(tokenizer);
    return checkpoint;
}

Status parseSlurm(const json &value, SlurmBackend &slurm) {
    JsonFields fields(value, "sweep.backend.slurm");
    LOWBIT_CHECK(fields.checkIsObject());
    SlurmResources &r = slurm.resources;
    LOWBIT_CHECK(fields.text("partition", r.partition));
    LOWBIT_CHECK(fields.text("account", r.account));
    LOWBIT_CHECK(fields.text("time", r.time));
    LOWBIT_CHECK(fields.text("gres", r.gres));
    int64_t cpus = r.cpusPerTask;
    LOWBIT_CHECK(fields.integer("cpus_per_task", 1, 4096, cpus));
    r.cpusPerTask = int(cpus);
    LOWBIT_CHECK(fields.text("memory", r.memory));
    if (const json *extra = fields.find("extra")) {
        if (!extra->is_array())
            return fieldError(fields.field("extra"), "must be a list of #SBATCH options");
        for (size_t i = 0; i < extra->size(); ++i) {
            const json &line = (*extra)[i];
            if (!line.is_string() || line.get<std::string>().empty() ||
                line.get<std::string>().find('\n') != std::string::npos)
                return fieldError(fields.field("extra") + "[" + std::to_string(i) + "]",
                                  "must be one #SBATCH option such as \"--qos=normal\", got " +
                                      shownJson(line));
            r.extraDirectives.push_back(line.get<std::string>());
        }
    }
    if (const json *setup = fields.find("setup")) {
        if (!setup->is_string())
            return fieldError(fields.field("setup"), "must be a shell snippet (a string)");
        r.setup = setup->get<std::string>();
    }
    std::string lowbit;
    LOWBIT_CHECK(fields.text("lowbit", lowbit));
    if (!lowbit.empty())
        slurm.lowbit = absolutePath(lowbit);
    return fields.finish();
}

Status parseBackend(const json &value, SweepSpec &spec) {
    JsonFields fields(value, "sweep.backend");
    LOWBIT_CHECK(fields.checkIsObject());
    std::string kind = "local";
    LOWBIT_CHECK(fields.text("kind", kind));
    if (kind == "slurm")
        spec.backend = BackendKind::Slurm;
    else if (kind != "local")
        return fieldError("sweep.backend.kind",
                          "must be \"local\" or \"slurm\", got \"" + kind + "\"");
    if (const json *slurm = fields.find("slurm"))
        LOWBIT_CHECK(parseSlurm(*slurm, spec.slurm));
    return fields.finish();
}

// Shared job fields and tasks, checked by the job spec parser on a baseline job.
Status parseJobFields(JsonFields &fields, const json &value, SweepSpec &spec) {
    json job = {{"checkpoint", "/"}, {"method", "none"}};
    for (const char *key : {"device", "threads", "seed", "tasks"})
        if (const json *field = fields.find(key))
            job[key] = *field;
    if (!value.contains("tasks"))
        return fieldError("sweep.tasks", "must be a non-empty list of tasks");
    auto parsed = parseJobSpec(job);
    if (!parsed.ok())
        return renamed(parsed.error(), "spec.", "sweep.");
    spec.tasks = parsed->tasks;
    spec.device = parsed->device;
    spec.threads = parsed->threads;
    spec.seed = parsed->seed;
    if (const json *calibration = fields.find("calibration")) {
        json probe = {{"checkpoint", "/"},
                      {"method", {{"name", "rtn"}, {"bits", 4}, {"calibration", *calibration}}},
                      {"tasks", job["tasks"]}};
        auto checked = parseJobSpec(probe);
        if (!checked.ok())
            return renamed(checked.error(), "spec.method.calibration", "sweep.calibration");
        spec.calibration = checked->method.calibration;
    }
    return {};
}

Status parseMethods(const json &list, SweepSpec &spec) {
    std::set<std::string> seen;
    for (size_t i = 0; i < list.size(); ++i) {
        const std::string path = "sweep.methods[" + std::to_string(i) + "]";
        json method = list[i].is_string() ? json{{"name", list[i]}} : list[i];
        if (!method.is_object())
            return fieldError(path, "must be a method name or object, got " + shownJson(list[i]));
        if (method.contains("bits"))
            return fieldError(path + ".bits",
                              "set the bit-widths in sweep.bits (every method runs at each)");
        // Each grid point must be a valid job spec: checked now, so that a typo fails the plan
        // rather than one task on the cluster hours later.
        for (int bits : spec.bits) {
            auto job = gridJob(spec, {"/", {}}, method, bits, spec.tasks);
            if (!job.ok())
                return renamed(job.error(), "spec.method", path);
            if (job->method.isNone())
                break;
        }
        if (!seen.insert(json(method).dump()).second)
            return fieldError(path, "appears twice");
        spec.methods.push_back(method);
    }
    return {};
}

} // namespace

const char *backendName(BackendKind kind) {
    return kind == BackendKind::Slurm ? "slurm" : "local";
}

std::string methodName(const json &method) {
    // Not json::value(): it throws on a "name" of another type; parseJobSpec reports that one.
    if (!method.is_object())
        return "none";
    const auto name = method.find("name");
    if (name == method.end())
        return "none";
    return name->is_string() ? name->get<std::string>() : std::string();
}

Result<JobSpec> gridJob(const SweepSpec &spec, const SweepCheckpoint &checkpoint,
                        const json &method, int bits, const std::vector<TaskSpec> &tasks) {
    json m = method;
    if (methodName(m) != "none") {
        m["bits"] = bits;
        if (spec.calibration && !m.contains("calibration")) {
            json calibration = {{"samples", spec.calibration->samples},
                                {"tokens", spec.calibration->tokens},
                                {"seed", spec.calibration->seed}};
            if (!spec.calibration->dataset.empty())
                calibration["dataset"] = spec.calibration->dataset;
            m["calibration"] = calibration;
        }
    }
    json taskList = json::array();
    for (const TaskSpec &task : tasks)
        taskList.push_back(toJson(task));
    json job = {{"version", kJobSpecVersion},
                {"checkpoint", checkpoint.checkpoint.string()},
                {"method", m},
                {"tasks", taskList},
                {"device", spec.device},
                {"threads", spec.threads},
                {"seed", spec.seed}};
    if (!checkpoint.tokenizer.empty())
        job["tokenizer"] = checkpoint.tokenizer.string();
    return parseJobSpec(job);
}

Result<SweepSpec> parseSweepSpec(const json &value) {
    JsonFields fields(value, "sweep");
    LOWBIT_CHECK(fields.checkIsObject());
    SweepSpec spec;
    int64_t version = kSweepSpecVersion;
    LOWBIT_CHECK(fields.integer("version", 1, INT32_MAX, version));
    if (version > kSweepSpecVersion)
        return fieldError("sweep.version", "version " + std::to_string(version) +
                                               " is newer than this lowbit understands (up to " +
                                               std::to_string(kSweepSpecVersion) + ")");
    LOWBIT_CHECK(fields.text("name", spec.name));
    if (!std::regex_match(spec.name, std::regex("[A-Za-z0-9._-]{1,64}")))
        return fieldError("sweep.name", "must be letters, digits, '.', '_' or '-' (a job name), "
                                        "got \"" +
                                            spec.name + "\"");
    std::string output, data;
    LOWBIT_CHECK(fields.text("output", output));
    if (output.empty())
        return fieldError("sweep.output",
                          "missing (the sweep folder, on a filesystem every node sees)");
    spec.output = absolutePath(output);
    LOWBIT_CHECK(fields.text("data", data));
    if (!data.empty())
        spec.dataDir = absolutePath(data);
    LOWBIT_TRY(const json *checkpoints, fields.list("checkpoints", true));
    for (size_t i = 0; i < checkpoints->size(); ++i) {
        LOWBIT_TRY(
            SweepCheckpoint c,
            parseCheckpoint((*checkpoints)[i], "sweep.checkpoints[" + std::to_string(i) + "]"));
        spec.checkpoints.push_back(std::move(c));
    }
    LOWBIT_CHECK(parseJobFields(fields, value, spec));
    LOWBIT_TRY(const json *bits, fields.list("bits", false));
    for (size_t i = 0; bits && i < bits->size(); ++i) {
        const json &b = (*bits)[i];
        if (!b.is_number_integer() || b.get<int64_t>() < 1 || b.get<int64_t>() > 8)
            return fieldError("sweep.bits[" + std::to_string(i) + "]",
                              "must be an integer in [1, 8], got " + shownJson(b));
        if (std::find(spec.bits.begin(), spec.bits.end(), b.get<int>()) != spec.bits.end())
            return fieldError("sweep.bits[" + std::to_string(i) + "]", "appears twice");
        spec.bits.push_back(b.get<int>());
    }
    LOWBIT_TRY(const json *methods, fields.list("methods", true));
    const bool onlyNone = std::all_of(methods->begin(), methods->end(), [](const json &m) {
        return m == "none" || (m.is_object() && methodName(m) == "none");
    });
    if (spec.bits.empty() && !onlyNone)
        return fieldError("sweep.bits", "must be a non-empty list of bit-widths in [1, 8]");
    if (spec.bits.empty())
        spec.bits.push_back(0);
    LOWBIT_CHECK(parseMethods(*methods, spec));
    if (const json *backend = fields.find("backend"))
        LOWBIT_CHECK(parseBackend(*backend, spec));
    LOWBIT_CHECK(fields.finish());
    return spec;
}

Result<SweepSpec> readSweepSpecFile(const std::filesystem::path &path) {
    LOWBIT_TRY(const json value, readJsonFile(path, "the sweep spec"));
    return sweepSpecOfFile(path, value);
}

Result<SweepSpec> sweepSpecOfFile(const std::filesystem::path &path, const json &value) {
    auto spec = parseSweepSpec(value);
    if (!spec.ok())
        return makeError(spec.error().code, path.string() + ": " + spec.error().message);
    return spec;
}

json toJson(const SweepSpec &spec) {
    json checkpoints = json::array();
    for (const SweepCheckpoint &c : spec.checkpoints) {
        json entry = {{"checkpoint", c.checkpoint.string()}};
        if (!c.tokenizer.empty())
            entry["tokenizer"] = c.tokenizer.string();
        checkpoints.push_back(entry);
    }
    json tasks = json::array();
    for (const TaskSpec &task : spec.tasks)
        tasks.push_back(toJson(task));
    json bits = json::array();
    for (int b : spec.bits)
        if (b > 0)
            bits.push_back(b);
    const SlurmResources &r = spec.slurm.resources;
    json slurm = {{"time", r.time},
                  {"cpus_per_task", r.cpusPerTask},
                  {"extra", r.extraDirectives},
                  {"setup", r.setup}};
    for (const auto &[key, value] : {std::pair{"partition", r.partition},
                                     {"account", r.account},
                                     {"gres", r.gres},
                                     {"memory", r.memory},
                                     {"lowbit", spec.slurm.lowbit.string()}})
        if (!value.empty())
            slurm[key] = value;
    json out = {{"version", spec.version},
                {"name", spec.name},
                {"output", spec.output.string()},
                {"checkpoints", checkpoints},
                {"methods", spec.methods},
                {"tasks", tasks},
                {"device", spec.device},
                {"threads", spec.threads},
                {"seed", spec.seed},
                {"backend", {{"kind", backendName(spec.backend)}, {"slurm", slurm}}}};
    if (!bits.empty())
        out["bits"] = bits;
    if (!spec.dataDir.empty())
        out["data"] = spec.dataDir.string();
    if (spec.calibration) {
        const CalibrationSpec &c = *spec.calibration;
        out["calibration"] = {{"samples", c.samples}, {"tokens", c.tokens}, {"seed", c.seed}};
        if (!c.dataset.empty())
            out["calibration"]["dataset"] = c.dataset;
    }
    return out;
}

} // namespace lowbit::sweep
