#include "train/dbllm_target.h"

namespace lowbit::train {

Result<std::unique_ptr<DbLlmTarget>> DbLlmTarget::create(std::shared_ptr<const Checkpoint> fp,
                                                         const DualBinaryOptions &binary,
                                                         const DistillationOptions &distill,
                                                         int threads) {
    if (!fp)
        return makeError(ErrorCode::InvalidArgument, "dbllm: no model");
    std::unique_ptr<DbLlmTarget> t(new DbLlmTarget());
    t->m_distill = distill;
    LOWBIT_TRY(t->m_teacher, Model::create(fp, {.threads = threads}));
    LoraOptions noLora;
    noLora.targets.clear(); // DB-LLM trains the binarized weights themselves, no adapters
    LOWBIT_TRY(t->m_student,
               TrainableModel<float>::create(*fp, noLora, makeDualBinaryFactory<float>(binary)));
    return t;
}

Result<LossStats> DbLlmTarget::accumulate(std::span<const TrainExample> batch) {
    LOWBIT_TRY(TeacherTable table, TeacherTable::compute(*m_teacher, batch));
    DistillationLoss<float> loss(table.source(), m_distill);
    LOWBIT_CHECK(loss.status());
    LOWBIT_TRY(LossStats stats, m_student->accumulate(batch, &loss));
    LOWBIT_CHECK(loss.status());
    m_klSum += loss.klSum();
    m_weightSum += loss.weightSum();
    m_positions += loss.positions();
    return stats;
}

std::pair<double, double> DbLlmTarget::takeMeans() {
    const double n = m_positions > 0 ? double(m_positions) : 1.0;
    const std::pair<double, double> means{m_klSum / n, m_weightSum / n};
    m_klSum = m_weightSum = 0;
    m_positions = 0;
    return means;
}

} // namespace lowbit::train
