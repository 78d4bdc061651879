// faults.cu: kernels with the bugs the CUDA emulator must report (tests/test_cuda_emulator.py).
//   early_return_barrier(float* data, int count)  threads past `count` return before a
//       __syncthreads() the others wait at: a barrier not all threads reach.
//   split_barriers(int* data)  even and odd threads wait at two different barriers.
//   read_past_end(const float* input, float* output, int count)  reads input[count]
//       through the emulator's bounds check.
//   trap_if_negative(const int* values)  __trap() when a value is negative.
//   divide(const int* a, int* out, int divisor)  integer division (by zero: SIGFPE on a CPU).
//   deep_stack(float* out, int n)  a local array larger than a fiber stack.
//   wild_read(float* out)  reads through a null-page pointer, unchecked.
//   wait_for_flag(int* flag)  thread 0 spins until the last thread sets a flag: fine on a GPU,
//       a hang for fibers, which switch only at barriers.
//   missing_barrier(const float* in, float* out)  reverses each block's values through
//       shared memory but forgets the __syncthreads() between the store and the load.
#ifdef GPUCONV_EMULATOR
#define LOAD(pointer, index) GPUCONV_EMU_AT(pointer, index)
#else
#define LOAD(pointer, index) (pointer)[index]
#endif

__global__ void early_return_barrier(float* data, int count) {
    __shared__ float staged[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    staged[threadIdx.x] = data[i];
    __syncthreads();
    data[i] = staged[blockDim.x - 1 - threadIdx.x];
}

__global__ void split_barriers(int* data) {
    if (threadIdx.x % 2 == 0) {
        data[threadIdx.x] = 1;
        __syncthreads();
    } else {
        data[threadIdx.x] = 2;
        __syncthreads();
    }
}

__global__ void read_past_end(const float* input, float* output, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) output[i] = LOAD(input, i + 1);
}

__global__ void trap_if_negative(const int* values) {
    if (values[threadIdx.x] < 0) __trap();
}

__global__ void missing_barrier(const float* in, float* out) {
    __shared__ float staged[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    staged[threadIdx.x] = in[i];
    out[i] = staged[blockDim.x - 1 - threadIdx.x];  // a race: no barrier before this load
}

__global__ void divide(const int* a, int* out, int divisor) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = a[i] / divisor;
}

__global__ void deep_stack(float* out, int n) {
    float big[200000];  // 800 kB: more than a fiber stack
    for (int i = 0; i < n; ++i) big[i] = i * 0.5f;
    out[threadIdx.x] = big[n - 1];
}

__global__ void wild_read(float* out) {
    const float* nowhere = reinterpret_cast<const float*>(16);
    out[threadIdx.x] = *nowhere;
}

__global__ void wait_for_flag(int* flag) {
    if (threadIdx.x == blockDim.x - 1) atomicExch(flag, 1);
    while (atomicAdd(flag, 0) == 0) {
    }
}
