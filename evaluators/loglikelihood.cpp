#include "loglikelihood.h"


#include <algorithm>
#include <chrono>

namespace lowbit {

Result<TokenizedRequest> encodeRequest(const Tokenizer &tokenizer, const LoglikelihoodRequest &request,
                                       bool addBos) {
    TokenizedRequest out;
    out.group = request.group;
    const EncodeOptions encode{addBos, false};
    if (request.context.empty()) {
        // lm-eval: an empty context is scored after the prefix token (BOS).
        if (tokenizer.bosId() < 0)
            return makeError(ErrorCode::InvalidArgument, "loglikelihood: empty context and no BOS token");
        out.context = {tokenizer.bosId()};
        out.continuation = tokenizer.encode(request.continuation, {false, false});
    } else {
        std::string_view context = request.context;
        std::string continuation = request.continuation;
        const size_t kept = context.find_last_not_of(" \t\n\r\f\v");
        const size_t spaces = kept == std::string_view::npos ? context.size() : context.size() - kept - 1;
        if (spaces > 0) {
            continuation = std::string(context.substr(context.size() - spaces)) + continuation;
            context = context.substr(0, context.size() - spaces);
        }
        const std::string whole = std::string(context) + continuation;
        std::vector<int32_t> wholeIds = tokenizer.encode(whole, encode);
        out.context = tokenizer.encode(context, encode);
        const size_t split = std::min(out.context.size(), wholeIds.size());
        out.continuation.assign(wholeIds.begin() + long(split), wholeIds.end());
        if (out.context.empty()) {
            // A context of only whitespace: nothing is left before the continuation.
            if (tokenizer.bosId() < 0)
                return makeError(ErrorCode::InvalidArgument,
                                 "loglikelihood: whitespace-only context and no BOS token");
            out.context = {tokenizer.bosId()};
        }
    }
    if (out.continuation.empty())
        return makeError(ErrorCode::InvalidArgument,
                         "loglikelihood: continuation '" + request.continuation + "' encodes to no tokens");
    if (!request.sharedPrefix.empty() && request.context.rfind(request.sharedPrefix, 0) == 0) {
        // Only when the header's own tokens start the context (no merge across its end).
        const std::vector<int32_t> header = tokenizer.encode(request.sharedPrefix, encode);
        if (!header.empty() && header.size() <= out.context.size() &&
            std::equal(header.begin(), header.end(), out.context.begin()))
            out.sharedPrefix = int64_t(header.size());
    }
    return out;
}

struct LoglikelihoodEngine::Member {
    size_t request = 0;
    std::vector<int32_t> input; // model input: (context + continuation)[-(maxLength+1):][:-1]
    int64_t scoreFrom = 0;      // first input position whose logits score the continuation
    int64_t header = 0;         // leading input tokens that are the shared prefix
};

LoglikelihoodEngine::LoglikelihoodEngine(LanguageModel &model, const LoglikelihoodOptions &options)
    : m_model(model), m_options(options) {
    if (m_options.maxLength <= 0)
        m_options.maxLength = model.config().maxPositions;
}

LoglikelihoodEngine::~LoglikelihoodEngine() = default;

Result<std::vector<LoglikelihoodResult>> LoglikelihoodEngine::score(std::span<const LoglikelihoodRequest> requests,
                                                                    std::stop_token stop,
                                                                    ProgressSink *progress) {
    const Tokenizer *tokenizer = m_model.tokenizer();
    if (!tokenizer)
        return makeError(ErrorCode::InvalidArgument, "loglikelihood: the model has no tokenizer");
    std::vector<TokenizedRequest> tokenized;
    tokenized.reserve(requests.size());
    for (const LoglikelihoodRequest &request : requests) {
        LOWBIT_TRY(TokenizedRequest t, encodeRequest(*tokenizer, request, m_options.addBos));
        tokenized.push_back(std::move(t));
    }
    return scoreTokens(tokenized, stop, progress);
}

namespace {

int64_t commonPrefix(std::span<const int32_t> a, std::span<const int32_t> b) {
    const size_t n = std::min(a.size(), b.size());
    size_t i = 0;
    while (i < n && a[i] == b[i])
        ++i;
    return int64_t(i);
}

} // namespace

Status LoglikelihoodEngine::ensureCache(int slots, int64_t capacity) {
    if (m_cache && m_cache->slotCount() >= slots && m_cache->capacity() >= capacity)
        return {};
    if (m_cache) {
        slots = std::max(slots, m_cache->slotCount());
        capacity = std::max(capacity, m_cache->capacity());
    }
    m_cache.reset(); // a device cache gives its memory back before the larger one is allocated
    m_header.clear();
    LOWBIT_TRY(m_cache, m_model.allocateCache(slots, capacity));
    return {};
}

Status LoglikelihoodEngine::score(std::span<const SequenceInput> inputs,
                                  std::span<const TokenTarget> targets, TokenScores *scores) {
    for (const SequenceInput &in : inputs)
        m_tokensEvaluated += int64_t(in.tokens.size());
    // The top-1 of every wanted row: each is a scored row, whose greediness is asked.
    const bool wanted = wantedRows(inputs) > 0;
    auto result = m_model.score(*m_cache, inputs, {targets, wanted ? 1 : 0});
    if (!result) {
        m_cache->clearAll(); // what the slots hold is no longer known
        m_header.clear();
        return result.error();
    }
    if (scores)
        *scores = std::move(*result);
    return {};
}

Status LoglikelihoodEngine::ensureHeader(std::span<const int32_t> header) {
    if (m_cache->length(0) == int64_t(header.size()) && std::equal(header.begin(), header.end(), m_header.begin(), m_header.end()))
        return {};
    m_cache->clear(0);
    m_header.clear();
    const SequenceInput input{0, header, LogitsWanted::None};
    LOWBIT_CHECK(score({&input, 1}, {}, nullptr));
    m_header.assign(header.begin(), header.end());
    return {};
}

Result<std::vector<LoglikelihoodResult>> LoglikelihoodEngine::scoreTokens(std::span<const TokenizedRequest> requests,
                                                                          std::stop_token stop,
                                                                          ProgressSink *progress) {
    const int64_t maxLength = m_options.maxLength;
    if (maxLength < 1)
        return makeError(ErrorCode::InvalidArgument, "loglikelihood: the model states no context length");
    std::vector<std::vector<Member>> groups;
    for (size_t i = 0; i < requests.size(); ++i) {
        const TokenizedRequest &r = requests[i];
        if (r.context.empty() || r.continuation.empty())
            return makeError(ErrorCode::InvalidArgument, "loglikelihood: request " + std::to_string(i) +
                                                             " has an empty context or continuation");
        if (int64_t(r.continuation.size()) > maxLength)
            return makeError(ErrorCode::InvalidArgument,
                             "loglikelihood: request " + std::to_string(i) + " has a continuation of " +
                                 std::to_string(r.continuation.size()) + " tokens, longer than the context length " +
                                 std::to_string(maxLength));
        Member m;
        m.request = i;
        std::vector<int32_t> whole(r.context);
        whole.insert(whole.end(), r.continuation.begin(), r.continuation.end());
        const size_t keep = std::min(whole.size(), size_t(maxLength + 1));
        m.input.assign(whole.end() - long(keep), whole.end() - 1);
        m.scoreFrom = int64_t(m.input.size()) - int64_t(r.continuation.size());
        // Left truncation cuts the shared prefix off: no reuse for this request then.
        m.header = keep == whole.size() ? std::clamp<int64_t>(r.sharedPrefix, 0, m.scoreFrom) : 0;
        m_tokensRequested += int64_t(m.input.size());
        const bool joins = !groups.empty() && r.group >= 0 && i > 0 && requests[i - 1].group == r.group;
        if (!joins)
            groups.emplace_back();
        groups.back().push_back(std::move(m));
    }
    std::vector<LoglikelihoodResult> results(requests.size());
    size_t done = 0;
    const auto start = std::chrono::steady_clock::now();
    for (auto &group : groups) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "loglikelihood: cancelled");
        LOWBIT_CHECK(runGroup(group, requests, results));
        done += group.size();
        if (progress) {
            const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            progress->report({"loglikelihood", int64_t(done), int64_t(requests.size()),
                              double(m_tokensEvaluated) / std::max(seconds, 1e-9), -1});
        }
    }
    return results;
}

