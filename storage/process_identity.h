// Who owns a running run: host name, process id, the process's start time and the boot id. The
// start time and boot id make the liveness test immune to pid reuse: a run is owned by a live
// process only if a process with that pid exists now and started at the recorded moment of the
// current boot.
#pragma once

#include <cstdint>
#include <string>

namespace lowbit {

struct ProcessIdentity {
    std::string host;
    int64_t pid = 0;
    int64_t startTicks = 0; // /proc/PID/stat field 22 (clock ticks after boot); 0 when unknown
    std::string bootId;     // /proc/sys/kernel/random/boot_id; empty when unknown

    static ProcessIdentity current();
    // On the same host: whether that process still runs. On another host the answer is unknown;
    // this returns true (the caller then relies on the heartbeat age).
    bool alive() const;
    bool sameHost() const;
};

// Field 22 of /proc/PID/stat, or 0.
int64_t processStartTicks(int64_t pid);
std::string currentBootId();
std::string currentHostName();

} // namespace lowbit
