// libFuzzer target: arbitrary bytes as a sweep folder's manifest.json (readManifest,
// storage/sweep/sweep_plan.h), the file `sweep status/retry/collect` read back. Every input must
// give a plan or an error naming the file, never a crash or an uncaught exception; an accepted
// plan's tasks are numbered 0..N-1 in order.
#include "sweep/sweep_plan.h"

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <unistd.h>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const std::filesystem::path path =
        std::filesystem::temp_directory_path() /
        ("lowbit_fuzz_sweep_manifest_" + std::to_string(::getpid()) + ".json");
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char *>(data), std::streamsize(size));
    }
    auto plan = lowbit::sweep::readManifest(path);
    std::error_code ec;
    std::filesystem::remove(path, ec);
    if (!plan.ok()) {
        if (plan.error().message.find(path.string()) == std::string::npos)
            std::abort(); // errors name the file
        return 0;
    }
    for (size_t i = 0; i < plan->tasks.size(); ++i)
        if (plan->tasks[i].index != int(i))
            std::abort();
    return 0;
}
