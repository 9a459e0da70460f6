// SlurmClient: runs Slurm's command-line tools as child processes with argument vectors
// (posix_spawn, no shell: job names and paths cannot inject commands) and reads their output.
#include "sweep/slurm_client.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

namespace lowbit::sweep {

namespace {

namespace fs = std::filesystem;

// A tool that does not answer in this long is hung (an unreachable slurmctld makes the tools
// retry for MessageTimeout per attempt; this leaves them room for a few).
constexpr int kToolTimeoutMs = 120'000;

struct ToolOutput {
    int exitCode = -1;
    std::string out;
    std::string err;
};

std::string shellQuoted(const std::string &arg) {
    if (!arg.empty() && arg.find_first_of(" \t\n'\"\\$`;&|<>()*?") == std::string::npos)
        return arg;
    std::string quoted = "'";
    for (char c : arg)
        quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return quoted + "'";
}

// "sbatch --parsable --array=0-2 'my job.sh'" for error messages.
std::string commandLine(const std::string &tool, const std::vector<std::string> &args) {
    std::string line = tool;
    for (const auto &arg : args)
        line += ' ' + shellQuoted(arg);
    return line;
}

std::string trimmed(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' '))
        text.pop_back();
    return text;
}

// Reads both pipes until the child closes them (reading one at a time could deadlock when the
// other fills up); kills the child after kToolTimeoutMs.
bool drainPipes(int outFd, int errFd, pid_t pid, ToolOutput &output) {
    pollfd fds[2] = {{outFd, POLLIN, 0}, {errFd, POLLIN, 0}};
    std::string *sinks[2] = {&output.out, &output.err};
    const auto deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(kToolTimeoutMs);
    int open = 2;
    while (open > 0) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) {
            ::kill(pid, SIGKILL);
            return false;
        }
        const int ready = ::poll(fds, 2, static_cast<int>(left.count()));
        if (ready < 0 && errno != EINTR)
            return false;
        for (int i = 0; i < 2 && ready > 0; ++i) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char buffer[4096];
            const ssize_t n = ::read(fds[i].fd, buffer, sizeof buffer);
            if (n > 0) {
                sinks[i]->append(buffer, static_cast<size_t>(n));
            } else if (n == 0 || errno != EINTR) {
                fds[i].fd = -1;
                --open;
            }
        }
    }
    return true;
}

// Runs `tool` (from binDir, or looked up on PATH when binDir is empty) with `args`; stdin is
// /dev/null. An error only when it could not run or hung; a non-zero exit is the caller's call.
Result<ToolOutput> runTool(const fs::path &binDir, const std::string &tool,
                           const std::vector<std::string> &args) {
    const std::string program = binDir.empty() ? tool : (binDir / tool).string();
    std::vector<char *> argv;
    argv.push_back(const_cast<char *>(program.c_str()));
    for (const auto &arg : args)
        argv.push_back(const_cast<char *>(arg.c_str()));
    argv.push_back(nullptr);

    int outPipe[2], errPipe[2];
    if (::pipe2(outPipe, O_CLOEXEC) != 0)
        return makeError(ErrorCode::Io,
                         commandLine(tool, args) + ": pipe: " + std::strerror(errno));
    if (::pipe2(errPipe, O_CLOEXEC) != 0) {
        const int saved = errno;
        ::close(outPipe[0]);
        ::close(outPipe[1]);
        return makeError(ErrorCode::Io,
                         commandLine(tool, args) + ": pipe: " + std::strerror(saved));
    }
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1);
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2);
    pid_t pid = -1;
    const int spawned =
        binDir.empty()
            ? ::posix_spawnp(&pid, program.c_str(), &actions, nullptr, argv.data(), environ)
            : ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(outPipe[1]);
    ::close(errPipe[1]);
    if (spawned != 0) {
        ::close(outPipe[0]);
        ::close(errPipe[0]);
        return makeError(ErrorCode::NotFound, commandLine(tool, args) + ": cannot run " + program +
                                                  ": " + std::strerror(spawned));
    }
    ToolOutput output;
    const bool finished = drainPipes(outPipe[0], errPipe[0], pid, output);
    ::close(outPipe[0]);
    ::close(errPipe[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!finished)
        return makeError(ErrorCode::Io, commandLine(tool, args) + ": no answer after " +
                                            std::to_string(kToolTimeoutMs / 1000) + " s (killed)");
    output.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return output;
}

Error toolError(const std::string &tool, const std::vector<std::string> &args,
                const ToolOutput &output) {
    std::string message =
        commandLine(tool, args) + " failed (exit " + std::to_string(output.exitCode) + ")";
    const std::string err = trimmed(output.err);
    message += err.empty() ? std::string(" with no message") : ": " + err;
    return makeError(ErrorCode::Io, message);
}

bool isJobId(const std::string &id) {
    return !id.empty() && id.size() <= 20 &&
           id.find_first_not_of("0123456789") == std::string::npos;
}

