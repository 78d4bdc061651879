// cuda_emulator.h: runs CUDA C++ kernels on the CPU, for tests without a GPU.
//
// gpuconv/_backends/_cuda_emulator.py compiles a kernel source with
// `g++ -include cuda_emulator.h` into a shared library and launches it through ctypes.
// This header maps the CUDA keywords, built-in variables and the device intrinsics
// commonly used by image kernels to host C++, and provides the launch runtime:
//
//   * each block's threads run as cooperative fibers that switch at every __syncthreads()
//     (a six-register switch on x86-64, ucontext elsewhere or with
//     -DGPUCONV_EMULATOR_UCONTEXT); blocks run one after another on one or more OS threads;
//   * __shared__ variables are `static thread_local`: one object per OS thread, hence one
//     per running block, shared by that block's fibers;
//   * dynamic shared memory: gpuconv_emu::dynamic_shared_memory() (16-byte aligned);
//   * errors (a barrier not every thread reaches, threads waiting at different barriers,
//     an out-of-bounds global access found by gpuconv_emu::check_global_index, __trap(),
//     bad launch dimensions) stop the launch and come back to Python as a message: the
//     faulting fiber is simply never resumed, no exception or longjmp crosses C++ frames.
//
// Kernel sources can test `#ifdef GPUCONV_EMULATOR`. Debug builds define
// GPUCONV_EMULATOR_DEBUG, which turns on the global bounds checks.
//
// Not emulated: warp-level primitives (__shfl*, __syncwarp, __ballot*), __CUDA_ARCH__,
// half precision, textures, `extern __shared__` (use dynamic_shared_memory()), threads that
// spin-wait on each other (fibers only switch at barriers, so such a kernel would hang).
#pragma once

#define GPUCONV_EMULATOR 1

#include <dlfcn.h>
#include <link.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

// ---------------------------------------------------------------- keywords
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// One object per OS thread; an OS thread runs one block at a time, whose fibers share it.
#define __shared__ static thread_local

// ---------------------------------------------------------------- vector types
#define GPUCONV_EMU_VECTOR_TYPES(name, T)                                                 \
    struct name##1 { T x; };                                                              \
    struct alignas(2 * sizeof(T) < 16 ? 2 * sizeof(T) : 16) name##2 { T x, y; };       \
    struct name##3 { T x, y, z; };                                                        \
    struct alignas(4 * sizeof(T) < 16 ? 4 * sizeof(T) : 16) name##4 { T x, y, z, w; }; \
    inline name##1 make_##name##1(T x) { return name##1{x}; }                             \
    inline name##2 make_##name##2(T x, T y) { return name##2{x, y}; }                     \
    inline name##3 make_##name##3(T x, T y, T z) { return name##3{x, y, z}; }             \
    inline name##4 make_##name##4(T x, T y, T z, T w) { return name##4{x, y, z, w}; }
GPUCONV_EMU_VECTOR_TYPES(char, signed char)
GPUCONV_EMU_VECTOR_TYPES(uchar, unsigned char)
GPUCONV_EMU_VECTOR_TYPES(short, short)
GPUCONV_EMU_VECTOR_TYPES(ushort, unsigned short)
GPUCONV_EMU_VECTOR_TYPES(int, int)
GPUCONV_EMU_VECTOR_TYPES(uint, unsigned int)
GPUCONV_EMU_VECTOR_TYPES(longlong, long long)
GPUCONV_EMU_VECTOR_TYPES(ulonglong, unsigned long long)
GPUCONV_EMU_VECTOR_TYPES(float, float)
GPUCONV_EMU_VECTOR_TYPES(double, double)
#undef GPUCONV_EMU_VECTOR_TYPES
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1)
        : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};


// ---------------------------------------------------------------- context switching
// swapcontext saves the signal mask with a system call at every switch; on x86-64 a
// switch of the callee-saved registers is enough (fibers never touch signal masks or the
// floating-point control words), and it makes barrier-heavy kernels several times faster.
#if defined(__x86_64__) && !defined(GPUCONV_EMULATOR_UCONTEXT)
#define GPUCONV_EMULATOR_FAST_SWITCH 1
extern "C" void gpuconv_emu_switch(void** save_stack_pointer, void* load_stack_pointer);
__asm__(
    ".text\n"
    ".p2align 4\n"
    ".hidden gpuconv_emu_switch\n"
    ".globl gpuconv_emu_switch\n"
    ".type gpuconv_emu_switch, @function\n"
    "gpuconv_emu_switch:\n"
    "    pushq %rbp\n"
    "    pushq %rbx\n"
    "    pushq %r12\n"
    "    pushq %r13\n"
    "    pushq %r14\n"
    "    pushq %r15\n"
    "    movq %rsp, (%rdi)\n"
    "    movq %rsi, %rsp\n"
    "    popq %r15\n"
    "    popq %r14\n"
    "    popq %r13\n"
    "    popq %r12\n"
    "    popq %rbx\n"
    "    popq %rbp\n"
    "    ret\n"
    ".size gpuconv_emu_switch, .-gpuconv_emu_switch\n");
