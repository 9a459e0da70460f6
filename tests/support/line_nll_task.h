// A small but real Task for pipeline tests: every non-blank line of a text file is a document,
// scored by the summed NLL of its tokens (BOS prepended, at most `context` tokens) under the
// model. Aggregation: ppl = exp(sum NLL / sum tokens). It lets the pipeline tests run on
// stories260K without depending on the evaluators' task catalogue.
//
// For the crash test: with LOWBIT_TEST_STALL_AFTER=N in the environment, the task stops after
// producing N samples in this process and waits (checking the stop token) until it is killed.
#pragma once

#include "core/sha256.h"
#include "runtime/log_prob.h"
#include "task.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace lowbit::test {

class LineNllTask final : public Task {
public:
    explicit LineNllTask(std::filesystem::path file, std::string name = "lines")
        : m_file(std::move(file)), m_name(std::move(name)) {}

    std::string name() const override { return m_name; }

    nlohmann::json protocol(const LanguageModel &model, const TaskOptions &options) const override {
        return {{"scoring", "line-nll"},
                {"bos", true},
                {"context", contextOf(options)},
                {"limit", options.limit},
                {"vocab", model.config().vocabSize}};
    }

    Status run(TaskContext &context) override {
        std::ifstream in(m_file);
        if (!in)
            return makeError(ErrorCode::NotFound, m_file.string() + ": cannot open");
        const char *stall = std::getenv("LOWBIT_TEST_STALL_AFTER");
        const int64_t stallAfter = stall ? std::atoll(stall) : -1;
        const int64_t context_ = contextOf(context.options);
        std::vector<std::string> lines;
        for (std::string line; std::getline(in, line);)
            if (line.find_first_not_of(" \t\r") != std::string::npos)
                lines.push_back(line);
        const int64_t total = context.options.limit > 0
                                  ? std::min<int64_t>(context.options.limit, lines.size())
                                  : int64_t(lines.size());
        int64_t produced = 0;
        for (int64_t i = 0; i < total; ++i) {
            const std::string id = std::to_string(i);
            if (context.done.count(id))
                continue;
            if (context.stop.stop_requested())
                return makeError(ErrorCode::Cancelled, "cancelled");
            while (stallAfter >= 0 && produced >= stallAfter && !context.stop.stop_requested())
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            SampleRecord sample;
            LOWBIT_CHECK(score(context.model, lines[size_t(i)], context_, sample));
            sample.docId = id;
            sample.docHash = sha256Hex(lines[size_t(i)]);
            LOWBIT_CHECK(context.samples.onSample(sample));
            ++produced;
            context.progress.report({m_name, i + 1, total, 0, -1});
        }
        return {};
    }

    Result<TaskReport> aggregate(std::span<const SampleRecord> samples, const LanguageModel &,
                                 const TaskOptions &) const override {
        double nll = 0;
        int64_t tokens = 0;
        for (const SampleRecord &s : samples) {
            nll += s.nll;
            tokens += s.tokens;
        }
        if (tokens == 0)
            return makeError(ErrorCode::InvalidArgument, "no tokens scored");
        TaskReport report;
        report.task = m_name;
        report.metrics = {{"ppl", std::exp(nll / double(tokens)), 0, int64_t(samples.size())},
                          {"nll", nll / double(tokens), 0, tokens}};
        return report;
    }

private:
    static int64_t contextOf(const TaskOptions &options) {
        return options.contextTokens > 0 ? options.contextTokens : 64;
    }

    Status score(LanguageModel &model, const std::string &text, int64_t context, SampleRecord &sample) {
        std::vector<int32_t> ids = model.tokenizer()->encode(text, {.addBos = true});
        if (int64_t(ids.size()) > context)
            ids.resize(size_t(context));
        LOWBIT_TRY(auto cache, model.allocateCache(1, int64_t(ids.size())));
        SequenceInput input{.slot = 0, .tokens = ids, .logits = LogitsWanted::All};
        LOWBIT_TRY(Logits logits, model.forward(*cache, {&input, 1}));
        sample.nll = 0;
        for (size_t j = 0; j + 1 < ids.size(); ++j)
            sample.nll -= logProbability(logits.row(int64_t(j)), logits.vocab, ids[j + 1]);
        sample.tokens = int64_t(ids.size()) - 1;
        sample.promptHash =
            sha256Hex(std::string(reinterpret_cast<const char *>(ids.data()), ids.size() * 4));
        sample.target = text.substr(0, 40);
        return {};
    }

    std::filesystem::path m_file;
    std::string m_name;
};

} // namespace lowbit::test
