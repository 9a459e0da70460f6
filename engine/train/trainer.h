// Trainer: the optimization loop around a TrainTarget (TrainableModel, or a test double).
//
// One optimizer step takes the next batchSize examples of the data stream, runs them through
// accumulate() in micro-batches of microBatchSize (gradient accumulation), scales the summed
// gradients by 1 / (scored tokens of the whole step) — the mean token loss of the batch, as
// HF's Trainer computes it for one micro-batch — clips the global norm, and applies AdamW at the
// schedule's learning rate.
//
// Data order: the stream is epoch after epoch over the examples, each epoch a permutation drawn
// from (seed, epoch) alone (splitmix64 + Fisher-Yates, no std:: distribution whose output varies
// between standard libraries). Position p of the stream is a pure function of p, so resuming at
// step s continues with example s·batchSize exactly as an uninterrupted run would.
//
// Checkpoints: `checkpointDir/trainer_state.safetensors`, written every saveEverySteps steps, on
// cancellation and at the end: every parameter value (its own name), its AdamW moments
// (NAME.exp_avg, NAME.exp_avg_sq) and "__metadata__" "lowbit.trainer" = JSON {step, seed,
// batch_size, examples, data_fingerprint, history}. writeSafetensors writes a temporary file and
// renames it, so a kill at any moment leaves the previous checkpoint or the new one, whole.
// With resume, run() starts from that file when it exists (a different data set, seed or batch
// size is an error: the data order would not be the same).
//
// Progress: ProgressEvent{phase "train", done = steps done, total = steps, tokensPerSecond,
// etaSeconds, training = {loss, learning rate, grad norm}} after every step, and after a resume
// one event per restored step (training.restored, tokensPerSecond 0); the TrainObserver gets
// every step's StepMetrics too.
// Cancellation: the stop token is checked before every micro-batch; a stopped run saves the state
// of its last completed step and returns ErrorCode::Cancelled. Runs on the caller's thread.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "train/optimizer.h"
#include "train/train_types.h"

#include <filesystem>
#include <span>
#include <stop_token>
#include <vector>

namespace lowbit::train {

// What the trainer drives; the calls of TrainableModel<float> (trainable_model.h).
class TrainTarget {
public:
    virtual ~TrainTarget() = default;
    virtual std::vector<Parameter<float> *> parameters() = 0;
    virtual void zeroGrad() = 0;
    // Adds d(sum of losses)/dθ to every grad; returns the summed loss and scored positions.
    virtual Result<LossStats> accumulate(std::span<const TrainExample> batch) = 0;
    virtual void afterStep() = 0;
};

struct TrainerOptions {
    int64_t steps = 10000;      // QLoRA --max_steps
    int64_t batchSize = 16;     // examples per optimizer step
    int64_t microBatchSize = 0; // examples per accumulate(); 0: batchSize
    LrSchedule schedule;        // constant 2e-4 (QLoRA)
    AdamWOptions adam;
    double maxGradNorm = 0.3; // QLoRA --max_grad_norm; 0: no clipping
    uint64_t seed = 0;
    std::filesystem::path checkpointDir; // empty: no checkpoints
    int64_t saveEverySteps = 0;          // 0: only on cancel and at the end
    bool resume = false;
};

struct StepMetrics {
    int64_t step = 0; // 1-based: the step just finished
    double loss = 0;  // mean over the step's scored tokens
    double learningRate = 0;
    double gradNorm = 0;        // before clipping
    double tokensPerSecond = 0; // input tokens of the step / its wall time
    int64_t scoredTokens = 0;
    int64_t tokens = 0; // input tokens of the step
};

class TrainObserver {
public:
    virtual ~TrainObserver() = default;
    virtual void onStep(const StepMetrics &metrics) = 0;
    virtual void onCheckpoint(int64_t /*step*/) {}
};

struct TrainReport {
    int64_t stepsDone = 0;
    int64_t resumedFromStep = -1;     // -1: a fresh start
    std::vector<StepMetrics> history; // every step, those before a resume included (restored
                                      // from the checkpoint without tokensPerSecond)
    double seconds = 0;               // this run's wall time
    double tokensPerSecond = 0;       // this run's input tokens / seconds
};

inline constexpr const char *kTrainerStateFile = "trainer_state.safetensors";

class Trainer {
public:
    // `data` must outlive run(); it is not copied.
    Trainer(TrainTarget &target, std::span<const TrainExample> data, TrainerOptions options);

    void setObserver(TrainObserver *observer) { m_observer = observer; }
    Result<TrainReport> run(ProgressSink &progress, std::stop_token stop = {});

    // The permutation of epoch `epoch` over `count` examples.
    static std::vector<uint32_t> epochOrder(size_t count, uint64_t seed, int64_t epoch);
    // FNV-1a over every example's tokens and targets: identifies the data set in checkpoints.
    static uint64_t fingerprint(std::span<const TrainExample> data);

private:
    Status validate() const;
    const TrainExample &exampleAt(int64_t position);
    Result<StepMetrics> trainStep(int64_t step, std::stop_token stop);
    Status saveState(int64_t step) const;
    Result<int64_t> loadState();
    void reportRestored(ProgressSink &progress) const;

    TrainTarget &m_target;
    std::span<const TrainExample> m_data;
    TrainerOptions m_options;
    TrainObserver *m_observer = nullptr;
    AdamW<float> m_adam;
    std::vector<Parameter<float> *> m_params;
    std::vector<StepMetrics> m_history;
    int64_t m_orderEpoch = -1;
    std::vector<uint32_t> m_order;
};

} // namespace lowbit::train
