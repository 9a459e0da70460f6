#include "quant/obs_sweep.h"

#include "core/thread_pool.h"
#include "quant/linalg.h"
#include "quant/quant_device.h"

#include <cblas.h>

#include <algorithm>
#include <numeric>

namespace lowbit {

void zeroDeadColumns(std::vector<float> &w, int64_t rows, int64_t cols,
                     const PreparedHessian &prepared) {
    for (int64_t j = 0; j < cols; ++j)
        if (prepared.deadColumns[size_t(j)])
            for (int64_t r = 0; r < rows; ++r)
                w[size_t(r * cols + j)] = 0;
}

std::vector<float> permuteColumns(const std::vector<float> &in, int64_t rows, int64_t cols,
                                  const std::vector<int32_t> &perm) {
    std::vector<float> out(in.size());
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < cols; ++j)
            out[size_t(r * cols + j)] = in[size_t(r * cols + perm[size_t(j)])];
    return out;
}

Result<PreparedHessian> prepareHessian(const std::vector<double> &hessian, int64_t cols,
                                       const HessianOptions &options) {
    if (int64_t(hessian.size()) != cols * cols)
        return makeError(ErrorCode::InvalidArgument,
                         "Hessian has " + std::to_string(hessian.size()) + " entries, expected " +
                             std::to_string(cols) + "^2");
    PreparedHessian p;
    p.cols = cols;
    p.deadColumns.assign(size_t(cols), false);
    p.diagonal.resize(size_t(cols));
    double diagSum = 0;
    for (int64_t j = 0; j < cols; ++j) {
        p.diagonal[size_t(j)] = hessian[size_t(j * cols + j)];
        p.deadColumns[size_t(j)] = p.diagonal[size_t(j)] == 0;
        diagSum += p.deadColumns[size_t(j)] ? 1.0 : p.diagonal[size_t(j)];
    }
    if (options.actOrder) {
        // torch.argsort(diag, descending=True); ties kept in index order for determinism.
        p.permutation.resize(size_t(cols));
        std::iota(p.permutation.begin(), p.permutation.end(), 0);
        std::stable_sort(p.permutation.begin(), p.permutation.end(), [&](int32_t a, int32_t b) {
            return p.diagonal[size_t(a)] > p.diagonal[size_t(b)];
        });
    }
    const double meanDiag = diagSum / double(cols);
    BlasThreads blas(options.threads);
    double damp = options.damp;
    for (int attempt = 0; attempt < 4; ++attempt, damp *= 10) {
        std::vector<float> h(size_t(cols * cols));
        for (int64_t i = 0; i < cols; ++i) {
            const int64_t oi = p.permutation.empty() ? i : p.permutation[size_t(i)];
            for (int64_t j = 0; j < cols; ++j) {
                const int64_t oj = p.permutation.empty() ? j : p.permutation[size_t(j)];
                double v = hessian[size_t(oi * cols + oj)];
                if (oi == oj)
                    v = (p.deadColumns[size_t(oi)] ? 1.0 : v) + damp * meanDiag;
                h[size_t(i * cols + j)] = float(v);
            }
        }
        if (options.device) {
            const Status factored = options.device->choleskyInverseUpper(h, cols);
            if (factored.ok()) {
                p.hinvUpper = std::move(h);
                p.dampUsed = damp;
                return p;
            }
            // cudaCholeskyInverseUpper's Internal "not positive definite" is the one failure
            // more damping can cure; CUDA errors (out of memory, ...) end the attempt.
            if (factored.error().message.find("not positive definite") == std::string::npos)
                return factored.error();
            continue;
        }
        if (options.ldl && reverseCholeskyUpper(h, cols).ok()) {
            p.ldlScale.resize(size_t(cols));
            for (int64_t k = 0; k < cols; ++k)
                p.ldlScale[size_t(k)] = h[size_t(k * cols + k)];
            for (int64_t j = 0; j < cols; ++j) {
                float *row = h.data() + j * cols;
                row[j] = 0;
                for (int64_t k = j + 1; k < cols; ++k)
                    row[k] /= p.ldlScale[size_t(k)];
            }
            p.ldlUpper = std::move(h);
            p.dampUsed = damp;
            return p;
        }
        if (!options.ldl && choleskyInverseUpper(h, cols).ok()) {
            p.hinvUpper = std::move(h);
            p.dampUsed = damp;
            return p;
        }
    }
    return makeError(ErrorCode::Internal, "Hessian is not positive definite even with damping " +
                                              std::to_string(damp / 10));
}

