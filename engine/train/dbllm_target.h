// DB-LLM as a Trainer target (Chen et al. 2024, arXiv 2402.11960): a TrainableModel<float> whose
// seven linears per layer are DualBinaryLinear bases (train/dual_binary.h), no LoRA, scored by
// DistillationLoss (train/distillation.h) against the full-precision model as teacher.
//
// accumulate(batch): the teacher's logits of the batch's scored positions are computed first
// (TeacherTable), then the student's forward/backward reads them. Batch example indices are those
// of the span accumulate() receives, so a micro-batch has its own table. Thread affinity: one
// thread (the Trainer's).
#pragma once

#include "runtime/model.h"
#include "train/distillation.h"
#include "train/dual_binary.h"
#include "train/trainable_model.h"
#include "train/trainer.h"

#include <memory>

namespace lowbit::train {

class DbLlmTarget final : public TrainTarget {
public:
    // `fp`: the full-precision checkpoint (teacher, and the weights FDB is initialized from).
    // threads: the teacher's forward threads (0: every hardware thread).
    static Result<std::unique_ptr<DbLlmTarget>> create(std::shared_ptr<const Checkpoint> fp,
                                                       const DualBinaryOptions &binary,
                                                       const DistillationOptions &distill,
                                                       int threads = 0);

    std::vector<Parameter<float> *> parameters() override { return m_student->parameters(); }
    void zeroGrad() override { m_student->zeroGrad(); }
    Result<LossStats> accumulate(std::span<const TrainExample> batch) override;
    void afterStep() override { m_student->afterStep(); }

    TrainableModel<float> &student() { return *m_student; }
    Model &teacher() { return *m_teacher; }
    // Mean KL and mean weight of the positions scored since the last call (for logging).
    std::pair<double, double> takeMeans();

private:
    DbLlmTarget() = default;
    std::unique_ptr<Model> m_teacher;
    std::unique_ptr<TrainableModel<float>> m_student;
    DistillationOptions m_distill;
    double m_klSum = 0, m_weightSum = 0;
    int64_t m_positions = 0;
};

} // namespace lowbit::train
