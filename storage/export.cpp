#include "export.h"

#include "compare.h"
#include "core/sha256.h"

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

namespace lowbit {

using nlohmann::json;

namespace {

Status writeFileAtomically(const std::filesystem::path &path, const std::string &content) {
    const std::filesystem::path temporary = path.string() + ".tmp";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        if (!out)
            return makeError(ErrorCode::Io,
                             path.string() + ": cannot write (missing folder or no permission)");
        out.write(content.data(), std::streamsize(content.size()));
        out.flush();
        if (!out) {
            out.close();
            std::filesystem::remove(temporary);
            return makeError(ErrorCode::Io, path.string() + ": write failed (disk full?)");
        }
    }
    std::error_code ec;
    std::filesystem::rename(temporary, path, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         path.string() + ": cannot rename into place: " + ec.message());
    return {};
}

std::string csvField(const std::string &text) {
    if (text.find_first_of(",\"\r\n") == std::string::npos)
        return text;
    std::string quoted = "\"";
    for (char ch : text)
        quoted += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return quoted + "\"";
}

std::string markdownCell(const std::string &text) {
    std::string out;
    for (char ch : text)
        out += ch == '|' ? std::string("\\|") : ch == '\n' ? std::string(" ") : std::string(1, ch);
    return out;
}

// The shortest text that reads back as the same double ("0.2", not "0.20000000000000001").
std::string number(double value) {
    return json(value).dump();
}

// "2026-11-27T18:24:33.432Z" -> seconds since the epoch, as the harness's "date" (time.time()).
double unixSeconds(const std::string &iso) {
    std::tm tm{};
    double fraction = 0;
    if (std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec) != 6)
        return 0;
    if (const size_t dot = iso.find('.'); dot != std::string::npos)
        fraction = std::atof(("0" + iso.substr(dot, iso.find('Z') - dot)).c_str());
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return double(timegm(&tm)) + fraction;
}

std::string safeFileName(const std::string &name) {
    std::string out;
    for (char ch : name)
        out += (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' || ch == '.')
                   ? ch
                   : '_';
    return out;
}

bool lowerIsBetter(const std::string &metric) {
    const std::string base = metric.substr(0, metric.find(','));
    return base == "ppl" || base == "nll" || base == "word_perplexity" ||
           base == "byte_perplexity" || base == "bits_per_byte" || base == "perplexity";
}

// "acc" -> ("acc,none", "acc_stderr,none"); "exact_match,strict" -> (...,
// "exact_match_stderr,strict").
std::pair<std::string, std::string> harnessKeys(const std::string &metric) {
    const size_t comma = metric.find(',');
    const std::string base = metric.substr(0, comma);
    const std::string filter = comma == std::string::npos ? "none" : metric.substr(comma + 1);
    return {base + "," + filter, base + "_stderr," + filter};
}

struct RunData {
    RunRecord run;
    std::vector<RunTaskRecord> tasks;
    std::vector<StoredMetric> metrics;
};

Result<RunData> readRun(const RunStore &store, int64_t runId) {
    RunData data;
    LOWBIT_TRY(data.run, store.run(runId));
    LOWBIT_TRY(data.tasks, store.runTasks(runId));
    LOWBIT_TRY(data.metrics, store.metrics(runId));
    return data;
}

Result<json> runJson(const RunStore &store, const RunData &data) {
    const RunRecord &run = data.run;
    json checkpoint;
    if (run.checkpointId) {
        LOWBIT_TRY(CheckpointRecord c, store.checkpoint(*run.checkpointId));
        checkpoint = {{"path", c.path},
                      {"format", c.format},
                      {"content_hash", c.contentHash},
                      {"parameter_count", c.parameterCount},
                      {"size_bytes", c.sizeBytes},
                      {"config", c.config}};
    }
    json tasks = json::array();
    for (const RunTaskRecord &task : data.tasks) {
        json metrics = json::object();
        for (const StoredMetric &m : data.metrics)
            if (m.task == task.task)
                metrics[m.metric.name] = {
                    {"value", m.metric.value}, {"stderr", m.metric.stderr_}, {"n", m.metric.n}};
        json dataset;
        if (task.datasetId) {
            LOWBIT_TRY(DatasetRecord d, store.dataset(*task.datasetId));
            dataset = {{"path", d.path}, {"content_hash", d.contentHash}, {"rows", d.rowCount}};
        }
        tasks.push_back({{"name", task.task},
                         {"status", taskStateName(task.state)},
                         {"options", task.options},
                         {"protocol", task.protocol},
                         {"samples", task.samples},
                         {"dataset", dataset},
                         {"metrics", metrics}});
    }
    LOWBIT_TRY(auto artifacts, store.artifacts(run.id));
    json artifactList = json::array();
    for (const ArtifactRecord &a : artifacts)
        artifactList.push_back({{"kind", a.kind},
                                {"path", a.path},
                                {"size_bytes", a.sizeBytes},
                                {"content_hash", a.contentHash}});
    LOWBIT_TRY(auto steps, store.trainingSteps(run.id));
    json training = json::array();
    for (const TrainingStepRecord &t : steps)
        training.push_back({{"step", t.step},
                            {"loss", t.loss},
                            {"learning_rate", t.learningRate},
                            {"grad_norm", t.gradNorm},
                            {"tokens_per_s", t.tokensPerSecond}});
    return json{{"id", run.id},
                {"status", runStatusName(run.status)},
                {"model", run.model},
                {"checkpoint_hash", run.checkpointHash},
                {"checkpoint", checkpoint},
                {"method", methodLabel(run)},
                {"spec", run.spec},
                {"device", run.device},
                {"created_at", run.createdAt},
                {"started_at", run.startedAt},
                {"finished_at", run.finishedAt},
                {"host", run.host},
                {"engine_version", run.engineVersion},
                {"engine_commit", run.engineCommit},
                {"error", run.error},
                {"phase_seconds", run.phaseSeconds},
                {"tasks", tasks},
                {"artifacts", artifactList},
                {"training_steps", training}};
}

// The harness's "config" block: how the model was called.
json harnessConfig(const RunRecord &run) {
    const json &spec = run.spec;
    const json firstTask =
        spec.contains("tasks") && !spec["tasks"].empty() ? spec["tasks"][0] : json::object();
    const auto seed = spec.value("seed", 0);
    return {{"model", "lowbit"},
            {"model_args", "pretrained=" + run.model + ",method=" + methodLabel(run)},
            {"batch_size", firstTask.value("batch_size", 1)},
            {"device", run.device},
            {"limit", firstTask.value("limit", 0)},
            {"random_seed", seed},
            {"numpy_seed", seed},
            {"torch_seed", seed},
            {"fewshot_seed", seed}};
}

} // namespace

