// JobRunner: runs jobs on engine threads, Qt-free. One worker thread per device runs that
// device's queue one job at a time (a CPU job and a cuda:0 job may run side by side). Each worker
// has its own RunStore connection to the same database.
//
// Events (queued, started, progress, finished) go to the listener on the thread that caused them
// (the submitting thread for "queued", a worker for the rest; workers of different devices may
// call it at the same time, so it must be thread-safe); a GUI forwards them through a queued
// signal and throttles progress there. The listener may call cancel(). cancel() requests the
// running job's stop token (tasks check it between batches, so it takes effect within about a
// second) or drops a queued job (marked cancelled). The destructor cancels everything and joins.
#pragma once

#include "core/progress.h"
#include "core/result.h"
#include "pipeline/pipeline_context.h"
#include "pipeline/run_executor.h"
#include "run_records.h"

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>

namespace lowbit {

struct JobEvent {
    enum class Kind { Queued, Started, Progress, Finished };
    Kind kind = Kind::Queued;
    int64_t runId = 0;
    ProgressEvent progress;               // Progress
    RunStatus status = RunStatus::Queued; // Finished: done, failed, cancelled
    std::string message;                  // Finished: the error, if any
};

class JobRunner {
public:
    using Listener = std::function<void(const JobEvent &event)>;

    JobRunner(std::filesystem::path database, PipelineContext context, Listener listener = {});
    ~JobRunner();
    JobRunner(const JobRunner &) = delete;
    JobRunner &operator=(const JobRunner &) = delete;

    // Validates and stores the job (see submitJob) and queues it on its device.
    Result<Submission> submit(const JobSpec &spec, bool force = false);
    // Queues an existing queued or resumable run.
    Status resume(int64_t runId);
    void cancel(int64_t runId);
    // Blocks until every queue is empty and no job runs.
    void waitUntilIdle();
    // Runs queued or running.
    size_t activeJobs() const;

private:
    struct Worker {
        std::deque<int64_t> queue;
        std::optional<int64_t> current;
        std::stop_source currentStop;
        std::jthread thread;
    };
    Status enqueue(int64_t runId, const std::string &device);
    void work(std::stop_token stop, Worker *worker);
    void emit(const JobEvent &event);

    std::filesystem::path m_database;
    PipelineContext m_context;
    Listener m_listener;
    mutable std::mutex m_mutex;
    std::condition_variable_any m_changed;
    std::map<std::string, std::unique_ptr<Worker>> m_workers; // by device
    std::mutex m_storeMutex; // guards m_store (submissions come from any thread)
    std::optional<RunStore> m_store;
};

} // namespace lowbit
