// convolve_separable.cu: rank-1 kernels as a fused row pass and column pass.
//
// Kernels:
//   gpuconv_separable<In, Out, Acc, KH, KW>(image, output, factors, height, width, channels,
//                                           kernel_height, kernel_width, anchor_y, anchor_x,
//                                           border, border_value, skip_zero_taps)
//     In, Out, Acc  as in convolve_direct.cu
//     KH, KW  compile-time kernel size (3x3, 5x5, 7x7, 9x9, 15x15, 21x21), or 0, 0 for any size
//     factors  kh column taps followed by kw row taps (numpy.outer(column, row) == kernel),
//              integer-valued for exact integer sums (gpuconv/_strategy.py)
//
// Launch as convolve_direct.cu (block (32, 8), 32 x 32 output tile, 4 rows per thread).
// Dynamic shared memory, in Acc: kh + kw factors, the (32 + kh - 1) x (32 + kw - 1) input
// tile, then the (32 + kh - 1) x 32 row-pass result. The intermediate never leaves shared
// memory.
#include "gpuconv_common.cuh"

template <typename In, typename Out, typename Acc, int KH, int KW>
__global__ void
gpuconv_separable(const In* __restrict__ image, Out* __restrict__ output,
                  const Acc* __restrict__ factors, int height, int width, int channels,
                  int kernel_height, int kernel_width, int anchor_y, int anchor_x, int border,
                  Acc border_value, int skip_zero_taps) {
    const int kh = KH > 0 ? KH : kernel_height;
    const int kw = KW > 0 ? KW : kernel_width;
    const int halo_height = GPUCONV_TILE_HEIGHT + kh - 1;
    const int halo_width = GPUCONV_TILE_WIDTH + kw - 1;
    GPUCONV_DYNAMIC_SHARED(Acc, shared);
    Acc* column_factor = shared;
    Acc* row_factor = shared + kh;
    Acc* tile = shared + kh + kw;
    Acc* row_pass = tile + halo_height * halo_width;
    gpuconv_load_weights(factors, shared, kh + kw);

    const int tiles_down = (height + GPUCONV_TILE_HEIGHT - 1) / GPUCONV_TILE_HEIGHT;
    const int x = blockIdx.x * GPUCONV_TILE_WIDTH + threadIdx.x;
    const int first_row = threadIdx.y * GPUCONV_ROWS_PER_THREAD;
    for (int channel = blockIdx.z; channel < channels; channel += gridDim.z) {
        for (int tile_row = blockIdx.y; tile_row < tiles_down; tile_row += gridDim.y) {
            const int top = tile_row * GPUCONV_TILE_HEIGHT;
            const int left = blockIdx.x * GPUCONV_TILE_WIDTH;
            gpuconv_load_tile(image, tile, halo_height, halo_width, top - anchor_y,
                              left - anchor_x, height, width, channels, channel, border,
                              border_value);
            __syncthreads();

            // Row pass over every halo row: row_pass[r][c] = sum_j row[j] * tile[r][c + j].
            for (int r = threadIdx.y; r < halo_height; r += GPUCONV_BLOCK_HEIGHT) {
                const Acc* source = tile + r * halo_width + threadIdx.x;
                Acc sum = Acc(0);
                if (KW > 0) {
#pragma unroll
                    for (int j = 0; j < KW; ++j) {
                        GPUCONV_TRACE_LOAD(source + j);  // the factors: uniform broadcasts
                        sum += row_factor[j] * source[j];
                    }
                } else {
                    for (int j = 0; j < kw; ++j) {
                        const Acc weight = row_factor[j];
                        // Only integer images skip zeros: 0 * NaN must stay NaN.
                        if (skip_zero_taps && weight == Acc(0)) continue;
                        GPUCONV_TRACE_LOAD(source + j);
                        sum += weight * source[j];
                    }
                }
                GPUCONV_TRACE_STORE(row_pass + r * GPUCONV_TILE_WIDTH + threadIdx.x);
                row_pass[r * GPUCONV_TILE_WIDTH + threadIdx.x] = sum;
            }
            __syncthreads();

            // Column pass: 4 consecutive output rows per thread share their loads.
            Acc sums[GPUCONV_ROWS_PER_THREAD];
#pragma unroll
            for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) sums[r] = Acc(0);
            const Acc* column = row_pass + first_row * GPUCONV_TILE_WIDTH + threadIdx.x;
            if (KH > 0) {
#pragma unroll
                for (int s = 0; s < GPUCONV_ROWS_PER_THREAD + KH - 1; ++s) {
                    GPUCONV_TRACE_LOAD(column + s * GPUCONV_TILE_WIDTH);
                    const Acc value = column[s * GPUCONV_TILE_WIDTH];
#pragma unroll
                    for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) {
                        const int i = s - r;
                        if (i >= 0 && i < KH) sums[r] += column_factor[i] * value;
                    }
                }
            } else {
                for (int i = 0; i < kh; ++i) {
                    const Acc weight = column_factor[i];
                    if (skip_zero_taps && weight == Acc(0)) continue;
#pragma unroll
                    for (int r = 0; r < GPUCONV_ROWS_PER_THREAD; ++r) {
                        GPUCONV_TRACE_LOAD(column + (r + i) * GPUCONV_TILE_WIDTH);
                        sums[r] += weight * column[(r + i) * GPUCONV_TILE_WIDTH];
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
            // No barrier here, unlike convolve_direct.cu: the column pass reads only
            // row_pass, which the next tile writes after its first barrier (which every
            // thread reaches only once its column pass is done); the next tile's loads
            // write only the input tile, which nothing reads after the barrier above.
            // (tests/test_barriers.py: removing this barrier changed no result under any
            // schedule, so it was removed rather than kept unproven.)
        }
    }
}
