// gpuconv_common.cuh: what every gpuconv kernel shares.
//
// Contents (no kernels here):
//   GPUCONV_TILE_WIDTH, GPUCONV_BLOCK_HEIGHT, GPUCONV_ROWS_PER_THREAD  the tile geometry, which
//       gpuconv/_backends/cuda/launch.py repeats (tests/test_cuda_compile.py checks they agree)
//   GPUCONV_DYNAMIC_SHARED(type, name)  the block's dynamic shared memory as a `type*`
//   GPUCONV_CHECK_INDEX(pointer, index) a bounds check on every global load and store
//       (active in the CPU emulator, nothing on a real GPU)
//   GPUCONV_TRACE_LOAD(address), GPUCONV_TRACE_STORE(address)  one thread's access of
//       sizeof(*address) bytes, global or shared, for the emulator's memory counters
//       (the GPU performance model, gpuconv/_gpumodel/, reads them); nothing on a real GPU
//   gpuconv_source_index()              the border rule: gpuconv/_borders.py source_indices, exactly
//   gpuconv_store<Out, Acc>()           saturate_cast: round half to even, clamp, NaN -> 0
//   gpuconv_to_acc<Acc, In>()           pixel to accumulator conversion
//   gpuconv_dp4a_u8s8()                 four unsigned pixel bytes times four signed taps
//   gpuconv_pack_u8()                   four ints clamped to uint8, packed into a word
//   gpuconv_half                        an IEEE binary16 pixel (numpy float16): 2 bytes in
//       memory, converted with one PTX cvt each way (round to nearest even at the store);
//       no cuda_fp16.h, which bare NVRTC (the compile checks) does not ship
//
// Border codes are OpenCV's: CONSTANT=0 REPLICATE=1 REFLECT=2 WRAP=3 REFLECT101=4.
#pragma once

#define GPUCONV_TILE_WIDTH 32
#define GPUCONV_BLOCK_HEIGHT 8
#define GPUCONV_ROWS_PER_THREAD 4
#define GPUCONV_TILE_HEIGHT (GPUCONV_BLOCK_HEIGHT * GPUCONV_ROWS_PER_THREAD)
#define GPUCONV_THREADS (GPUCONV_TILE_WIDTH * GPUCONV_BLOCK_HEIGHT)

#define GPUCONV_BORDER_CONSTANT 0
#define GPUCONV_BORDER_REPLICATE 1
#define GPUCONV_BORDER_REFLECT 2
#define GPUCONV_BORDER_WRAP 3
#define GPUCONV_BORDER_REFLECT101 4

#ifdef GPUCONV_EMULATOR
// The emulator's header maps the CUDA keywords; these guards cover any it leaves out.
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif
#define GPUCONV_DYNAMIC_SHARED(type, name) \
    type* name = static_cast<type*>(gpuconv_emu::dynamic_shared_memory())
#define GPUCONV_CHECK_INDEX(pointer, index)                                                   \
    gpuconv_emu::check_global_index((const void*)(pointer), (long long)(index),              \
                                    (unsigned long long)sizeof(*(pointer)), __FILE__, __LINE__)
#define GPUCONV_TRACE_LOAD(address)                                                           \
    gpuconv_emu::trace_access((const void*)(address), sizeof(*(address)), 0, __FILE__, __LINE__)
#define GPUCONV_TRACE_STORE(address)                                                          \
    gpuconv_emu::trace_access((const void*)(address), sizeof(*(address)), 1, __FILE__, __LINE__)
#else
// One block-wide buffer; each kernel carves it up (weights first, then tiles).
#define GPUCONV_DYNAMIC_SHARED(type, name)                          \
    extern __shared__ __align__(16) unsigned char gpuconv_shared_bytes[]; \
    type* name = reinterpret_cast<type*>(gpuconv_shared_bytes)
#define GPUCONV_CHECK_INDEX(pointer, index) ((void)0)
#define GPUCONV_TRACE_LOAD(address) ((void)0)
#define GPUCONV_TRACE_STORE(address) ((void)0)
#endif

