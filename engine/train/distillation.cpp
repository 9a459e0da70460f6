#include "train/distillation.h"

#include <algorithm>
#include <cmath>

namespace lowbit::train {

namespace {

constexpr std::pair<DistillWeighting, const char *> kWeightingNames[] = {
    {DistillWeighting::Uniform, "uniform"},
    {DistillWeighting::Teacher, "teacher"},
    {DistillWeighting::Ambiguity, "ambiguity"},
    {DistillWeighting::Deviation, "deviation"},
};

// log softmax(x / T) into out; returns nothing, out sized like x.
template <typename T>
void logSoftmax(std::span<const T> x, double temperature, std::vector<double> &out) {
    out.resize(x.size());
    double top = -INFINITY;
    for (size_t v = 0; v < x.size(); ++v) {
        out[v] = double(x[v]) / temperature;
        top = std::max(top, out[v]);
    }
    double sum = 0;
    for (double u : out)
        sum += std::exp(u - top);
    const double lse = top + std::log(sum);
    for (double &u : out)
        u -= lse;
}

double entropyOf(const std::vector<double> &logP) {
    double h = 0;
    for (double lp : logP)
        if (std::isfinite(lp))
            h -= std::exp(lp) * lp;
    return h;
}

// dw/dĥ_S of the weighting (0 where w does not depend on the student).
double weightSlopeStudent(const DistillationOptions &o, double hT, double hS) {
    switch (o.weighting) {
    case DistillWeighting::Ambiguity: return o.strength / 2;
    case DistillWeighting::Deviation: return hS > hT ? o.strength : (hS < hT ? -o.strength : 0.0);
    default: return 0;
    }
}

} // namespace

Result<DistillWeighting> parseDistillWeighting(std::string_view name) {
    std::string known;
    for (const auto &[weighting, text] : kWeightingNames) {
        if (name == text)
            return weighting;
        known += known.empty() ? text : std::string(", ") + text;
    }
    return makeError(ErrorCode::InvalidArgument, "unknown distillation weighting '" +
                                                     std::string(name) + "' (known: " + known +
                                                     ")");
}

const char *distillWeightingName(DistillWeighting weighting) {
    for (const auto &[w, text] : kWeightingNames)
        if (w == weighting)
            return text;
    return "?";
}

double distillWeight(const DistillationOptions &o, double hT, double hS) {
    switch (o.weighting) {
    case DistillWeighting::Uniform: return 1;
    case DistillWeighting::Teacher: return 1 + o.strength * hT;
    case DistillWeighting::Ambiguity: return 1 + o.strength * (hT + hS) / 2;
    case DistillWeighting::Deviation: return 1 + o.strength * std::abs(hT - hS);
    }
    return 1;
}

template <typename Real>
DistillationLoss<Real>::DistillationLoss(TeacherLogitsFn teacher,
                                         const DistillationOptions &options)
    : m_teacher(std::move(teacher)), m_options(options) {
    if (!(m_options.temperature > 0) || !std::isfinite(m_options.temperature))
        m_status =
            makeError(ErrorCode::InvalidArgument, "distillation: temperature must be positive");
    else if (!(m_options.strength >= 0) || !(m_options.ceWeight >= 0))
        m_status = makeError(ErrorCode::InvalidArgument,
                             "distillation: strength and ce_weight must be >= 0");
}

template <typename Real>
double DistillationLoss<Real>::score(int64_t example, int64_t position, int32_t target,
                                     std::span<const Real> logits, std::span<Real> dLogits) {
    std::fill(dLogits.begin(), dLogits.end(), Real(0));
    const std::span<const float> t =
        m_teacher ? m_teacher(example, position) : std::span<const float>();
    if (!m_status.ok())
        return 0;
    if (t.size() != logits.size() || logits.size() < 2) {
        m_status = makeError(ErrorCode::InvalidArgument,
                             "distillation: no teacher logits of vocab " +
                                 std::to_string(logits.size()) + " for example " +
                                 std::to_string(example) + " position " + std::to_string(position));
        return 0;
    }
    const double T = m_options.temperature, logV = std::log(double(logits.size()));
    logSoftmax(t, T, m_logP);
    logSoftmax(logits, T, m_logQ);
    double kl = 0;
    for (size_t v = 0; v < m_logP.size(); ++v)
        if (std::isfinite(m_logP[v])) // p_v log p_v -> 0 as p_v -> 0
            kl += std::exp(m_logP[v]) * (m_logP[v] - m_logQ[v]);
    const double hT = entropyOf(m_logP) / logV, hSRaw = entropyOf(m_logQ), hS = hSRaw / logV;
    const double w = distillWeight(m_options, hT, hS);
    // d(T²·w·KL)/dz_v = T·w·(q_v - p_v)  [+ T·KL·dw/dĥ_S·(-q_v (log q_v + H_S)) / log V]
    const double slope = m_options.weightGradient ? weightSlopeStudent(m_options, hT, hS) : 0.0;
    for (size_t v = 0; v < dLogits.size(); ++v) {
        const double q = std::exp(m_logQ[v]), p = std::exp(m_logP[v]);
        double d = T * w * (q - p);
        if (slope != 0)
            d += T * kl * slope * (-q * (m_logQ[v] + hSRaw)) / logV;
        dLogits[v] = Real(d);
    }
    double loss = T * T * w * kl;
    if (m_options.ceWeight > 0 && target >= 0 && size_t(target) < logits.size()) {
        logSoftmax(logits, 1.0, m_logQ); // cross-entropy at T = 1
        loss -= m_options.ceWeight * m_logQ[size_t(target)];
        for (size_t v = 0; v < dLogits.size(); ++v)
            dLogits[v] += Real(m_options.ceWeight *
                               (std::exp(m_logQ[v]) - (v == size_t(target) ? 1.0 : 0.0)));
    }
    m_klSum += kl;
    m_weightSum += w;
    ++m_positions;
    return loss;
}

template class DistillationLoss<float>;
template class DistillationLoss<double>;

Result<TeacherTable> TeacherTable::compute(Model &teacher, std::span<const TrainExample> batch) {
    TeacherTable table;
    table.m_vocab = teacher.config().vocabSize;
    table.m_rowOf.resize(batch.size());
    for (size_t e = 0; e < batch.size(); ++e) {
        const TrainExample &ex = batch[e];
        if (ex.tokens.size() != ex.targets.size() || ex.tokens.empty())
            return makeError(ErrorCode::InvalidArgument,
                             "teacher logits: example " + std::to_string(e) +
                                 " has no tokens or tokens/targets of different sizes");
        KvCache cache = teacher.makeCache(1, int64_t(ex.tokens.size()));
        const SequenceInput in{.slot = 0, .tokens = ex.tokens, .logits = LogitsWanted::All};
        LOWBIT_TRY(Logits logits, teacher.forward(cache, {&in, 1}));
        if (logits.vocab != table.m_vocab || logits.rows != int64_t(ex.tokens.size()))
            return makeError(ErrorCode::Internal, "teacher logits: unexpected logit shape");
        std::vector<int64_t> &rowOf = table.m_rowOf[e];
        rowOf.assign(ex.tokens.size(), -1);
        for (size_t i = 0; i < ex.tokens.size(); ++i)
            if (ex.targets[i] != kIgnoreTarget) {
                rowOf[i] = int64_t(table.m_values.size()) / table.m_vocab;
                table.m_values.insert(table.m_values.end(), logits.row(int64_t(i)),
                                      logits.row(int64_t(i)) + table.m_vocab);
            }
    }
    return table;
}

std::span<const float> TeacherTable::logits(int64_t example, int64_t position) const {
    if (example < 0 || size_t(example) >= m_rowOf.size() || position < 0 ||
        size_t(position) >= m_rowOf[size_t(example)].size())
        return {};
    const int64_t row = m_rowOf[size_t(example)][size_t(position)];
    if (row < 0)
        return {};
    return {m_values.data() + row * m_vocab, size_t(m_vocab)};
}

TeacherLogitsFn TeacherTable::source() const {
    return [this](int64_t example, int64_t position) { return logits(example, position); };
}

Result<std::vector<TrainExample>>
generateDistillationData(Model &model, const DistillDataOptions &options, std::stop_token stop) {
    const Tokenizer *tokenizer = model.tokenizer();
    if (!tokenizer)
        return makeError(ErrorCode::InvalidArgument,
                         "distillation data: the model has no tokenizer");
    if (options.sequences < 0 || options.tokensPerSequence < 1 || options.greedyPrefixTokens < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "distillation data: sequences >= 0, tokens per sequence >= 1");
    const int32_t bos = tokenizer->bosId() >= 0 ? tokenizer->bosId() : model.config().bosId;
    std::vector<TrainExample> out;
    for (int64_t s = 0; s < options.sequences; ++s) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "distillation data: cancelled");
        std::vector<int32_t> tokens;
        if (bos >= 0)
            tokens.push_back(bos);
        if (!options.prompts.empty()) {
            const auto ids = tokenizer->encode(options.prompts[size_t(s) % options.prompts.size()],
                                               {.addBos = false});
            tokens.insert(tokens.end(), ids.begin(), ids.end());
        }
        if (tokens.empty())
            return makeError(ErrorCode::InvalidArgument,
                             "distillation data: no BOS and no prompt to start from");
        const int greedy = std::min(options.greedyPrefixTokens, options.tokensPerSequence);
        GenerateOptions g;
        g.stopAtEos = true;
        if (greedy > 0) { // LLM-QAT: a deterministic start
            g.maxTokens = greedy;
            g.sampling = {.temperature = 0, .seed = options.sampling.seed + uint64_t(s)};
            LOWBIT_TRY(GenerateResult r, generate(model, tokens, g, stop));
            tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
        }
        g.maxTokens = options.tokensPerSequence - greedy;
        g.sampling = options.sampling;
        g.sampling.seed = options.sampling.seed + uint64_t(s);
        if (g.maxTokens > 0) {
            LOWBIT_TRY(GenerateResult r, generate(model, tokens, g, stop));
            tokens.insert(tokens.end(), r.tokens.begin(), r.tokens.end());
        }
        if (tokens.size() < 2)
            continue; // nothing to predict
        TrainExample ex;
        ex.tokens = tokens;
        ex.targets.assign(tokens.begin() + 1, tokens.end());
        ex.targets.push_back(kIgnoreTarget);
        out.push_back(std::move(ex));
    }
    return out;
}

} // namespace lowbit::train