LoglikelihoodEngine::GroupPlan LoglikelihoodEngine::planGroup(std::span<const Member> members) {
    const Member &first = members[0];
    GroupPlan plan;
    int64_t minScoreFrom = first.scoreFrom;
    plan.header = first.header;
    for (const Member &m : members) {
        plan.capacity = std::max(plan.capacity, int64_t(m.input.size()));
        minScoreFrom = std::min(minScoreFrom, m.scoreFrom);
        if (m.header != plan.header || commonPrefix(m.input, first.input) < plan.header)
            plan.header = 0;
    }
    plan.header = std::min(plan.header, minScoreFrom);
    // The group's prefix: the shared prefix for a lone request; else the members' common input
    // up to and including the last context token, whose logits (the first continuation token's
    // distribution) every member then shares, unless that token lies in the shared prefix.
    plan.prefix = plan.header;
    if (members.size() > 1) {
        int64_t common = int64_t(first.input.size());
        for (const Member &m : members)
            common = std::min(common, commonPrefix(first.input, m.input));
        plan.prefix = std::min(common, minScoreFrom + 1);
        if (plan.prefix - 1 < plan.header)
            plan.prefix = std::min(common, minScoreFrom);
        plan.prefix = std::max(plan.prefix, plan.header);
    }
    plan.sharedRow = plan.prefix > plan.header && plan.prefix == minScoreFrom + 1;
    return plan;
}