#endif

namespace gpuconv_emu {

struct Context {
#ifdef GPUCONV_EMULATOR_FAST_SWITCH
    void* stack_pointer = nullptr;
#else
    ucontext_t context{};
#endif
};

inline void switch_context(Context& save, Context& load) {
#ifdef GPUCONV_EMULATOR_FAST_SWITCH
    gpuconv_emu_switch(&save.stack_pointer, load.stack_pointer);
#else
    swapcontext(&save.context, &load.context);
#endif
}

// Prepares `context` to start `entry` (which must never return) on the given stack.
inline void make_context(Context& context, char* stack, std::size_t size, void (*entry)()) {
#ifdef GPUCONV_EMULATOR_FAST_SWITCH
    // The frame gpuconv_emu_switch pops: six zeroed registers, then `entry` as the return
    // address; above it a null return address for `entry`, which so starts with
    // %rsp = 8 (mod 16) as after a call.
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t(15);
    auto* frame = reinterpret_cast<void**>(top - 64);
    for (int i = 0; i < 6; ++i) frame[i] = nullptr;
    frame[6] = reinterpret_cast<void*>(entry);
    frame[7] = nullptr;
    context.stack_pointer = frame;
#else
    getcontext(&context.context);
    context.context.uc_stack.ss_sp = stack;
    context.context.uc_stack.ss_size = size;
    context.context.uc_link = nullptr;
    makecontext(&context.context, entry, 0);
#endif
}

}  // namespace gpuconv_emu

