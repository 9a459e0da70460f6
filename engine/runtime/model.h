// Model: a loaded checkpoint bound to a compute backend, ready to run the LLaMA forward pass.
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
#include "runtime/linear_hook.h"

#include <memory>
#include <span>
#include <vector>

namespace lowbit {

class Backend;

struct RuntimeOptions {
    int threads = 0; // 0: every hardware thread
};

enum class LogitsWanted { None, Last, All };

// A run of tokens appended to one cache slot, starting at the slot's current length.
struct SequenceInput {
    int slot = 0;
    std::span<const int32_t> tokens;
    LogitsWanted logits = LogitsWanted::Last;
    int64_t logitsFrom = 0; // with All: logits only for tokens [logitsFrom, tokens.size())
};

// Logit rows in the order the inputs asked for them: for each input none, its last token's, or
// those of tokens [logitsFrom, tokens.size()).
struct Logits {
    int64_t rows = 0;
    int64_t vocab = 0;
    std::vector<float> values; // rows * vocab
    const float *row(int64_t r) const { return values.data() + r * vocab; }
};

class Model {
public:
    static Result<std::unique_ptr<Model>> create(std::shared_ptr<const Checkpoint> checkpoint,
                                                 const RuntimeOptions &options = {});
    ~Model();

    const Checkpoint &checkpoint() const { return *m_checkpoint; }
    const ModelConfig &config() const { return m_checkpoint->config; }
    const Tokenizer *tokenizer() const { return m_checkpoint->tokenizer.get(); }
    int threads() const;

    KvCache makeCache(int slots, int64_t capacityTokens) const;

    // Runs every input's tokens after what its slot holds, appends their K/V to the cache, and
    // returns the wanted logits. Errors: a token id out of range, a slot out of range, a slot
    // that would overflow the cache capacity, two inputs on the same slot.
    Result<Logits> forward(KvCache &cache, std::span<const SequenceInput> inputs);

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