// Floor modulo: the result is in [0, period) also for negative positions. Positions are
// 32-bit: plan_launch refuses axes of 2**30 pixels or more (64-bit division would be a
// slow subroutine call, with register spills, on the GPU).
__device__ __forceinline__ int gpuconv_floor_mod(int value, int period) {
    const int remainder = value % period;
    return remainder < 0 ? remainder + period : remainder;
}

// Where position `p` along an axis of length `size` reads from; -1 means "the constant".
// The patterns repeat for any distance outside the axis (kernels larger than the image),
// as scipy.ndimage extends a line; this mirrors gpuconv/_borders.py line by line.
__device__ __forceinline__ int gpuconv_source_index(int p, int size, int border) {
    if (p >= 0 && p < size) return p;
    if (border == GPUCONV_BORDER_CONSTANT) return -1;
    if (border == GPUCONV_BORDER_REPLICATE) return p < 0 ? 0 : size - 1;
    if (border == GPUCONV_BORDER_WRAP) return gpuconv_floor_mod(p, size);
    if (border == GPUCONV_BORDER_REFLECT) {  // fedcba|abcdefgh|hgfedcb, period 2n
        const int folded = gpuconv_floor_mod(p, 2 * size);
        return folded >= size ? 2 * size - 1 - folded : folded;
    }
    // REFLECT101: gfedcb|abcdefgh|gfedcba, period 2n - 2
    if (size == 1) return 0;
    const int period = 2 * size - 2;
    const int folded = gpuconv_floor_mod(p, period);
    return folded >= size ? period - folded : folded;
}

#ifdef GPUCONV_EMULATOR
// The emulator runs on the host (g++): _Float16 converts with IEEE rounding, to nearest even.
__device__ __forceinline__ float gpuconv_half_to_float(unsigned short bits) {
    _Float16 value;
    __builtin_memcpy(&value, &bits, 2);
    return static_cast<float>(value);
}
__device__ __forceinline__ unsigned short gpuconv_float_to_half(float value) {
    const _Float16 half = static_cast<_Float16>(value);
    unsigned short bits;
    __builtin_memcpy(&bits, &half, 2);
    return bits;
}
__device__ __forceinline__ unsigned short gpuconv_double_to_half(double value) {
    const _Float16 half = static_cast<_Float16>(value);
    unsigned short bits;
    __builtin_memcpy(&bits, &half, 2);
    return bits;
}
#else
__device__ __forceinline__ float gpuconv_half_to_float(unsigned short bits) {
    float value;
    asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(bits));
    return value;
}
__device__ __forceinline__ unsigned short gpuconv_float_to_half(float value) {
    unsigned short bits;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(bits) : "f"(value));
    return bits;
}
__device__ __forceinline__ unsigned short gpuconv_double_to_half(double value) {
    unsigned short bits;  // one rounding from double, not two through float
    asm("cvt.rn.f16.f64 %0, %1;" : "=h"(bits) : "d"(value));
    return bits;
}
#endif

// Four unsigned bytes of `pixels` times four signed bytes of `taps`, summed into `sum`:
// one dp4a (sm_61+; older GPUs and the emulator spell it out). Exact: at most 4 x 255 x 128
// per call. CUDA's __dp4a has no mixed form, so PTX here.
__device__ __forceinline__ int gpuconv_dp4a_u8s8(unsigned pixels, unsigned taps, int sum) {
#if defined(GPUCONV_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 610)  // no dp4a
    for (int n = 0; n < 4; ++n)
        sum += int((pixels >> (8 * n)) & 0xffu) * int(static_cast<signed char>(taps >> (8 * n)));
    return sum;
#else
    int result;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(result) : "r"(pixels), "r"(taps), "r"(sum));
    return result;
#endif
}

