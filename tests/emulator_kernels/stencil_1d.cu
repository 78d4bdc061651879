// stencil_1d.cu: test kernels for the CUDA emulator (tests/test_cuda_emulator.py).
//   stencil_static<Radius>(const float* input, float* output, int count)
//       output[i] = sum_k weights[k] * input[i + k - Radius], zero outside; each block
//       stages its tile plus a halo of Radius on each side in a static __shared__ array.
//   stencil_dynamic(const float* input, float* output, int count, int radius)
//       the same with a runtime radius, the tile in dynamic shared memory.
//   weights: __constant__ float[2 * MAX_RADIUS + 1], written by the host through get_global.
#ifndef MAX_RADIUS
#error "compile with -DMAX_RADIUS=..."
#endif
#define TILE 64

__constant__ float weights[2 * MAX_RADIUS + 1];

__device__ __forceinline__ float load_or_zero(const float* input, int index, int count) {
    return index >= 0 && index < count ? __ldg(input + index) : 0.0f;
}

template <int Radius>
__global__ void __launch_bounds__(TILE) stencil_static(const float* __restrict__ input,
                                                       float* __restrict__ output, int count) {
    __shared__ __align__(16) float tile[TILE + 2 * Radius];
    const int first = blockIdx.x * TILE;
    for (int j = threadIdx.x; j < TILE + 2 * Radius; j += blockDim.x)
        tile[j] = load_or_zero(input, first + j - Radius, count);
    __syncthreads();
    const int i = first + threadIdx.x;
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k <= 2 * Radius; ++k) sum = __fmaf_rn(weights[k], tile[threadIdx.x + k], sum);
    if (i < count) output[i] = sum;
}

__global__ void stencil_dynamic(const float* __restrict__ input, float* __restrict__ output,
                                int count, int radius) {
#ifdef GPUCONV_EMULATOR
    float* tile = static_cast<float*>(gpuconv_emu::dynamic_shared_memory());
#else
    extern __shared__ float tile[];
#endif
    const int first = blockIdx.x * blockDim.x;
    for (int j = threadIdx.x; j < (int)blockDim.x + 2 * radius; j += blockDim.x)
        tile[j] = load_or_zero(input, first + j - radius, count);
    __syncthreads();
    const int i = first + threadIdx.x;
    float sum = 0.0f;
    for (int k = 0; k <= 2 * radius; ++k) sum += weights[k] * tile[threadIdx.x + k];
    if (i < count) output[i] = sum;
}
