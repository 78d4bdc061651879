// convolve_global.cu: the fallback when a tile plus its halo does not fit in shared memory
// (e.g. a 101 x 101 kernel in float64).
//
// Kernels:
//   gpuconv_global<In, Out, Acc>(image, output, weights, height, width, channels,
//                                kernel_height, kernel_width, anchor_y, anchor_x, border,
//                                border_value, skip_zero_taps)
//     In, Out, Acc  as in convolve_direct.cu; any kernel size at run time
//
// One output pixel per thread, taps read from global memory (cached) with the border rule
// applied per row and per column of taps. Launch: block (32, 8), grid (ceil(W / 32),
// min(ceil(H / 8), 65535), min(C, 65535)), striding over rows and channels beyond the grid;
// no dynamic shared memory. Slower than the tiled kernels, but any kernel fits.
#include "gpuconv_common.cuh"

template <typename In, typename Out, typename Acc>
__global__ void
gpuconv_global(const In* __restrict__ image, Out* __restrict__ output,
               const Acc* __restrict__ weights, int height, int width, int channels,
               int kernel_height, int kernel_width, int anchor_y, int anchor_x, int border,
               Acc border_value, int skip_zero_taps) {
    const long long row_pitch = (long long)width * channels;
    const int x = blockIdx.x * GPUCONV_TILE_WIDTH + threadIdx.x;
    const int rows_down = (height + GPUCONV_BLOCK_HEIGHT - 1) / GPUCONV_BLOCK_HEIGHT;
    if (x >= width) return;  // no barriers below: threads may leave early
    for (int channel = blockIdx.z; channel < channels; channel += gridDim.z) {
        for (int block_row = blockIdx.y; block_row < rows_down; block_row += gridDim.y) {
            const int y = block_row * GPUCONV_BLOCK_HEIGHT + threadIdx.y;
            if (y >= height) continue;
            Acc sum = Acc(0);
            for (int i = 0; i < kernel_height; ++i) {
                const int source_row = gpuconv_source_index(y + i - anchor_y, height, border);
                for (int j = 0; j < kernel_width; ++j) {
                    const long long weight_index = (long long)i * kernel_width + j;
                    GPUCONV_CHECK_INDEX(weights, weight_index);
                    GPUCONV_TRACE_LOAD(weights + weight_index);
                    const Acc weight = __ldg(weights + weight_index);
                    // Only integer images skip zeros: 0 * NaN must stay NaN.
                    if (skip_zero_taps && weight == Acc(0)) continue;
                    const int source_col = gpuconv_source_index(x + j - anchor_x, width, border);
                    Acc value = border_value;
                    if (source_row >= 0 && source_col >= 0) {
                        const long long index =
                            source_row * row_pitch + (long long)source_col * channels + channel;
                        GPUCONV_CHECK_INDEX(image, index);
                        GPUCONV_TRACE_LOAD(image + index);
                        value = gpuconv_to_acc<Acc>(__ldg(image + index));
                    }
                    sum += weight * value;
                }
            }
            const long long index = ((long long)y * width + x) * channels + channel;
            GPUCONV_CHECK_INDEX(output, index);
            GPUCONV_TRACE_STORE(output + index);
            output[index] = gpuconv_store<Out>(sum);
        }
    }
}
