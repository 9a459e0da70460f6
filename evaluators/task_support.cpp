#include "task_support.h"

#include "python_random.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

namespace lowbit {

std::vector<int64_t> subsampleIndices(int64_t n, int64_t limit, uint64_t seed) {
    std::vector<int64_t> indices;
    if (limit <= 0 || limit >= n) {
        for (int64_t i = 0; i < n; ++i)
            indices.push_back(i);
        return indices;
    }
    PythonRandom rng(seed);
    indices = rng.sample(n, limit);
    std::sort(indices.begin(), indices.end());
    return indices;
}

MetricValue meanMetric(const std::string &name, std::span<const double> values) {
    MetricValue m;
    m.name = name;
    m.n = int64_t(values.size());
    if (values.empty())
        return m;
    double sum = 0;
    for (double v : values)
        sum += v;
    m.value = sum / double(values.size());
    if (values.size() > 1) {
        double squares = 0;
        for (double v : values)
            squares += (v - m.value) * (v - m.value);
        m.stderr_ = std::sqrt(squares / double(values.size() - 1)) / std::sqrt(double(values.size()));
    }
    return m;
}

double bootstrapStderr(int64_t n, const std::function<double(std::span<const int64_t>)> &statistic,
                       int iterations, uint64_t seed) {
    if (n < 2 || iterations < 2)
        return 0;
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<int64_t> pick(0, n - 1);
    std::vector<int64_t> draw(static_cast<size_t>(n));
    std::vector<double> stats;
    for (int it = 0; it < iterations; ++it) {
        for (auto &d : draw)
            d = pick(rng);
        stats.push_back(statistic(draw));
    }
    const MetricValue spread = meanMetric("", stats);
    return spread.stderr_ * std::sqrt(double(stats.size())); // the sample std of the statistic
}

bool addBosOption(const TaskOptions &options) {
    const auto it = options.extra.find("add_bos");
    return it != options.extra.end() && it->is_boolean() && it->get<bool>();
}

int64_t maxLengthOption(const LanguageModel &model, const TaskOptions &options) {
    if (options.contextTokens > 0)
        return std::min(options.contextTokens, model.config().maxPositions);
    return model.config().maxPositions;
}

LoglikelihoodOptions loglikelihoodOptions(const LanguageModel &model, const TaskOptions &options) {
    LoglikelihoodOptions out;
    out.addBos = addBosOption(options);
    out.maxLength = maxLengthOption(model, options);
    return out;
}

const std::string *extraString(const TaskOptions &options, const char *key) {
    const auto it = options.extra.find(key);
    if (it == options.extra.end() || !it->is_string())
        return nullptr;
    return it->get_ptr<const std::string *>();
}

nlohmann::json commonProtocol(const std::string &task, const LanguageModel &model, const TaskOptions &options,
                              int shots) {
    nlohmann::json p;
    p["task"] = task;
    p["evaluator_version"] = 1;
    const Tokenizer *tokenizer = model.tokenizer();
    p["tokenizer"] = tokenizer ? std::string(tokenizer->kind()) : "none";
    p["vocab_size"] = model.config().vocabSize;
    p["add_bos"] = addBosOption(options);
    p["max_length"] = maxLengthOption(model, options);
    p["limit"] = options.limit;
    p["seed"] = options.seed;
    p["shots"] = shots;
    return p;
}

Status forEachChunk(TaskContext &context, const std::string &phase, const std::vector<int64_t> &indices,
                    const std::function<std::string(int64_t)> &docId, size_t chunk,
                    const std::function<Status(std::span<const int64_t>)> &score) {
    std::vector<int64_t> todo;
    for (int64_t i : indices)
        if (!context.done.count(docId(i)))
            todo.push_back(i);
    const auto start = std::chrono::steady_clock::now();
    const int64_t already = int64_t(indices.size() - todo.size());
    chunk = std::max<size_t>(1, chunk);
    for (size_t c0 = 0; c0 < todo.size(); c0 += chunk) {
        if (context.stop.stop_requested())
            return makeError(ErrorCode::Cancelled, phase + ": cancelled");
        const size_t c1 = std::min(todo.size(), c0 + chunk);
        LOWBIT_CHECK(score({todo.data() + c0, c1 - c0}));
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double rate = double(c1) / std::max(seconds, 1e-9);
        context.progress.report({phase, already + int64_t(c1), int64_t(indices.size()), 0,
                                 double(todo.size() - c1) / std::max(rate, 1e-9)});
    }
    return {};
}

MetricValue accuracyMetric(std::span<const SampleRecord> samples, const std::string &name, const char *extraKey) {
    std::vector<double> values;
    for (const SampleRecord &s : samples) {
        if (!extraKey) {
            if (s.correct >= 0)
                values.push_back(double(s.correct));
        } else if (const auto it = s.extra.find(extraKey); it != s.extra.end() && it->is_number()) {
            values.push_back(it->get<double>());
        }
    }
    return meanMetric(name, values);
}

} // namespace lowbit
