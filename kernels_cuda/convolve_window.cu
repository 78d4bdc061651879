// convolve_window.cu: small kernels and box kernels by a sliding register window, no
// shared memory.
//
// Kernels:
//   gpuconv_window<In, Out, Acc, KH, KW, C, V, SEPARABLE>(image, output, weights, height,
//                                                        width, anchor_y, border, border_value,
//                                                        rows_per_strip, vector_ok)
//     In, Out, Acc  as in convolve_direct.cu
//     KH, KW     compile-time kernel size; the column anchor is KW / 2 (the default anchor;
//                other anchors run convolve_direct.cu); the row anchor is a run-time value
//     C          channels (channels-last), 1..4: a tap steps C elements along a row, so all
//                channels of a pixel are filtered by the same thread block, in one pass
//     V          consecutive row elements per thread (V * sizeof(In) <= 16: one vector load)
//     SEPARABLE  weights are kh column factors then kw row factors (numpy.outer == kernel);
//                else the kh * kw taps, row-major
//
// Each thread owns V consecutive elements of a row (pixels x channels, flattened) and walks
// down `rows_per_strip` output rows. Every input row is read once per thread, as aligned
// V-element vectors (its own and the neighbours' for the halo, which L1 serves), turned into
// Acc once, and added into the KH output rows it touches, kept in a ring of KH x V
// accumulators in registers. The ring is indexed by the input row modulo KH, which the
// unrolled loop makes a compile-time constant (no local memory). Rows above the strip are
// added into ring slots that are zeroed before their own first row, so no branch is needed.
// The border rule is applied once per loaded element, and only by threads whose window
// crosses the image edge (or when vector_ok is 0: pitch or pointer not 16-byte aligned).
//
// Launch (gpuconv/_backends/_cuda_launch.py, window_launch): block (32, 4); thread
// (x, y) takes chunk blockIdx.x * 32 + x of every row and strip blockIdx.y * 4 + y, the
// kernel striding over strips beyond the grid. No shared memory. 64-bit row offsets.
#include "gpuconv_common.cuh"

#define GPUCONV_WINDOW_BLOCK_X 32
#define GPUCONV_WINDOW_BLOCK_Y 4

// V elements of type T in one aligned load or store (16 bytes at most).
template <typename T, int N>
struct alignas(sizeof(T) * N) gpuconv_vector {
    T v[N];
};

// Stores N values at `target` in pieces of up to 16 bytes (target aligned to a piece).
template <typename T, int N>
__device__ __forceinline__ void gpuconv_store_vector(T* target, const T (&values)[N]) {
    constexpr int PIECE = int(16 / sizeof(T)) < N ? int(16 / sizeof(T)) : N;
#pragma unroll
    for (int k = 0; k < N / PIECE; ++k) {
        gpuconv_vector<T, PIECE> piece;
#pragma unroll
        for (int p = 0; p < PIECE; ++p) piece.v[p] = values[k * PIECE + p];
        reinterpret_cast<gpuconv_vector<T, PIECE>*>(target)[k] = piece;
    }
}

// Loads the window of one input row: elements [first, first + V + (KW - 1) * C) of `row`
// (first = e0 - (KW / 2) * C), as Acc. `row` is null for a constant-border row.
template <typename In, typename Acc, int KW, int C, int V>
__device__ __forceinline__ void gpuconv_window_row(const In* __restrict__ row, int e0,
                                                   int width, int border, Acc border_value,
                                                   bool fast, Acc (&window)[V + (KW - 1) * C]) {
    constexpr int LEFT = (KW / 2) * C;                 // halo elements left of the chunk
    constexpr int RIGHT = (KW - 1 - KW / 2) * C;       // and right of it
    constexpr int LEFT_VECTORS = (LEFT + V - 1) / V;   // aligned vectors that cover them
    constexpr int RIGHT_VECTORS = (RIGHT + V - 1) / V;
    constexpr int VECTORS = LEFT_VECTORS + 1 + RIGHT_VECTORS;
    constexpr int SKIP = LEFT_VECTORS * V - LEFT;      // loaded elements left of the window
    if (row == nullptr) {
#pragma unroll
        for (int t = 0; t < V + (KW - 1) * C; ++t) window[t] = border_value;
        return;
    }
    if (fast) {
        // Every vector lies inside the row: all loads first, then the conversions.
        const In* start = row + e0 - LEFT_VECTORS * V;
        GPUCONV_CHECK_INDEX(row, e0 - LEFT_VECTORS * V);
        GPUCONV_CHECK_INDEX(row, e0 + (1 + RIGHT_VECTORS) * V - 1);
        gpuconv_vector<In, V> loaded[VECTORS];
#pragma unroll
        for (int k = 0; k < VECTORS; ++k)
            loaded[k] = reinterpret_cast<const gpuconv_vector<In, V>*>(start)[k];
#pragma unroll
        for (int t = 0; t < V + (KW - 1) * C; ++t)
            window[t] = gpuconv_to_acc<Acc>(loaded[(t + SKIP) / V].v[(t + SKIP) % V]);
        return;
    }
    // At an edge of the row: element by element, through the border rule.
#pragma unroll
    for (int t = 0; t < V + (KW - 1) * C; ++t) {
        const int element = e0 - LEFT + t;
        // floor division (element may be negative): which pixel, which channel
        const int pixel = element >= 0 ? element / C : -((-element + C - 1) / C);
        const int channel = element - pixel * C;
        const int source = gpuconv_source_index(pixel, width, border);
        Acc value = border_value;
        if (source >= 0) {
            GPUCONV_CHECK_INDEX(row, source * C + channel);
            value = gpuconv_to_acc<Acc>(row[source * C + channel]);
        }
        window[t] = value;
    }
}

