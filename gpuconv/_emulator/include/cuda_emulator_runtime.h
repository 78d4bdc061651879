// cuda_emulator_runtime.h: the CUDA emulator's launch runtime (included by cuda_emulator.h).
//
// The per-OS-thread worker state behind threadIdx & co., errors, barriers, the global bounds
// check, the barrier scheduler and the launch entry point.
// Fibers: cuda_emulator_fibers.h; faults and the watchdog: cuda_emulator_faults.h; what the
// generated launchers use: cuda_emulator_launchers.h.
#pragma once

#include "cuda_emulator_fibers.h"

namespace gpuconv_emu {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned long long kMaxSharedBytes = 228ull * 1024;

// ---------------------------------------------------------------- memory counters
// With counters on (a launch's `trace`), every trace_access() of a thread is recorded; when
// its block ends, the k-th access of each thread of a warp at one call site (file, line,
// load or store) forms one warp request, as a GPU coalesces the lanes of one instruction.
// Global requests count 32-byte sectors, shared ones wavefronts (the most distinct 4-byte
// words that fall into one of the 32 banks).
struct TraceEvent {
    const char* file;
    int line;
    int store;
    std::uintptr_t address;
    unsigned long long bytes;
};

enum TraceKind { global_load = 0, global_store = 1, shared_load = 2, shared_store = 3 };
enum TraceField { field_requests = 0, field_accesses = 1, field_bytes = 2, field_sectors = 3,
                  field_wavefronts = 4 };
constexpr int kTraceKinds = 4, kTraceFields = 5;

struct TraceTotals {
    unsigned long long value[kTraceKinds][kTraceFields] = {};
};

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
    // The watchdog: the OS threads running blocks, which it interrupts after the timeout.
    double timeout_seconds = 0;
    std::mutex workers_mutex;
    std::vector<pthread_t> worker_threads;
    bool timed_out = false;
    // Memory counters (opt-in), and the blocks to run when not the whole grid.
    bool trace = false;
    std::vector<uint3> only_blocks;
    std::mutex trace_mutex;
    TraceTotals totals;
    // Per entry of only_blocks: the distinct global sectors (address / 32) loaded, stored.
    std::vector<std::vector<unsigned long long>> loaded_sectors, stored_sectors;
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
    bool in_fiber = false;  // a fiber (kernel code), not the scheduler, is running
    std::vector<std::vector<TraceEvent>>* trace_events = nullptr;  // per thread of the block
};

inline thread_local WorkerState worker;

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

// One thread's access of `bytes` bytes at `address` (a global or shared load or store), for
// the memory counters; nothing unless the launch asked for counters.
inline void trace_access(const void* address, unsigned long long bytes, int store,
                         const char* file, int line) {
    if (!worker.in_fiber || worker.trace_events == nullptr) return;
    (*worker.trace_events)[worker.current].push_back(
        TraceEvent{file, line, store, reinterpret_cast<std::uintptr_t>(address), bytes});
}

