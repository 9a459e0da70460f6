// lowbit sweep: a grid of runs (sweep spec) planned into tasks, run here or as Slurm job arrays,
// followed, and collected into the run store. See docs/SWEEPS.md.
#include "cli_commands.h"
#include "cli_store.h"
#include "cli_support.h"

#include "sweep/sweep_collect.h"
#include "sweep/sweep_local.h"
#include "sweep/sweep_slurm.h"

#include <nlohmann/json.hpp>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <thread>

namespace lowbit::cli {

using namespace lowbit::sweep;
using nlohmann::json;

namespace {

std::atomic<bool> g_sweepInterrupted = false;

extern "C" void onSweepInterrupt(int) {
    g_sweepInterrupted = true;
}

Result<BackendKind> backendArg(const Args &args, const SweepPlan &plan) {
    const auto backend = args.value("backend");
    if (!backend) // a sweep that went to Slurm stays there for status, cancel, retry
        return plan.submissions.empty() ? plan.spec.backend : BackendKind::Slurm;
    if (*backend == "local")
        return BackendKind::Local;
    if (*backend == "slurm")
        return BackendKind::Slurm;
    return makeError(ErrorCode::InvalidArgument,
                     "--backend: must be local or slurm, got '" + *backend + "'");
}

Result<SlurmClient> slurmClient() {
    auto client = SlurmClient::detect();
    if (!client.ok())
        return makeError(
            client.error().code,
            client.error().message +
                " (no Slurm here: run the sweep on this machine with --backend local)");
    return client;
}

std::filesystem::path dataDirFor(const Args &args, const SweepPlan &plan) {
    if (args.value("data") || plan.spec.dataDir.empty())
        return dataDirArg(args);
    return plan.spec.dataDir;
}

// The executable the cluster nodes run: --lowbit, the spec's, else this very binary.
std::filesystem::path lowbitExecutable(const Args &args, const SweepPlan &plan) {
    if (auto path = args.value("lowbit"))
        return std::filesystem::absolute(*path);
    if (!plan.spec.slurm.lowbit.empty())
        return plan.spec.slurm.lowbit;
    std::error_code ec;
    return std::filesystem::read_symlink("/proc/self/exe", ec);
}

Result<std::vector<int>> taskArgs(const Args &args) {
    std::vector<int> indices;
    for (const std::string &text : args.values("task")) {
        char *end = nullptr;
        const long value = std::strtol(text.c_str(), &end, 10);
        if (text.empty() || *end || value < 0)
            return makeError(ErrorCode::InvalidArgument,
                             "--task: '" + text + "' is not a task index (see `sweep plan`)");
        indices.push_back(int(value));
    }
    return indices;
}

int printPlan(const SweepPlan &plan, BackendKind backend) {
    std::printf("sweep %s: %zu tasks in %s\n", plan.spec.name.c_str(), plan.tasks.size(),
                plan.spec.output.c_str());
    for (const SweepTask &task : plan.tasks) {
        std::string deps;
        for (int d : task.dependsOn)
            deps += (deps.empty() ? "after " : ",") + std::to_string(d);
        std::printf("%4d  %-8s  %-10s  %s\n", task.index, stageName(task.stage), deps.c_str(),
                    task.label.c_str());
    }
    if (backend == BackendKind::Slurm)
        std::printf(
            "\n%s",
            batchScript(plan,
                        stageSubmission(plan, StageKind::Evaluate,
                                        plan.stageIndices(StageKind::Evaluate), {"<quantize job>"}),
                        plan.spec.slurm.lowbit.empty() ? "lowbit" : plan.spec.slurm.lowbit)
                .c_str());
    return 0;
}

// Runs the tasks in the foreground; Ctrl-C stops the running task (what it committed stays, and
// submit or retry continues from there).
int runHere(const Args &args, const SweepPlan &plan, const std::vector<int> &indices) {
    StderrProgress progress;
    std::stop_source stop;
    g_sweepInterrupted = false;
    auto previous = std::signal(SIGINT, onSweepInterrupt);
    std::atomic<bool> finished = false;
    std::thread watcher([&] {
        while (!finished) {
            if (g_sweepInterrupted)
                stop.request_stop();
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
    });
    const auto outcomes = runLocal(plan, cliPipelineContext(dataDirFor(args, plan)), progress,
                                   stop.get_token(), indices);
    finished = true;
    watcher.join();
    std::signal(SIGINT, previous);
    progress.finish();
    int failed = 0;
    for (const LocalOutcome &outcome : outcomes) {
        const SweepTask &task = plan.tasks[size_t(outcome.index)];
        std::printf("%4d  %-8s  %s\n", outcome.index, outcome.status.ok() ? "done" : "failed",
                    task.label.c_str());
        if (!outcome.status.ok()) {
            ++failed;
            std::fprintf(stderr, "lowbit: %s\n", outcome.status.error().message.c_str());
        }
    }
    if (failed)
        std::fprintf(stderr, "lowbit: %d task(s) failed; `lowbit sweep retry` runs them again\n",
                     failed);
    return failed ? 1 : 0;
}

int submit(const Args &args, SweepPlan &plan, BackendKind backend, std::vector<int> indices) {
    if (auto written = writePlan(plan); !written.ok())
        return fail(written.error());
    if (backend == BackendKind::Local)
        return runHere(args, plan, indices);
    auto client = slurmClient();
    if (!client)
        return fail(client.error());
    auto submitted = submitToSlurm(plan, *client, lowbitExecutable(args, plan), indices);
    if (!submitted)
        return fail(submitted.error());
    for (const SweepSubmission &s : *submitted)
        std::printf("%s  stage %d (%s)  %zu task(s)\n", s.jobId.c_str(), s.stage,
                    stageName(StageKind(s.stage)), s.indices.size());
    return 0;
}

int status(const Args &args, const SweepPlan &plan, BackendKind backend) {
    std::optional<SlurmClient> client;
    if (backend == BackendKind::Slurm && !plan.submissions.empty()) {
        auto detected = slurmClient();
        if (!detected)
            return fail(detected.error());
        client = *detected;
    }
    auto states = sweepStatus(plan, client ? &*client : nullptr);
    if (!states)
        return fail(states.error());
    json out = json::array();
    for (const SweepTaskStatus &s : *states) {
        const SweepTask &task = plan.tasks[size_t(s.index)];
        if (args.has("json"))
            out.push_back({{"index", s.index},
                           {"stage", stageName(task.stage)},
                           {"label", task.label},
                           {"state", s.state},
                           {"detail", s.detail},
                           {"job", s.jobId}});
        else
            std::printf("%4d  %-13s  %-14s  %s%s%s\n", s.index, s.state.c_str(), s.jobId.c_str(),
                        task.label.c_str(), s.detail.empty() ? "" : "  ", s.detail.c_str());
    }
    if (args.has("json"))
        std::printf("%s\n", out.dump(2).c_str());
    return 0;
}

int collect(const Args &args, const SweepPlan &plan) {
    auto store = openStoreArg(args);
    if (!store)
        return fail(store.error());
    auto report = collectSweep(plan, *store);
    if (!report)
        return fail(report.error());
    const MergeReport &m = report->merged;
    std::printf("collected %d task database(s) into %s: %d run(s) imported, %d already there, "
                "%d unfinished left out, %d artifact(s); %d task(s) without results yet\n",
                report->databases, store->path().c_str(), m.runsImported, m.runsPresent,
                m.runsUnfinished, m.artifactsImported, report->missing);
    for (const std::string &conflict : m.conflicts)
        std::fprintf(stderr, "lowbit: conflict: %s\n", conflict.c_str());
    for (const std::string &error : report->unreadable)
        std::fprintf(stderr, "lowbit: not collected: %s\n", error.c_str());
    return m.conflicts.empty() && report->unreadable.empty() ? 0 : 1;
}

int cancel(const Args &args, const SweepPlan &plan, BackendKind backend) {
    if (backend == BackendKind::Local)
        return fail("sweep cancel: the local backend runs in the foreground (stop it with Ctrl-C)");
    auto client = slurmClient();
    if (!client)
        return fail(client.error());
    auto indices = taskArgs(args);
    if (!indices)
        return fail(indices.error());
    if (indices->empty()) {
        const Status cancelled = cancelSweep(plan, *client);
        return cancelled.ok() ? 0 : fail(cancelled.error());
    }
    for (int index : *indices)
        if (auto cancelled = cancelSweep(plan, *client, index); !cancelled.ok())
            return fail(cancelled.error());
    return 0;
}

int retry(const Args &args, SweepPlan &plan, BackendKind backend) {
    auto indices = taskArgs(args);
    if (!indices)
        return fail(indices.error());
    if (backend == BackendKind::Local)
        return submit(args, plan, backend, *indices); // done tasks are skipped
    auto client = slurmClient();
    if (!client)
        return fail(client.error());
    auto submitted = retrySweep(plan, *client, lowbitExecutable(args, plan), *indices);
    if (!submitted)
        return fail(submitted.error());
    if (submitted->empty())
        std::printf("nothing to retry: every task is done, pending or running\n");
    for (const SweepSubmission &s : *submitted)
        std::printf("%s  stage %d (%s)  %zu task(s)\n", s.jobId.c_str(), s.stage,
                    stageName(StageKind(s.stage)), s.indices.size());
    return 0;
}

int exec(const Args &args) {
    if (args.positionals().size() != 3)
        return fail("sweep exec: give MANIFEST.json and a task index");
    auto plan = readManifest(args.positionals()[1]);
    if (!plan)
        return fail(plan.error());
    char *end = nullptr;
    const long index = std::strtol(args.positionals()[2].c_str(), &end, 10);
    if (*end || args.positionals()[2].empty())
        return fail("sweep exec: '" + args.positionals()[2] + "' is not a task index");
    StderrProgress progress;
    const Status status =
        executeSweepTask(*plan, int(index), cliPipelineContext(dataDirFor(args, *plan)), progress);
    progress.finish();
    if (!status.ok())
        return fail(status.error());
    return 0;
}

} // namespace

int runSweep(const std::vector<std::string> &argv) {
    auto args = Args::parse(argv, {"backend", "db", "data", "task", "lowbit"}, {"json"});
    if (!args)
        return fail(args.error());
    const auto &positionals = args->positionals();
    if (positionals.empty())
        return fail("sweep: give plan|submit|status|collect|cancel|retry SWEEP.json");
    const std::string &action = positionals.front();
    if (action == "exec")
        return exec(*args);
    if (positionals.size() != 2)
        return fail("sweep " + action + ": give one SWEEP.json (or the sweep's manifest.json)");
    auto plan = loadSweep(positionals[1]);
    if (!plan)
        return fail(plan.error());
    auto backend = backendArg(*args, *plan);
    if (!backend)
        return fail(backend.error());
    if (action == "plan") {
        if (auto written = writePlan(*plan); !written.ok())
            return fail(written.error());
        return printPlan(*plan, *backend);
    }
    if (action == "submit") {
        auto indices = taskArgs(*args);
        if (!indices)
            return fail(indices.error());
        return submit(*args, *plan, *backend, *indices);
    }
    if (action == "status")
        return status(*args, *plan, *backend);
    if (action == "collect")
        return collect(*args, *plan);
    if (action == "cancel")
        return cancel(*args, *plan, *backend);
    if (action == "retry")
        return retry(*args, *plan, *backend);
    return fail("sweep: unknown action '" + action +
                "' (plan, submit, status, collect, cancel, retry)");
}

} // namespace lowbit::cli