template <typename In, typename Out, typename Acc, int KH, int KW, int C, int V, bool SEPARABLE>
__global__ void __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y)
gpuconv_window(const In* __restrict__ image, Out* __restrict__ output,
               const Acc* __restrict__ weights, int height, int width, int anchor_y,
               int border, Acc border_value, int rows_per_strip, int vector_ok) {
    constexpr int WINDOW = V + (KW - 1) * C;
    constexpr int LEFT = (KW / 2) * C;
    constexpr int RIGHT = (KW - 1 - KW / 2) * C;
    constexpr int LEFT_VECTORS = (LEFT + V - 1) / V;
    constexpr int RIGHT_VECTORS = (RIGHT + V - 1) / V;
    constexpr int TAPS = SEPARABLE ? KH + KW : KH * KW;

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    // The window's vectors all inside the row, and aligned: the fast load path.
    const bool fast = vector_ok && e0 - LEFT_VECTORS * V >= 0 &&
                      e0 + (1 + RIGHT_VECTORS) * V <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;

    Acc taps[TAPS];
#pragma unroll
    for (int k = 0; k < TAPS; ++k) {
        GPUCONV_CHECK_INDEX(weights, k);
        taps[k] = weights[k];
    }

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        const int steps = rows + KH - 1;  // input rows this strip reads
        Acc ring[KH][V];
        for (int base = 0; base < steps; base += KH) {
#pragma unroll
            for (int phase = 0; phase < KH; ++phase) {
                const int step = base + phase;
                if (step >= steps) break;
                const int source_row = gpuconv_source_index(y0 - anchor_y + step, height, border);
                const In* row =
                    source_row < 0 ? nullptr : image + (long long)source_row * row_elements;
                Acc window[WINDOW];
                gpuconv_window_row<In, Acc, KW, C, V>(row, e0, width, border, border_value,
                                                      fast, window);
                // This input row is row i of the kernel for output row step - i, whose
                // accumulators sit in ring slot (step - i) mod KH = (phase - i) mod KH.
                if (SEPARABLE) {
                    Acc across[V];  // the row factors applied along the row
#pragma unroll
                    for (int v = 0; v < V; ++v) {
                        across[v] = taps[KH] * window[v];
#pragma unroll
                        for (int j = 1; j < KW; ++j) across[v] += taps[KH + j] * window[v + j * C];
                    }
#pragma unroll
                    for (int i = 0; i < KH; ++i) {
                        const int slot = (phase - i + KH) % KH;
#pragma unroll
                        for (int v = 0; v < V; ++v) {
                            if (i == 0)
                                ring[slot][v] = taps[0] * across[v];
                            else
                                ring[slot][v] += taps[i] * across[v];
                        }
                    }
                } else {
#pragma unroll
                    for (int i = 0; i < KH; ++i) {
                        const int slot = (phase - i + KH) % KH;
#pragma unroll
                        for (int v = 0; v < V; ++v) {
                            Acc sum = i == 0 ? taps[0] * window[v] : ring[slot][v] + taps[i * KW] * window[v];
#pragma unroll
                            for (int j = 1; j < KW; ++j) sum += taps[i * KW + j] * window[v + j * C];
                            ring[slot][v] = sum;
                        }
                    }
                }
                // Output row step - (KH - 1) has had its last kernel row: store it.
                const int done = step - (KH - 1);
                if (done >= 0) {
                    const int slot = (phase + 1) % KH;
                    Out values[V];
#pragma unroll
                    for (int v = 0; v < V; ++v) values[v] = gpuconv_store<Out>(ring[slot][v]);
                    Out* target = output + (long long)(y0 + done) * row_elements + e0;
                    if (full_store) {
                        GPUCONV_CHECK_INDEX(output, (long long)(y0 + done) * row_elements + e0 + V - 1);
                        gpuconv_store_vector<Out, V>(target, values);
                    } else {
#pragma unroll
                        for (int v = 0; v < V; ++v) {
                            if (e0 + v < row_elements) {
                                GPUCONV_CHECK_INDEX(output, (long long)(y0 + done) * row_elements + e0 + v);
                                target[v] = values[v];
                            }
                        }
                    }
                }
            }
        }
    }
}