bool isExecutable(const fs::path &path) {
    std::error_code ec;
    return fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

// The folder on PATH holding `tool`, or empty.
fs::path findOnPath(const std::string &tool) {
    const char *path = std::getenv("PATH");
    std::string_view rest = path ? path : "";
    while (!rest.empty()) {
        const size_t colon = rest.find(':');
        const fs::path dir(std::string(rest.substr(0, colon)));
        if (!dir.empty() && isExecutable(dir / tool))
            return dir;
        rest = colon == std::string_view::npos ? std::string_view() : rest.substr(colon + 1);
    }
    return {};
}

// A batch script, read to check its header (scripts are small; a huge one is a mistake).
Result<std::string> readSmallFile(const fs::path &path) {
    constexpr std::uintmax_t kMaxBytes = 16u << 20;
    std::error_code ec;
    if (!fs::is_regular_file(path, ec))
        return makeError(ErrorCode::NotFound, path.string() + ": no such batch script");
    if (fs::file_size(path, ec) > kMaxBytes)
        return makeError(ErrorCode::InvalidArgument,
                         path.string() + ": batch script larger than 16 MiB");
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    text << in.rdbuf();
    if (!in)
        return makeError(ErrorCode::Io, path.string() + ": cannot read the batch script");
    return text.str();
}

// "Invalid job id specified": the job is unknown (never was, or purged after MinJobAge).
bool isUnknownJob(const ToolOutput &output) {
    return output.err.find("Invalid job id") != std::string::npos;
}

} // namespace

Result<SlurmClient> SlurmClient::detect(const fs::path &binDir) {
    for (const char *tool : {"sbatch", "squeue", "scontrol", "scancel"}) {
        if (binDir.empty() ? findOnPath(tool).empty() : !isExecutable(binDir / tool)) {
            const std::string where =
                binDir.empty() ? std::string(tool) + " not on PATH"
                               : "no executable " + std::string(tool) + " in " + binDir.string();
            return makeError(ErrorCode::NotFound,
                             "Slurm not found (" + where +
                                 "); use the local backend or install slurm-client");
        }
    }
    SlurmClient client;
    client.m_binDir = binDir;
    return client;
}

std::string SlurmClient::directives(const ArraySubmission &submission) {
    const SlurmResources &r = submission.resources;
    std::string text;
    const auto line = [&text](const std::string &option, const std::string &value) {
        if (!value.empty())
            text += "#SBATCH --" + option + "=" + value + "\n";
    };
    line("partition", r.partition);
    line("account", r.account);
    line("time", r.time);
    line("gres", r.gres);
    line("cpus-per-task", r.cpusPerTask > 0 ? std::to_string(r.cpusPerTask) : std::string());
    line("mem", r.memory);
    for (const auto &extra : r.extraDirectives)
        text += "#SBATCH " + extra + "\n";
    return text;
}

namespace {

// A field that spans lines would end the #SBATCH block and smuggle in a shell command.
Status checkSingleLine(const ArraySubmission &s) {
    const SlurmResources &r = s.resources;
    std::vector<std::pair<const char *, std::string>> fields = {
        {"job name", s.jobName},
        {"script", s.script.string()},
        {"work folder", s.workDir.string()},
        {"log pattern", s.logPattern.string()},
        {"partition", r.partition},
        {"account", r.account},
        {"time", r.time},
        {"gres", r.gres},
        {"memory", r.memory}};
    for (const auto &extra : r.extraDirectives)
        fields.emplace_back("extra directive", extra);
    for (const auto &[name, value] : fields) {
        if (value.find_first_of("\n\r") != std::string::npos)
            return makeError(ErrorCode::InvalidArgument, std::string("Slurm submission: the ") +
                                                             name + " holds a line break: '" +
                                                             value + "'");
    }
    return {};
}

// The script must carry `directives` in its header: sbatch reads #SBATCH lines only before the
// first command.
Status checkScriptHeader(const fs::path &script, const std::string &directives) {
    const auto text = readSmallFile(script);
    if (!text)
        return text.error();
    if (directives.empty())
        return {};
    const size_t at = text->find(directives);
    const std::string_view before = std::string_view(*text).substr(0, at);
    bool onlyComments = at != std::string::npos && (at == 0 || text->at(at - 1) == '\n');
    for (size_t start = 0; onlyComments && start < before.size();) {
        const size_t end = std::min(before.find('\n', start), before.size());
        const std::string_view line = before.substr(start, end - start);
        onlyComments =
            line.find_first_not_of(" \t\r") == std::string_view::npos || line.front() == '#';
        start = end + 1;
    }
    if (!onlyComments)
        return makeError(ErrorCode::InvalidArgument,
                         script.string() +
                             ": the batch script's header (before its first command) lacks its "
                             "#SBATCH directives; write SlurmClient::directives() there:\n" +
                             directives);
    return {};
}

} // namespace