// Turns the block's recorded accesses into warp requests and adds them to the launch's
// totals (and, for a listed block, its distinct global sectors to slot `slot`).
inline void aggregate_trace(std::vector<std::vector<TraceEvent>>& events, long long slot) {
    Launch& launch = *worker.launch;
    const std::uintptr_t shared = reinterpret_cast<std::uintptr_t>(worker.dynamic_shared);
    const std::uintptr_t shared_end = shared + launch.shared_bytes;
    using Site = std::tuple<const char*, int, int>;
    // (warp, site, occurrence) -> the lanes' (address, bytes)
    std::map<std::tuple<std::size_t, Site, unsigned>,
             std::vector<std::pair<std::uintptr_t, unsigned long long>>> grouped;
    for (std::size_t thread = 0; thread < events.size(); ++thread) {
        std::map<Site, unsigned> occurrences;
        for (const TraceEvent& event : events[thread]) {
            const Site site{event.file, event.line, event.store};
            const unsigned occurrence = occurrences[site]++;
            grouped[{thread / 32, site, occurrence}].emplace_back(event.address, event.bytes);
        }
        events[thread].clear();
    }
    TraceTotals totals;
    std::set<unsigned long long> loaded, stored;
    for (const auto& [key, lanes] : grouped) {
        const int store = std::get<2>(std::get<1>(key));
        const bool in_shared = lanes.front().first >= shared && lanes.front().first < shared_end;
        const int kind = in_shared ? (store ? shared_store : shared_load)
                                   : (store ? global_store : global_load);
        unsigned long long* value = totals.value[kind];
        value[field_requests] += 1;
        value[field_accesses] += lanes.size();
        if (in_shared) {
            std::map<unsigned, std::set<std::uintptr_t>> banks;
            for (const auto& [address, bytes] : lanes) {
                value[field_bytes] += bytes;
                for (std::uintptr_t word = address / 4; word <= (address + bytes - 1) / 4; ++word)
                    banks[static_cast<unsigned>(word % 32)].insert(word);
            }
            std::size_t most = 0;
            for (const auto& bank : banks) most = std::max(most, bank.second.size());
            value[field_wavefronts] += most;
        } else {
            std::set<unsigned long long> touched;
            for (const auto& [address, bytes] : lanes) {
                value[field_bytes] += bytes;
                for (std::uintptr_t sector = address / 32; sector <= (address + bytes - 1) / 32;
                     ++sector)
                    touched.insert(sector);
            }
            value[field_sectors] += touched.size();
            if (slot >= 0) (store ? stored : loaded).insert(touched.begin(), touched.end());
        }
    }
    std::lock_guard<std::mutex> lock(launch.trace_mutex);
    for (int kind = 0; kind < kTraceKinds; ++kind)
        for (int field = 0; field < kTraceFields; ++field)
            launch.totals.value[kind][field] += totals.value[kind][field];
    if (slot >= 0) {
        launch.loaded_sectors[slot].assign(loaded.begin(), loaded.end());
        launch.stored_sectors[slot].assign(stored.begin(), stored.end());
    }
}

// `pointer[index]`, bounds-checked in debug builds.
template <class T>
inline T& checked_element(T* pointer, long long index, const char* file, int line) {
    check_global_index(pointer, index, sizeof(T), file, line);
    return pointer[index];
}

}  // namespace gpuconv_emu

#include "cuda_emulator_faults.h"

