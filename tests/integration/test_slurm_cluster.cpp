// SlurmClient against a real single-node Slurm cluster (scripts/slurm-up.sh): a job array runs
// every task, an afterok array starts only after it (it reads the first array's files), one
// cancelled task reads as Cancelled, a task exiting 3 as Failed with its exit code, and the
// cluster is torn down whatever happens. Skips without the Slurm packages or root, fails then
// under LOWBIT_REQUIRE_SLURM=1.
#include "sweep/slurm_client.h"

#include "slurm_test_cluster.h"
#include "temp_dir.h"

#include <QtTest>

#include <chrono>
#include <fstream>
#include <thread>

using namespace lowbit;
using namespace lowbit::sweep;
using lowbit::test::TempDir;

namespace {

std::string readFile(const std::filesystem::path &path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string describe(const std::vector<SlurmTaskStatus> &tasks) {
    std::string text;
    for (const auto &task : tasks)
        text += std::to_string(task.arrayIndex) + ":" + task.rawState + "(" + task.reason + ") ";
    return text;
}

// Polls arrayStates until `done` holds (a generous bound against a wedged cluster, not a timing
// check); returns the last states seen.
template <typename Predicate>
std::vector<SlurmTaskStatus> waitFor(const SlurmClient &client, const std::string &jobId,
                                     Predicate done) {
    std::vector<SlurmTaskStatus> tasks;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
        auto states = client.arrayStates(jobId);
        if (states.ok()) {
            tasks = std::move(states).value();
            if (done(tasks))
                return tasks;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return tasks;
}

bool allIn(const std::vector<SlurmTaskStatus> &tasks, size_t count, SlurmTaskState state) {
    if (tasks.size() != count)
        return false;
    for (const auto &task : tasks) {
        if (task.state != state)
            return false;
    }
    return true;
}

const SlurmTaskStatus *taskOf(const std::vector<SlurmTaskStatus> &tasks, int index) {
    for (const auto &task : tasks) {
        if (task.arrayIndex == index)
            return &task;
    }
    return nullptr;
}

ArraySubmission submission(const TempDir &dir, const std::string &name, const std::string &body) {
    ArraySubmission s;
    s.jobName = name;
    s.script = dir / (name + ".sh");
    s.workDir = dir / "work";
    s.logPattern = dir / "work" / "%x-%A_%a.log";
    s.resources.time = "00:10:00";
    s.resources.extraDirectives = {"--comment=lowbit-test"};
    std::ofstream(s.script) << "#!/bin/bash\n" << SlurmClient::directives(s) << "set -eu\n" << body;
    return s;
}

} // namespace

class TestSlurmCluster : public QObject {
    Q_OBJECT
private slots:
    void arraysDependenciesAndCancel();
};

void TestSlurmCluster::arraysDependenciesAndCancel() {
    TempDir dir;
    std::filesystem::create_directories(dir / "work");
    LOWBIT_REQUIRE_SLURM_CLUSTER(cluster, dir / "cluster");

    const auto client = SlurmClient::detect();
    QVERIFY2(client.ok(), client.ok() ? "" : client.error().toString().c_str());

    // A: three tasks write their index; B (afterok A) copies A's files, so it must run after.
    ArraySubmission first = submission(
        dir, "first", "echo \"first $SLURM_ARRAY_TASK_ID\" > a_$SLURM_ARRAY_TASK_ID.txt\n");
    first.indices = {0, 1, 2};
    const auto firstId = client->submitArray(first);
    QVERIFY2(firstId.ok(), firstId.ok() ? "" : firstId.error().toString().c_str());
    ArraySubmission second =
        submission(dir, "second", "cp a_$SLURM_ARRAY_TASK_ID.txt b_$SLURM_ARRAY_TASK_ID.txt\n");
    second.indices = {0, 1, 2};
    second.afterOk = {*firstId};
    const auto secondId = client->submitArray(second);
    QVERIFY2(secondId.ok(), secondId.ok() ? "" : secondId.error().toString().c_str());
    QVERIFY(*secondId != *firstId);

    const auto secondDone = waitFor(
        *client, *secondId, [](const auto &t) { return allIn(t, 3, SlurmTaskState::Completed); });
    QVERIFY2(allIn(secondDone, 3, SlurmTaskState::Completed), describe(secondDone).c_str());
    const auto firstStates = client->arrayStates(*firstId);
    QVERIFY(firstStates.ok());
    QVERIFY2(allIn(*firstStates, 3, SlurmTaskState::Completed), describe(*firstStates).c_str());
    for (int i = 0; i < 3; ++i) {
        const std::string expected = "first " + std::to_string(i) + "\n";
        QCOMPARE(readFile(dir / "work" / ("b_" + std::to_string(i) + ".txt")), expected);
        QVERIFY(std::filesystem::exists(dir / "work" /
                                        ("first-" + *firstId + "_" + std::to_string(i) + ".log")));
    }

    // C: task 0 waits for a go file, task 1 too but is cancelled, task 2 fails with exit 3.
    ArraySubmission third =
        submission(dir, "third",
                   "if [ \"$SLURM_ARRAY_TASK_ID\" = 2 ]; then exit 3; fi\n"
                   "for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done\n"
                   "[ -e go ]\n"
                   "echo done > c_$SLURM_ARRAY_TASK_ID.txt\n");
    third.indices = {0, 1, 2};
    const auto thirdId = client->submitArray(third);
    QVERIFY2(thirdId.ok(), thirdId.ok() ? "" : thirdId.error().toString().c_str());
    const auto cancelled = client->cancel(*thirdId, 1);
    QVERIFY2(cancelled.ok(), cancelled.ok() ? "" : cancelled.error().toString().c_str());
    const auto settled = waitFor(*client, *thirdId, [](const auto &t) {
        const auto *one = taskOf(t, 1), *two = taskOf(t, 2);
        return one && two && one->state == SlurmTaskState::Cancelled &&
               two->state == SlurmTaskState::Failed;
    });
    QVERIFY2(taskOf(settled, 1) && taskOf(settled, 1)->state == SlurmTaskState::Cancelled,
             describe(settled).c_str());
    QVERIFY2(taskOf(settled, 2) &&
                 taskOf(settled, 2)->reason.find("exit code 3:0") != std::string::npos,
             describe(settled).c_str());
    QCOMPARE(taskOf(settled, 2)->rawState, std::string("FAILED"));

    std::ofstream(dir / "work" / "go") << "go\n";
    const auto finished = waitFor(*client, *thirdId, [](const auto &t) {
        const auto *zero = taskOf(t, 0);
        return zero && zero->state == SlurmTaskState::Completed;
    });
    QVERIFY2(taskOf(finished, 0) && taskOf(finished, 0)->state == SlurmTaskState::Completed,
             describe(finished).c_str());
    QCOMPARE(finished.size(), size_t(3));
    QCOMPARE(readFile(dir / "work" / "c_0.txt"), std::string("done\n"));
    QVERIFY(!std::filesystem::exists(dir / "work" / "c_1.txt"));

    // A job the cluster never had.
    const auto unknown = client->arrayStates("987654");
    QVERIFY(!unknown.ok());
    QCOMPARE(unknown.error().code, ErrorCode::NotFound);
}

QTEST_APPLESS_MAIN(TestSlurmCluster)
#include "test_slurm_cluster.moc"