Status LoglikelihoodEngine::runGroup(std::span<Member> members, std::span<const TokenizedRequest> requests,
                                     std::vector<LoglikelihoodResult> &results) {
    const GroupPlan plan = planGroup(members);
    const Member &first = members[0];
    LOWBIT_CHECK(ensureCache(int(members.size()) + 1, plan.capacity));
    const int home = 1;
    if (plan.header > 0) {
        LOWBIT_CHECK(ensureHeader({first.input.data(), size_t(plan.header)}));
        m_cache->copyPrefix(0, home, plan.header);
    } else {
        m_cache->clear(home);
    }
    ScoredRows rows = planRows(members, requests, plan);
    std::vector<SequenceInput> inputs;
    if (plan.prefix > plan.header) {
        const SequenceInput input{home, {first.input.data() + plan.header, size_t(plan.prefix - plan.header)},
                                  plan.sharedRow ? LogitsWanted::Last : LogitsWanted::None};
        TokenScores scores;
        LOWBIT_CHECK(score({&input, 1}, rows.prefixTargets, &scores));
        rows.keep(scores, true);
    }
    for (size_t j = 0; j < members.size(); ++j) {
        const Member &m = members[j];
        if (int64_t(m.input.size()) > plan.prefix) {
            if (j > 0)
                m_cache->copyPrefix(home, home + int(j), plan.prefix);
            inputs.push_back({home + int(j), {m.input.data() + plan.prefix, m.input.size() - size_t(plan.prefix)},
                              LogitsWanted::All, std::max<int64_t>(0, m.scoreFrom - plan.prefix)});
        }
    }
    if (!inputs.empty()) {
        TokenScores scores;
        LOWBIT_CHECK(score(inputs, rows.memberTargets, &scores));
        rows.keep(scores, false);
    }
    for (size_t j = 0; j < members.size(); ++j)
        results[members[j].request] = sumRows(rows, j);
    return {};
}

// Scored rows in order: member j's rows [scoreFrom_j, L_j). A row below the prefix can only be the
// prefix's last row (planGroup's sharedRow), which then scores several members' first tokens; the
// others come from the members' forward, one slot per member, in its row order.
LoglikelihoodEngine::ScoredRows LoglikelihoodEngine::planRows(std::span<const Member> members,
                                                              std::span<const TokenizedRequest> requests,
                                                              const GroupPlan &plan) {
    ScoredRows rows;
    for (const Member &m : members) {
        const auto &continuation = requests[m.request].continuation;
        const size_t begin = rows.logProbs.size();
        for (int64_t r = m.scoreFrom; r < int64_t(m.input.size()); ++r) {
            const int32_t token = continuation[size_t(r - m.scoreFrom)];
            if (r < plan.prefix) {
                rows.prefixTargets.push_back({0, token});
                rows.prefixRow.push_back(rows.logProbs.size());
            } else { // every row of the members' forward is a scored row, in this order
                rows.memberTargets.push_back({int64_t(rows.memberTargets.size()), token});
                rows.memberRow.push_back(rows.logProbs.size());
            }
            rows.logProbs.push_back(0);
        }
        rows.members.emplace_back(begin, rows.logProbs.size());
    }
    rows.greedy.resize(rows.logProbs.size());
    return rows;
}

// is_greedy: the target is its row's top-1 (score() asked every row's).
void LoglikelihoodEngine::ScoredRows::keep(const TokenScores &scores, bool prefix) {
    const auto &targets = prefix ? prefixTargets : memberTargets;
    const auto &scoredRow = prefix ? prefixRow : memberRow;
    for (size_t i = 0; i < targets.size(); ++i) {
        logProbs[scoredRow[i]] = scores.logProbs[i];
        greedy[scoredRow[i]] = scores.topIds[size_t(targets[i].row)] == targets[i].token;
    }
}

LoglikelihoodResult LoglikelihoodEngine::sumRows(const ScoredRows &rows, size_t member) {
    const auto [begin, end] = rows.members[member];
    LoglikelihoodResult out;
    out.tokens = int64_t(end - begin);
    out.isGreedy = true;
    for (size_t r = begin; r < end; ++r) {
        out.logLikelihood += rows.logProbs[r];
        out.isGreedy = out.isGreedy && rows.greedy[r];
    }
    return out;
}

} // namespace lowbit
