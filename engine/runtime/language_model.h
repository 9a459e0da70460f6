// LanguageModel: the one interface evaluation runs on, implemented by the CPU forward (Model,
// host KvCache) and the device-resident one (CudaModel, device CudaKvCache), so that every
// evaluator runs on whichever device the job names (openLanguageModel picks the class).
//
// Usage:
//   LOWBIT_TRY(auto model, openLanguageModel(checkpoint, device, {.threads = 8}));
//   LOWBIT_TRY(auto cache, model->allocateCache(/*slots=*/4, /*capacityTokens=*/512));
//   SequenceInput in{.slot = 0, .tokens = ids, .logits = LogitsWanted::All};
//   LOWBIT_TRY(Logits logits, model->forward(*cache, {&in, 1}));
//
// A cache belongs to the model that allocated it: forward() with a cache of another kind (a
// device cache on the CPU model), of another shape or another device's is InvalidArgument.
// Thread affinity: one thread at a time per model and its caches.
#pragma once

#include "backend/device.h"
#include "core/result.h"
#include "model/checkpoint.h"

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace lowbit {

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

// One log-probability score() computes: log softmax(logits row `row`)[token], where `row`
// indexes the rows forward() would return for the same inputs, in its order.
struct TokenTarget {
    int64_t row = 0;
    int32_t token = 0;
};

constexpr int kScoreTopKMax = 64;

// What score() reduces the wanted logit rows to. A row may carry any number of targets (the
// log-likelihood engine's shared row scores every choice's first token); rows without one cost
// no log-softmax.
struct ScoreRequest {
    std::span<const TokenTarget> targets;
    int topK = 0; // 0..kScoreTopKMax: the k largest logits of every wanted row
};

struct TokenScores {
    int64_t rows = 0;             // the rows forward() would have returned
    std::vector<double> logProbs; // one per target, in the request's order (float64, log_prob.h)
    int topK = 0;
    // rows * topK, row-major: descending logits, equal logits by lower id, NaN never picked
    // (a row with fewer than k non-NaN logits ends in id -1, logit -inf). For finite rows the
    // first id is std::max_element's, i.e. argmax() of runtime/sampler.h.
    std::vector<int32_t> topIds;
    std::vector<float> topLogits;
};

// Keys and values of several independent sequences ("slots") of one model, wherever they live.
// Slots passed to these calls must be in [0, slotCount()).
class SequenceCache {
public:
    virtual ~SequenceCache() = default;
    virtual int slotCount() const = 0;
    virtual int64_t capacity() const = 0; // positions per slot
    virtual int64_t length(int slot) const = 0;
    virtual void clear(int slot) = 0;
    virtual void clearAll() = 0;
    // Forget everything after `length` tokens (reuse of a shared prefix).
    virtual void truncate(int slot, int64_t length) = 0;
    // Make `to` hold a copy of `from`'s first `length` tokens (prefix sharing across slots).
    virtual void copyPrefix(int from, int to, int64_t length) = 0;
};

class LanguageModel {
public:
    virtual ~LanguageModel() = default;

    virtual const Checkpoint &checkpoint() const = 0;
    const ModelConfig &config() const { return checkpoint().config; }
    const Tokenizer *tokenizer() const { return checkpoint().tokenizer.get(); }

    // Where the forward runs ("cpu", "cuda:0"), and the same with details for logs and run
    // records ("cpu (8 threads)", "cuda:0 (NVIDIA H100 80GB HBM3, bf16 tensor-core GEMMs)").
    virtual DeviceSpec device() const = 0;
    virtual std::string deviceDescription() const = 0;
    // Host threads for work on the returned logits (log-softmax, top-k).
    virtual int threads() const = 0;

    // A cache of `slots` x `capacityTokens` positions for this model. Errors: negative sizes, a
    // cache that does not fit the device's free memory (OutOfMemory naming both).
    virtual Result<std::unique_ptr<SequenceCache>> allocateCache(int slots,
                                                                 int64_t capacityTokens) = 0;

    // Runs every input's tokens after what its slot holds, appends their K/V to the cache, and
    // returns the wanted logits. Errors: a cache this model did not allocate, a token id out of
    // range, a slot out of range, a slot that would overflow the cache capacity, two inputs on
    // the same slot; device failures. On an error the cache's content is unspecified (clear it).
    virtual Result<Logits> forward(SequenceCache &cache, std::span<const SequenceInput> inputs) = 0;

    // forward() reduced to what perplexity, log-likelihoods and greedy decoding read from the
    // logits: the log-probabilities of given (row, token) targets and the top-K of every wanted
    // row, so that a device model need not move [rows x vocab] logits to the host (sampling at a
    // temperature still takes forward()'s rows). Runs the inputs and appends to the cache exactly
    // as forward() does. This default calls forward() and reduces its rows on the host with
    // logProbability() and a linear scan/partial sort, so its numbers are bit-identical to those
    // functions applied to forward()'s logits; CudaModel reduces on the device (the same
    // log-softmax in float64 up to summation order, the same top-K order). Errors: forward()'s,
    // and before any work a target whose row is not a wanted row or whose token is out of the
    // vocabulary, a topK outside 0..kScoreTopKMax (InvalidArgument).
    virtual Result<TokenScores> score(SequenceCache &cache, std::span<const SequenceInput> inputs,
                                      const ScoreRequest &request);
};

// The number of logit rows forward() returns for `inputs` (None: 0, Last: 1, All: from
// logitsFrom, clamped, to the end; an empty input none).
int64_t wantedRows(std::span<const SequenceInput> inputs);
// score()'s argument checks, for its implementations.
Status checkScoreRequest(std::span<const SequenceInput> inputs, const ScoreRequest &request,
                         int64_t vocab);
// The k best entries of one logit row in TokenScores' order, written to ids/values[0, k).
void topKOfRow(const float *row, int64_t vocab, int k, int32_t *ids, float *values);

// Splits one forward() into passes of at most `maxTokens` (>= 1) tokens, in input order: an input
// longer than what a pass has left continues at the start of the next pass, so a slot appears at
// most once per pass, and each piece asks for exactly the logit rows of the original input that
// fall in it (All from an offset, or None). Running the passes one after another on the same
// cache and concatenating their logits gives forward()'s rows in forward()'s order (causal
// attention makes the split exact). Empty inputs give no piece; no inputs, one empty pass.
std::vector<std::vector<SequenceInput>> splitIntoPasses(std::span<const SequenceInput> inputs,
                                                        int64_t maxTokens);

// Options of openLanguageModel. threads: CPU compute threads (0: every hardware thread), or on
// a GPU the host threads for work on the logits. The CUDA fields are ignored on the CPU.
struct LanguageModelOptions {
    int threads = 0;
    bool fp32Gemms = false;        // cuda: exact float32 GEMMs instead of bf16/f16 tensor cores
    int64_t maxBatchTokens = 2048; // cuda: tokens per device pass (longer forwards are split)
};

// The model of `checkpoint` on `device`: Model on "cpu", CudaModel on "cuda:N". Either way the
// checkpoint's recorded activation quantization (SmoothQuant W8A8, quant/activation_quant.h) is
// applied; the GPU has no such path and refuses such a checkpoint (Unsupported). Errors: no
// checkpoint; on cuda a build without CUDA, no driver or device, an index past the devices
// (the text of cudaDeviceCount's reason), weights that do not fit the device's free memory.
Result<std::unique_ptr<LanguageModel>>
openLanguageModel(std::shared_ptr<const Checkpoint> checkpoint, const DeviceSpec &device,
                  const LanguageModelOptions &options = {});

// The compute backends of this build and machine, for `lowbit --version` and the GUI:
// "cpu, cuda (1 device: NVIDIA H100 80GB HBM3)", "cpu; cuda built, no device: <reason>" or
// "cpu (built without CUDA)".
std::string computeBackendsSummary();
// "cpu" and one "cuda:N" per usable device, in order.
std::vector<DeviceSpec> availableDevices();

} // namespace lowbit
