// SlurmClient without a cluster: #SBATCH directives, array-range compaction, Slurm's state words
// and tool output (samples copied from slurm-wlm 22.05's squeue/scontrol/sacct), detect() on a
// folder without Slurm, and the exact argument vectors handed to stand-in tools (shell scripts
// that record their arguments and print canned answers).
#include "sweep/slurm_client.h"

#include "temp_dir.h"

#include <QtTest>

#include <fstream>
#include <sys/stat.h>

using namespace lowbit;
using namespace lowbit::sweep;
using lowbit::test::TempDir;

namespace {

void writeFile(const std::filesystem::path &path, const std::string &text,
               bool executable = false) {
    std::ofstream(path, std::ios::binary) << text;
    if (executable)
        ::chmod(path.c_str(), 0755);
}

std::string readFile(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// A stand-in for a Slurm tool: writes each argument on its own line to NAME.args, prints
// `stdoutText`, `stderrText` to stderr, exits with `exitCode`.
void fakeTool(const std::filesystem::path &dir, const std::string &name,
              const std::string &stdoutText, int exitCode = 0, const std::string &stderrText = {}) {
    writeFile(dir / (name + ".out"), stdoutText);
    writeFile(dir / (name + ".err"), stderrText);
    const std::string base = (dir / name).string();
    writeFile(dir / name,
              "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '" + base +
                  ".args'\ncat '" + base + ".out'\ncat '" + base + ".err' >&2\nexit " +
                  std::to_string(exitCode) + "\n",
              true);
}

void fakeCluster(const std::filesystem::path &dir) {
    for (const char *tool : {"sbatch", "squeue", "scontrol", "scancel"})
        fakeTool(dir, tool, "");
}

std::vector<std::pair<int, SlurmTaskState>> statesOf(const std::vector<SlurmTaskStatus> &tasks) {
    std::vector<std::pair<int, SlurmTaskState>> states;
    for (const auto &task : tasks)
        states.emplace_back(task.arrayIndex, task.state);
    return states;
}

} // namespace

class TestSlurmClient : public QObject {
    Q_OBJECT
private slots:
    void directivesHaveOneLinePerSetField();
    void directivesSkipEmptyFields();
    void arrayRangesAreCompacted();
    void stateWordsMapToTaskStates();
    void squeueLinesOfTheJobBecomeTasks();
    void scontrolRecordsExpandPendingRanges();
    void sacctLinesBecomeTasks();
    void detectFailsWithoutSlurm();
    void submitPassesAnArgumentVector();
    void submitRefusesAScriptWithoutDirectives();
    void submitRefusesLineBreaksAndBadDependencies();
    void submitQuotesTheToolsError();
    void statesMergeSqueueAndScontrol();
    void cancelNamesTheTask();
};

void TestSlurmClient::directivesHaveOneLinePerSetField() {
    ArraySubmission submission;
    submission.jobName = "not in the header";
    submission.resources.partition = "gpu";
    submission.resources.account = "proj42";
    submission.resources.time = "01:30:00";
    submission.resources.gres = "gpu:a100:2";
    submission.resources.cpusPerTask = 8;
    submission.resources.memory = "64G";
    submission.resources.extraDirectives = {"--qos=high", "--constraint=a100"};
    submission.resources.setup = "module load cuda";
    QCOMPARE(SlurmClient::directives(submission), std::string("#SBATCH --partition=gpu\n"
                                                              "#SBATCH --account=proj42\n"
                                                              "#SBATCH --time=01:30:00\n"
                                                              "#SBATCH --gres=gpu:a100:2\n"
                                                              "#SBATCH --cpus-per-task=8\n"
                                                              "#SBATCH --mem=64G\n"
                                                              "#SBATCH --qos=high\n"
                                                              "#SBATCH --constraint=a100\n"));
}

void TestSlurmClient::directivesSkipEmptyFields() {
    ArraySubmission submission; // defaults: time 04:00:00, one CPU
    QCOMPARE(SlurmClient::directives(submission),
             std::string("#SBATCH --time=04:00:00\n#SBATCH --cpus-per-task=1\n"));
    submission.resources.time.clear();
    submission.resources.cpusPerTask = 0;
    QCOMPARE(SlurmClient::directives(submission), std::string());
}

void TestSlurmClient::arrayRangesAreCompacted() {
    QCOMPARE(compactArrayRange({0, 1, 2}), std::string("0-2"));
    QCOMPARE(compactArrayRange({7, 5, 0, 1, 2, 9, 8}), std::string("0-2,5,7-9"));
    QCOMPARE(compactArrayRange({3}), std::string("3"));
    QCOMPARE(compactArrayRange({4, 4, 6, 6}), std::string("4,6"));
    QCOMPARE(compactArrayRange({10, 11, 13, 14, 15, 100}), std::string("10-11,13-15,100"));
    QCOMPARE(compactArrayRange({}), std::string());
}

void TestSlurmClient::stateWordsMapToTaskStates() {
    QCOMPARE(mapSlurmState("PENDING"), SlurmTaskState::Pending);
    QCOMPARE(mapSlurmState("PD"), SlurmTaskState::Pending);
    QCOMPARE(mapSlurmState("REQUEUED"), SlurmTaskState::Pending);
    QCOMPARE(mapSlurmState("RUNNING"), SlurmTaskState::Running);
    QCOMPARE(mapSlurmState("CG"), SlurmTaskState::Running);
    QCOMPARE(mapSlurmState("COMPLETED"), SlurmTaskState::Completed);
    QCOMPARE(mapSlurmState("CANCELLED"), SlurmTaskState::Cancelled);
    QCOMPARE(mapSlurmState("CANCELLED by 0"), SlurmTaskState::Cancelled);
    QCOMPARE(mapSlurmState("CANCELLED+"), SlurmTaskState::Cancelled);
    QCOMPARE(mapSlurmState("FAILED"), SlurmTaskState::Failed);
    QCOMPARE(mapSlurmState("TIMEOUT"), SlurmTaskState::Failed);
    QCOMPARE(mapSlurmState("OUT_OF_MEMORY"), SlurmTaskState::Failed);
    QCOMPARE(mapSlurmState("NODE_FAIL"), SlurmTaskState::Failed);
    QCOMPARE(mapSlurmState(" PREEMPTED\n"), SlurmTaskState::Failed);
    QCOMPARE(mapSlurmState("WHATEVER"), SlurmTaskState::Unknown);
    QCOMPARE(mapSlurmState(""), SlurmTaskState::Unknown);
}

void TestSlurmClient::squeueLinesOfTheJobBecomeTasks() {
    const std::string output = "5|6|PENDING|Dependency\n"
                               "5|0|PENDING|Dependency\n"
                               "4|2|RUNNING|None\n" // another array: ignored
                               "5|2|RUNNING|None\n"
                               "5|N/A|RUNNING|None\n" // not an array task: ignored
                               "garbage\n\n";
    const auto tasks = parseSqueueTasks(output, "5");
    QCOMPARE(tasks.size(), size_t(3));
    QCOMPARE(tasks[0].arrayIndex, 0);
    QCOMPARE(tasks[0].state, SlurmTaskState::Pending);
    QCOMPARE(tasks[0].rawState, std::string("PENDING"));
    QCOMPARE(tasks[0].reason, std::string("Dependency"));
    QCOMPARE(tasks[1].arrayIndex, 2);
    QCOMPARE(tasks[1].state, SlurmTaskState::Running);
    QCOMPARE(tasks[1].reason, std::string()); // "None" is no reason
    QCOMPARE(tasks[2].arrayIndex, 6);
}

void TestSlurmClient::scontrolRecordsExpandPendingRanges() {
    const std::string output =
        "JobId=5 ArrayJobId=5 ArrayTaskId=0,2,5-6 JobName=j.sh UserId=root(0) GroupId=root(0) "
        "JobState=PENDING Reason=Dependency Dependency=afterok:4_*(unfulfilled) ExitCode=0:0\n"
        "JobId=9 ArrayJobId=4 ArrayTaskId=3 JobName=j2.sh JobState=CANCELLED Reason=Resources "
        "ExitCode=0:0\n"
        "JobId=7 ArrayJobId=4 ArrayTaskId=1 JobName=j2.sh JobState=FAILED Reason=NonZeroExitCode "
        "ExitCode=3:0\n"
        "JobId=4 ArrayJobId=4 ArrayTaskId=0 JobName=j2.sh JobState=COMPLETED Reason=None "
        "ExitCode=0:0\n"
        "JobId=8 ArrayJobId=4 ArrayTaskId=4-8:2%1 JobName=j2.sh JobState=PENDING "
        "Reason=JobArrayTaskLimit\n";
    const auto tasks = parseScontrolTasks(output, "4");
    using S = SlurmTaskState;
    const std::vector<std::pair<int, S>> expected = {{0, S::Completed}, {1, S::Failed},
                                                     {3, S::Cancelled}, {4, S::Pending},
                                                     {6, S::Pending},   {8, S::Pending}};
    QCOMPARE(statesOf(tasks), expected);
    QCOMPARE(tasks[0].reason, std::string());
    QCOMPARE(tasks[1].reason, std::string("NonZeroExitCode, exit code 3:0"));
    QCOMPARE(tasks[1].rawState, std::string("FAILED"));
    QCOMPARE(tasks[3].reason, std::string("JobArrayTaskLimit"));

    const auto other = parseScontrolTasks(output, "5");
    QCOMPARE(statesOf(other),
             (std::vector<std::pair<int, S>>{
                 {0, S::Pending}, {2, S::Pending}, {5, S::Pending}, {6, S::Pending}}));
    QVERIFY(parseScontrolTasks("slurm_load_jobs error: Invalid job id specified\n", "4").empty());
}

void TestSlurmClient::sacctLinesBecomeTasks() {
    const std::string output = "12_0|COMPLETED|0:0\n"
                               "12_1|CANCELLED by 0|0:15\n"
                               "12_2|FAILED|2:0\n"
                               "12_[3-4]|PENDING|0:0\n"
                               "13_0|COMPLETED|0:0\n";
    const auto tasks = parseSacctTasks(output, "12");
    using S = SlurmTaskState;
    QCOMPARE(statesOf(tasks), (std::vector<std::pair<int, S>>{{0, S::Completed},
                                                              {1, S::Cancelled},
                                                              {2, S::Failed},
                                                              {3, S::Pending},
                                                              {4, S::Pending}}));
    QCOMPARE(tasks[1].rawState, std::string("CANCELLED"));
    QCOMPARE(tasks[2].reason, std::string("exit code 2:0"));
}

void TestSlurmClient::detectFailsWithoutSlurm() {
    TempDir empty;
    const auto client = SlurmClient::detect(empty.path());
    QVERIFY(!client.ok());
    QCOMPARE(client.error().code, ErrorCode::NotFound);
    const std::string message = client.error().message;
    QVERIFY2(message.starts_with("Slurm not found (no executable sbatch in " +
                                 empty.path().string() + ")"),
             message.c_str());
    QVERIFY2(message.find("use the local backend or install slurm-client") != std::string::npos,
             message.c_str());

    // A folder with only some of the tools is no Slurm either.
    fakeTool(empty.path(), "sbatch", "");
    const auto partial = SlurmClient::detect(empty.path());
    QVERIFY(!partial.ok());
    QVERIFY2(partial.error().message.find("no executable squeue") != std::string::npos,
             partial.error().message.c_str());
}

void TestSlurmClient::submitPassesAnArgumentVector() {
    TempDir dir;
    fakeCluster(dir.path());
    fakeTool(dir.path(), "sbatch", "4711;lowbittest\n");
    ArraySubmission submission;
    submission.jobName = "q4 $(touch pwned); echo";
    submission.script = dir / "task script.sh";
    submission.workDir = dir / "work dir";
    submission.logPattern = dir / "logs/slurm-%A_%a.log";
    submission.indices = {4, 0, 1, 2};
    submission.afterOk = {"17", "18"};
    writeFile(submission.script, "#!/bin/bash\n# lowbit sweep task\n" +
                                     SlurmClient::directives(submission) +
                                     "lowbit run \"spec_${SLURM_ARRAY_TASK_ID}.json\"\n");
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());
    const auto id = client->submitArray(submission);
    QVERIFY2(id.ok(), id.ok() ? "" : id.error().toString().c_str());
    QCOMPARE(*id, std::string("4711"));
    QCOMPARE(readFile(dir / "sbatch.args"),
             "--parsable\n--array=0-2,4\n--job-name=q4 $(touch pwned); echo\n--chdir=" +
                 (dir / "work dir").string() +
                 "\n--output=" + (dir / "logs/slurm-%A_%a.log").string() +
                 "\n--dependency=afterok:17:18\n" + submission.script.string() + "\n");
    QVERIFY(!std::filesystem::exists("pwned"));
    QVERIFY(!std::filesystem::exists(dir / "pwned"));
}

