#include "pipeline/job_spec.h"

#include "backend/device.h"
#include "core/json_file.h"
#include "json_fields.h"

#include <regex>
#include <set>

namespace lowbit {

using nlohmann::json;

namespace {

std::filesystem::path absolutePath(const std::string &path) {
    return std::filesystem::absolute(path).lexically_normal();
}

Result<CalibrationSpec> parseCalibration(const json &value, const std::string &path) {
    JsonFields reader(value, path);
    LOWBIT_CHECK(reader.checkIsObject());
    CalibrationSpec calibration;
    LOWBIT_CHECK(reader.text("dataset", calibration.dataset));
    LOWBIT_CHECK(reader.integer("samples", 1, 1 << 20, calibration.samples));
    LOWBIT_CHECK(reader.integer("tokens", 2, 1 << 20, calibration.tokens));
    int64_t seed = 0;
    LOWBIT_CHECK(reader.integer("seed", 0, INT64_MAX, seed));
    calibration.seed = uint64_t(seed);
    LOWBIT_CHECK(reader.finish());
    // A path-like dataset is made absolute; a bare name ("c4") is left for the quantizer.
    if (calibration.dataset.find('/') != std::string::npos)
        calibration.dataset = absolutePath(calibration.dataset).string();
    return calibration;
}

Result<MethodSpec> parseMethod(const json &value) {
    const std::string path = "spec.method";
    if (value.is_string())
        return parseMethod(json{{"name", value}});
    JsonFields reader(value, path);
    LOWBIT_CHECK(reader.checkIsObject());
    MethodSpec method;
    LOWBIT_CHECK(reader.text("name", method.name));
    if (!reader.find("name"))
        return fieldError(path + ".name", "missing (\"none\" for the full-precision baseline)");
    if (!std::regex_match(method.name, std::regex("[a-z0-9_-]+")))
        return fieldError(path + ".name",
                          "must be a method name such as none, rtn, gptq, awq; got \"" +
                              method.name + "\"");
    if (method.isNone()) {
        for (const char *key :
             {"bits", "group_size", "symmetric", "layers", "calibration", "options"})
            if (reader.find(key))
                return fieldError(reader.field(key),
                                  "not used by method none (the unquantized baseline)");
        LOWBIT_CHECK(reader.finish());
        return method;
    }
    int64_t bits = -1, group = 0;
    LOWBIT_CHECK(reader.integer("bits", 1, 8, bits));
    if (bits < 0)
        return fieldError(path + ".bits", "missing (an integer in [1, 8])");
    method.bits = int(bits);
    LOWBIT_CHECK(reader.integer("group_size", -1, 1 << 20, group));
    method.groupSize = group < 0 ? 0 : group;
    LOWBIT_CHECK(reader.boolean("symmetric", method.symmetric));
    LOWBIT_CHECK(reader.text("layers", method.layers));
    if (const json *calibration = reader.find("calibration")) {
        LOWBIT_TRY(CalibrationSpec spec, parseCalibration(*calibration, path + ".calibration"));
        method.calibration = spec;
    }
    LOWBIT_CHECK(reader.object("options", method.options));
    LOWBIT_CHECK(reader.finish());
    return method;
}

Result<TaskSpec> parseTask(const json &value, const std::string &path) {
    if (value.is_string())
        return parseTask(json{{"name", value}}, path);
    JsonFields reader(value, path);
    LOWBIT_CHECK(reader.checkIsObject());
    TaskSpec task;
    LOWBIT_CHECK(reader.text("name", task.name));
    if (task.name.empty())
        return fieldError(path + ".name",
                          "missing (e.g. \"wikitext2\", \"arc_easy\", \"text:PATH\")");
    if (task.name.rfind("text:", 0) == 0) {
        if (task.name.size() == 5)
            return fieldError(path + ".name", "text: needs a file path (text:PATH)");
        task.name = "text:" + absolutePath(task.name.substr(5)).string();
    }
    int64_t shots = -1, batch = 1;
    LOWBIT_CHECK(reader.integer("limit", 0, INT64_MAX, task.limit));
    LOWBIT_CHECK(reader.integer("shots", -1, 1000, shots));
    LOWBIT_CHECK(reader.integer("context", 0, 1 << 24, task.contextTokens));
    LOWBIT_CHECK(reader.integer("batch_size", 1, 1 << 16, batch));
    task.shots = int(shots);
    task.batchSize = int(batch);
    LOWBIT_CHECK(reader.object("options", task.options));
    LOWBIT_CHECK(reader.finish());
    return task;
}

Status parseTop(JsonFields &reader, JobSpec &spec) {
    int64_t version = kJobSpecVersion;
    LOWBIT_CHECK(reader.integer("version", 1, INT32_MAX, version));
    if (version > kJobSpecVersion)
        return fieldError("spec.version", "version " + std::to_string(version) +
                                              " is newer than this lowbit understands (up to " +
                                              std::to_string(kJobSpecVersion) + ")");
    spec.version = int(version);
    std::string checkpoint, tokenizer;
    LOWBIT_CHECK(reader.text("checkpoint", checkpoint));
    if (checkpoint.empty())
        return fieldError("spec.checkpoint", "missing (a HF directory, .gguf or llama2.c .bin)");
    spec.checkpoint = absolutePath(checkpoint);
    LOWBIT_CHECK(reader.text("tokenizer", tokenizer));
    if (!tokenizer.empty())
        spec.tokenizer = absolutePath(tokenizer);
    LOWBIT_CHECK(reader.text("device", spec.device));
    auto device = parseDevice(spec.device);
    if (!device.ok())
        return fieldError("spec.device",
                          "must be \"cpu\" or \"cuda:N\", got \"" + spec.device + "\"");
    spec.device = device->toString(); // canonical: "cuda" is "cuda:0", one queue per device
    int64_t threads = 0, seed = 0;
    LOWBIT_CHECK(reader.integer("threads", 0, 4096, threads));
    LOWBIT_CHECK(reader.integer("seed", 0, INT64_MAX, seed));
    spec.threads = int(threads);
    spec.seed = uint64_t(seed);
    return {};
}

} // namespace

Result<JobSpec> parseJobSpec(const json &value) {
    JsonFields reader(value, "spec");
    LOWBIT_CHECK(reader.checkIsObject());
    JobSpec spec;
    LOWBIT_CHECK(parseTop(reader, spec));
    const json *method = reader.find("method");
    if (!method)
        return fieldError("spec.method",
                          "missing ({\"name\": \"none\"} for the full-precision baseline)");
    LOWBIT_TRY(spec.method, parseMethod(*method));
    const json *tasks = reader.find("tasks");
    if (!tasks || !tasks->is_array() || tasks->empty())
        return fieldError("spec.tasks", "must be a non-empty list of tasks");
    std::set<std::string> names;
    for (size_t i = 0; i < tasks->size(); ++i) {
        const std::string path = "spec.tasks[" + std::to_string(i) + "]";
        LOWBIT_TRY(TaskSpec task, parseTask((*tasks)[i], path));
        if (!names.insert(task.name).second)
            return fieldError(path + ".name", "task \"" + task.name + "\" appears twice");
        spec.tasks.push_back(std::move(task));
    }
    LOWBIT_CHECK(reader.finish());
    return spec;
}

Result<JobSpec> readJobSpecFile(const std::filesystem::path &path) {
    LOWBIT_TRY(const json value, readJsonFile(path, "the job spec"));
    auto spec = parseJobSpec(value);
    if (!spec.ok())
        return makeError(spec.error().code, path.string() + ": " + spec.error().message);
    return spec;
}

json toJson(const MethodSpec &method) {
    if (method.isNone())
        return {{"name", "none"}};
    json out = {{"name", method.name},
                {"bits", method.bits},
                {"group_size", method.groupSize},
                {"symmetric", method.symmetric},
                {"layers", method.layers},
                {"options", method.options}};
    if (method.calibration) {
        const CalibrationSpec &c = *method.calibration;
        out["calibration"] = {{"samples", c.samples}, {"tokens", c.tokens}, {"seed", c.seed}};
        if (!c.dataset.empty()) // empty: the quantizer's default text
            out["calibration"]["dataset"] = c.dataset;
    }
    return out;
}

json toJson(const TaskSpec &task) {
    return {{"name", task.name},
            {"limit", task.limit},
            {"shots", task.shots},
            {"context", task.contextTokens},
            {"batch_size", task.batchSize},
            {"options", task.options}};
}

json toJson(const JobSpec &spec) {
    json tasks = json::array();
    for (const TaskSpec &task : spec.tasks)
        tasks.push_back(toJson(task));
    json out = {{"version", spec.version},
                {"checkpoint", spec.checkpoint.string()},
                {"method", toJson(spec.method)},
                {"tasks", tasks},
                {"device", spec.device},
                {"threads", spec.threads},
                {"seed", spec.seed}};
    if (!spec.tokenizer.empty())
        out["tokenizer"] = spec.tokenizer.string();
    return out;
}

std::string methodKey(const MethodSpec &method) {
    return toJson(method).dump();
}

std::string taskKey(const JobSpec &spec, const TaskSpec &task) {
    json key = toJson(task);
    key["seed"] = spec.seed;
    return key.dump();
}

TaskOptions taskOptions(const JobSpec &spec, const TaskSpec &task) {
    TaskOptions options;
    options.limit = task.limit;
    options.shots = task.shots;
    options.contextTokens = task.contextTokens;
    options.batchSize = task.batchSize;
    options.seed = spec.seed;
    options.extra = task.options;
    return options;
}

} // namespace lowbit
