// Progress reporting for long engine work. A job reports through a ProgressSink; the sink decides
// what to do with it (CLI: a line on stderr; GUI: a throttled queued signal). Sinks are called on
// the worker's thread and must be cheap.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace lowbit {

struct ProgressEvent {
    std::string phase;           // "load", "tokenize", "ppl", "generate", ...
    int64_t done = 0;            // units of work finished (tokens, chunks)
    int64_t total = 0;           // 0 when unknown
    double tokensPerSecond = 0;
    double etaSeconds = -1;      // < 0 when unknown
    // Phase "train" only (engine/train/trainer.h): the metrics of step `done`, so that a run
    // store can keep the loss curve and a GUI can draw it while the run trains.
    struct Training {
        double loss = 0; // mean over the step's scored tokens
        double learningRate = 0;
        double gradNorm = 0;   // before clipping
        bool restored = false; // re-reported from a checkpoint on resume (tokensPerSecond 0)
    };
    std::optional<Training> training = std::nullopt; // initialized: brace-initialized events omit it
};

class ProgressSink {
public:
    virtual ~ProgressSink() = default;
    virtual void report(const ProgressEvent &event) = 0;
};

// Discards everything; the default when a caller does not care.
class NullProgress final : public ProgressSink {
public:
    void report(const ProgressEvent &) override {}
};

} // namespace lowbit
