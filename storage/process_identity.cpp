#include "process_identity.h"

#include <cerrno>
#include <csignal>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace lowbit {

namespace {

struct ProcStat {
    char state = '?';
    int64_t startTicks = 0;
};

ProcStat readProcStat(int64_t pid) {
    ProcStat stat;
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(in, line))
        return stat;
    // The command name (field 2) is in parentheses and may contain spaces: fields restart after
    // ')'.
    const size_t close = line.rfind(')');
    if (close == std::string::npos)
        return stat;
    std::istringstream rest(line.substr(close + 1));
    std::string field;
    for (int index = 3; rest >> field; ++index) {
        if (index == 3)
            stat.state = field.empty() ? '?' : field[0];
        if (index == 22) {
            stat.startTicks = std::strtoll(field.c_str(), nullptr, 10);
            break;
        }
    }
    return stat;
}

} // namespace

int64_t processStartTicks(int64_t pid) {
    return readProcStat(pid).startTicks;
}

std::string currentBootId() {
    std::ifstream in("/proc/sys/kernel/random/boot_id");
    std::string id;
    std::getline(in, id);
    return id;
}

std::string currentHostName() {
    char name[256] = {};
    if (gethostname(name, sizeof name - 1) != 0)
        return "localhost";
    return name;
}

ProcessIdentity ProcessIdentity::current() {
    ProcessIdentity identity;
    identity.host = currentHostName();
    identity.pid = getpid();
    identity.startTicks = processStartTicks(identity.pid);
    identity.bootId = currentBootId();
    return identity;
}

bool ProcessIdentity::sameHost() const {
    return host == currentHostName();
}

bool ProcessIdentity::alive() const {
    if (!sameHost())
        return true;
    if (!bootId.empty() && bootId != currentBootId())
        return false; // the machine rebooted since
    if (pid <= 0)
        return false;
    if (::kill(pid_t(pid), 0) != 0 && errno == ESRCH)
        return false;
    const ProcStat stat = readProcStat(pid);
    if (stat.state == 'Z' || stat.state == 'X')
        return false; // killed, not yet reaped by its parent
    if (startTicks != 0 && stat.startTicks != startTicks)
        return false; // the pid now belongs to another process
    return true;
}

} // namespace lowbit