Result<std::string> SlurmClient::submitArray(const ArraySubmission &submission) const {
    if (submission.indices.empty())
        return makeError(ErrorCode::InvalidArgument,
                         "Slurm submission '" + submission.jobName + "': no array indices");
    for (int index : submission.indices) {
        if (index < 0)
            return makeError(ErrorCode::InvalidArgument, "Slurm submission '" + submission.jobName +
                                                             "': negative array index " +
                                                             std::to_string(index));
    }
    for (const auto &id : submission.afterOk) {
        if (!isJobId(id))
            return makeError(ErrorCode::InvalidArgument, "Slurm submission '" + submission.jobName +
                                                             "': dependency '" + id +
                                                             "' is no job id");
    }
    LOWBIT_CHECK(checkSingleLine(submission));
    LOWBIT_CHECK(checkScriptHeader(submission.script, directives(submission)));

    std::vector<std::string> args = {"--parsable",
                                     "--array=" + compactArrayRange(submission.indices)};
    if (!submission.jobName.empty())
        args.push_back("--job-name=" + submission.jobName);
    if (!submission.workDir.empty())
        args.push_back("--chdir=" + submission.workDir.string());
    if (!submission.logPattern.empty())
        args.push_back("--output=" + submission.logPattern.string());
    if (!submission.afterOk.empty()) {
        std::string dependency = "--dependency=afterok";
        for (const auto &id : submission.afterOk)
            dependency += ":" + id;
        args.push_back(dependency);
    }
    args.push_back(submission.script.string());

    LOWBIT_TRY(ToolOutput output, runTool(m_binDir, "sbatch", args));
    if (output.exitCode != 0)
        return toolError("sbatch", args, output);
    // --parsable prints "JOBID" or "JOBID;CLUSTER".
    const std::string printed = trimmed(output.out);
    const std::string id = printed.substr(0, printed.find(';'));
    if (!isJobId(id))
        return makeError(ErrorCode::Format, commandLine("sbatch", args) +
                                                ": expected a job id, got '" + printed + "'");
    return id;
}

Result<std::vector<SlurmTaskStatus>> SlurmClient::arrayStates(const std::string &jobId) const {
    if (!isJobId(jobId))
        return makeError(ErrorCode::InvalidArgument, "Slurm: '" + jobId + "' is no job id");
    // Live tasks (pending ones expanded by -r) from squeue.
    const std::vector<std::string> squeueArgs = {"-h", "-r", "-j", jobId, "-o", "%F|%K|%T|%r"};
    LOWBIT_TRY(ToolOutput live, runTool(m_binDir, "squeue", squeueArgs));
    if (live.exitCode != 0 && !isUnknownJob(live))
        return toolError("squeue", squeueArgs, live);
    std::map<int, SlurmTaskStatus> byIndex;
    for (auto &task : parseSqueueTasks(live.out, jobId))
        byIndex.emplace(task.arrayIndex, std::move(task));

    // Finished tasks: slurmctld keeps them for MinJobAge, scontrol shows them.
    const std::vector<std::string> scontrolArgs = {"-o", "show", "job", jobId};
    LOWBIT_TRY(ToolOutput records, runTool(m_binDir, "scontrol", scontrolArgs));
    if (records.exitCode != 0 && !isUnknownJob(records))
        return toolError("scontrol", scontrolArgs, records);
    for (auto &task : parseScontrolTasks(records.out, jobId))
        byIndex.emplace(task.arrayIndex, std::move(task));

    // Purged from slurmctld: only the accounting database still knows (where there is one).
    if (byIndex.empty() &&
        (m_binDir.empty() ? !findOnPath("sacct").empty() : isExecutable(m_binDir / "sacct"))) {
        const std::vector<std::string> sacctArgs = {
            "-n", "-P", "-X", "-j", jobId, "-o", "JobID,State,ExitCode"};
        auto history = runTool(m_binDir, "sacct", sacctArgs);
        if (history && history->exitCode == 0) {
            for (auto &task : parseSacctTasks(history->out, jobId))
                byIndex.emplace(task.arrayIndex, std::move(task));
        }
    }
    if (byIndex.empty())
        return makeError(ErrorCode::NotFound,
                         "Slurm knows no array job " + jobId +
                             " (neither squeue nor scontrol list it; finished jobs are "
                             "forgotten after MinJobAge unless accounting is set up)");
    std::vector<SlurmTaskStatus> tasks;
    for (auto &[index, task] : byIndex)
        tasks.push_back(std::move(task));
    return tasks;
}

Status SlurmClient::cancel(const std::string &jobId, std::optional<int> arrayIndex) const {
    if (!isJobId(jobId))
        return makeError(ErrorCode::InvalidArgument, "Slurm: '" + jobId + "' is no job id");
    if (arrayIndex && *arrayIndex < 0)
        return makeError(ErrorCode::InvalidArgument,
                         "Slurm: negative array index " + std::to_string(*arrayIndex));
    const std::vector<std::string> args = {arrayIndex ? jobId + "_" + std::to_string(*arrayIndex)
                                                      : jobId};
    if (arrayIndex) {
        // A task still pending inside its array's bundled record would simply vanish on scancel
        // (no record says CANCELLED unless accounting exists); holding it first splits it into
        // a record of its own. Best effort: a running or finished task refuses the hold.
        (void)runTool(m_binDir, "scontrol", {"hold", args.front()});
    }
    LOWBIT_TRY(ToolOutput output, runTool(m_binDir, "scancel", args));
    if (output.exitCode != 0)
        return toolError("scancel", args, output);
    return {};
}

} // namespace lowbit::sweep