// Four ints clamped to [0, 255] (the store rule of exact integer sums into uint8) and
// packed little-endian into one word: two cvt.pack.sat (sm_72+; older GPUs and the
// emulator clamp and shift).
__device__ __forceinline__ unsigned gpuconv_pack_u8(int v0, int v1, int v2, int v3) {
#if defined(GPUCONV_EMULATOR) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 720)  // no cvt.pack
    const int values[4] = {v0, v1, v2, v3};
    unsigned word = 0;
    for (int n = 0; n < 4; ++n) {
        const int clamped = values[n] < 0 ? 0 : values[n] > 255 ? 255 : values[n];
        word |= unsigned(clamped) << (8 * n);
    }
    return word;
#else
    unsigned high, word;
    asm("cvt.pack.sat.u8.s32.b32 %0, %1, %2, %3;" : "=r"(high) : "r"(v3), "r"(v2), "r"(0));
    asm("cvt.pack.sat.u8.s32.b32 %0, %1, %2, %3;" : "=r"(word) : "r"(v1), "r"(v0), "r"(high));
    return word;
#endif
}

// A float16 pixel: only loaded (to the accumulator) and stored (from it), never summed.
struct gpuconv_half {
    unsigned short bits;
    gpuconv_half() = default;
    __device__ __forceinline__ explicit gpuconv_half(float value)
        : bits(gpuconv_float_to_half(value)) {}
    __device__ __forceinline__ explicit gpuconv_half(double value)
        : bits(gpuconv_double_to_half(value)) {}
    // Exact integer sums (an integer image and kernel into a float16 output): exact in double.
    __device__ __forceinline__ explicit gpuconv_half(int value)
        : bits(gpuconv_double_to_half(double(value))) {}
    __device__ __forceinline__ explicit gpuconv_half(long long value)
        : bits(gpuconv_double_to_half(double(value))) {}
};

#ifndef GPUCONV_EMULATOR
// The read-only data cache load of a float16 pixel (the emulator's __ldg is a template).
__device__ __forceinline__ gpuconv_half __ldg(const gpuconv_half* pointer) {
    gpuconv_half value;
    value.bits = __ldg(reinterpret_cast<const unsigned short*>(pointer));
    return value;
}
#endif

template <typename Acc, typename In>
struct gpuconv_convert {
    __device__ __forceinline__ static Acc apply(In value) { return static_cast<Acc>(value); }
};
template <typename Acc>
struct gpuconv_convert<Acc, gpuconv_half> {
    __device__ __forceinline__ static Acc apply(gpuconv_half value) {
        return static_cast<Acc>(gpuconv_half_to_float(value.bits));  // exact, also to double
    }
};

template <typename Acc, typename In>
__device__ __forceinline__ Acc gpuconv_to_acc(In value) {
    return gpuconv_convert<Acc, In>::apply(value);
}

// Integer limits of the output types, without <limits> (NVRTC has no standard library).
template <typename T> struct gpuconv_range;
template <> struct gpuconv_range<unsigned char> { static constexpr long long low = 0, high = 255; };
template <> struct gpuconv_range<unsigned short> { static constexpr long long low = 0, high = 65535; };
template <> struct gpuconv_range<short> { static constexpr long long low = -32768, high = 32767; };

template <typename T> struct gpuconv_is_float { static constexpr bool value = false; };
template <> struct gpuconv_is_float<float> { static constexpr bool value = true; };
template <> struct gpuconv_is_float<double> { static constexpr bool value = true; };
template <> struct gpuconv_is_float<gpuconv_half> { static constexpr bool value = true; };

__device__ __forceinline__ float gpuconv_round_even(float value) { return rintf(value); }
__device__ __forceinline__ double gpuconv_round_even(double value) { return rint(value); }

// The store rule (OpenCV's saturate_cast, the NumPy reference's saturate_cast):
// float outputs get the raw sum; integer outputs are rounded half to even (rint under
// the default rounding mode), clamped to the type's range, and NaN becomes 0.
template <typename Out, bool OutIsFloat, bool AccIsFloat> struct gpuconv_store_rule;

template <typename Out, bool AccIsFloat>
struct gpuconv_store_rule<Out, true, AccIsFloat> {
    template <typename Acc>
    __device__ __forceinline__ static Out apply(Acc sum) { return static_cast<Out>(sum); }
};

