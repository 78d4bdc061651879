// reduce_sum.cu: test kernels for the CUDA emulator (tests/test_cuda_emulator.py).
//   block_sum<T>(const T* values, T* block_sums, int count)
//       each block sums blockDim.x consecutive values with a shared-memory tree
//       reduction (one barrier per level) and writes one partial sum per block.
//   count_positive(const float* values, int* counts, int count)
//       __syncthreads_count: how many of the block's values are positive.
template <typename T>
__global__ void block_sum(const T* __restrict__ values, T* __restrict__ block_sums, int count) {
    __shared__ T partial[1024];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    partial[threadIdx.x] = i < count ? values[i] : T(0);
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0) block_sums[blockIdx.x] = partial[0];
}

__global__ void count_positive(const float* values, int* counts, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    const int positive = __syncthreads_count(i < count && values[i] > 0.0f);
    if (threadIdx.x == 0) counts[blockIdx.x] = positive;
}