void TestSlurmClient::submitRefusesAScriptWithoutDirectives() {
    TempDir dir;
    fakeCluster(dir.path());
    ArraySubmission submission;
    submission.script = dir / "task.sh";
    submission.indices = {0};
    submission.resources.gres = "gpu:1";
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());

    writeFile(submission.script, "#!/bin/bash\nlowbit run spec.json\n");
    auto id = client->submitArray(submission);
    QVERIFY(!id.ok());
    QCOMPARE(id.error().code, ErrorCode::InvalidArgument);
    QVERIFY2(id.error().message.find("#SBATCH --gres=gpu:1") != std::string::npos,
             id.error().message.c_str());

    // After the first command, sbatch would ignore them.
    writeFile(submission.script, "#!/bin/bash\necho hi\n" + SlurmClient::directives(submission));
    QVERIFY(!client->submitArray(submission).ok());
    QVERIFY(!QFile::exists(QString::fromStdString((dir / "sbatch.args").string())));

    submission.script = dir / "missing.sh";
    id = client->submitArray(submission);
    QVERIFY(!id.ok());
    QCOMPARE(id.error().code, ErrorCode::NotFound);
}

void TestSlurmClient::submitRefusesLineBreaksAndBadDependencies() {
    TempDir dir;
    fakeCluster(dir.path());
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());
    ArraySubmission submission;
    submission.script = dir / "task.sh";
    submission.indices = {0, 1};
    submission.resources.partition = "gpu\nrm -rf /";
    writeFile(submission.script, "#!/bin/bash\n" + SlurmClient::directives(submission));
    auto id = client->submitArray(submission);
    QVERIFY(!id.ok());
    QVERIFY2(id.error().message.find("partition holds a line break") != std::string::npos,
             id.error().message.c_str());

    submission.resources.partition = "gpu";
    writeFile(submission.script, "#!/bin/bash\n" + SlurmClient::directives(submission));
    submission.afterOk = {"12:13"};
    QVERIFY(!client->submitArray(submission).ok());
    submission.afterOk = {};
    submission.indices = {};
    QVERIFY(!client->submitArray(submission).ok());
    submission.indices = {-1};
    QVERIFY(!client->submitArray(submission).ok());
    QVERIFY(!QFile::exists(QString::fromStdString((dir / "sbatch.args").string())));
}

