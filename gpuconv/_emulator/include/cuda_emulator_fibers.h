// cuda_emulator_fibers.h: the CUDA emulator's fibers (included by cuda_emulator_runtime.h).
//
// A context switch (six callee-saved registers on x86-64, ucontext elsewhere or with
// -DGPUCONV_EMULATOR_UCONTEXT) and a process-wide pool of fiber stacks with guard pages.
#pragma once

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

// Fiber stacks: enough for kernels with local arrays at -O1 -g; a guard page below each.
constexpr std::size_t kStackBytes = 256 * 1024;

// ---------------------------------------------------------------- fiber stacks
// Stacks are mmap'ed once and reused by every later launch in the process. Each stack
// with its guard page is two memory mappings, and Linux allows a process 65530: the
// pool must be one for the process, not one per module (each module keeps its own
// inline variables, -fno-gnu-unique). So the loader points every module it loads at
// the pool of the first one (gpuconv_emu_share_stacks, generated beside the launcher).
inline std::mutex stack_pool_mutex;
inline std::vector<char*> stack_pool;

inline char* take_own_stack() {
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
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (memory == MAP_FAILED) return nullptr;
    mprotect(memory, page, PROT_NONE);  // an overflow faults instead of corrupting memory
    return static_cast<char*>(memory) + page;
}

inline void return_own_stack(char* stack) {
    std::lock_guard<std::mutex> lock(stack_pool_mutex);
    stack_pool.push_back(stack);
}

// The pool this module uses: its own until the loader shares the first module's.
inline char* (*take_stack_from)() = take_own_stack;
inline void (*return_stack_to)(char*) = return_own_stack;

inline char* take_stack() { return take_stack_from(); }
inline void return_stack(char* stack) { return_stack_to(stack); }

}  // namespace gpuconv_emu
