// convolve_direct.cu: direct 2-D correlation, shared-memory tiled.
//
// Kernels:
//   gpuconv_direct<In, Out, Acc, KH, KW>(image, output, weights, height, width, channels,
//                                        kernel_height, kernel_width, anchor_y, anchor_x,
//                                        border, border_value, skip_zero_taps)
//     In   pixel type: unsigned char, unsigned short, short, gpuconv_half (float16), float,
//          double
//     Out  output type: the same six
//     Acc  accumulator: int, long long (exact integer sums), float, double
//     KH, KW  compile-time kernel size (3x3, 5x5, 7x7, 9x9), or 0, 0 for any size at run time
//
// Launch (gpuconv/_backends/cuda/launch.py): block (32, 8); each block owns a 32 x 32
// output tile of one channel (each thread 4 consecutive rows of one column: register
// blocking); grid (ceil(W / 32), min(ceil(H / 32), 65535), min(C, 65535)), the kernel
// striding over tile rows and channels beyond the grid. Dynamic shared memory, in Acc:
// kh * kw weights, then the (32 + kh - 1) x (32 + kw - 1) input tile.
// Images are C-contiguous (H, W, C); global offsets are 64-bit.
#include "gpuconv_common.cuh"

template <typename In, typename Out, typename Acc, int KH, int KW>
__global__ void
gpuconv_direct(const In* __restrict__ image, Out* __restrict__ output,
               const Acc* __restrict__ weights, int height, int width, int channels,
               int kernel_height, int kernel_width, int anchor_y, int anchor_x, int border,
               Acc border_value, int skip_zero_taps) {
    // Compile-time sizes replace the run-time ones so the loops below fully unroll.
    const int kh = KH > 0 ? KH : kernel_height;
    const int kw = KW > 0 ? KW : kernel_width;
    const int halo_height = GPUCONV_TILE_HEIGHT + kh - 1;
    const int halo_width = GPUCONV_TILE_WIDTH + kw - 1;
    GPUCONV_DYNAMIC_SHARED(Acc, shared);
    Acc* shared_weights = shared;
    Acc* tile = shared + kh * kw;
    gpuconv_load_weights(weights, shared_weights, kh * kw);

    const int tiles_down = (height + GPUCONV_TILE_HEIGHT - 1) / GPUCONV_TILE_HEIGHT;
    const int x = blockIdx.x * GPUCONV_TILE_WIDTH + threadIdx.x;
    const int first_row = threadIdx.y * GPUCONV_ROWS_PER_THREAD;  // within the tile
    for (int channel = blockIdx.z; channel < channels; channel += gridDim.z) {
        for (int tile_row = blockIdx.y; tile_row < tiles_down; tile_row += gridDim.y) {
            const int top = tile_row * GPUCONV_TILE_HEIGHT;
            const int left = blockIdx.x * GPUCONV_TILE_WIDTH;
            gpuconv_load_tile(image, tile, halo_height, halo_width, top - anchor_y,
                              left - anchor_x, height, width, channels, channel, border,
                              border_value);
            __syncthreads();

            Acc sums[GPUCONV_ROWS_PER_THREAD];
#pragma unroll
            for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) sums[r] = Acc(0);
            if (KH > 0 && KW > 0) {
                // Each tile value read once per thread feeds every output row it touches.
                // (The weights are uniform broadcasts the compiler loads once per tile: the
                // memory trace leaves them out.)
#pragma unroll
                for (int s = 0; s < GPUCONV_ROWS_PER_THREAD + KH - 1; ++s) {
#pragma unroll
                    for (int j = 0; j < KW; ++j) {
                        GPUCONV_TRACE_LOAD(tile + (first_row + s) * halo_width + threadIdx.x + j);
                        const Acc value = tile[(first_row + s) * halo_width + threadIdx.x + j];
#pragma unroll
                        for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) {
                            const int i = s - r;
                            if (i >= 0 && i < KH) sums[r] += shared_weights[i * KW + j] * value;
                        }
                    }
                }
            } else {
                for (int i = 0; i < kh; ++i) {
                    for (int j = 0; j < kw; ++j) {
                        const Acc weight = shared_weights[i * kw + j];
                        // Only integer images skip zeros: 0 * NaN must stay NaN.
                        if (skip_zero_taps && weight == Acc(0)) continue;
                        const Acc* column = tile + (first_row + i) * halo_width + threadIdx.x + j;
#pragma unroll
                        for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) {
                            GPUCONV_TRACE_LOAD(column + r * halo_width);
                            sums[r] += weight * column[r * halo_width];
                        }
                    }
                }
            }

            if (x < width) {
#pragma unroll
                for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) {
                    const int y = top + first_row + r;
                    if (y < height) {
                        const long long index = ((long long)y * width + x) * channels + channel;
                        GPUCONV_CHECK_INDEX(output, index);
                        GPUCONV_TRACE_STORE(output + index);
                        output[index] = gpuconv_store<Out>(sums[r]);
                    }
                }
            }
            __syncthreads();  // the next tile overwrites shared memory
        }
    }
}