void TestSlurmClient::submitQuotesTheToolsError() {
    TempDir dir;
    fakeCluster(dir.path());
    fakeTool(dir.path(), "sbatch", "", 1, "sbatch: error: Invalid partition name specified\n");
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());
    ArraySubmission submission;
    submission.script = dir / "task.sh";
    submission.indices = {0, 1, 2};
    writeFile(submission.script, "#!/bin/bash\n" + SlurmClient::directives(submission));
    const auto id = client->submitArray(submission);
    QVERIFY(!id.ok());
    const std::string message = id.error().message;
    QVERIFY2(message.starts_with("sbatch --parsable --array=0-2 " + submission.script.string() +
                                 " failed (exit 1): "
                                 "sbatch: error: Invalid partition name specified"),
             message.c_str());

    fakeTool(dir.path(), "sbatch", "Submitted batch job 12\n"); // not --parsable output
    QVERIFY(!client->submitArray(submission).ok());
}

void TestSlurmClient::statesMergeSqueueAndScontrol() {
    TempDir dir;
    fakeCluster(dir.path());
    fakeTool(dir.path(), "squeue", "8|2|RUNNING|None\n8|3|PENDING|Resources\n");
    fakeTool(dir.path(), "scontrol",
             "JobId=8 ArrayJobId=8 ArrayTaskId=3 JobState=PENDING Reason=Resources ExitCode=0:0\n"
             "JobId=10 ArrayJobId=8 ArrayTaskId=2 JobState=RUNNING Reason=None ExitCode=0:0\n"
             "JobId=9 ArrayJobId=8 ArrayTaskId=1 JobState=CANCELLED Reason=None ExitCode=0:15\n"
             "JobId=11 ArrayJobId=8 ArrayTaskId=0 JobState=COMPLETED Reason=None ExitCode=0:0\n");
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());
    const auto tasks = client->arrayStates("8");
    QVERIFY2(tasks.ok(), tasks.ok() ? "" : tasks.error().toString().c_str());
    using S = SlurmTaskState;
    QCOMPARE(statesOf(*tasks),
             (std::vector<std::pair<int, S>>{
                 {0, S::Completed}, {1, S::Cancelled}, {2, S::Running}, {3, S::Pending}}));
    QCOMPARE(readFile(dir / "squeue.args"), std::string("-h\n-r\n-j\n8\n-o\n%F|%K|%T|%r\n"));
    QCOMPARE(readFile(dir / "scontrol.args"), std::string("-o\nshow\njob\n8\n"));

    // Unknown everywhere: a clear NotFound, not an empty list.
    fakeTool(dir.path(), "squeue", "", 1, "slurm_load_jobs error: Invalid job id specified\n");
    fakeTool(dir.path(), "scontrol", "", 1, "slurm_load_jobs error: Invalid job id specified\n");
    const auto gone = client->arrayStates("8");
    QVERIFY(!gone.ok());
    QCOMPARE(gone.error().code, ErrorCode::NotFound);
    // Any other failure is quoted.
    fakeTool(dir.path(), "squeue", "", 1, "squeue: error: Unable to contact slurm controller\n");
    const auto down = client->arrayStates("8");
    QVERIFY(!down.ok());
    QVERIFY2(down.error().message.find("Unable to contact slurm controller") != std::string::npos,
             down.error().message.c_str());
    QVERIFY(!client->arrayStates("8; rm -rf /").ok());
}