namespace gpuconv_emu {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned long long kMaxSharedBytes = 228ull * 1024;
// Fiber stacks: enough for kernels with local arrays at -O1 -g; a guard page below each.
constexpr std::size_t kStackBytes = 256 * 1024;

// ---------------------------------------------------------------- launch state
struct Allocation {
    std::uintptr_t begin, end;
    int argument;
};

struct Launch {
    void (*thunk)(void**);
    void** args;
    dim3 grid, block;
    unsigned long long shared_bytes;
    std::vector<Allocation> allocations;
    std::atomic<unsigned long long> next_block{0};
    std::atomic<bool> failed{false};
    std::mutex error_mutex;
    unsigned long long error_block = ~0ull;  // linear index of the block that reported
    std::string error;
    int schedule = 0;  // the order fibers run between barriers: see Schedule
    unsigned long long seed = 0;
};

enum class FiberState { ready, at_barrier, finished, aborted };

struct Fiber {
    Context context;
    char* stack = nullptr;  // usable part, above the guard page
    FiberState state = FiberState::ready;
    uint3 thread_index{0, 0, 0};
    const char* barrier_file = nullptr;
    int barrier_line = 0;
    int barrier_predicate = 0;
};

// What the running fiber sees; one per OS thread (a worker runs one block at a time).
struct WorkerState {
    Launch* launch = nullptr;
    std::vector<Fiber>* fibers = nullptr;
    Context scheduler{};
    int current = 0;
    uint3 thread_index{0, 0, 0};
    uint3 block_index{0, 0, 0};
    dim3 block_dim, grid_dim;
    unsigned long long block_linear = 0;
    void* dynamic_shared = nullptr;
    int barrier_result = 0;
};

inline thread_local WorkerState worker;

// ---------------------------------------------------------------- fiber stacks
// Stacks are mmap'ed once and reused by every later launch in the process.
inline std::mutex stack_pool_mutex;
inline std::vector<char*> stack_pool;

inline char* take_stack() {
    {
        std::lock_guard<std::mutex> lock(stack_pool_mutex);
        if (!stack_pool.empty()) {
            char* stack = stack_pool.back();
            stack_pool.pop_back();
            return stack;
        }
    }
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    void* memory = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return nullptr;
    mprotect(memory, page, PROT_NONE);  // an overflow faults instead of corrupting memory
    return static_cast<char*>(memory) + page;
}

inline void return_stack(char* stack) {
    std::lock_guard<std::mutex> lock(stack_pool_mutex);
    stack_pool.push_back(stack);
}

// ---------------------------------------------------------------- errors
inline std::string format(const char* pattern, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* pattern, ...) {
    char buffer[1024];
    va_list list;
    va_start(list, pattern);
    std::vsnprintf(buffer, sizeof buffer, pattern, list);
    va_end(list);
    return buffer;
}

inline std::string where_thread(const uint3& thread) {
    const uint3& b = worker.block_index;
    return format("block (%u, %u, %u), thread (%u, %u, %u)", b.x, b.y, b.z, thread.x, thread.y,
                  thread.z);
}

inline void record_error(const std::string& message) {
    Launch& launch = *worker.launch;
    std::lock_guard<std::mutex> lock(launch.error_mutex);
    // Keep the error of the lowest block, so that a serial launch reports the first one.
    if (worker.block_linear < launch.error_block) {
        launch.error_block = worker.block_linear;
        launch.error = message;
    }
    launch.failed.store(true);
}

// Records `message` against the running thread and abandons its fiber: control goes back
// to the scheduler, which ends the launch. Never returns.
[[noreturn]] inline void fail(const std::string& message) {
    record_error(message + " [" + where_thread(worker.thread_index) + "]");
    Fiber& fiber = (*worker.fibers)[worker.current];
    fiber.state = FiberState::aborted;
    switch_context(fiber.context, worker.scheduler);
    std::abort();  // unreachable: an aborted fiber is never resumed
}

// ---------------------------------------------------------------- built-in variables
inline const uint3& thread_index() { return worker.thread_index; }
inline const uint3& block_index() { return worker.block_index; }
inline const dim3& block_dim() { return worker.block_dim; }
inline const dim3& grid_dim() { return worker.grid_dim; }

inline void* dynamic_shared_memory() { return worker.dynamic_shared; }

// ---------------------------------------------------------------- barriers
// Parks the running fiber at the barrier `file:line`; the scheduler resumes every fiber
// once all of the block's threads wait at the same barrier, and reports anything else.
inline int syncthreads(const char* file, int line, int predicate = 0) {
    if (worker.fibers == nullptr) return predicate;  // called outside a launch
    Fiber& fiber = (*worker.fibers)[worker.current];
    fiber.state = FiberState::at_barrier;
    fiber.barrier_file = file;
    fiber.barrier_line = line;
    fiber.barrier_predicate = predicate;
    switch_context(fiber.context, worker.scheduler);
    return worker.barrier_result;
}

// ---------------------------------------------------------------- bounds checks
inline bool inside_module_symbol(std::uintptr_t begin, std::uintptr_t end) {
    // __device__ and __constant__ variables of the kernel module are legal targets too.
    Dl_info info;
    ElfW(Sym)* symbol = nullptr;
    if (dladdr1(reinterpret_cast<void*>(begin), &info, reinterpret_cast<void**>(&symbol),
                RTLD_DL_SYMENT) == 0 ||
        symbol == nullptr || info.dli_saddr == nullptr)
        return false;
    const std::uintptr_t start = reinterpret_cast<std::uintptr_t>(info.dli_saddr);
    return ELF64_ST_TYPE(symbol->st_info) == STT_OBJECT && begin >= start &&
           end <= start + symbol->st_size;
}

#ifdef GPUCONV_EMULATOR_DEBUG
// Checks that `pointer[index]` (elements of `element_size` bytes) lies inside the memory
// `pointer` points into: one of the launch's argument arrays, the dynamic shared memory or
// a module variable. (Checking against the same region, not any region, catches a read
// past one array that lands in its neighbour.) Records an error naming file:line otherwise.
inline void check_global_index(const void* pointer, long long index,
                               unsigned long long element_size, const char* file, int line) {
    if (worker.launch == nullptr) return;
    const std::uintptr_t base = reinterpret_cast<std::uintptr_t>(pointer);
    const unsigned long long magnitude =
        index < 0 ? 0ull - static_cast<unsigned long long>(index) : index;
    const bool overflow = magnitude != 0 && element_size > ~0ull / magnitude;
    const std::uintptr_t distance = static_cast<std::uintptr_t>(magnitude * element_size);
    const std::uintptr_t begin = index < 0 ? base - distance : base + distance;
    const std::uintptr_t end = begin + element_size;
    const bool wrapped = overflow || (index < 0 ? begin > base : begin < base) || end < begin;

    std::uintptr_t region_begin = 0, region_end = 0;
    std::string region;
    for (const Allocation& a : worker.launch->allocations)
        if (base >= a.begin && base < a.end) {
            region_begin = a.begin;
            region_end = a.end;
            region = format("argument %d (%llu bytes)", a.argument,
                            static_cast<unsigned long long>(a.end - a.begin));
            break;
        }
    const std::uintptr_t shared = reinterpret_cast<std::uintptr_t>(worker.dynamic_shared);
    if (region.empty() && shared != 0 && base >= shared &&
        base < shared + worker.launch->shared_bytes) {
        region_begin = shared;
        region_end = shared + worker.launch->shared_bytes;
        region = format("the dynamic shared memory (%llu bytes)", worker.launch->shared_bytes);
    }
    if (!wrapped) {
        if (!region.empty()) {
            if (begin >= region_begin && end <= region_end) return;
        } else {
            // A pointer outside every region (e.g. `array - 1`) may still index into one.
            for (const Allocation& a : worker.launch->allocations)
                if (begin >= a.begin && end <= a.end) return;
            if (inside_module_symbol(begin, end)) return;
        }
    }
    const std::string where =
        region.empty()
            ? std::string("from a pointer that lies in no argument array")
            : format("into %s: byte offset %lld", region.c_str(),
                     static_cast<long long>(begin - region_begin));
    fail(format("out-of-bounds global access at %s:%d: index %lld of %llu-byte elements %s",
                file, line, index, element_size, where.c_str()));
}
#else
inline void check_global_index(const void*, long long, unsigned long long, const char*, int) {}
#endif

// `pointer[index]`, bounds-checked in debug builds.
template <class T>
inline T& checked_element(T* pointer, long long index, const char* file, int line) {
    check_global_index(pointer, index, sizeof(T), file, line);
    return pointer[index];
}

// ---------------------------------------------------------------- the scheduler
inline void fiber_entry() {
    WorkerState& state = worker;
    state.launch->thunk(state.launch->args);
    Fiber& fiber = (*state.fibers)[state.current];
    fiber.state = FiberState::finished;
    switch_context(fiber.context, state.scheduler);
    std::abort();  // unreachable: a finished fiber is never resumed
}

inline std::string site(const Fiber& fiber) {
    return format("%s:%d", fiber.barrier_file, fiber.barrier_line);
}

// The order in which a block's threads run from one barrier to the next. A kernel that
// lacks a barrier usually computes wrong results under one order or another (a thread
// reads shared memory that another thread has not written yet), so tests can run the
// same launch under several orders to expose missing barriers.
enum Schedule { forward = 0, reverse = 1, shuffle = 2 };

inline unsigned long long split_mix(unsigned long long& state) {
    unsigned long long z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

// Fills `order` for one pass; shuffles depend only on (seed, block, pass), not on which
// OS thread runs the block, so a failing launch can be replayed.
inline void schedule_order(std::vector<std::size_t>& order, int schedule, unsigned long long seed,
                           unsigned long long block, unsigned pass) {
    const std::size_t count = order.size();
    for (std::size_t i = 0; i < count; ++i)
        order[i] = schedule == Schedule::reverse ? count - 1 - i : i;
    if (schedule != Schedule::shuffle) return;
    unsigned long long state = seed ^ (block * 0x632be59bd9b4e019ull) ^ (pass * 0x85157af5ull);
    for (std::size_t i = count; i > 1; --i) std::swap(order[i - 1], order[split_mix(state) % i]);
}

// Runs one block to completion; false when it (or another block) failed.
inline bool run_block(std::vector<Fiber>& fibers) {
    Launch& launch = *worker.launch;
    const dim3 b = launch.block;
    const std::size_t count = fibers.size();
    for (std::size_t i = 0; i < count; ++i) {
        Fiber& fiber = fibers[i];
        fiber.state = FiberState::ready;
        fiber.thread_index = uint3{static_cast<unsigned>(i % b.x),
                                   static_cast<unsigned>(i / b.x % b.y),
                                   static_cast<unsigned>(i / (b.x * b.y))};
        make_context(fiber.context, fiber.stack, kStackBytes, fiber_entry);
    }
    std::vector<std::size_t> order(count);
    for (unsigned pass = 0;; ++pass) {
        schedule_order(order, launch.schedule, launch.seed, worker.block_linear, pass);
        for (const std::size_t i : order) {
            if (fibers[i].state != FiberState::ready) continue;
            worker.current = static_cast<int>(i);
            worker.thread_index = fibers[i].thread_index;
            switch_context(worker.scheduler, fibers[i].context);
            if (fibers[i].state == FiberState::aborted) return false;
        }
        std::size_t finished = 0, first_finished = 0, first_waiting = count;
        int predicate_count = 0;
        for (std::size_t i = 0; i < count; ++i) {
            if (fibers[i].state == FiberState::finished) {
                if (finished++ == 0) first_finished = i;
            } else {
                if (first_waiting == count) first_waiting = i;
                predicate_count += fibers[i].barrier_predicate != 0;
            }
        }
        if (finished == count) return !launch.failed.load();
        const Fiber& waiting = fibers[first_waiting];
        if (finished > 0) {
            record_error(format(
                "__syncthreads() at %s reached by %zu of the block's %zu threads; the others "
                "had already returned (e.g. %s) and never reach it [%s]",
                site(waiting).c_str(), count - finished, count,
                where_thread(fibers[first_finished].thread_index).c_str(),
                where_thread(waiting.thread_index).c_str()));
            return false;
        }
        for (std::size_t i = 0; i < count; ++i)
            if (fibers[i].barrier_line != waiting.barrier_line ||
                std::strcmp(fibers[i].barrier_file, waiting.barrier_file) != 0) {
                record_error(format(
                    "threads of one block wait at different __syncthreads() barriers: %s (%s) "
                    "and %s (%s)",
                    site(waiting).c_str(), where_thread(waiting.thread_index).c_str(),
                    site(fibers[i]).c_str(), where_thread(fibers[i].thread_index).c_str()));
                return false;
            }
        worker.barrier_result = predicate_count;
        for (Fiber& fiber : fibers) fiber.state = FiberState::ready;
    }
}

inline void run_worker(Launch* launch) {
    WorkerState& state = worker;
    state.launch = launch;
    state.block_dim = launch->block;
    state.grid_dim = launch->grid;
    std::vector<Fiber> fibers(static_cast<std::size_t>(launch->block.x) * launch->block.y *
                              launch->block.z);
    bool have_stacks = true;
    for (Fiber& fiber : fibers) have_stacks = have_stacks && (fiber.stack = take_stack());
    // 16-byte aligned, as CUDA's dynamic shared memory; at least 16 bytes so it is non-null.
    void* shared = std::aligned_alloc(16, (launch->shared_bytes + 15) / 16 * 16 + 16);
    state.fibers = &fibers;
    state.dynamic_shared = shared;
    if (!have_stacks || shared == nullptr) {
        record_error("out of memory for fiber stacks or dynamic shared memory");
    } else {
        const unsigned long long blocks_per_plane =
            static_cast<unsigned long long>(launch->grid.x) * launch->grid.y;
        const unsigned long long total = blocks_per_plane * launch->grid.z;
        while (!launch->failed.load()) {
            const unsigned long long linear = launch->next_block.fetch_add(1);
            if (linear >= total) break;
            state.block_linear = linear;
            state.block_index = uint3{static_cast<unsigned>(linear % launch->grid.x),
                                      static_cast<unsigned>(linear / launch->grid.x % launch->grid.y),
                                      static_cast<unsigned>(linear / blocks_per_plane)};
            if (!run_block(fibers)) break;
        }
    }
    for (Fiber& fiber : fibers)
        if (fiber.stack != nullptr) return_stack(fiber.stack);
    std::free(shared);
    state = WorkerState();
}

inline std::string check_dimensions(const dim3& grid, const dim3& block,
                                    unsigned long long shared_bytes) {
    const unsigned long long threads =
        static_cast<unsigned long long>(block.x) * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || grid.x == 0 || grid.y == 0 ||
        grid.z == 0)
        return format("invalid launch: grid (%u, %u, %u) and block (%u, %u, %u) must be positive",
                      grid.x, grid.y, grid.z, block.x, block.y, block.z);
    if (threads > kMaxThreadsPerBlock || block.x > 1024 || block.y > 1024 || block.z > 64)
        return format("invalid launch: block (%u, %u, %u) has %llu threads; CUDA allows at most "
                      "1024 per block (x, y <= 1024, z <= 64)",
                      block.x, block.y, block.z, threads);
    if (grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535)
        return format("invalid launch: grid (%u, %u, %u) exceeds CUDA's (2^31 - 1, 65535, 65535)",
                      grid.x, grid.y, grid.z);
    if (shared_bytes > kMaxSharedBytes)
        return format("invalid launch: %llu bytes of dynamic shared memory, more than the %llu "
                      "a block may have",
                      shared_bytes, kMaxSharedBytes);
    return std::string();
}

// The body of every generated launcher. Returns 0, or 1 with the first error in `message`.
inline int launch(void (*thunk)(void**), const unsigned* grid, const unsigned* block,
                  unsigned long long shared_bytes, void** args,
                  const unsigned long long* allocations, int allocation_count, int workers,
                  int schedule, unsigned long long seed,
                  char* message, unsigned long long message_capacity) {
    Launch state;
    state.thunk = thunk;
    state.args = args;
    state.grid = dim3(grid[0], grid[1], grid[2]);
    state.block = dim3(block[0], block[1], block[2]);
    state.shared_bytes = shared_bytes;
    state.schedule = schedule;
    state.seed = seed;
    for (int i = 0; i < allocation_count; ++i)
        state.allocations.push_back(Allocation{allocations[3 * i], allocations[3 * i + 1],
                                               static_cast<int>(allocations[3 * i + 2])});
    std::string error = check_dimensions(state.grid, state.block, shared_bytes);
    if (error.empty()) {
        const unsigned long long total =
            static_cast<unsigned long long>(state.grid.x) * state.grid.y * state.grid.z;
        const unsigned long long count =
            std::max(1ull, std::min<unsigned long long>(workers > 0 ? workers : 1, total));
        if (count == 1) {
            run_worker(&state);
        } else {
            std::vector<std::thread> threads;
            for (unsigned long long i = 0; i < count; ++i) threads.emplace_back(run_worker, &state);
            for (std::thread& thread : threads) thread.join();
        }
        error = state.error;
    }
    if (error.empty()) return 0;
    if (message_capacity > 0) {
        std::strncpy(message, error.c_str(), message_capacity - 1);
        message[message_capacity - 1] = '\0';
    }
    return 1;
}

// ---------------------------------------------------------------- kernel signatures
template <class P>
inline P load_argument(void* pointer) {
    P value;
    std::memcpy(static_cast<void*>(&value), pointer, sizeof(P));
    return value;
}

template <class... P, std::size_t... I>
inline void invoke_kernel(void (*kernel)(P...), void** args, std::index_sequence<I...>) {
    kernel(load_argument<std::remove_cv_t<P>>(args[I])...);
}

template <class... P>
inline void invoke_kernel(void (*kernel)(P...), void** args) {
    invoke_kernel(kernel, args, std::index_sequence_for<P...>{});
}

// 'p' pointer, 'f' floating point, 'i' integer (bool and enums too), 'o' anything else.
template <class P>
constexpr char parameter_kind() {
    return std::is_pointer<P>::value          ? 'p'
           : std::is_floating_point<P>::value ? 'f'
           : (std::is_integral<P>::value || std::is_enum<P>::value) ? 'i'
                                                                    : 'o';
}

// Writes the kind and sizeof of each parameter; returns the parameter count.
template <class... P>
inline int signature(void (*)(P...), char* kinds, unsigned long long* sizes, int capacity) {
    const char kind_list[] = {parameter_kind<P>()..., '\0'};
    const unsigned long long size_list[] = {sizeof(P)..., 0};
    const int count = static_cast<int>(sizeof...(P));
    for (int i = 0; i < count && i < capacity; ++i) {
        kinds[i] = kind_list[i];
        sizes[i] = size_list[i];
    }
    return count;
}

// sizeof the module variable that starts at `address`, 0 if none does.
inline unsigned long long symbol_size(const void* address) {
    Dl_info info;
    ElfW(Sym)* symbol = nullptr;
    if (dladdr1(const_cast<void*>(address), &info, reinterpret_cast<void**>(&symbol),
                RTLD_DL_SYMENT) == 0 ||
        symbol == nullptr || info.dli_saddr != address)
        return 0;
    return symbol->st_size;
}

}  // namespace gpuconv_emu

