#include "pipeline/job_runner.h"

namespace lowbit {

namespace {

// Forwards a job's progress to the runner's listener, tagged with the run.
class EventProgress final : public ProgressSink {
public:
    EventProgress(int64_t runId, std::function<void(const JobEvent &)> emit)
        : m_runId(runId), m_emit(std::move(emit)) {}
    void report(const ProgressEvent &event) override {
        JobEvent out;
        out.kind = JobEvent::Kind::Progress;
        out.runId = m_runId;
        out.progress = event;
        m_emit(out);
    }

private:
    int64_t m_runId;
    std::function<void(const JobEvent &)> m_emit;
};

} // namespace

JobRunner::JobRunner(std::filesystem::path database, PipelineContext context, Listener listener)
    : m_database(std::move(database)), m_context(std::move(context)),
      m_listener(std::move(listener)) {}

JobRunner::~JobRunner() {
    {
        std::lock_guard lock(m_mutex);
        for (auto &[device, worker] : m_workers) {
            worker->currentStop.request_stop();
            worker->thread.request_stop();
        }
    }
    m_changed.notify_all();
    for (auto &[device, worker] : m_workers)
        if (worker->thread.joinable())
            worker->thread.join();
}

void JobRunner::emit(const JobEvent &event) {
    if (m_listener)
        m_listener(event);
}

Result<Submission> JobRunner::submit(const JobSpec &spec, bool force) {
    Submission submission;
    {
        std::lock_guard lock(m_storeMutex);
        if (!m_store) {
            LOWBIT_TRY(RunStore store, RunStore::open(m_database));
            m_store.emplace(std::move(store));
        }
        LOWBIT_TRY(submission, submitJob(*m_store, spec, m_context, force));
    }
    if (submission.runId)
        LOWBIT_CHECK(enqueue(*submission.runId, spec.device));
    return submission;
}

Status JobRunner::resume(int64_t runId) {
    std::string device;
    {
        std::lock_guard lock(m_storeMutex);
        if (!m_store) {
            LOWBIT_TRY(RunStore store, RunStore::open(m_database));
            m_store.emplace(std::move(store));
        }
        LOWBIT_TRY(RunRecord run, m_store->run(runId));
        if (run.status != RunStatus::Queued && !isResumable(run.status))
            return makeError(ErrorCode::InvalidArgument, "run " + std::to_string(runId) + " is " +
                                                             runStatusName(run.status) +
                                                             ", not resumable");
        device = run.device;
    }
    return enqueue(runId, device);
}

Status JobRunner::enqueue(int64_t runId, const std::string &device) {
    {
        std::lock_guard lock(m_mutex);
        auto &worker = m_workers[device];
        if (!worker) {
            worker = std::make_unique<Worker>();
            Worker *raw = worker.get();
            raw->thread = std::jthread([this, raw](std::stop_token stop) { work(stop, raw); });
        }
        worker->queue.push_back(runId);
    }
    m_changed.notify_all();
    JobEvent event;
    event.kind = JobEvent::Kind::Queued;
    event.runId = runId;
    emit(event);
    return {};
}

void JobRunner::cancel(int64_t runId) {
    bool dropped = false;
    {
        std::lock_guard lock(m_mutex);
        for (auto &[device, worker] : m_workers) {
            if (worker->current == runId)
                worker->currentStop.request_stop();
            const auto it = std::find(worker->queue.begin(), worker->queue.end(), runId);
            if (it != worker->queue.end()) {
                worker->queue.erase(it);
                dropped = true;
            }
        }
    }
    if (dropped) {
        {
            std::lock_guard lock(m_storeMutex);
            if (m_store)
                (void)m_store->finishRun(runId, RunStatus::Cancelled,
                                         "cancelled before it started");
        }
        m_changed.notify_all();
        JobEvent event;
        event.kind = JobEvent::Kind::Finished;
        event.runId = runId;
        event.status = RunStatus::Cancelled;
        event.message = "cancelled before it started";
        emit(event);
    }
}

void JobRunner::work(std::stop_token stop, Worker *worker) {
    std::optional<RunStore> store;
    for (;;) {
        int64_t runId = 0;
        std::stop_token jobStop;
        {
            std::unique_lock lock(m_mutex);
            m_changed.wait(lock, stop, [&] { return !worker->queue.empty(); });
            if (stop.stop_requested())
                return;
            runId = worker->queue.front();
            worker->queue.pop_front();
            worker->current = runId;
            worker->currentStop = std::stop_source();
            jobStop = worker->currentStop.get_token();
        }
        JobEvent started;
        started.kind = JobEvent::Kind::Started;
        started.runId = runId;
        emit(started);
        JobEvent finished;
        finished.kind = JobEvent::Kind::Finished;
        finished.runId = runId;
        if (!store) {
            auto opened = RunStore::open(m_database);
            if (opened.ok())
                store.emplace(std::move(opened).value());
            else
                finished.message = opened.error().toString();
        }
        if (store) {
            // The runner's own stop (destruction) also stops the job.
            std::stop_callback onShutdown(stop, [worker] { worker->currentStop.request_stop(); });
            EventProgress progress(runId, [this](const JobEvent &event) { emit(event); });
            auto outcome = executeRun(*store, runId, m_context, progress, jobStop);
            if (outcome.ok()) {
                finished.status = outcome->status;
                finished.message = outcome->error;
            } else {
                finished.status = RunStatus::Failed;
                finished.message = outcome.error().toString();
            }
        } else {
            finished.status = RunStatus::Failed;
        }
        emit(finished);
        {
            std::lock_guard lock(m_mutex);
            worker->current.reset();
        }
        m_changed.notify_all();
    }
}

void JobRunner::waitUntilIdle() {
    std::unique_lock lock(m_mutex);
    m_changed.wait(lock, [&] {
        for (const auto &[device, worker] : m_workers)
            if (!worker->queue.empty() || worker->current)
                return false;
        return true;
    });
}

size_t JobRunner::activeJobs() const {
    std::lock_guard lock(m_mutex);
    size_t count = 0;
    for (const auto &[device, worker] : m_workers)
        count += worker->queue.size() + (worker->current ? 1 : 0);
    return count;
}

} // namespace lowbit