void TestSlurmClient::cancelNamesTheTask() {
    TempDir dir;
    fakeCluster(dir.path());
    const auto client = SlurmClient::detect(dir.path());
    QVERIFY(client.ok());
    QVERIFY(client->cancel("31", 4).ok());
    QCOMPARE(readFile(dir / "scontrol.args"), std::string("hold\n31_4\n"));
    QCOMPARE(readFile(dir / "scancel.args"), std::string("31_4\n"));
    fakeTool(dir.path(), "scontrol", "", 1,
             "scontrol: error: Job is no longer pending execution\n");
    QVERIFY(client->cancel("31", 5).ok()); // a running task refuses the hold; scancel still goes
    QVERIFY(client->cancel("31").ok());
    QCOMPARE(readFile(dir / "scancel.args"), std::string("31\n"));
    QVERIFY(!client->cancel("31_4").ok());
    QVERIFY(!client->cancel("31", -1).ok());
    fakeTool(dir.path(), "scancel", "", 1, "scancel: error: Invalid job id 31\n");
    const auto failed = client->cancel("31");
    QVERIFY(!failed.ok());
    QVERIFY2(failed.error().message.find(
                 "scancel 31 failed (exit 1): scancel: error: Invalid job id 31") !=
                 std::string::npos,
             failed.error().message.c_str());
}

QTEST_APPLESS_MAIN(TestSlurmClient)
#include "test_slurm_client.moc"