// ---------------------------------------------------------------- built-ins and intrinsics
#define threadIdx (::gpuconv_emu::thread_index())
#define blockIdx (::gpuconv_emu::block_index())
#define blockDim (::gpuconv_emu::block_dim())
#define gridDim (::gpuconv_emu::grid_dim())
#define warpSize 32

#define __syncthreads() ::gpuconv_emu::syncthreads(__FILE__, __LINE__)
#define __syncthreads_count(predicate) \
    ::gpuconv_emu::syncthreads(__FILE__, __LINE__, (predicate) ? 1 : 0)
#define __syncthreads_and(predicate)                                           \
    (::gpuconv_emu::syncthreads(__FILE__, __LINE__, (predicate) ? 1 : 0) ==     \
     static_cast<int>(blockDim.x * blockDim.y * blockDim.z))
#define __syncthreads_or(predicate) \
    (::gpuconv_emu::syncthreads(__FILE__, __LINE__, (predicate) ? 1 : 0) != 0)
#define __trap() ::gpuconv_emu::fail(::gpuconv_emu::format("__trap() at %s:%d", __FILE__, __LINE__))

// `pointer[index]` as an lvalue, bounds-checked in debug builds.
#define GPUCONV_EMU_AT(pointer, index) \
    (::gpuconv_emu::checked_element((pointer), (long long)(index), __FILE__, __LINE__))

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <class T>
inline T __ldg(const T* pointer) { return *pointer; }

