// CUDA emulator (tests/cuda_emu): kernel launches. One fiber per CUDA thread of a block, run
// round-robin and switched only where a CUDA thread would wait for others (see cuda_emu/kernel.h).
// The context switch is a few instructions of x86-64 assembly (callee-saved registers and the
// stack pointer; ucontext's swapcontext makes a signal-mask system call per switch, ~100x slower).
#include "cuda_emu/kernel.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <vector>

#if !defined(__x86_64__)
#error "the CUDA emulator's fiber switch is written for x86-64"
#endif

extern "C" void lowbit_emu_switch(void **saveSp, void *loadSp);
asm(R"(
    .text
    .globl lowbit_emu_switch
    .type lowbit_emu_switch, @function
lowbit_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size lowbit_emu_switch, .-lowbit_emu_switch
)");

namespace lowbit_emu {

uint3 g_threadIdx{0, 0, 0}, g_blockIdx{0, 0, 0};
dim3 g_blockDim, g_gridDim;

cudaError_t recordLaunchError(cudaError_t error); // runtime.cpp
int maxDynamicShared(const void *kernel);          // runtime.cpp
void countLaunch();                                // runtime.cpp

namespace {

constexpr size_t kStackBytes = 256 * 1024; // kernels keep register arrays on it
constexpr size_t kGuardBytes = 4096;
constexpr int kMaxThreads = 1024;

struct Barrier {
    int expected = 0, arrived = 0;
    long generation = 0;
};

struct Fiber {
    void *sp = nullptr;
    char *stack = nullptr;
    bool done = false;
    uint3 index{0, 0, 0};
    Barrier *waiting = nullptr;
};

struct Launch {
    const std::function<void()> *body = nullptr;
    std::vector<Fiber> fibers;
    void *schedulerSp = nullptr;
    Fiber *current = nullptr;
    Barrier block;
    Barrier warps[kMaxThreads / 32];
    uint64_t lanes[2][kMaxThreads / 32][32]; // double-buffered by barrier generation
    std::vector<float4> shared;
    int threads = 0;
    long progress = 0; // arrivals at barriers and finished threads, for deadlock detection
};

Launch &state() {
    static Launch s;
    return s;
}

[[noreturn]] void deadlock(const char *what) {
    std::fprintf(stderr,
                 "cuda emu: deadlock at %s in block (%u,%u,%u): threads exited or diverged while "
                 "others wait\n",
                 what, g_blockIdx.x, g_blockIdx.y, g_blockIdx.z);
    std::abort();
}

// Passes control from `self` straight to the next unfinished fiber in round-robin order (one
// switch, no trip through the scheduler); to the scheduler once every fiber has finished.
void handOff(Fiber *self) {
    Launch &s = state();
    const int me = int(self - s.fibers.data());
    for (int k = 1; k <= s.threads; ++k) {
        Fiber &next = s.fibers[size_t((me + k) % s.threads)];
        if (next.done)
            continue;
        if (&next == self)
            return; // the only one left
        s.current = &next;
        g_threadIdx = next.index;
        lowbit_emu_switch(&self->sp, next.sp);
        return;
    }
    lowbit_emu_switch(&self->sp, s.schedulerSp);
}

[[noreturn]] void fiberMain() {
    for (;;) {
        Launch &s = state();
        (*s.body)();
        s.current->done = true;
        ++s.progress;
        handOff(s.current); // never returns here: the fiber is reset before it runs again
    }
}

void resetFiber(Fiber &f) {
    if (!f.stack) {
        void *p = mmap(nullptr, kStackBytes + kGuardBytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            std::fprintf(stderr, "cuda emu: cannot map a fiber stack\n");
            std::abort();
        }
        mprotect(p, kGuardBytes, PROT_NONE); // a stack overflow faults instead of corrupting
        f.stack = static_cast<char *>(p) + kGuardBytes;
    }
    // Frame popped by lowbit_emu_switch: six callee-saved registers, then the return address.
    auto top = reinterpret_cast<uintptr_t>(f.stack + kStackBytes) & ~uintptr_t(15);
    auto *frame = reinterpret_cast<void **>(top - 8 * sizeof(void *));
    for (int i = 0; i < 6; ++i)
        frame[i] = nullptr;
    frame[6] = reinterpret_cast<void *>(&fiberMain);
    frame[7] = nullptr;
    f.sp = frame; // after `ret`, rsp = top - 8: the alignment of a function entry
    f.done = false;
    f.waiting = nullptr;
}

// A thread waiting at a barrier lets the others run. Coming back to it with no arrival and no
// finished thread since it left means every other unfinished thread waits too: a deadlock.
void wait(Barrier &b) {
    Launch &s = state();
    const long generation = b.generation;
    ++s.progress;
    if (++b.arrived == b.expected) {
        b.arrived = 0;
        ++b.generation;
        return;
    }
    Fiber *self = s.current;
    self->waiting = &b;
    while (b.generation == generation) {
        const long before = s.progress;
        handOff(self);
        if (b.generation == generation && s.progress == before)
            deadlock(&b == &s.block ? "__syncthreads" : "a warp collective");
    }
    self->waiting = nullptr;
}

// One block: fiber 0 starts, each hands off to the next when it waits or finishes; control comes
// back here when all have finished.
void runBlock(Launch &s) {
    for (int t = 0; t < s.threads; ++t)
        resetFiber(s.fibers[size_t(t)]);
    s.block = Barrier{s.threads, 0, 0};
    for (int w = 0; w * 32 < s.threads; ++w)
        s.warps[w] = Barrier{std::min(32, s.threads - w * 32), 0, 0};
    std::fill(s.shared.begin(), s.shared.end(), float4{NAN, NAN, NAN, NAN});
    s.current = &s.fibers[0];
    g_threadIdx = s.fibers[0].index;
    lowbit_emu_switch(&s.schedulerSp, s.fibers[0].sp);
}

std::mutex &launchMutex() {
    static std::mutex m;
    return m;
}

} // namespace

void syncThreads() {
    wait(state().block);
}

void syncWarp() {
    Launch &s = state();
    wait(s.warps[(s.current - s.fibers.data()) / 32]);
}

uint64_t warpExchange(uint64_t bits, int srcLane) {
    Launch &s = state();
    const long linear = s.current - s.fibers.data();
    const long warp = linear / 32, lane = linear % 32;
    // Exchange k uses buffer k % 2: a lane can only write it again at exchange k + 2, after
    // passing exchange k + 1's barrier, which every lane reaches only once done reading k.
    auto &buffer = s.lanes[s.warps[warp].generation & 1][warp];
    buffer[lane] = bits;
    wait(s.warps[warp]);
    return buffer[srcLane & 31];
}

void *dynamicShared() {
    return state().shared.data();
}

void launchGrid(const void *kernel, dim3 grid, dim3 block, size_t smem,
                const std::function<void()> &body) {
    std::lock_guard lock(launchMutex());
    countLaunch();
    const uint64_t threads = uint64_t(block.x) * block.y * block.z;
    if (threads == 0 || threads > kMaxThreads || block.x > 1024 || block.y > 1024 ||
        block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu ||
        grid.y > 65535 || grid.z > 65535) {
        std::fprintf(stderr, "cuda emu: invalid launch grid (%u,%u,%u) block (%u,%u,%u)\n", grid.x,
                     grid.y, grid.z, block.x, block.y, block.z);
        recordLaunchError(cudaErrorInvalidConfiguration);
        return;
    }
    const size_t allowed = std::max<size_t>(48 * 1024, size_t(maxDynamicShared(kernel)));
    if (smem > allowed) {
        std::fprintf(stderr,
                     "cuda emu: %zu bytes of dynamic shared memory, above the kernel's %zu "
                     "(cudaFuncAttributeMaxDynamicSharedMemorySize)\n",
                     smem, allowed);
        recordLaunchError(cudaErrorInvalidValue);
        return;
    }
    Launch &s = state();
    s.body = &body;
    s.threads = int(threads);
    if (s.fibers.size() < threads)
        s.fibers.resize(threads); // fibers keep their stacks from launch to launch
    for (unsigned z = 0, t = 0; z < block.z; ++z)
        for (unsigned y = 0; y < block.y; ++y)
            for (unsigned x = 0; x < block.x; ++x, ++t)
                s.fibers[t].index = uint3{x, y, z};
    s.shared.assign(smem / sizeof(float4) + 1, float4{});
    g_blockDim = block;
    g_gridDim = grid;
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                g_blockIdx = uint3{x, y, z};
                runBlock(s);
            }
    s.body = nullptr;
}

} // namespace lowbit_emu
