// cuda_emulator_intrinsics.h: CUDA built-in variables, barriers and device intrinsics as
// host code (included by cuda_emulator.h, after cuda_emulator_runtime.h).
//
// Conversions follow the PTX rules (round to nearest even, saturate, NaN -> 0); min/max
// follow CUDA's overloads (mixed int/unsigned compares as unsigned, a NaN operand yields
// the other one); atomics are real atomics because blocks may run on several OS threads.
#pragma once

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

// CUDA declares the math functions for float, double and the integer types in the global
// namespace; glibc's <math.h> and <stdlib.h> have only the C versions there, so `abs(-2.5f)`
// would call abs(int) and `abs(-5000000000LL)` would truncate. Bring in std's overloads.
using std::abs;
using std::acos;
using std::asin;
using std::atan;
using std::atan2;
using std::cbrt;
using std::ceil;
using std::copysign;
using std::cos;
using std::cosh;
using std::erf;
using std::exp;
using std::exp2;
using std::expm1;
using std::fabs;
using std::fdim;
using std::floor;
using std::fma;
using std::fmax;
using std::fmin;
using std::fmod;
using std::hypot;
using std::isfinite;
using std::isinf;
using std::isnan;
using std::llrint;
using std::llround;
using std::log;
using std::log10;
using std::log1p;
using std::log2;
using std::lrint;
using std::lround;
using std::nearbyint;
using std::pow;
using std::remainder;
using std::rint;
using std::round;
using std::signbit;
using std::sin;
using std::sinh;
using std::sqrt;
using std::tan;
using std::tanh;
using std::trunc;

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
// __byte_perm(x, y, s): byte n of the result is byte (s >> 4n) & 7 of the 8 bytes y:x
// (x the low four); the PRMT instruction's default mode.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long bytes = (static_cast<unsigned long long>(y) << 32) | x;
    unsigned result = 0;
    for (int n = 0; n < 4; ++n) {
        const unsigned selector = (s >> (4 * n)) & 7u;
        result |= static_cast<unsigned>((bytes >> (8 * selector)) & 0xffu) << (8 * n);
    }
    return result;
}
// __dp4a: the four byte products of a and b, summed into c (signed bytes for int, unsigned
// for unsigned), as sm_61+ does in one instruction; wraps modulo 2**32 like the GPU.
inline int __dp4a(int a, int b, int c) {
    unsigned sum = static_cast<unsigned>(c);
    for (int n = 0; n < 4; ++n)
        sum += static_cast<unsigned>(static_cast<int>(static_cast<signed char>(a >> (8 * n))) *
                                     static_cast<int>(static_cast<signed char>(b >> (8 * n))));
    return static_cast<int>(sum);
}
inline unsigned __dp4a(unsigned a, unsigned b, unsigned c) {
    for (int n = 0; n < 4; ++n) c += ((a >> (8 * n)) & 0xffu) * ((b >> (8 * n)) & 0xffu);
    return c;
}
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
