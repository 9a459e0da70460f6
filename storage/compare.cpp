#include "compare.h"

#include <cmath>
#include <cstdio>
#include <map>
#include <set>

namespace lowbit {

using nlohmann::json;

namespace {

std::string format(const char *pattern, double value) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, pattern, value);
    return buffer;
}

std::string fileName(const std::string &path) {
    const std::filesystem::path p(path);
    return p.filename().empty() ? path : p.filename().string();
}

// Test one task of `other` against `base` from their stored samples.
Status pairTest(const RunStore &store, const CompareOptions &options, PairComparison &pair) {
    LOWBIT_TRY(std::vector<SampleRecord> base, store.samples(pair.baseRun, pair.task));
    LOWBIT_TRY(std::vector<SampleRecord> other, store.samples(pair.otherRun, pair.task));
    std::map<std::string, const SampleRecord *> byId;
    for (const SampleRecord &s : base)
        byId[s.docId] = &s;
    std::vector<std::pair<const SampleRecord *, const SampleRecord *>> paired;
    for (const SampleRecord &s : other) {
        const auto it = byId.find(s.docId);
        if (it != byId.end() && it->second->docHash == s.docHash)
            paired.emplace_back(it->second, &s);
    }
    pair.pairedDocuments = int64_t(paired.size());
    pair.unpairedDocuments = int64_t(base.size() + other.size()) - 2 * pair.pairedDocuments;
    bool accuracy = false, nll = false;
    for (const auto &[a, b] : paired) {
        accuracy = accuracy || (a->correct >= 0 && b->correct >= 0);
        nll = nll || (a->tokens > 0 && b->tokens > 0);
    }
    if (accuracy) {
        pair.test = "mcnemar";
        for (const auto &[a, b] : paired) {
            if (a->correct < 0 || b->correct < 0)
                continue;
            pair.rightToWrong += a->correct == 1 && b->correct == 0;
            pair.wrongToRight += a->correct == 0 && b->correct == 1;
        }
        pair.pValue = mcnemarExactPValue(pair.rightToWrong, pair.wrongToRight);
    } else if (nll) {
        pair.test = "bootstrap";
        std::vector<PairedNll> values;
        for (const auto &[a, b] : paired)
            if (a->tokens > 0 && b->tokens > 0)
                values.push_back({a->nll, a->tokens, b->nll, b->tokens});
        pair.nll = pairedBootstrapNll(values, options.bootstrapResamples, options.confidence,
                                      options.seed);
    }
    return {};
}

json intervalJson(const BootstrapInterval &interval) {
    return {{"estimate", interval.estimate},
            {"low", interval.low},
            {"high", interval.high},
            {"resamples", interval.resamples}};
}

} // namespace

std::string methodLabel(const RunRecord &run) {
    const json method = run.spec.value("method", json::object());
    const std::string name = method.value("name", run.method);
    if (name == "none")
        return "none";
    std::string label = name + " w" + std::to_string(method.value("bits", 0));
    const int64_t group = method.value("group_size", int64_t(0));
    label += group > 0 ? " g" + std::to_string(group) : " per-channel";
    if (method.value("symmetric", false))
        label += " sym";
    return label;
}

std::vector<std::string> protocolDifferences(const json &a, const json &b) {
    std::vector<std::string> out;
    if (!a.is_object() || !b.is_object()) {
        if (a != b)
            out.push_back("protocol: " + a.dump() + " vs " + b.dump());
        return out;
    }
    std::set<std::string> keys;
    for (const auto &[key, value] : a.items())
        keys.insert(key);
    for (const auto &[key, value] : b.items())
        keys.insert(key);
    for (const std::string &key : keys) {
        const json left = a.contains(key) ? a[key] : json("(absent)");
        const json right = b.contains(key) ? b[key] : json("(absent)");
        if (left != right)
            out.push_back(key + ": " + left.dump() + " vs " + right.dump());
    }
    return out;
}

