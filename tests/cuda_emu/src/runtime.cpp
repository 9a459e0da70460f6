// CUDA emulator (tests/cuda_emu): the runtime API on host memory. One emulated device (an
// H100-like part). Allocations are filled with 0xFF bytes (NaN as float and double, -1 as
// integers) so that reading memory no kernel or copy wrote shows up in results. Freeing a pointer
// that is not an allocation's start is cudaErrorInvalidValue, as on a GPU. cudaMemGetInfo reports
// the configured total (LOWBIT_CUDA_EMU_MEMORY bytes, or lowbit_emu::setDeviceMemory; 80 GiB by
// default) minus the live allocations, and an allocation above the free amount fails.
//
// Every allocation ends (within 256-byte rounding) at an inaccessible page, and the rounding
// slack holds a canary checked at cudaFree: a kernel or copy running past the end of a buffer
// faults, or is reported when the buffer is freed; a freed buffer is unmapped, so a late use
// faults too. Copies naming a device side must lie inside one live allocation.
#include <cuda_runtime_api.h>

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

struct CUstream_st { unsigned flags = 0; };
struct CUevent_st { bool recorded = false; };

namespace lowbit_emu {

namespace {

constexpr size_t kPage = 4096;
// NaN bytes: a read past the end shows up as NaN, a write is seen at cudaFree (unless it wrote
// 0xff bytes itself).
constexpr unsigned char kCanary = 0xff;

struct Allocation {
    size_t bytes;
    void *base;
    size_t mapped;
};

size_t roundUp(size_t n, size_t to) {
    return (n + to - 1) / to * to;
}

struct Device {
    std::mutex mutex;
    std::map<const char *, Allocation> allocations;
    std::map<const void *, int> maxDynamicShared;
    size_t allocated = 0;
    size_t peak = 0;
    long allocationsUntilFailure = -1; // < 0: none injected
    size_t total = 0;
    long launches = 0;
    int current = 0;
};

Device &device() {
    static Device d;
    static bool init = [] {
        const char *env = std::getenv("LOWBIT_CUDA_EMU_MEMORY");
        d.total = env ? size_t(std::strtoull(env, nullptr, 10)) : (size_t(80) << 30);
        return true;
    }();
    (void)init;
    return d;
}

thread_local cudaError_t t_lastError = cudaSuccess;

cudaError_t fail(cudaError_t error) {
    t_lastError = error; // runtime errors are also returned by the next cudaGetLastError
    return error;
}

} // namespace

cudaError_t recordLaunchError(cudaError_t error) {
    return fail(error);
}

int maxDynamicShared(const void *kernel) {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    const auto it = d.maxDynamicShared.find(kernel);
    return it == d.maxDynamicShared.end() ? 0 : it->second;
}

void countLaunch() {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    ++d.launches;
}

void setDeviceMemory(size_t totalBytes) {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    d.total = totalBytes;
}

size_t allocatedBytes() {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    return d.allocated;
}

size_t peakAllocatedBytes() {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    return d.peak;
}

void resetPeakAllocatedBytes() {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    d.peak = d.allocated;
}

void failAllocation(long after) {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    d.allocationsUntilFailure = after;
}

long launchCount() {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    return d.launches;
}

} // namespace lowbit_emu

using lowbit_emu::fail;

cudaError_t cudaGetDeviceCount(int *count) {
    if (!count)
        return fail(cudaErrorInvalidValue);
    *count = 1;
    return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
    if (device != 0)
        return fail(cudaErrorInvalidDevice);
    lowbit_emu::device().current = device;
    return cudaSuccess;
}