template <typename Out>
struct gpuconv_store_rule<Out, false, true> {
    template <typename Acc>
    __device__ __forceinline__ static Out apply(Acc sum) {
        if (sum != sum) return Out(0);  // NaN
        Acc rounded = gpuconv_round_even(sum);
        if (rounded <= Acc(gpuconv_range<Out>::low)) return Out(gpuconv_range<Out>::low);
        if (rounded >= Acc(gpuconv_range<Out>::high)) return Out(gpuconv_range<Out>::high);
        return static_cast<Out>(rounded);
    }
};

template <typename Out>
struct gpuconv_store_rule<Out, false, false> {
    template <typename Acc>
    __device__ __forceinline__ static Out apply(Acc sum) {  // exact integer sums: clamp only
        if (sum <= Acc(gpuconv_range<Out>::low)) return Out(gpuconv_range<Out>::low);
        if (sum >= Acc(gpuconv_range<Out>::high)) return Out(gpuconv_range<Out>::high);
        return static_cast<Out>(sum);
    }
};

template <typename Out, typename Acc>
__device__ __forceinline__ Out gpuconv_store(Acc sum) {
    return gpuconv_store_rule<Out, gpuconv_is_float<Out>::value,
                              gpuconv_is_float<Acc>::value>::apply(sum);
}

// Loads the block's input tile plus halo (rows [top, top + halo_height), columns
// [left, left + halo_width) of channel `channel`) into shared memory as Acc, applying
// the border rule here, once per loaded pixel, never per tap. A tile whose halo lies
// inside the image takes the branch-free path.
template <typename In, typename Acc>
__device__ __forceinline__ void gpuconv_load_tile(
    const In* __restrict__ image, Acc* tile, int halo_height, int halo_width,
    int top, int left, int height, int width, int channels, int channel,
    int border, Acc border_value) {
    const long long row_pitch = (long long)width * channels;
    const bool interior = top >= 0 && left >= 0 && top + halo_height <= height &&
                          left + halo_width <= width;
    if (interior) {
        for (int r = threadIdx.y; r < halo_height; r += GPUCONV_BLOCK_HEIGHT) {
            const long long row_start = (long long)(top + r) * row_pitch + (long long)left * channels + channel;
            for (int c = threadIdx.x; c < halo_width; c += GPUCONV_TILE_WIDTH) {
                const long long index = row_start + (long long)c * channels;
                GPUCONV_CHECK_INDEX(image, index);
                GPUCONV_TRACE_LOAD(image + index);
                GPUCONV_TRACE_STORE(tile + r * halo_width + c);
                tile[r * halo_width + c] = gpuconv_to_acc<Acc>(__ldg(image + index));
            }
        }
        return;
    }
    for (int r = threadIdx.y; r < halo_height; r += GPUCONV_BLOCK_HEIGHT) {
        const int source_row = gpuconv_source_index(top + r, height, border);
        for (int c = threadIdx.x; c < halo_width; c += GPUCONV_TILE_WIDTH) {
            const int source_col = gpuconv_source_index(left + c, width, border);
            Acc value = border_value;
            if (source_row >= 0 && source_col >= 0) {
                const long long index =
                    source_row * row_pitch + (long long)source_col * channels + channel;
                GPUCONV_CHECK_INDEX(image, index);
                GPUCONV_TRACE_LOAD(image + index);
                value = gpuconv_to_acc<Acc>(__ldg(image + index));
            }
            GPUCONV_TRACE_STORE(tile + r * halo_width + c);
            tile[r * halo_width + c] = value;
        }
    }
}

// Copies `count` weights from global to shared memory (a broadcast source for every tap).
template <typename Acc>
__device__ __forceinline__ void gpuconv_load_weights(const Acc* __restrict__ weights,
                                                     Acc* shared_weights, int count) {
    const int thread = threadIdx.y * GPUCONV_TILE_WIDTH + threadIdx.x;
    for (int k = thread; k < count; k += GPUCONV_THREADS) {
        GPUCONV_CHECK_INDEX(weights, k);
        GPUCONV_TRACE_LOAD(weights + k);
        GPUCONV_TRACE_STORE(shared_weights + k);
        shared_weights[k] = weights[k];
    }
}