// CUDA's min/max accept any pair of arithmetic types, with the usual conversions.
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value &&
                                                     std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> min(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmin(C(a), C(b));
    else return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic<A>::value &&
                                                     std::is_arithmetic<B>::value>>
inline std::common_type_t<A, B> max(A a, B b) {
    using C = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point<C>::value) return std::fmax(C(a), C(b));
    else return C(a) < C(b) ? C(b) : C(a);
}

namespace gpuconv_emu {
// Round to nearest even (the default rounding mode), saturating, NaN -> 0: PTX cvt.rni.sat.
template <class Int, class Float>
inline Int convert_rn(Float value) {
    if (value != value) return 0;
    const Float rounded = std::nearbyint(value);
    if (rounded <= static_cast<Float>(std::numeric_limits<Int>::min()))
        return std::numeric_limits<Int>::min();
    if (rounded >= static_cast<Float>(std::numeric_limits<Int>::max()))
        return std::numeric_limits<Int>::max();
    return static_cast<Int>(rounded);
}
template <class Int, class Float>
inline Int convert_rz(Float value) {
    return convert_rn<Int>(std::trunc(value));
}
template <class Int, class Float>
inline Int convert_rd(Float value) {
    return convert_rn<Int>(std::floor(value));
}
template <class Int, class Float>
inline Int convert_ru(Float value) {
    return convert_rn<Int>(std::ceil(value));
}
}  // namespace gpuconv_emu

