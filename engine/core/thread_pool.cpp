#include "core/thread_pool.h"

namespace lowbit {

ThreadPool::ThreadPool(int threads) {
    if (threads <= 0)
        threads = int(std::max(1u, std::thread::hardware_concurrency()));
    for (int i = 1; i < threads; ++i)
        m_workers.emplace_back([this, i] { workerLoop(i); });
}

ThreadPool::~ThreadPool() {
    {
        std::lock_guard lock(m_mutex);
        m_stop = true;
    }
    m_wake.notify_all();
    for (auto &w : m_workers)
        w.join();
}

void ThreadPool::runTasks(int threadIndex) {
    for (int64_t i = m_next.fetch_add(1, std::memory_order_relaxed); i < m_count;
         i = m_next.fetch_add(1, std::memory_order_relaxed))
        (*m_task)(i, threadIndex);
}

void ThreadPool::workerLoop(int threadIndex) {
    uint64_t seen = 0;
    for (;;) {
        {
            std::unique_lock lock(m_mutex);
            m_wake.wait(lock, [&] { return m_stop || m_generation != seen; });
            if (m_stop)
                return;
            seen = m_generation;
        }
        runTasks(threadIndex);
        {
            std::lock_guard lock(m_mutex);
            if (--m_busy == 0)
                m_done.notify_one();
        }
    }
}

void ThreadPool::parallelFor(int64_t count, const std::function<void(int64_t, int)> &task) {
    if (count <= 0)
        return;
    if (m_workers.empty() || count == 1) {
        for (int64_t i = 0; i < count; ++i)
            task(i, 0);
        return;
    }
    {
        std::lock_guard lock(m_mutex);
        m_task = &task;
        m_count = count;
        m_next.store(0, std::memory_order_relaxed);
        m_busy = int(m_workers.size());
        ++m_generation;
    }
    m_wake.notify_all();
    runTasks(0);
    std::unique_lock lock(m_mutex);
    m_done.wait(lock, [&] { return m_busy == 0; });
    m_task = nullptr;
}

} // namespace lowbit
