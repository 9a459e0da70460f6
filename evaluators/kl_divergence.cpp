#include "kl_divergence.h"

#include "dataset_io.h"
#include "perplexity_tasks.h"
#include "runtime/log_prob.h"
#include "runtime/sampler.h"
#include "task_support.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace lowbit {

BaseTokenDistribution topKDistribution(const float *logits, int64_t vocab, int k, int32_t target) {
    BaseTokenDistribution d;
    const double lse = logSumExp(logits, vocab);
    d.logSumExp = float(lse);
    d.targetLogProb = float(double(logits[target]) - lse);
    k = int(std::min<int64_t>(k, vocab));
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
        return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    for (int i = 0; i < k; ++i) {
        d.ids.push_back(order[size_t(i)]);
        d.logProbs.push_back(float(double(logits[order[size_t(i)]]) - lse));
    }
    return d;
}

KldPoint compareToBase(const BaseTokenDistribution &base, const float *logits, int64_t vocab, int32_t target) {
    KldPoint point;
    const double lse = logSumExp(logits, vocab);
    double pTop = 0, qTop = 0;
    for (size_t i = 0; i < base.ids.size(); ++i) {
        const double logP = base.logProbs[i], logQ = double(logits[base.ids[i]]) - lse;
        const double p = std::exp(logP);
        pTop += p;
        qTop += std::exp(logQ);
        point.kld += p * (logP - logQ);
    }
    // The rest bucket: the mass outside the base's top-K on each side.
    const double pRest = std::max(0.0, 1.0 - pTop), qRest = std::max(0.0, 1.0 - qTop);
    if (pRest > 1e-12)
        point.kld += pRest * (std::log(pRest) - std::log(std::max(qRest, 1e-30)));
    const double logQTarget = double(logits[target]) - lse;
    point.nll = -logQTarget;
    point.deltaP = std::exp(logQTarget) - std::exp(double(base.targetLogProb));
    point.top1Agrees = !base.ids.empty() && argmax({logits, size_t(vocab)}) == base.ids[0];
    return point;
}

namespace {
constexpr char kMagic[8] = {'L', 'B', 'K', 'L', 'D', '0', '0', '1'};
constexpr uint32_t kWritten = 0x4b4e4843; // "CHNK": marks a record that was written
} // namespace

KldBaseFile::~KldBaseFile() {
    if (m_file)
        std::fclose(m_file);
}

Status KldBaseFile::initLayout() {
    m_positions = m_header.value("positions", int64_t(0));
    m_topK = m_header.value("top_k", int64_t(0));
    m_chunks = m_header.value("chunks", int64_t(0));
    if (m_positions < 1 || m_topK < 1 || m_chunks < 1)
        return makeError(ErrorCode::Format, m_path.string() + ": header lacks positions/top_k/chunks");
    return {};
}

Result<std::unique_ptr<KldBaseFile>> KldBaseFile::create(const std::filesystem::path &path, const nlohmann::json &header) {
    if (std::filesystem::exists(path)) {
        auto existing = open(path);
        if (existing && (*existing)->header() == header) {
            std::fclose((*existing)->m_file);
            (*existing)->m_file = std::fopen(path.c_str(), "r+b"); // resume: keep written chunks
            if (!(*existing)->m_file)
                return makeError(ErrorCode::Io, path.string() + ": cannot open for writing");
            return existing;
        }
    }
    std::unique_ptr<KldBaseFile> file(new KldBaseFile());
    file->m_path = path;
    file->m_header = header;
    LOWBIT_CHECK(file->initLayout());
    file->m_file = std::fopen(path.c_str(), "w+b");
    if (!file->m_file)
        return makeError(ErrorCode::Io, path.string() + ": cannot create");
    const std::string text = header.dump();
    const uint32_t length = uint32_t(text.size());
    if (std::fwrite(kMagic, 1, 8, file->m_file) != 8 || std::fwrite(&length, 4, 1, file->m_file) != 1 ||
        std::fwrite(text.data(), 1, text.size(), file->m_file) != text.size() || std::fflush(file->m_file) != 0)
        return makeError(ErrorCode::Io, path.string() + ": write failed");
    file->m_dataOffset = 12 + int64_t(text.size());
    return file;
}

