// A real single-node Slurm cluster for a test: scripts/slurm-up.sh in a folder on construction,
// scripts/slurm-down.sh on destruction (also when the test fails half-way), and SLURM_CONF
// pointed at it for the test process and every tool it starts.
//
//   LOWBIT_REQUIRE_SLURM_CLUSTER(cluster, dir / "cluster");   // skips, or fails in CI
//   auto client = SlurmClient::detect();  ... cluster.stateDir() ...
//
// Absent packages or a non-root user skip the test with the reason, unless LOWBIT_REQUIRE_SLURM=1
// (CI), where they fail it.
#pragma once

#include <QProcess>
#include <QStandardPaths>
#include <QtTest>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <unistd.h>

namespace lowbit::test {

class SlurmTestCluster {
public:
    explicit SlurmTestCluster(std::filesystem::path stateDir) : m_stateDir(std::move(stateDir)) {}
    ~SlurmTestCluster() {
        if (m_started)
            runScript("slurm-down.sh");
        if (m_hadConf)
            ::setenv("SLURM_CONF", m_previousConf.c_str(), 1);
        else
            ::unsetenv("SLURM_CONF");
    }
    SlurmTestCluster(const SlurmTestCluster &) = delete;
    SlurmTestCluster &operator=(const SlurmTestCluster &) = delete;

    static bool required() { return qEnvironmentVariable("LOWBIT_REQUIRE_SLURM") == "1"; }

    // Why this machine cannot run a cluster (missing tool, not root), or empty when it can.
    static std::string unavailableReason() {
        const QStringList dirs = {"/usr/sbin", "/usr/bin", "/sbin", "/bin"};
        for (const char *tool : {"slurmctld", "slurmd", "munged", "mungekey", "sbatch", "sinfo"}) {
            if (QStandardPaths::findExecutable(tool).isEmpty() &&
                QStandardPaths::findExecutable(tool, dirs).isEmpty())
                return std::string(tool) +
                       " not installed (apt-get install slurmctld slurmd slurm-client munge, "
                       "or scripts/setup.sh)";
        }
        if (::geteuid() != 0)
            return "scripts/slurm-up.sh needs root (the daemons run as SlurmUser=root)";
        return {};
    }

    // Starts the cluster; on failure the message holds the script's output (with log tails).
    bool start(std::string &message) {
        if (const char *conf = std::getenv("SLURM_CONF")) {
            m_hadConf = true;
            m_previousConf = conf;
        }
        m_started = true; // slurm-down.sh is safe after a half-finished start
        const auto [ok, output] = runScript("slurm-up.sh");
        if (!ok) {
            message = "scripts/slurm-up.sh " + m_stateDir.string() + " failed:\n" + output;
            return false;
        }
        ::setenv("SLURM_CONF", (m_stateDir / "slurm.conf").c_str(), 1);
        return true;
    }

    const std::filesystem::path &stateDir() const { return m_stateDir; }

private:
    std::pair<bool, std::string> runScript(const char *name) const {
        QProcess process;
        process.setProcessChannelMode(QProcess::MergedChannels);
        const QString script = QString::fromUtf8(LOWBIT_SOURCE_DIR) + "/scripts/" + name;
        process.start("bash", {script, QString::fromStdString(m_stateDir.string())});
        const bool finished = process.waitForFinished(180'000);
        const std::string output = process.readAll().toStdString();
        return {finished && process.exitStatus() == QProcess::NormalExit && process.exitCode() == 0,
                output};
    }

    std::filesystem::path m_stateDir;
    bool m_started = false;
    bool m_hadConf = false;
    std::string m_previousConf;
};

} // namespace lowbit::test

// Declares `var`, a running SlurmTestCluster in `stateDir`, or skips (fails under
// LOWBIT_REQUIRE_SLURM=1) the calling test function.
#define LOWBIT_REQUIRE_SLURM_CLUSTER(var, stateDir)                                                \
    if (const std::string lowbitWhy = lowbit::test::SlurmTestCluster::unavailableReason();         \
        !lowbitWhy.empty()) {                                                                      \
        const QByteArray lowbitMsg = QByteArray("no Slurm test cluster: ") + lowbitWhy.c_str();    \
        if (lowbit::test::SlurmTestCluster::required())                                            \
            QFAIL(lowbitMsg.constData());                                                          \
        QSKIP(lowbitMsg.constData());                                                              \
    }                                                                                              \
    lowbit::test::SlurmTestCluster var(stateDir);                                                  \
    if (std::string lowbitStartError; !var.start(lowbitStartError))                                \
    QFAIL(lowbitStartError.c_str())
