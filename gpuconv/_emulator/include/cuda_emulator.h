// cuda_emulator.h: runs CUDA C++ kernels on the CPU, for tests without a GPU.
//
// gpuconv/_emulator/ (module.py, build.py) compiles a kernel source with
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
// The runtime is in cuda_emulator_runtime.h (with cuda_emulator_fibers.h and
// cuda_emulator_faults.h), the launchers' helpers in cuda_emulator_launchers.h, the
// built-ins and intrinsics in cuda_emulator_intrinsics.h; this file holds the keywords and
// vector types.
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
#include <map>
#include <mutex>
#include <set>
#include <tuple>
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

#include "cuda_emulator_runtime.h"
#include "cuda_emulator_launchers.h"
#include "cuda_emulator_intrinsics.h"