namespace gpuconv_emu {

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
            worker.in_fiber = true;
            switch_context(worker.scheduler, fibers[i].context);
            worker.in_fiber = false;
            if (fibers[i].state == FiberState::aborted || launch.failed.load()) return false;
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
    SignalStack signal_stack;
    WorkerState& state = worker;
    state.launch = launch;
    {
        std::lock_guard<std::mutex> lock(launch->workers_mutex);
        launch->worker_threads.push_back(pthread_self());
    }
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
    std::vector<std::vector<TraceEvent>> trace_events(fibers.size());
    if (launch->trace) state.trace_events = &trace_events;
    if (!have_stacks || shared == nullptr) {
        record_error("out of memory for fiber stacks or dynamic shared memory");
    } else {
        const unsigned long long blocks_per_plane =
            static_cast<unsigned long long>(launch->grid.x) * launch->grid.y;
        const bool listed = !launch->only_blocks.empty();
        const unsigned long long total =
            listed ? launch->only_blocks.size() : blocks_per_plane * launch->grid.z;
        while (!launch->failed.load()) {
            const unsigned long long next = launch->next_block.fetch_add(1);
            if (next >= total) break;
            if (listed) {
                const uint3 b = launch->only_blocks[next];
                state.block_index = b;
                state.block_linear = b.x + static_cast<unsigned long long>(b.y) * launch->grid.x +
                                     b.z * blocks_per_plane;
            } else {
                state.block_linear = next;
                state.block_index =
                    uint3{static_cast<unsigned>(next % launch->grid.x),
                          static_cast<unsigned>(next / launch->grid.x % launch->grid.y),
                          static_cast<unsigned>(next / blocks_per_plane)};
            }
            if (!run_block(fibers)) break;
            if (launch->trace) aggregate_trace(trace_events, listed ? (long long)next : -1);
        }
    }
    {
        // From here on the watchdog must not signal this thread (it may go back to Python).
        std::lock_guard<std::mutex> lock(launch->workers_mutex);
        auto& threads = launch->worker_threads;
        threads.erase(std::find(threads.begin(), threads.end(), pthread_self()));
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
                  int schedule, unsigned long long seed, double timeout_seconds,
                  char* message, unsigned long long message_capacity, int trace = 0,
                  const unsigned* blocks = nullptr, unsigned long long block_count = 0,
                  unsigned long long* totals = nullptr, unsigned long long* sectors = nullptr,
                  unsigned long long sector_capacity = 0,
                  unsigned long long* sector_offsets = nullptr) {
    Launch state;
    state.thunk = thunk;
    state.args = args;
    state.grid = dim3(grid[0], grid[1], grid[2]);
    state.block = dim3(block[0], block[1], block[2]);
    state.shared_bytes = shared_bytes;
    state.schedule = schedule;
    state.seed = seed;
    state.timeout_seconds = timeout_seconds;
    for (int i = 0; i < allocation_count; ++i)
        state.allocations.push_back(Allocation{allocations[3 * i], allocations[3 * i + 1],
                                               static_cast<int>(allocations[3 * i + 2])});
    state.trace = trace != 0;
    for (unsigned long long i = 0; i < block_count; ++i)
        state.only_blocks.push_back(uint3{blocks[3 * i], blocks[3 * i + 1], blocks[3 * i + 2]});
    state.loaded_sectors.resize(block_count);
    state.stored_sectors.resize(block_count);
    std::string error = check_dimensions(state.grid, state.block, shared_bytes);
    for (const uint3& b : state.only_blocks)
        if (error.empty() && (b.x >= state.grid.x || b.y >= state.grid.y || b.z >= state.grid.z))
            error = format("invalid launch: block (%u, %u, %u) lies outside the grid", b.x, b.y,
                           b.z);
    if (error.empty()) {
        const unsigned long long total =
            block_count ? block_count
                        : static_cast<unsigned long long>(state.grid.x) * state.grid.y * state.grid.z;
        const unsigned long long count =
            std::max(1ull, std::min<unsigned long long>(workers > 0 ? workers : 1, total));
        install_fault_handlers();
        std::mutex done_mutex;
        std::condition_variable done_changed;
        bool done = false;
        std::thread watchdog;
        if (timeout_seconds > 0)
            watchdog = std::thread([&] { watch(state, timeout_seconds, done_mutex, done_changed, done); });
        if (count == 1) {
            run_worker(&state);
        } else {
            std::vector<std::thread> threads;
            for (unsigned long long i = 0; i < count; ++i) threads.emplace_back(run_worker, &state);
            for (std::thread& thread : threads) thread.join();
        }
        {
            std::lock_guard<std::mutex> lock(done_mutex);
            done = true;
        }
        done_changed.notify_all();
        if (watchdog.joinable()) watchdog.join();
        remove_fault_handlers();
        error = state.error;
    }
    if (error.empty() && state.trace && totals != nullptr) {
        for (int kind = 0; kind < kTraceKinds; ++kind)
            for (int field = 0; field < kTraceFields; ++field)
                totals[kind * kTraceFields + field] = state.totals.value[kind][field];
        unsigned long long used = 0;
        for (unsigned long long i = 0; i < block_count && error.empty(); ++i) {
            for (int list = 0; list < 2; ++list) {
                const auto& found = list ? state.stored_sectors[i] : state.loaded_sectors[i];
                sector_offsets[2 * i + list] = used;
                if (used + found.size() > sector_capacity) {
                    error = "the memory counters' sector buffer is too small";
                    break;
                }
                std::copy(found.begin(), found.end(), sectors + used);
                used += found.size();
            }
        }
        if (error.empty()) sector_offsets[2 * block_count] = used;
    }
    if (error.empty()) return 0;
    if (message_capacity > 0) {
        std::strncpy(message, error.c_str(), message_capacity - 1);
        message[message_capacity - 1] = '\0';
    }
    return 1;
}

}  // namespace gpuconv_emu
