// RunStore: the per-step curve of fine-tuning runs (table training_steps, schema version 2).
#include "run_store.h"

#include <cmath>

namespace lowbit {

Status RunStore::appendTrainingSteps(int64_t runId, std::span<const TrainingStepRecord> steps) {
    if (steps.empty())
        return {};
    for (const TrainingStepRecord &s : steps)
        if (!std::isfinite(s.loss) || !std::isfinite(s.learningRate) ||
            !std::isfinite(s.gradNorm) || !std::isfinite(s.tokensPerSecond))
            return makeError(ErrorCode::InvalidArgument,
                             "run " + std::to_string(runId) + ", training step " +
                                 std::to_string(s.step) +
                                 ": non-finite loss, learning rate, grad norm or tokens/s, "
                                 "not stored");
    LOWBIT_TRY(Transaction transaction, Transaction::begin(m_db));
    // Upsert: a resumed run reports the steps after its checkpoint again (and the restored ones).
    LOWBIT_TRY(Statement upsert,
               m_db.prepare("INSERT INTO training_steps (run_id, step, loss, learning_rate, "
                            "grad_norm, tokens_per_s) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (run_id, step) DO UPDATE SET loss = excluded.loss, "
                            "learning_rate = excluded.learning_rate, "
                            "grad_norm = excluded.grad_norm, tokens_per_s = CASE WHEN "
                            "excluded.tokens_per_s > 0 THEN excluded.tokens_per_s ELSE "
                            "training_steps.tokens_per_s END"));
    for (const TrainingStepRecord &s : steps) {
        upsert.bind(1, runId).bind(2, s.step).bind(3, s.loss).bind(4, s.learningRate);
        upsert.bind(5, s.gradNorm).bind(6, s.tokensPerSecond);
        Status status = upsert.run();
        if (!status.ok()) {
            Error error = status.error();
            error.message = "run " + std::to_string(runId) + ", training step " +
                            std::to_string(s.step) + ": " + error.message;
            return error;
        }
        LOWBIT_CHECK(upsert.reset());
    }
    return transaction.commit();
}

Result<std::vector<TrainingStepRecord>> RunStore::trainingSteps(int64_t runId) const {
    LOWBIT_TRY(Statement query,
               m_db.prepare("SELECT step, loss, learning_rate, grad_norm, tokens_per_s FROM "
                            "training_steps WHERE run_id = ? ORDER BY step"));
    query.bind(1, runId);
    std::vector<TrainingStepRecord> steps;
    for (;;) {
        LOWBIT_TRY(bool row, query.step());
        if (!row)
            return steps;
        steps.push_back(
            {query.integer(0), query.real(1), query.real(2), query.real(3), query.real(4)});
    }
}

} // namespace lowbit