namespace {

// The factor the sweep runs on. Inverse form: m = U, err_j = (w~_j - q_j) / U_jj, updates
// -err_j U_jk. LDL form: m = A, err_j = W_j - q_j (original weights), updates +err_j A_jk.
struct SweepFactor {
    const float *m = nullptr;
    const float *orig = nullptr;  // LDL form: the weights before the sweep
    const float *scale = nullptr; // LDL form: V_jj, for the loss
    bool ldl() const { return orig != nullptr; }
};

// The in-block part of Alg. 1 for rows [r0, r1): columns of the block are transposed into `wt`
// (count x rows, one column contiguous) so the rank-1 updates run along contiguous memory.
double sweepRows(std::vector<float> &w, int64_t cols, const SweepFactor &f, int64_t first,
                 int64_t count, int64_t r0, int64_t r1, SweepQuantizer &quantizer,
                 std::vector<float> &errT, int64_t rows) {
    const int64_t n = r1 - r0;
    std::vector<float> wt(static_cast<size_t>(count * n)), q(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < count; ++i)
            wt[size_t(i * n + r)] = w[size_t((r0 + r) * cols + first + i)];
    const float sign = f.ldl() ? 1.0f : -1.0f;
    double loss = 0;
    for (int64_t i = 0; i < count; ++i) {
        const int64_t j = first + i;
        float *col = wt.data() + i * n;
        quantizer.quantizeColumn(j, r0, r1, col, q.data());
        const float *mrow = f.m + j * cols + first;
        float *err = errT.data() + i * rows + r0;
        if (f.ldl()) {
            const double v = f.scale[j];
            for (int64_t r = 0; r < n; ++r) {
                const double d = (double(col[r]) - q[size_t(r)]) * v;
                loss += d * d / 2; // (w~ - q)^2 / U_jj^2 / 2, U_jj = 1 / V_jj
                err[r] = f.orig[(r0 + r) * cols + j] - q[size_t(r)];
                col[r] = q[size_t(r)];
            }
        } else {
            const float d = mrow[i];
            for (int64_t r = 0; r < n; ++r) {
                const float e = (col[r] - q[size_t(r)]) / d;
                loss += double(e) * double(e) / 2; // (w - q)^2 / d^2 / 2
                err[r] = e;
                col[r] = q[size_t(r)];
            }
        }
        for (int64_t k = i + 1; k < count; ++k) {
            const float h = sign * mrow[k];
            float *target = wt.data() + k * n;
            for (int64_t r = 0; r < n; ++r)
                target[r] += err[r] * h;
        }
    }
    for (int64_t r = 0; r < n; ++r)
        for (int64_t i = 0; i < count; ++i)
            w[size_t((r0 + r) * cols + first + i)] = wt[size_t(i * n + r)];
    return loss;
}

Result<SweepResult> runSweep(std::vector<float> &w, int64_t rows, int64_t cols,
                             const SweepFactor &f, int64_t blockSize, SweepQuantizer &quantizer,
                             int threads, std::stop_token stop) {
    ThreadPool pool(threads);
    const int64_t chunk = std::max<int64_t>(8, (rows + pool.size() * 4 - 1) / (pool.size() * 4));
    const int64_t chunks = (rows + chunk - 1) / chunk;
    std::vector<double> chunkLoss(static_cast<size_t>(chunks), 0.0);
    std::vector<float> errT(size_t(std::min(blockSize, cols) * rows));
    for (int64_t first = 0; first < cols; first += blockSize) {
        if (stop.stop_requested())
            return makeError(ErrorCode::Cancelled, "quantization cancelled");
        const int64_t count = std::min(blockSize, cols - first), last = first + count;
        quantizer.beginBlock(first, count, w.data());
        pool.parallelFor(chunks, [&](int64_t c, int) {
            const int64_t r0 = c * chunk, r1 = std::min(rows, r0 + chunk);
            chunkLoss[size_t(c)] +=
                sweepRows(w, cols, f, first, count, r0, r1, quantizer, errT, rows);
        });
        if (last < cols) { // Alg. 1 line 13: W[:, last:] -= E^T * U[first:last, last:]
            BlasThreads blas(threads);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(rows), int(cols - last),
                        int(count), f.ldl() ? 1.0f : -1.0f, errT.data(), int(rows),
                        f.m + first * cols + last, int(cols), 1.0f, w.data() + last, int(cols));
        }
    }
    SweepResult result;
    for (double l : chunkLoss)
        result.loss += l;
    return result;
}

} // namespace

Result<SweepResult> obsSweep(std::vector<float> &w, int64_t rows, int64_t cols,
                             const std::vector<float> &hinvUpper, int64_t blockSize,
                             SweepQuantizer &quantizer, int threads, std::stop_token stop) {
    if (int64_t(w.size()) != rows * cols || int64_t(hinvUpper.size()) != cols * cols ||
        blockSize <= 0)
        return makeError(ErrorCode::InvalidArgument, "obsSweep: sizes do not match");
    return runSweep(w, rows, cols, {hinvUpper.data()}, blockSize, quantizer, threads, stop);
}

Result<SweepResult> obsSweep(std::vector<float> &w, int64_t rows, int64_t cols,
                             const PreparedHessian &prepared, int64_t blockSize,
                             SweepQuantizer &quantizer, int threads, std::stop_token stop) {
    if (prepared.ldlUpper.empty())
        return obsSweep(w, rows, cols, prepared.hinvUpper, blockSize, quantizer, threads, stop);
    if (int64_t(w.size()) != rows * cols || int64_t(prepared.ldlUpper.size()) != cols * cols ||
        int64_t(prepared.ldlScale.size()) != cols || blockSize <= 0)
        return makeError(ErrorCode::InvalidArgument, "obsSweep: sizes do not match");
    const std::vector<float> orig = w;
    return runSweep(w, rows, cols,
                    {prepared.ldlUpper.data(), orig.data(), prepared.ldlScale.data()}, blockSize,
                    quantizer, threads, stop);
}

} // namespace lowbit