Result<Comparison> compareRuns(const RunStore &store, std::span<const int64_t> runIds,
                               const CompareOptions &options) {
    if (runIds.size() < 2)
        return makeError(ErrorCode::InvalidArgument, "compare needs at least two runs");
    Comparison comparison;
    std::vector<std::map<std::string, RunTaskRecord>> tasks;
    std::vector<std::string> taskOrder;
    std::map<std::pair<std::string, std::string>, size_t> rowOf;
    for (size_t r = 0; r < runIds.size(); ++r) {
        LOWBIT_TRY(RunRecord run, store.run(runIds[r]));
        comparison.runs.push_back(std::move(run));
        LOWBIT_TRY(auto runTasks, store.runTasks(runIds[r]));
        tasks.emplace_back();
        for (RunTaskRecord &task : runTasks)
            tasks.back()[task.task] = std::move(task);
        LOWBIT_TRY(auto metrics, store.metrics(runIds[r]));
        for (const StoredMetric &m : metrics) {
            if (!options.task.empty() && m.task != options.task)
                continue;
            const auto key = std::make_pair(m.task, m.metric.name);
            auto it = rowOf.find(key);
            if (it == rowOf.end()) {
                it = rowOf.emplace(key, comparison.metrics.size()).first;
                comparison.metrics.push_back(
                    {m.task, m.metric.name,
                     std::vector<std::optional<MetricValue>>(runIds.size())});
                if (std::find(taskOrder.begin(), taskOrder.end(), m.task) == taskOrder.end())
                    taskOrder.push_back(m.task);
            }
            comparison.metrics[it->second].values[r] = m.metric;
        }
    }
    if (!options.task.empty() && taskOrder.empty())
        return makeError(ErrorCode::NotFound,
                         "none of the runs has finished task '" + options.task + "'");
    for (const std::string &task : taskOrder) {
        const auto baseTask = tasks[0].find(task);
        if (baseTask == tasks[0].end() || baseTask->second.state != TaskState::Done)
            continue;
        for (size_t r = 1; r < runIds.size(); ++r) {
            const auto otherTask = tasks[r].find(task);
            if (otherTask == tasks[r].end() || otherTask->second.state != TaskState::Done)
                continue;
            PairComparison pair;
            pair.baseRun = runIds[0];
            pair.otherRun = runIds[r];
            pair.task = task;
            pair.protocolDifferences =
                protocolDifferences(baseTask->second.protocol, otherTask->second.protocol);
            if (pair.protocolDifferences.empty())
                LOWBIT_CHECK(pairTest(store, options, pair));
            comparison.pairs.push_back(std::move(pair));
        }
    }
    return comparison;
}