Result<ExportFormat> parseExportFormat(const std::string &name) {
    if (name == "csv")
        return ExportFormat::Csv;
    if (name == "json")
        return ExportFormat::Json;
    if (name == "markdown" || name == "md")
        return ExportFormat::Markdown;
    if (name == "lm-eval")
        return ExportFormat::LmEval;
    return makeError(ErrorCode::InvalidArgument,
                     "--format: '" + name + "' is not csv, json, markdown or lm-eval");
}

Result<json> exportJson(const RunStore &store, std::span<const int64_t> runIds) {
    json runs = json::array();
    for (int64_t id : runIds) {
        LOWBIT_TRY(RunData data, readRun(store, id));
        LOWBIT_TRY(json run, runJson(store, data));
        runs.push_back(std::move(run));
    }
    return json{{"format", "lowbit-runs"}, {"version", 1}, {"runs", runs}};
}

Result<std::string> exportCsv(const RunStore &store, std::span<const int64_t> runIds) {
    std::string out =
        "run_id,status,model,method,task,metric,value,stderr,n,created_at,finished_at\n";
    for (int64_t id : runIds) {
        LOWBIT_TRY(RunData data, readRun(store, id));
        for (const StoredMetric &m : data.metrics)
            out += std::to_string(id) + "," + runStatusName(data.run.status) + "," +
                   csvField(data.run.model) + "," + csvField(methodLabel(data.run)) + "," +
                   csvField(m.task) + "," + csvField(m.metric.name) + "," + number(m.metric.value) +
                   "," + number(m.metric.stderr_) + "," + std::to_string(m.metric.n) + "," +
                   data.run.createdAt + "," + data.run.finishedAt + "\n";
    }
    return out;
}

Result<std::string> exportMarkdown(const RunStore &store, std::span<const int64_t> runIds) {
    std::string out = "| run | model | method | task | metric | value | stderr | n |\n"
                      "| ---: | --- | --- | --- | --- | ---: | ---: | ---: |\n";
    for (int64_t id : runIds) {
        LOWBIT_TRY(RunData data, readRun(store, id));
        const std::string model = std::filesystem::path(data.run.model).filename().string();
        for (const StoredMetric &m : data.metrics) {
            char value[64], stderrText[64];
            std::snprintf(value, sizeof value, "%.4f", m.metric.value);
            std::snprintf(stderrText, sizeof stderrText, "%.4f", m.metric.stderr_);
            out += "| " + std::to_string(id) + " | " + markdownCell(model) + " | " +
                   markdownCell(methodLabel(data.run)) + " | " + markdownCell(m.task) + " | " +
                   markdownCell(m.metric.name) + " | " + value + " | " + stderrText + " | " +
                   std::to_string(m.metric.n) + " |\n";
        }
    }
    return out;
}

