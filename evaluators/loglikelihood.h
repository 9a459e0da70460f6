// The log-likelihood request engine: scores many (context, continuation) pairs the way
// lm-evaluation-harness's HFLM.loglikelihood does, with shared contexts computed once.
//
// Tokenization (lm-eval _encode_pair): trailing whitespace of the context moves to the front of
// the continuation; the context and the whole string are encoded separately and the continuation
// tokens are the whole string's tokens after the context's. An empty context becomes [BOS].
// The model input is (context + continuation)[-(maxLength+1):][:-1], i.e. left-truncated, and the
// last len(continuation) logit rows score the continuation.
//
// Reuse. Adjacent requests with the same `group` (a document's choices) form a group: the
// longest common prefix of their inputs is run once in one cache slot, copied into one slot per
// member, and the members' own tails then run together in one forward, one slot each. A
// request's `sharedPrefix` (a few-shot header that many documents start with) is run once by
// itself and kept in its own slot while consecutive documents share it.
//
// Determinism. float32 GEMM results depend on how many rows are multiplied together (OpenBLAS
// picks kernels and blockings by shape), so the rows of one document are never put in a forward
// with another document's rows: every forward the engine runs is a function of one group's
// requests alone (or of the shared prefix alone). A document's log-likelihoods are therefore
// bit-identical whatever else is scored, in which order, subsample or resumed run.
//
// Thread affinity: one engine per model and thread (forward() calls do not overlap).
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "runtime/language_model.h"

#include <memory>
#include <stop_token>
#include <string>
#include <vector>

namespace lowbit {

struct LoglikelihoodRequest {
    std::string context;
    std::string continuation;
    int64_t group = -1;       // adjacent requests with the same group >= 0 share their prefix
    std::string sharedPrefix{}; // empty, or a prefix of `context` shared across documents
};

struct TokenizedRequest {
    std::vector<int32_t> context;      // non-empty
    std::vector<int32_t> continuation; // non-empty
    int64_t group = -1;
    int64_t sharedPrefix = 0;          // leading context tokens that encode sharedPrefix alone
};

struct LoglikelihoodResult {
    double logLikelihood = 0; // sum of log P(continuation token | preceding tokens), nats
    int64_t tokens = 0;       // continuation tokens scored
    bool isGreedy = false;    // every continuation token is the argmax of its row
};

struct LoglikelihoodOptions {
    bool addBos = false;   // lm-eval's default for causal models: no BOS (add_bos_token=False)
    int64_t maxLength = 0; // 0: the model's maxPositions
};

// lm-eval's _encode_pair (and [BOS] for an empty context). sharedPrefix is kept only when its
// own tokens are exactly the first tokens of the context. Errors: an empty continuation after
// splitting, no BOS for an empty context.
Result<TokenizedRequest> encodeRequest(const Tokenizer &tokenizer, const LoglikelihoodRequest &request,
                                       bool addBos);

class LoglikelihoodEngine {
public:
    LoglikelihoodEngine(LanguageModel &model, const LoglikelihoodOptions &options);
    ~LoglikelihoodEngine();

    Result<std::vector<LoglikelihoodResult>> score(std::span<const LoglikelihoodRequest> requests,
                                                   std::stop_token stop = {},
                                                   ProgressSink *progress = nullptr);
    Result<std::vector<LoglikelihoodResult>> scoreTokens(std::span<const TokenizedRequest> requests,
                                                         std::stop_token stop = {},
                                                         ProgressSink *progress = nullptr);

    // Tokens run through the model so far, and the tokens the inputs would have needed without
    // any reuse: their ratio is what reuse saves (bench_eval).
    int64_t tokensEvaluated() const { return m_tokensEvaluated; }
    int64_t tokensRequested() const { return m_tokensRequested; }

private:
    struct Member;
    struct GroupPlan {
        int64_t header = 0;     // leading tokens taken from the shared-prefix slot
        int64_t prefix = 0;     // tokens run once for the whole group (>= header)
        int64_t capacity = 1;   // longest member input
        bool sharedRow = false; // the prefix's last row scores every member's first token
    };
    // A group's scored rows (one per continuation token, member after member) and the score()
    // targets that fill them: the prefix forward's last row (several members' first tokens) and
    // the members' forward rows.
    struct ScoredRows {
        std::vector<std::pair<size_t, size_t>> members; // [begin, end) rows of each member
        std::vector<double> logProbs;
        std::vector<char> greedy;
        std::vector<TokenTarget> prefixTargets, memberTargets;
        std::vector<size_t> prefixRow, memberRow; // the scored row each target fills
        void keep(const TokenScores &scores, bool prefix);
    };
    static GroupPlan planGroup(std::span<const Member> members);
    static ScoredRows planRows(std::span<const Member> members,
                               std::span<const TokenizedRequest> requests, const GroupPlan &plan);
    static LoglikelihoodResult sumRows(const ScoredRows &rows, size_t member);
    Status runGroup(std::span<Member> members, std::span<const TokenizedRequest> requests,
                    std::vector<LoglikelihoodResult> &results);
    Status ensureHeader(std::span<const int32_t> header);
    // model.score() with the engine's bookkeeping (tokens run; on an error the cache forgotten).
    Status score(std::span<const SequenceInput> inputs, std::span<const TokenTarget> targets,
                 TokenScores *scores);
    Status ensureCache(int slots, int64_t capacity);

    LanguageModel &m_model;
    LoglikelihoodOptions m_options;
    std::unique_ptr<SequenceCache> m_cache; // slot 0: the shared prefix; 1..: a group's members
    std::vector<int32_t> m_header;  // what slot 0 holds (computed by itself)
    int64_t m_tokensEvaluated = 0;
    int64_t m_tokensRequested = 0;
};

} // namespace lowbit
