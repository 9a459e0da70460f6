#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace lowbit::train {

namespace {

using Clock = std::chrono::steady_clock;

uint64_t splitmix64(uint64_t &state) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double secondsSince(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
}

} // namespace

Trainer::Trainer(TrainTarget &target, std::span<const TrainExample> data, TrainerOptions options)
    : m_target(target), m_data(data), m_options(std::move(options)), m_adam(m_options.adam) {}

std::vector<uint32_t> Trainer::epochOrder(size_t count, uint64_t seed, int64_t epoch) {
    std::vector<uint32_t> order(count);
    for (size_t i = 0; i < count; ++i)
        order[i] = uint32_t(i);
    uint64_t state = seed ^ (0xd1b54a32d192ed03ULL * uint64_t(epoch + 1));
    for (size_t i = count; i > 1; --i) // Fisher-Yates; modulo bias < count / 2^64
        std::swap(order[i - 1], order[splitmix64(state) % i]);
    return order;
}

uint64_t Trainer::fingerprint(std::span<const TrainExample> data) {
    uint64_t h = 0xcbf29ce484222325ULL;
    auto mix = [&h](int32_t v) {
        for (int b = 0; b < 4; ++b) {
            h ^= uint64_t(uint32_t(v) >> (8 * b)) & 0xff;
            h *= 0x100000001b3ULL;
        }
    };
    for (const TrainExample &e : data) {
        mix(int32_t(e.tokens.size()));
        for (int32_t t : e.tokens)
            mix(t);
        for (int32_t t : e.targets)
            mix(t);
    }
    return h;
}

Status Trainer::validate() const {
    const TrainerOptions &o = m_options;
    if (m_data.empty())
        return makeError(ErrorCode::InvalidArgument, "train: no training examples");
    if (o.steps < 0 || o.batchSize < 1 || o.microBatchSize < 0 || o.saveEverySteps < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "train: steps, batch size, micro-batch size and save interval must "
                         "not be negative (batch size at least 1)");
    if (!(o.schedule.peak >= 0) || !(o.maxGradNorm >= 0))
        return makeError(ErrorCode::InvalidArgument,
                         "train: learning rate and max grad norm must be >= 0");
    if (m_data.size() > UINT32_MAX)
        return makeError(ErrorCode::InvalidArgument, "train: more than 2^32 examples");
    for (size_t i = 0; i < m_data.size(); ++i)
        if (m_data[i].tokens.size() != m_data[i].targets.size() || m_data[i].tokens.empty())
            return makeError(ErrorCode::InvalidArgument,
                             "train: example " + std::to_string(i) +
                                 " is empty or its tokens and targets differ in length");
    return {};
}

const TrainExample &Trainer::exampleAt(int64_t position) {
    const int64_t n = int64_t(m_data.size());
    const int64_t epoch = position / n;
    if (epoch != m_orderEpoch) {
        m_order = epochOrder(m_data.size(), m_options.seed, epoch);
        m_orderEpoch = epoch;
    }
    return m_data[m_order[size_t(position % n)]];
}

Result<StepMetrics> Trainer::trainStep(int64_t step, std::stop_token stop) {
    const auto start = Clock::now();
    const int64_t batch = m_options.batchSize;
    const int64_t micro = m_options.microBatchSize > 0 ? m_options.microBatchSize : batch;
    m_target.zeroGrad();
    LossStats total;
    int64_t tokens = 0;
    std::vector<TrainExample> microBatch;
    for (int64_t first = 0; first < batch; first += micro) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "train: cancelled");
        microBatch.clear();
        for (int64_t j = first; j < std::min(batch, first + micro); ++j) {
            microBatch.push_back(exampleAt(step * batch + j));
            tokens += int64_t(microBatch.back().tokens.size());
        }
        LOWBIT_TRY(LossStats s, m_target.accumulate(microBatch));
        total.lossSum += s.lossSum;
        total.scored += s.scored;
    }
    if (total.scored <= 0)
        return makeError(ErrorCode::InvalidArgument,
                         "train: step " + std::to_string(step + 1) + " has no scored token");
    if (!std::isfinite(total.lossSum))
        return makeError(ErrorCode::Internal, "train: the loss of step " +
                                                  std::to_string(step + 1) +
                                                  " is not finite (learning rate too high?)");
    scaleGrads<float>(m_params, 1.0 / double(total.scored));
    StepMetrics m;
    m.step = step + 1;
    m.gradNorm = clipGradNorm<float>(m_params, m_options.maxGradNorm);
    m.learningRate = m_options.schedule.at(step);
    LOWBIT_CHECK(m_adam.step(m_params, m.learningRate));
    m_target.afterStep();
    m.loss = total.lossSum / double(total.scored);
    m.scoredTokens = total.scored;
    m.tokens = tokens;
    m.tokensPerSecond = double(tokens) / std::max(1e-9, secondsSince(start));
    return m;
}

// A resumed run re-reports the steps its checkpoint restored: a consumer that lost the last of
// them (a run store killed before its batch was committed) gets them back, one that kept them
// sees the same values again.
void Trainer::reportRestored(ProgressSink &progress) const {
    for (const StepMetrics &m : m_history) {
        ProgressEvent e{"train", m.step, m_options.steps, 0, -1};
        e.training = ProgressEvent::Training{m.loss, m.learningRate, m.gradNorm, true};
        progress.report(e);
    }
}

Result<TrainReport> Trainer::run(ProgressSink &progress, std::stop_token stop) {
    LOWBIT_CHECK(validate());
    m_params = m_target.parameters();
    TrainReport report;
    int64_t step = 0;
    if (m_options.resume && !m_options.checkpointDir.empty()) {
        LOWBIT_TRY(step, loadState());
        if (step > 0)
            report.resumedFromStep = step;
        reportRestored(progress);
    }
    const auto start = Clock::now();
    int64_t tokensDone = 0;
    const int64_t firstStep = step;
    while (step < m_options.steps) {
        auto metrics = trainStep(step, stop);
        if (!metrics) {
            if (metrics.error().code == ErrorCode::Cancelled && !m_options.checkpointDir.empty())
                LOWBIT_CHECK(saveState(step));
            return metrics.error();
        }
        ++step;
        tokensDone += metrics->tokens;
        m_history.push_back(*metrics);
        if (m_observer)
            m_observer->onStep(*metrics);
        const double elapsed = secondsSince(start);
        ProgressEvent e{"train", step, m_options.steps, metrics->tokensPerSecond, -1};
        e.training =
            ProgressEvent::Training{metrics->loss, metrics->learningRate, metrics->gradNorm, false};
        if (step > firstStep)
            e.etaSeconds = elapsed / double(step - firstStep) * double(m_options.steps - step);
        progress.report(e);
        if (m_options.saveEverySteps > 0 && step % m_options.saveEverySteps == 0 &&
            !m_options.checkpointDir.empty()) {
            LOWBIT_CHECK(saveState(step));
            if (m_observer)
                m_observer->onCheckpoint(step);
        }
    }
    if (!m_options.checkpointDir.empty())
        LOWBIT_CHECK(saveState(step));
    report.stepsDone = step;
    report.seconds = secondsSince(start);
    report.tokensPerSecond = double(tokensDone) / std::max(1e-9, report.seconds);
    report.history = m_history;
    return report;
}

} // namespace lowbit::train
