// cuda_emulator_faults.h: turning faults and hangs in kernel code into launch errors
// (included by cuda_emulator_runtime.h, between the worker state and the scheduler).
//
// SIGSEGV, SIGBUS and SIGFPE raised by a fiber, and the watchdog's timeout signal, end the
// fiber through gpuconv_emu::fail() like any other error in a thread.
#pragma once

#include <pthread.h>

#include <chrono>
#include <condition_variable>
#include <csignal>

namespace gpuconv_emu {

// ---------------------------------------------------------------- faults
// A fault in kernel code (a fiber stack overflow, an integer division by zero, a wild
// pointer in a release build) would kill the Python process. While a launch runs, SIGSEGV,
// SIGBUS and SIGFPE raised by a fiber are turned into a launch error instead: the handler
// runs on an alternate signal stack, records the error and switches to the scheduler,
// abandoning the fiber as any other failing fiber. SA_NODEFER keeps the signal unblocked,
// since the handler never returns. Faults anywhere else go to the previous handlers.
// The signal the watchdog sends to interrupt a launch that runs too long (a real-time
// signal: nothing else in a Python process uses it).
inline int timeout_signal() { return SIGRTMIN + 5; }
constexpr int kHandledSignals = 4;
inline int handled_signal(int i) {
    const int signals[kHandledSignals] = {SIGSEGV, SIGBUS, SIGFPE, timeout_signal()};
    return signals[i];
}
constexpr std::size_t kSignalStackBytes = 64 * 1024;

struct FaultHandlers {
    std::mutex mutex;
    int users = 0;
    struct sigaction previous[kHandledSignals];
    // The timeout signal's handler stays once installed (a late signal must never find the
    // default action, which ends the process); each module installs it once, chaining to
    // the handler it replaced, so that another module's watchdog still reaches its threads.
    bool timeout_handler_installed = false;
};
inline FaultHandlers fault_handlers;

inline void on_fault(int signal, siginfo_t* info, void*) {
    WorkerState& state = worker;
    if (signal == timeout_signal()) {
        if (state.launch == nullptr) {  // not this module's launch: pass it on
            const struct sigaction& previous = fault_handlers.previous[kHandledSignals - 1];
            if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction != nullptr)
                previous.sa_sigaction(signal, info, nullptr);
            return;
        }
        if (!state.in_fiber) return;  // the scheduler sees `failed` before the next fiber
        fail(format("the launch ran longer than %g s (GPUCONV_EMULATOR_TIMEOUT): a thread "
                    "loops forever, or spin-waits for another thread, which fibers cannot do",
                    state.launch->timeout_seconds));
    }
    if (state.fibers == nullptr || !state.in_fiber) {
        // Not from a fiber: restore the previous handler; the fault repeats and reaches it.
        for (int i = 0; i < kHandledSignals; ++i)
            if (handled_signal(i) == signal)
                sigaction(signal, &fault_handlers.previous[i], nullptr);
        return;
    }
    const Fiber& fiber = (*state.fibers)[state.current];
    const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
    const auto stack_bottom = reinterpret_cast<std::uintptr_t>(fiber.stack);
    if (signal == SIGSEGV && address < stack_bottom && address + 65536 >= stack_bottom)
        fail(format("stack overflow: a thread used more than the emulator's %zu KiB fiber "
                    "stack (large local arrays?)",
                    kStackBytes / 1024));
    if (signal == SIGFPE)
        fail(info->si_code == FPE_INTDIV
                 ? std::string("integer division by zero (SIGFPE; a GPU would return garbage)")
                 : format("arithmetic fault (SIGFPE, code %d)", info->si_code));
    fail(format("invalid memory access at address %p (%s); debug builds check global indices "
                "passed to gpuconv_emu::check_global_index",
                info->si_addr, signal == SIGBUS ? "SIGBUS" : "SIGSEGV"));
}

inline void install_fault_handlers() {
    std::lock_guard<std::mutex> lock(fault_handlers.mutex);
    struct sigaction action;
    std::memset(&action, 0, sizeof action);
    action.sa_sigaction = on_fault;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER | SA_RESTART;
    sigemptyset(&action.sa_mask);
    if (!fault_handlers.timeout_handler_installed) {
        sigaction(timeout_signal(), &action, &fault_handlers.previous[kHandledSignals - 1]);
        fault_handlers.timeout_handler_installed = true;
    }
    if (fault_handlers.users++ > 0) return;
    for (int i = 0; i < kHandledSignals - 1; ++i)
        sigaction(handled_signal(i), &action, &fault_handlers.previous[i]);
}

inline void remove_fault_handlers() {
    std::lock_guard<std::mutex> lock(fault_handlers.mutex);
    if (--fault_handlers.users > 0) return;
    for (int i = 0; i < kHandledSignals - 1; ++i)
        sigaction(handled_signal(i), &fault_handlers.previous[i], nullptr);
}

// The alternate signal stack of one worker thread, for as long as it runs a launch.
struct SignalStack {
    stack_t previous{};
    void* memory = nullptr;
    SignalStack() {
        memory = std::malloc(kSignalStackBytes);
        if (memory == nullptr) return;
        stack_t stack{};
        stack.ss_sp = memory;
        stack.ss_size = kSignalStackBytes;
        sigaltstack(&stack, &previous);
    }
    ~SignalStack() {
        if (memory == nullptr) return;
        sigaltstack(&previous, nullptr);
        std::free(memory);
    }
};

// Interrupts the launch's worker threads if it has not finished after `timeout_seconds`:
// each thread running a fiber fails it (see on_fault); the others stop at the next fiber.
inline void watch(Launch& launch, double timeout_seconds, std::mutex& done_mutex,
                  std::condition_variable& done_changed, const bool& done) {
    std::unique_lock<std::mutex> lock(done_mutex);
    if (done_changed.wait_for(lock, std::chrono::duration<double>(timeout_seconds),
                              [&] { return done; }))
        return;
    lock.unlock();
    {
        std::lock_guard<std::mutex> error_lock(launch.error_mutex);
        if (launch.error.empty())  // a fiber's own message (with its thread) replaces this
            launch.error = format("the launch ran longer than %g s (GPUCONV_EMULATOR_TIMEOUT)",
                                  timeout_seconds);
        launch.failed.store(true);
    }
    std::lock_guard<std::mutex> workers_lock(launch.workers_mutex);
    for (pthread_t thread : launch.worker_threads) pthread_kill(thread, timeout_signal());
}

}  // namespace gpuconv_emu