namespace {

// One line per metric: the value of each run, and its delta to the first ("!" when flagged).
std::string formatMetricTable(const Comparison &c,
                              const std::set<std::pair<std::string, int64_t>> &flagged) {
    char line[512];
    std::snprintf(line, sizeof line, "\n%-24s %-18s", "task", "metric");
    std::string out = line;
    for (size_t r = 0; r < c.runs.size(); ++r) {
        const std::string id = "#" + std::to_string(c.runs[r].id);
        std::snprintf(line, sizeof line, r == 0 ? "%12s" : "  %12s %-12s", id.c_str(), "delta");
        out += line;
    }
    out += "\n";
    for (const MetricComparison &m : c.metrics) {
        std::snprintf(line, sizeof line, "%-24s %-18s", m.task.c_str(), m.metric.c_str());
        out += line;
        const auto &base = m.values[0];
        for (size_t r = 0; r < m.values.size(); ++r) {
            const auto &v = m.values[r];
            const std::string value = v ? format("%.6g", v->value) : "-";
            std::string delta = v && base && r > 0 ? format("%+.4g", v->value - base->value) : "";
            if (!delta.empty() && flagged.count({m.task, c.runs[r].id}))
                delta += "!";
            std::snprintf(line, sizeof line, r == 0 ? "%12s" : "  %12s %-12s", value.c_str(),
                          delta.c_str());
            out += line;
        }
        out += "\n";
    }
    return out;
}

std::string formatPair(const PairComparison &p) {
    std::string out =
        p.task + ": #" + std::to_string(p.otherRun) + " vs #" + std::to_string(p.baseRun) + ": ";
    if (!p.protocolDifferences.empty()) {
        out += "NOT COMPARED, protocols differ:";
        for (const std::string &d : p.protocolDifferences)
            out += "\n    " + d;
        return out + "\n";
    }
    out += std::to_string(p.pairedDocuments) + " paired documents";
    if (p.unpairedDocuments > 0)
        out += " (" + std::to_string(p.unpairedDocuments) + " unpaired, left out)";
    const auto interval = [](const BootstrapInterval &i, const char *pattern) {
        return format(pattern, i.estimate) + " [" + format(pattern, i.low) + ", " +
               format(pattern, i.high) + "]";
    };
    if (p.test == "mcnemar")
        out += "; right->wrong " + std::to_string(p.rightToWrong) + ", wrong->right " +
               std::to_string(p.wrongToRight) + "; exact McNemar p = " + format("%.4g", p.pValue);
    else if (p.test == "bootstrap")
        out += "; mean NLL delta " + interval(p.nll.meanNllDelta, "%+.5f") +
               " nats/token, PPL delta " + interval(p.nll.pplDelta, "%+.4f") +
               " (paired bootstrap, " + std::to_string(p.nll.meanNllDelta.resamples) +
               " resamples)";
    else
        out += "; no paired test applies";
    return out + "\n";
}

} // namespace

std::string formatComparison(const Comparison &c) {
    std::string out = "runs:\n";
    for (const RunRecord &run : c.runs)
        out += "  #" + std::to_string(run.id) + "  " + runStatusName(run.status) + "  " +
               fileName(run.model) + "  " + methodLabel(run) + "  on " + run.device + "\n";
    std::set<std::pair<std::string, int64_t>> flagged;
    for (const PairComparison &p : c.pairs)
        if (!p.protocolDifferences.empty())
            flagged.insert({p.task, p.otherRun});
    out += formatMetricTable(c, flagged);
    if (!flagged.empty())
        out += "(! the protocols differ: the delta compares different measurements)\n";
    out += "\n";
    for (const PairComparison &p : c.pairs)
        out += formatPair(p);
    return out;
}

json comparisonJson(const Comparison &c) {
    json runs = json::array();
    for (const RunRecord &run : c.runs)
        runs.push_back({{"id", run.id},
                        {"status", runStatusName(run.status)},
                        {"model", run.model},
                        {"method", methodLabel(run)},
                        {"device", run.device}});
    json metrics = json::array();
    for (const MetricComparison &m : c.metrics) {
        json values = json::array();
        for (const auto &v : m.values)
            values.push_back(v ? json{{"value", v->value}, {"stderr", v->stderr_}, {"n", v->n}}
                               : json());
        metrics.push_back({{"task", m.task}, {"metric", m.metric}, {"values", values}});
    }
    json pairs = json::array();
    for (const PairComparison &p : c.pairs) {
        json item = {{"task", p.task},
                     {"base_run", p.baseRun},
                     {"other_run", p.otherRun},
                     {"protocol_differences", p.protocolDifferences},
                     {"paired_documents", p.pairedDocuments},
                     {"unpaired_documents", p.unpairedDocuments},
                     {"test", p.test}};
        if (p.test == "mcnemar")
            item.update({{"right_to_wrong", p.rightToWrong},
                         {"wrong_to_right", p.wrongToRight},
                         {"p_value", p.pValue}});
        if (p.test == "bootstrap")
            item.update({{"mean_nll_delta", intervalJson(p.nll.meanNllDelta)},
                         {"ppl_delta", intervalJson(p.nll.pplDelta)}});
        pairs.push_back(item);
    }
    return {{"runs", runs}, {"metrics", metrics}, {"pairs", pairs}};
}

} // namespace lowbit
