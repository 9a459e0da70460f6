// Model: a loaded checkpoint bound to the CPU backend, ready to run the LLaMA forward pass; the
// CPU implementation of LanguageModel (runtime/language_model.h), whose host KvCache it also
// exposes by value for the calibration code.
//
// Usage:
//   LOWBIT_TRY(auto model, Model::create(checkpoint, {.threads = 8}));
//   KvCache cache = model->makeCache(/*slots=*/4, /*capacityTokens=*/512);
//   SequenceInput in{.slot = 0, .tokens = ids, .logits = LogitsWanted::All};
//   LOWBIT_TRY(Logits logits, model->forward(cache, {&in, 1}));
//
// Thread affinity: a Model may be shared, but forward() calls on one Model must not overlap
// (it owns scratch buffers); use one Model per worker thread for parallel jobs.
#pragma once

#include "core/result.h"
#include "model/checkpoint.h"
#include "runtime/kv_cache.h"
#include "runtime/language_model.h"
#include "runtime/linear_hook.h"

#include <memory>
#include <span>
#include <vector>

namespace lowbit {

class Backend;

struct RuntimeOptions {
    int threads = 0; // 0: every hardware thread
};

class Model final : public LanguageModel {
public:
    static Result<std::unique_ptr<Model>> create(std::shared_ptr<const Checkpoint> checkpoint,
                                                 const RuntimeOptions &options = {});
    ~Model() override;

    const Checkpoint &checkpoint() const override { return *m_checkpoint; }
    DeviceSpec device() const override { return {}; }
    std::string deviceDescription() const override;
    int threads() const override;

    KvCache makeCache(int slots, int64_t capacityTokens) const;
    // makeCache() behind the interface; negative sizes are InvalidArgument.
    Result<std::unique_ptr<SequenceCache>> allocateCache(int slots,
                                                         int64_t capacityTokens) override;

    // Runs every input's tokens after what its slot holds, appends their K/V to the cache, and
    // returns the wanted logits. Errors: a token id out of range, a slot out of range, a slot
    // that would overflow the cache capacity, two inputs on the same slot, a cache of another
    // shape (layers, K/V width) than this model's.
    Result<Logits> forward(KvCache &cache, std::span<const SequenceInput> inputs);
    // The same through the interface: the cache must be a KvCache (else InvalidArgument).
    Result<Logits> forward(SequenceCache &cache, std::span<const SequenceInput> inputs) override;

    // Every later forward() reports linear-layer inputs to `hook` (non-owning; nullptr: none).
    void setLinearHook(LinearHook *hook) { m_hook = hook; }

    // Layer-by-layer pieces of forward(), for calibration: the quantizer embeds its windows,
    // then runs one decoder layer at a time over all of them, swapping in quantized weights.
    // hidden: rows of hiddenSize floats, one row per token of `inputs` in order.
    Status embed(std::span<const SequenceInput> inputs, float *hidden);
    // Runs decoder layer `layer` in place on `hidden`, with `weights` (default: the checkpoint's
    // layer), K/V of the inputs' slots stored in layer `cacheLayer` of `cache` (a one-layer cache
    // suffices when running layers one at a time), the hook (if any) seeing linear inputs.
    // Does not advance the cache lengths; call advance() once all layers have run.
    Status runLayer(int64_t layer, KvCache &cache, int64_t cacheLayer,
                    std::span<const SequenceInput> inputs, float *hidden,
                    const LayerWeights *weights = nullptr, LinearHook *hook = nullptr);
    static void advance(KvCache &cache, std::span<const SequenceInput> inputs);
    // Final norm and output head over `rows` hidden rows.
    Logits head(const float *hidden, int64_t rows);

private:
    Model() = default;
    struct Impl;
    std::shared_ptr<const Checkpoint> m_checkpoint;
    std::unique_ptr<Impl> m_impl;
    LinearHook *m_hook = nullptr;
};

} // namespace lowbit
