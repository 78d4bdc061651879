// atomics.cu: atomics, block-wide votes and vector types in the CUDA emulator
// (tests/test_cuda_emulator.py).
//   histogram(const unsigned char* values, unsigned* bins, float* total, int* largest, int count)
//       atomicAdd on shared and global counters from every block, a float atomicAdd and an
//       atomicMax over all values.
//   votes(const int* values, int* results)  __syncthreads_and / __syncthreads_or per block.
//   pack_float4(const float* in, float4* out)  vector loads and make_float4 (16-byte aligned).
__global__ void histogram(const unsigned char* values, unsigned* bins, float* total, int* largest,
                          int count) {
    __shared__ unsigned local[256];
    for (int b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += blockDim.x * gridDim.x) {
        atomicAdd(&local[values[i]], 1u);
        atomicAdd(total, (float)values[i]);
        atomicMax(largest, (int)values[i]);
    }
    __syncthreads();
    for (int b = threadIdx.x; b < 256; b += blockDim.x)
        if (local[b] != 0) atomicAdd(&bins[b], local[b]);
}

__global__ void votes(const int* values, int* results) {
    const int value = values[blockIdx.x * blockDim.x + threadIdx.x];
    const int all_positive = __syncthreads_and(value > 0);
    const int any_negative = __syncthreads_or(value < 0);
    if (threadIdx.x == 0) {
        results[2 * blockIdx.x] = all_positive;
        results[2 * blockIdx.x + 1] = any_negative;
    }
}

__global__ void pack_float4(const float* in, float4* out) {
    const int i = threadIdx.x;
    out[i] = make_float4(in[4 * i + 3], in[4 * i + 2], in[4 * i + 1], in[4 * i]);
    static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 as in CUDA");
    static_assert(sizeof(uchar4) == 4 && alignof(uchar4) == 4, "uchar4 as in CUDA");
}
