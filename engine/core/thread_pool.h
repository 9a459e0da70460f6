// ThreadPool: a fixed set of workers running parallelFor loops. The calling thread takes part,
// so a pool of N threads has N-1 workers. parallelFor calls must not overlap on one pool.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lowbit {

class ThreadPool {
public:
    explicit ThreadPool(int threads); // threads <= 0: std::thread::hardware_concurrency()
    ~ThreadPool();
    ThreadPool(const ThreadPool &) = delete;
    ThreadPool &operator=(const ThreadPool &) = delete;

    int size() const { return int(m_workers.size()) + 1; }

    // Calls task(i, threadIndex) for every i in [0, count), spread over the threads; returns when
    // all are done. threadIndex is in [0, size()) and stable within one call (for scratch buffers).
    void parallelFor(int64_t count, const std::function<void(int64_t, int)> &task);

private:
    void workerLoop(int threadIndex);
    void runTasks(int threadIndex);

    std::vector<std::thread> m_workers;
    std::mutex m_mutex;
    std::condition_variable m_wake;
    std::condition_variable m_done;
    const std::function<void(int64_t, int)> *m_task = nullptr;
    int64_t m_count = 0;
    std::atomic<int64_t> m_next{0};
    uint64_t m_generation = 0;
    int m_busy = 0;
    bool m_stop = false;
};

} // namespace lowbit