inline int __float2int_rn(float v) { return gpuconv_emu::convert_rn<int>(v); }
inline int __float2int_rz(float v) { return gpuconv_emu::convert_rz<int>(v); }
inline int __float2int_rd(float v) { return gpuconv_emu::convert_rd<int>(v); }
inline int __float2int_ru(float v) { return gpuconv_emu::convert_ru<int>(v); }
inline unsigned __float2uint_rn(float v) { return gpuconv_emu::convert_rn<unsigned>(v); }
inline unsigned __float2uint_rz(float v) { return gpuconv_emu::convert_rz<unsigned>(v); }
inline long long __float2ll_rn(float v) { return gpuconv_emu::convert_rn<long long>(v); }
inline long long __float2ll_rz(float v) { return gpuconv_emu::convert_rz<long long>(v); }
inline int __double2int_rn(double v) { return gpuconv_emu::convert_rn<int>(v); }
inline int __double2int_rz(double v) { return gpuconv_emu::convert_rz<int>(v); }
inline int __double2int_rd(double v) { return gpuconv_emu::convert_rd<int>(v); }
inline int __double2int_ru(double v) { return gpuconv_emu::convert_ru<int>(v); }
inline unsigned __double2uint_rn(double v) { return gpuconv_emu::convert_rn<unsigned>(v); }
inline unsigned __double2uint_rz(double v) { return gpuconv_emu::convert_rz<unsigned>(v); }
inline long long __double2ll_rn(double v) { return gpuconv_emu::convert_rn<long long>(v); }
inline long long __double2ll_rz(double v) { return gpuconv_emu::convert_rz<long long>(v); }
inline float __int2float_rn(int v) { return static_cast<float>(v); }
inline float __uint2float_rn(unsigned v) { return static_cast<float>(v); }
inline float __ll2float_rn(long long v) { return static_cast<float>(v); }
inline double __int2double_rn(int v) { return static_cast<double>(v); }
inline double __ll2double_rn(long long v) { return static_cast<double>(v); }
inline float __double2float_rn(double v) { return static_cast<float>(v); }