// gpuconv_box<In, Out, Acc, KW, C, V>(image, output, weights, height, width, kernel_height,
//                                     anchor_y, border, border_value, rows_per_strip, vector_ok)
//   A kernel whose taps all equal scale = weights[0], on an integer image: out = scale * (window sum),
//   the window sum kept exactly in int as a running sum. Down the strip, each output row adds
//   the row entering the window and subtracts the row leaving it (both re-read: L1/L2 hits);
//   along the row, the differences are summed by a running sum too. O(1) additions per
//   pixel whatever the kernel size. kernel_height and anchor_y are run-time values; KW is
//   compile-time (the window lives in registers) with the column anchor KW / 2. Launch as
//   gpuconv_window. `plan_launch` takes this path only when every window sum fits in int
//   and border_value is an integer.
template <int KW, int C, int V>
__device__ __forceinline__ void gpuconv_box_across(const int (&window)[V + (KW - 1) * C],
                                                   int (&across)[V]) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
        if (v < C) {
            int sum = window[v];
#pragma unroll
            for (int j = 1; j < KW; ++j) sum += window[v + j * C];
            across[v] = sum;
        } else {
            across[v] = across[v - C] + window[v + (KW - 1) * C] - window[v - C];
        }
    }
}

template <typename In, typename Out, typename Acc, int KW, int C, int V>
__global__ void __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y)
gpuconv_box(const In* __restrict__ image, Out* __restrict__ output,
            const Acc* __restrict__ weights, int height,
            int width, int kernel_height, int anchor_y, int border, int border_value,
            int rows_per_strip, int vector_ok) {
    constexpr int WINDOW = V + (KW - 1) * C;
    constexpr int LEFT_VECTORS = ((KW / 2) * C + V - 1) / V;
    constexpr int RIGHT_VECTORS = ((KW - 1 - KW / 2) * C + V - 1) / V;

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    const bool fast = vector_ok && e0 - LEFT_VECTORS * V >= 0 &&
                      e0 + (1 + RIGHT_VECTORS) * V <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;
    GPUCONV_CHECK_INDEX(weights, 0);
    const Acc scale = weights[0];

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        int sums[V];
#pragma unroll
        for (int v = 0; v < V; ++v) sums[v] = 0;
        // The first output row's window: kernel_height whole rows.
        for (int i = 0; i < kernel_height; ++i) {
            const int source_row = gpuconv_source_index(y0 - anchor_y + i, height, border);
            const In* row = source_row < 0 ? nullptr : image + (long long)source_row * row_elements;
            int window[WINDOW];
            gpuconv_window_row<In, int, KW, C, V>(row, e0, width, border, border_value, fast,
                                                 window);
            int across[V];
            gpuconv_box_across<KW, C, V>(window, across);
#pragma unroll
            for (int v = 0; v < V; ++v) sums[v] += across[v];
        }
        for (int r = 0; r < rows; ++r) {
            if (r > 0) {  // slide down one row: add the entering row, subtract the leaving one
                const int entering = gpuconv_source_index(y0 + r - anchor_y + kernel_height - 1,
                                                          height, border);
                const int leaving = gpuconv_source_index(y0 + r - 1 - anchor_y, height, border);
                int window[WINDOW], old_window[WINDOW];
                gpuconv_window_row<In, int, KW, C, V>(
                    entering < 0 ? nullptr : image + (long long)entering * row_elements, e0,
                    width, border, border_value, fast, window);
                gpuconv_window_row<In, int, KW, C, V>(
                    leaving < 0 ? nullptr : image + (long long)leaving * row_elements, e0,
                    width, border, border_value, fast, old_window);
#pragma unroll
                for (int t = 0; t < WINDOW; ++t) window[t] -= old_window[t];
                int across[V];
                gpuconv_box_across<KW, C, V>(window, across);
#pragma unroll
                for (int v = 0; v < V; ++v) sums[v] += across[v];
            }
            Out values[V];
#pragma unroll
            for (int v = 0; v < V; ++v) values[v] = gpuconv_store<Out>(Acc(sums[v]) * scale);
            const long long offset = (long long)(y0 + r) * row_elements + e0;
            if (full_store) {
                GPUCONV_CHECK_INDEX(output, offset + V - 1);
                gpuconv_store_vector<Out, V>(output + offset, values);
            } else {
#pragma unroll
                for (int v = 0; v < V; ++v) {
                    if (e0 + v < row_elements) {
                        GPUCONV_CHECK_INDEX(output, offset + v);
                        output[offset + v] = values[v];
                    }
                }
            }
        }
    }
}