cudaError_t cudaGetDevice(int *device) {
    if (!device)
        return fail(cudaErrorInvalidValue);
    *device = lowbit_emu::device().current;
    return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *prop, int device) {
    if (!prop)
        return fail(cudaErrorInvalidValue);
    if (device != 0)
        return fail(cudaErrorInvalidDevice);
    std::memset(prop, 0, sizeof *prop);
    std::snprintf(prop->name, sizeof prop->name, "lowbit CUDA emulator (H100-like)");
    prop->totalGlobalMem = lowbit_emu::device().total;
    prop->sharedMemPerBlock = 48 * 1024;
    prop->sharedMemPerBlockOptin = 227 * 1024;
    prop->sharedMemPerMultiprocessor = 228 * 1024;
    prop->regsPerBlock = 65536;
    prop->warpSize = 32;
    prop->maxThreadsPerBlock = 1024;
    prop->maxThreadsDim[0] = 1024, prop->maxThreadsDim[1] = 1024, prop->maxThreadsDim[2] = 64;
    prop->maxGridSize[0] = 0x7fffffff, prop->maxGridSize[1] = 65535, prop->maxGridSize[2] = 65535;
    prop->major = 9;
    prop->minor = 0;
    prop->multiProcessorCount = 132;
    prop->maxThreadsPerMultiProcessor = 2048;
    prop->l2CacheSize = 50 * 1024 * 1024;
    return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() {
    return cudaSuccess;
}

cudaError_t cudaDeviceReset() {
    return cudaSuccess;
}

cudaError_t cudaMemGetInfo(size_t *freeBytes, size_t *totalBytes) {
    auto &d = lowbit_emu::device();
    std::lock_guard lock(d.mutex);
    if (freeBytes)
        *freeBytes = d.total > d.allocated ? d.total - d.allocated : 0;
    if (totalBytes)
        *totalBytes = d.total;
    return cudaSuccess;
}

cudaError_t cudaMalloc(void **ptr, size_t bytes) {
    if (!ptr)
        return fail(cudaErrorInvalidValue);
    auto &d = lowbit_emu::device();
    std::lock_guard lock(d.mutex);
    *ptr = nullptr;
    if (bytes > d.total - std::min(d.total, d.allocated))
        return fail(cudaErrorMemoryAllocation);
    if (d.allocationsUntilFailure >= 0 && d.allocationsUntilFailure-- == 0)
        return fail(cudaErrorMemoryAllocation);
    // 256-byte aligned like cudaMalloc, ending at most 255 bytes before a guard page.
    const size_t usable = lowbit_emu::roundUp(std::max<size_t>(bytes, 1), 256);
    const size_t body = lowbit_emu::roundUp(usable, lowbit_emu::kPage);
    void *base = mmap(nullptr, body + lowbit_emu::kPage, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return fail(cudaErrorMemoryAllocation);
    mprotect(static_cast<char *>(base) + body, lowbit_emu::kPage, PROT_NONE);
    char *p = static_cast<char *>(base) + (body - usable);
    std::memset(p, 0xff, bytes);
    std::memset(p + bytes, lowbit_emu::kCanary, usable - bytes);
    d.allocations[p] = lowbit_emu::Allocation{bytes, base, body + lowbit_emu::kPage};
    d.allocated += bytes;
    d.peak = std::max(d.peak, d.allocated);
    *ptr = p;
    return cudaSuccess;
}

cudaError_t cudaFree(void *ptr) {
    if (!ptr)
        return cudaSuccess;
    auto &d = lowbit_emu::device();
    std::lock_guard lock(d.mutex);
    const auto it = d.allocations.find(static_cast<const char *>(ptr));
    if (it == d.allocations.end()) {
        std::fprintf(stderr, "cuda emu: cudaFree of %p, which is not a device allocation\n", ptr);
        return fail(cudaErrorInvalidValue);
    }
    const lowbit_emu::Allocation a = it->second;
    const size_t usable = lowbit_emu::roundUp(std::max<size_t>(a.bytes, 1), 256);
    const auto *p = static_cast<const unsigned char *>(ptr);
    for (size_t i = a.bytes; i < usable; ++i)
        if (p[i] != lowbit_emu::kCanary) {
            std::fprintf(stderr,
                         "cuda emu: a write past the end of a %zu-byte device buffer (byte %zu) "
                         "found when it was freed\n",
                         a.bytes, i);
            std::abort();
        }
    d.allocated -= a.bytes;
    d.allocations.erase(it);
    munmap(a.base, a.mapped);
    return cudaSuccess;
}

cudaError_t cudaMallocAsync(void **ptr, size_t bytes, cudaStream_t) {
    return cudaMalloc(ptr, bytes);
}

cudaError_t cudaFreeAsync(void *ptr, cudaStream_t) {
    return cudaFree(ptr);
}

cudaError_t cudaMallocHost(void **ptr, size_t bytes) {
    if (!ptr)
        return fail(cudaErrorInvalidValue);
    *ptr = std::malloc(std::max<size_t>(bytes, 1));
    return *ptr ? cudaSuccess : fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFreeHost(void *ptr) {
    std::free(ptr);
    return cudaSuccess;
}

namespace lowbit_emu {
namespace {
// Whether [p, p + bytes) lies inside one live device allocation.
bool onDevice(const void *p, size_t bytes) {
    Device &d = device();
    std::lock_guard lock(d.mutex);
    const char *c = static_cast<const char *>(p);
    auto it = d.allocations.upper_bound(c);
    if (it == d.allocations.begin())
        return false;
    --it;
    return c + bytes <= it->first + it->second.bytes;
}
} // namespace
} // namespace lowbit_emu

cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind) {
    if (int(kind) < 0 || int(kind) > 4)
        return fail(cudaErrorInvalidMemcpyDirection);
    if (bytes == 0)
        return cudaSuccess;
    if (!dst || !src)
        return fail(cudaErrorInvalidValue);
    const bool dstDevice = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
    const bool srcDevice = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
    if ((dstDevice && !lowbit_emu::onDevice(dst, bytes)) ||
        (srcDevice && !lowbit_emu::onDevice(src, bytes))) {
        std::fprintf(stderr, "cuda emu: cudaMemcpy of %zu bytes outside a device allocation\n",
                     bytes);
        return fail(cudaErrorInvalidValue);
    }
    std::memmove(dst, src, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t) {
    return cudaMemcpy(dst, src, bytes, kind);
}

cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind kind, cudaStream_t) {
    if (width > dpitch || width > spitch)
        return fail(cudaErrorInvalidValue);
    for (size_t r = 0; r < height; ++r) {
        const cudaError_t e = cudaMemcpy(static_cast<char *>(dst) + r * dpitch,
                                         static_cast<const char *>(src) + r * spitch, width, kind);
        if (e != cudaSuccess)
            return e;
    }
    return cudaSuccess;
}

cudaError_t cudaMemset(void *ptr, int value, size_t bytes) {
    if (bytes == 0)
        return cudaSuccess;
    if (!ptr)
        return fail(cudaErrorInvalidValue);
    if (!lowbit_emu::onDevice(ptr, bytes)) {
        std::fprintf(stderr, "cuda emu: cudaMemset of %zu bytes outside a device allocation\n",
                     bytes);
        return fail(cudaErrorInvalidValue);
    }
    std::memset(ptr, value, bytes);
    return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void *ptr, int value, size_t bytes, cudaStream_t) {
    return cudaMemset(ptr, value, bytes);
}

cudaError_t cudaStreamCreate(cudaStream_t *stream) {
    return cudaStreamCreateWithFlags(stream, cudaStreamDefault);
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *stream, unsigned flags) {
    if (!stream)
        return fail(cudaErrorInvalidValue);
    *stream = new CUstream_st{flags};
    return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t stream) {
    delete stream;
    return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t) {
    return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t event, unsigned) {
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventCreate(cudaEvent_t *event) {
    return cudaEventCreateWithFlags(event, cudaEventDefault);
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *event, unsigned) {
    if (!event)
        return fail(cudaErrorInvalidValue);
    *event = new CUevent_st;
    return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
    delete event;
    return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
    if (!event)
        return fail(cudaErrorInvalidResourceHandle);
    event->recorded = true;
    return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    return event ? cudaSuccess : fail(cudaErrorInvalidResourceHandle);
}

cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t end) {
    if (!ms || !start || !end)
        return fail(cudaErrorInvalidValue);
    *ms = 0.0f; // no timing in emulation
    return cudaSuccess;
}

cudaError_t cudaGetLastError() {
    const cudaError_t e = lowbit_emu::t_lastError;
    lowbit_emu::t_lastError = cudaSuccess;
    return e;
}

cudaError_t cudaPeekAtLastError() {
    return lowbit_emu::t_lastError;
}

const char *cudaGetErrorName(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    }
    return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t error) {
    switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    default: return "emulated CUDA error";
    }
}

cudaError_t cudaFuncSetAttributeEmu(const void *func, cudaFuncAttribute attr, int value) {
    if (!func)
        return fail(cudaErrorInvalidValue);
    if (attr == cudaFuncAttributeMaxDynamicSharedMemorySize) {
        if (value < 0 || value > 227 * 1024)
            return fail(cudaErrorInvalidValue);
        auto &d = lowbit_emu::device();
        std::lock_guard lock(d.mutex);
        d.maxDynamicShared[func] = value;
    }
    return cudaSuccess;
}