inline int __float_as_int(float v) { int r; std::memcpy(&r, &v, 4); return r; }
inline unsigned __float_as_uint(float v) { unsigned r; std::memcpy(&r, &v, 4); return r; }
inline float __int_as_float(int v) { float r; std::memcpy(&r, &v, 4); return r; }
inline float __uint_as_float(unsigned v) { float r; std::memcpy(&r, &v, 4); return r; }
inline long long __double_as_longlong(double v) { long long r; std::memcpy(&r, &v, 8); return r; }
inline double __longlong_as_double(long long v) { double r; std::memcpy(&r, &v, 8); return r; }

inline float __saturatef(float v) { return v != v ? 0.0f : (v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v)); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
// The _rn arithmetic intrinsics exist to forbid FMA contraction; volatile does that here.
inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline double __dadd_rn(double a, double b) { volatile double r = a + b; return r; }
inline double __dsub_rn(double a, double b) { volatile double r = a - b; return r; }
inline double __dmul_rn(double a, double b) { volatile double r = a * b; return r; }
inline float __expf(float v) { return std::exp(v); }
inline float __logf(float v) { return std::log(v); }
inline float __sinf(float v) { return std::sin(v); }
inline float __cosf(float v) { return std::cos(v); }
inline float __powf(float a, float b) { return std::pow(a, b); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }

inline int __mul24(int a, int b) {
    return static_cast<int>((static_cast<long long>(a) << 40 >> 40) *
                            (static_cast<long long>(b) << 40 >> 40));
}
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return static_cast<int>((static_cast<long long>(a) * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32);
}
inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __clzll(long long v) {
    return v == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(v));
}
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned __brev(unsigned v) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((v >> i) & 1u) << (31 - i);
    return r;
}

// Atomics: blocks may run on several OS threads, so these are real atomics.
#define GPUCONV_EMU_ATOMIC_INTEGER(T)                                                          \
    inline T atomicAdd(T* a, T v) { return __atomic_fetch_add(a, v, __ATOMIC_SEQ_CST); }      \
    inline T atomicSub(T* a, T v) { return __atomic_fetch_sub(a, v, __ATOMIC_SEQ_CST); }      \
    inline T atomicAnd(T* a, T v) { return __atomic_fetch_and(a, v, __ATOMIC_SEQ_CST); }      \
    inline T atomicOr(T* a, T v) { return __atomic_fetch_or(a, v, __ATOMIC_SEQ_CST); }        \
    inline T atomicXor(T* a, T v) { return __atomic_fetch_xor(a, v, __ATOMIC_SEQ_CST); }      \
    inline T atomicExch(T* a, T v) { return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST); }    \
    inline T atomicCAS(T* a, T expected, T v) {                                               \
        __atomic_compare_exchange_n(a, &expected, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        return expected;                                                                      \
    }                                                                                         \
    inline T atomicMin(T* a, T v) {                                                           \
        T old = __atomic_load_n(a, __ATOMIC_SEQ_CST);                                         \
        while (v < old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_SEQ_CST,    \
                                                       __ATOMIC_SEQ_CST)) {}                 \
        return old;                                                                           \
    }                                                                                         \
    inline T atomicMax(T* a, T v) {                                                           \
        T old = __atomic_load_n(a, __ATOMIC_SEQ_CST);                                         \
        while (v > old && !__atomic_compare_exchange_n(a, &old, v, true, __ATOMIC_SEQ_CST,    \
                                                       __ATOMIC_SEQ_CST)) {}                 \
        return old;                                                                           \
    }
GPUCONV_EMU_ATOMIC_INTEGER(int)
GPUCONV_EMU_ATOMIC_INTEGER(unsigned int)
GPUCONV_EMU_ATOMIC_INTEGER(long long)
GPUCONV_EMU_ATOMIC_INTEGER(unsigned long long)
#undef GPUCONV_EMU_ATOMIC_INTEGER

#define GPUCONV_EMU_ATOMIC_FLOAT(T)                                                         \
    inline T atomicAdd(T* a, T v) {                                                         \
        T old;                                                                              \
        __atomic_load(a, &old, __ATOMIC_SEQ_CST);                                           \
        for (;;) {                                                                          \
            T sum = old + v;                                                                \
            if (__atomic_compare_exchange(a, &old, &sum, true, __ATOMIC_SEQ_CST,            \
                                          __ATOMIC_SEQ_CST))                                \
                return old;                                                                 \
        }                                                                                   \
    }                                                                                       \
    inline T atomicExch(T* a, T v) {                                                        \
        T old;                                                                              \
        __atomic_exchange(a, &v, &old, __ATOMIC_SEQ_CST);                                   \
        return old;                                                                         \
    }
GPUCONV_EMU_ATOMIC_FLOAT(float)
GPUCONV_EMU_ATOMIC_FLOAT(double)
#undef GPUCONV_EMU_ATOMIC_FLOAT