Result<std::unique_ptr<KldBaseFile>> KldBaseFile::open(const std::filesystem::path &path) {
    std::unique_ptr<KldBaseFile> file(new KldBaseFile());
    file->m_path = path;
    file->m_file = std::fopen(path.c_str(), "rb");
    if (!file->m_file)
        return makeError(ErrorCode::NotFound, path.string() + ": cannot open the KLD base file");
    char magic[8];
    uint32_t length = 0;
    if (std::fread(magic, 1, 8, file->m_file) != 8 || std::memcmp(magic, kMagic, 8) != 0 ||
        std::fread(&length, 4, 1, file->m_file) != 1 || length > (1u << 20))
        return makeError(ErrorCode::Format, path.string() + ": not a lowbit KLD base file");
    std::string text(length, '\0');
    if (std::fread(text.data(), 1, length, file->m_file) != length)
        return makeError(ErrorCode::Format, path.string() + ": truncated header");
    file->m_header = nlohmann::json::parse(text, nullptr, false);
    if (file->m_header.is_discarded() || !file->m_header.is_object())
        return makeError(ErrorCode::Format, path.string() + ": header is not a JSON object");
    file->m_dataOffset = 12 + int64_t(length);
    LOWBIT_CHECK(file->initLayout());
    return file;
}

namespace {
int64_t recordBytes(int64_t positions, int64_t topK) { return 4 + positions * (8 + 8 * topK); }
} // namespace

Status KldBaseFile::writeChunk(int64_t chunk, std::span<const BaseTokenDistribution> positions) {
    if (chunk < 0 || chunk >= m_chunks || int64_t(positions.size()) != m_positions)
        return makeError(ErrorCode::InvalidArgument, m_path.string() + ": chunk record out of range");
    std::vector<char> record;
    auto put = [&](const void *data, size_t bytes) {
        record.insert(record.end(), static_cast<const char *>(data), static_cast<const char *>(data) + bytes);
    };
    put(&kWritten, 4);
    for (const BaseTokenDistribution &d : positions) {
        put(&d.targetLogProb, 4);
        put(&d.logSumExp, 4);
        for (int64_t i = 0; i < m_topK; ++i) {
            const uint32_t id = i < int64_t(d.ids.size()) ? uint32_t(d.ids[size_t(i)]) : 0;
            const float lp = i < int64_t(d.logProbs.size()) ? d.logProbs[size_t(i)] : -INFINITY;
            put(&id, 4);
            put(&lp, 4);
        }
    }
    const int64_t offset = m_dataOffset + chunk * recordBytes(m_positions, m_topK);
    if (fseeko(m_file, off_t(offset), SEEK_SET) != 0 || std::fwrite(record.data(), 1, record.size(), m_file) != record.size() ||
        std::fflush(m_file) != 0)
        return makeError(ErrorCode::Io, m_path.string() + ": write of chunk " + std::to_string(chunk) + " failed");
    return {};
}

Result<std::vector<BaseTokenDistribution>> KldBaseFile::readChunk(int64_t chunk) {
    if (chunk < 0 || chunk >= m_chunks)
        return makeError(ErrorCode::InvalidArgument, m_path.string() + ": no chunk " + std::to_string(chunk));
    std::vector<char> record(static_cast<size_t>(recordBytes(m_positions, m_topK)));
    const int64_t offset = m_dataOffset + chunk * int64_t(record.size());
    uint32_t marker = 0;
    if (fseeko(m_file, off_t(offset), SEEK_SET) != 0 || std::fread(record.data(), 1, record.size(), m_file) != record.size() ||
        (std::memcpy(&marker, record.data(), 4), marker != kWritten))
        return makeError(ErrorCode::Format, m_path.string() + ": chunk " + std::to_string(chunk) +
                                                " was never written (incomplete base run?)");
    std::vector<BaseTokenDistribution> out(static_cast<size_t>(m_positions));
    const char *at = record.data() + 4;
    auto get = [&](void *data) {
        std::memcpy(data, at, 4);
        at += 4;
    };
    for (BaseTokenDistribution &d : out) {
        get(&d.targetLogProb);
        get(&d.logSumExp);
        d.ids.resize(size_t(m_topK));
        d.logProbs.resize(size_t(m_topK));
        for (int64_t i = 0; i < m_topK; ++i) {
            uint32_t id = 0;
            get(&id);
            get(&d.logProbs[size_t(i)]);
            d.ids[size_t(i)] = int32_t(id);
        }
    }
    return out;
}

} // namespace lowbit
