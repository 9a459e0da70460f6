// KL-divergence of a model against a base run, like llama-perplexity --kl-divergence but without
// its full-vocabulary logit file: the base run keeps, per scored token, the log-sum-exp of its
// logits, the log-probability of the actual next token, and its top-K (id, log-probability).
// KLD(P_base || Q) is then computed over those K tokens plus one "rest" bucket holding the
// remaining probability mass of each side. By the log-sum inequality this is a lower bound of the
// full KLD, exact when K covers every token with non-negligible base probability (and exact for
// K = vocab).
//
// Tasks "kld" (WikiText-2) and "kld:CORPUS" (any perplexity corpus name, e.g. kld:c4,
// kld:text:PATH), over the same chunks and scored positions as the perplexity task (extra["mode"]):
//   extra["kld_write"] = FILE  run the base model and write FILE (extra["kld_top_k"], default 32);
//   extra["kld_base"]  = FILE  compare this model against FILE: mean / median / p99 / max KLD,
//                              Δp of the correct token (mean, RMS), top-1 agreement, PPL of both.
// The file records the corpus token hash, context, mode and vocabulary; a mismatch is an error.
// File layout (little-endian): "LBKLD001", u32 header length, header JSON, then one fixed-size
// record per chunk: per scored position f32 target log-prob, f32 log-sum-exp, K x (u32 id,
// f32 log-prob) in descending probability.
#pragma once

#include "task.h"

#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lowbit {

struct BaseTokenDistribution {
    float targetLogProb = 0;
    float logSumExp = 0;
    std::vector<int32_t> ids;    // top-K, most probable first
    std::vector<float> logProbs; // their log-probabilities
};

BaseTokenDistribution topKDistribution(const float *logits, int64_t vocab, int k, int32_t target);

struct KldPoint {
    double kld = 0;
    double deltaP = 0;      // Q(target) - P_base(target)
    bool top1Agrees = false; // argmax Q == argmax P_base
    double nll = 0;         // -log Q(target)
};

KldPoint compareToBase(const BaseTokenDistribution &base, const float *logits, int64_t vocab, int32_t target);

class KldBaseFile {
public:
    ~KldBaseFile();
    // Creates (or, when the header matches, reopens for resume) a file of `chunks` records.
    static Result<std::unique_ptr<KldBaseFile>> create(const std::filesystem::path &path, const nlohmann::json &header);
    static Result<std::unique_ptr<KldBaseFile>> open(const std::filesystem::path &path);

    const nlohmann::json &header() const { return m_header; }
    Status writeChunk(int64_t chunk, std::span<const BaseTokenDistribution> positions);
    Result<std::vector<BaseTokenDistribution>> readChunk(int64_t chunk);

private:
    KldBaseFile() = default;
    Status initLayout();
    std::filesystem::path m_path;
    std::FILE *m_file = nullptr;
    nlohmann::json m_header;
    int64_t m_dataOffset = 0, m_positions = 0, m_topK = 0, m_chunks = 0;
};

// "kld" or "kld:CORPUS"; nullptr for another name.
std::unique_ptr<Task> makeKldTask(const std::string &name, const std::filesystem::path &dataDir);

} // namespace lowbit