Result<json> lmEvalResults(const RunStore &store, int64_t runId) {
    LOWBIT_TRY(RunData data, readRun(store, runId));
    json results = json::object(), configs = json::object(), versions = json::object();
    json nShot = json::object(), higher = json::object(), nSamples = json::object(),
         groups = json::object();
    for (const RunTaskRecord &task : data.tasks) {
        if (task.state != TaskState::Done)
            continue;
        json entry = {{"alias", task.task}};
        json better = json::object();
        for (const StoredMetric &m : data.metrics) {
            if (m.task != task.task)
                continue;
            const auto [valueKey, stderrKey] = harnessKeys(m.metric.name);
            entry[valueKey] = m.metric.value;
            entry[stderrKey] = m.metric.stderr_ > 0 ? json(m.metric.stderr_) : json("N/A");
            better[m.metric.name.substr(0, m.metric.name.find(','))] =
                !lowerIsBetter(m.metric.name);
        }
        const int shots = task.options.value("shots", -1);
        const int effectiveShots = task.protocol.is_object()
                                       ? task.protocol.value("shots", std::max(shots, 0))
                                       : std::max(shots, 0);
        results[task.task] = entry;
        groups[task.task] = json::array();
        configs[task.task] = {{"task", task.task},
                              {"num_fewshot", effectiveShots},
                              {"metadata", {{"version", 1.0}}},
                              {"lowbit_protocol", task.protocol},
                              {"lowbit_options", task.options}};
        versions[task.task] = 1.0;
        nShot[task.task] = effectiveShots;
        higher[task.task] = better;
        nSamples[task.task] = {{"original", task.samples}, {"effective", task.samples}};
    }
    const json config = harnessConfig(data.run);
    return json{{"results", results},
                {"group_subtasks", groups},
                {"configs", configs},
                {"versions", versions},
                {"n-shot", nShot},
                {"higher_is_better", higher},
                {"n-samples", nSamples},
                {"config", config},
                {"git_hash", data.run.engineCommit},
                {"date", unixSeconds(data.run.finishedAt)},
                {"lowbit_run", runId},
                {"lowbit_version", data.run.engineVersion}};
}

Result<std::string> lmEvalSamples(const RunStore &store, int64_t runId, const std::string &task) {
    LOWBIT_TRY(std::vector<SampleRecord> samples, store.samples(runId, task));
    std::string out;
    for (const SampleRecord &s : samples) {
        json resps = json::array();
        for (double ll : s.choiceLogLikelihoods)
            resps.push_back(json::array({json::array({ll, false})}));
        json line = {{"doc_id", s.docId},
                     {"doc", {{"id", s.docId}}},
                     {"target", s.target},
                     {"arguments", json::array()},
                     {"resps", resps},
                     {"filtered_resps", s.output.empty() ? json::array() : json::array({s.output})},
                     {"doc_hash", s.docHash},
                     {"prompt_hash", s.promptHash},
                     {"target_hash", sha256Hex(s.target)}};
        if (s.correct >= 0)
            line["acc"] = double(s.correct);
        if (s.tokens > 0)
            line.update({{"nll", s.nll}, {"tokens", s.tokens}});
        if (!s.extra.empty())
            line["lowbit_extra"] = s.extra;
        out += line.dump() + "\n";
    }
    return out;
}

Status exportRuns(const RunStore &store, std::span<const int64_t> runIds, ExportFormat format,
                  const std::filesystem::path &out) {
    if (runIds.empty())
        return makeError(ErrorCode::InvalidArgument, "export: no runs given");
    if (format == ExportFormat::Json) {
        LOWBIT_TRY(json document, exportJson(store, runIds));
        return writeFileAtomically(out, document.dump(2) + "\n");
    }
    if (format == ExportFormat::Csv) {
        LOWBIT_TRY(std::string text, exportCsv(store, runIds));
        return writeFileAtomically(out, text);
    }
    if (format == ExportFormat::Markdown) {
        LOWBIT_TRY(std::string text, exportMarkdown(store, runIds));
        return writeFileAtomically(out, text);
    }
    std::error_code ec;
    std::filesystem::create_directories(out, ec);
    if (ec)
        return makeError(ErrorCode::Io,
                         out.string() + ": cannot create the folder: " + ec.message());
    for (int64_t id : runIds) {
        const std::string suffix = "_run" + std::to_string(id);
        LOWBIT_TRY(json results, lmEvalResults(store, id));
        LOWBIT_CHECK(
            writeFileAtomically(out / ("results" + suffix + ".json"), results.dump(2) + "\n"));
        for (const auto &[task, entry] : results["results"].items()) {
            LOWBIT_TRY(std::string lines, lmEvalSamples(store, id, task));
            LOWBIT_CHECK(writeFileAtomically(
                out / ("samples_" + safeFileName(task) + suffix + ".jsonl"), lines));
        }
    }
    return {};
}

} // namespace lowbit
