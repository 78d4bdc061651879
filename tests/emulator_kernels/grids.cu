// grids.cu: test kernels for the CUDA emulator (tests/test_cuda_emulator.py).
//   coordinates(unsigned* out)  every thread of a 1-, 2- or 3-D grid of 1-, 2- or 3-D blocks
//       writes its global (x, y, z) and its block's linear index to its own slot, so the
//       test can check that each thread ran exactly once with the right built-ins.
//   scale<T>(T* values, T factor, long long count)  values[i] *= factor (scalar arguments)
//   transpose_tile(const float* in, float* out, int rows, int cols)  a 2-D shared tile
//       (padded against bank conflicts) written by rows and read by columns.
__global__ void coordinates(unsigned* out) {
    const unsigned x = blockIdx.x * blockDim.x + threadIdx.x;
    const unsigned y = blockIdx.y * blockDim.y + threadIdx.y;
    const unsigned z = blockIdx.z * blockDim.z + threadIdx.z;
    const unsigned width = gridDim.x * blockDim.x, height = gridDim.y * blockDim.y;
    const unsigned slot = (z * height + y) * width + x;
    out[4 * slot + 0] = x;
    out[4 * slot + 1] = y;
    out[4 * slot + 2] = z;
    out[4 * slot + 3] = (blockIdx.z * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
}

template <typename T>
__global__ void scale(T* values, T factor, long long count) {
    const long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < count) values[i] *= factor;
}

#define SIDE 16
__global__ void transpose_tile(const float* in, float* out, int rows, int cols) {
    __shared__ float tile[SIDE][SIDE + 1];
    int x = blockIdx.x * SIDE + threadIdx.x, y = blockIdx.y * SIDE + threadIdx.y;
    if (x < cols && y < rows) tile[threadIdx.y][threadIdx.x] = in[y * cols + x];
    __syncthreads();
    x = blockIdx.y * SIDE + threadIdx.x;
    y = blockIdx.x * SIDE + threadIdx.y;
    if (x < rows && y < cols) out[y * rows + x] = tile[threadIdx.x][threadIdx.y];
}
