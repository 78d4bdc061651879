// convolve_window.cu: small kernels and box kernels by a sliding register window (no
// shared memory, but for the float box kernel's suffix sums and the column sums of the
// packed box kernel's widest windows).
//
// Kernels:
//   gpuconv_window<In, Out, Acc, KH, KW, C, V, SEPARABLE[, STACK]>(image, output, weights,
//                                                        height, width, anchor_y, border,
//                                                        border_value, rows_per_strip, vector_ok)
//     In, Out, Acc  as in convolve_direct.cu
//     KH, KW     compile-time kernel size; the column anchor is KW / 2 (the default anchor;
//                other anchors run convolve_direct.cu); the row anchor is a run-time value
//     C          channels (channels-last), 1..4: a tap steps C elements along a row, so all
//                channels of a pixel are filtered by the same thread block, in one pass
//     V          consecutive row elements per thread (V * sizeof(In) <= 16: one vector load)
//     SEPARABLE  weights are kh column factors then kw row factors (numpy.outer == kernel);
//                else the kh * kw taps, row-major
//     STACK      (default false) blockIdx.z is the frame of an (N, H, W, C) stack
//   gpuconv_box<In, Out, Acc, KW, C, V[, STACK]>(image, output, weights, height, width,
//                                                kernel_height, anchor_y, border,
//                                                border_value, rows_per_strip, vector_ok)
//     a kernel whose taps all equal weights[0] on an integer image: exact running sums in
//     int, any run-time height, compile-time width KW (see the comment above the kernel)
//   gpuconv_window_dp4a<In, Out, Acc, KH, KW, C, V, SEPARABLE[, STACK]>(gpuconv_window's
//                                                                     arguments)
//     gpuconv_window's 3 x 3 uint8-to-uint8 case with every tap in a signed byte: the taps
//     of a kernel row packed into one word, one dp4a per row and element (see the comment
//     above the kernel)
//   gpuconv_box_packed<In, Out, Acc, KW, C, V[, STACK]>(gpuconv_box's arguments)
//     gpuconv_box's uint8-to-uint8 case (grey, and RGB, which gpuconv_box leaves to the
//     shared-memory kernels; also 21 wide) whose column sums fit 16 bits: two column sums
//     to a 32-bit word; windows wider than 16 words (21 wide RGB, V = 64) keep them in
//     dynamic shared memory (see the comment above the kernel)
//   gpuconv_box_float<In, Out, Acc, K, C, V[, STACK]>(gpuconv_window's arguments)
//     a K x K kernel whose taps all equal weights[0] on a float32 grey image (K = 7, 9, 21
//     in window.py): every sum direct, shared along the row, van Herk / Gil-Werman blocks
//     down it; its K x V suffix sums a thread in dynamic shared memory (see the comment
//     above the kernel)
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
// On 8-bit images a strip whose rows all lie inside the image runs a second loop without
// the border rule (gpuconv_window_tuning::interior); both loops share gpuconv_window_step.
//
// Launch (gpuconv/_backends/cuda/window.py, window_launch): block (32, 4); thread
// (x, y) takes chunk blockIdx.x * 32 + x of every row and strip blockIdx.y * 4 + y, the
// kernel striding over strips beyond the grid; with STACK = true, blockIdx.z is the frame of
// an (N, H, W, C) stack (gridDim.z = N: one launch for the stack). No shared memory but
// gpuconv_box_float's (K x V x sizeof(Acc) bytes a thread) and that of gpuconv_box_packed's
// widest windows (two words per window word a thread); no barrier: each thread its own.
// 64-bit row offsets.
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
        gpuconv_vector<T, PIECE>* pieces = reinterpret_cast<gpuconv_vector<T, PIECE>*>(target);
        GPUCONV_TRACE_STORE(pieces + k);
        pieces[k] = piece;
    }
}

// One input row as a thread reads it on the fast path: its own V-element vector and the
// halo, as loaded (not yet converted to Acc), so that several rows fit in registers and
// their loads are in flight together. Narrow halos (3x3 grey) are single elements, wide
// ones the neighbours' aligned vectors (L1 hits: the neighbours load them too).
template <typename In, int KW, int C, int V>
struct gpuconv_raw_row {
    static constexpr int LEFT = (KW / 2) * C;            // halo elements left of the chunk
    static constexpr int RIGHT = (KW - 1 - KW / 2) * C;  // and right of it
    static constexpr int WINDOW = V + LEFT + RIGHT;
#ifdef GPUCONV_WINDOW_SCALAR_HALO
    static constexpr bool SCALAR_HALO = GPUCONV_WINDOW_SCALAR_HALO && LEFT + RIGHT <= 2;
#else
    static constexpr bool SCALAR_HALO = LEFT + RIGHT <= 2;
#endif
    static constexpr int LEFT_VECTORS = SCALAR_HALO ? 0 : (LEFT + V - 1) / V;
    static constexpr int RIGHT_VECTORS = SCALAR_HALO ? 0 : (RIGHT + V - 1) / V;
    static constexpr int VECTORS = LEFT_VECTORS + 1 + RIGHT_VECTORS;
    static constexpr int SKIP = LEFT_VECTORS * V - LEFT;  // loaded elements left of the window
    static constexpr int REACH_LEFT = SCALAR_HALO ? LEFT : LEFT_VECTORS * V;
    static constexpr int REACH_RIGHT = SCALAR_HALO ? RIGHT : RIGHT_VECTORS * V;

    gpuconv_vector<In, V> vectors[VECTORS];
    In left[SCALAR_HALO && LEFT > 0 ? LEFT : 1];
    In right[SCALAR_HALO && RIGHT > 0 ? RIGHT : 1];

    // Needs row[e0 - REACH_LEFT, e0 + V + REACH_RIGHT) inside the row, 16-byte aligned rows.
    __device__ __forceinline__ void load(const In* __restrict__ row, int e0) {
        GPUCONV_CHECK_INDEX(row, e0 - REACH_LEFT);
        GPUCONV_CHECK_INDEX(row, e0 + V + REACH_RIGHT - 1);
        const gpuconv_vector<In, V>* start =
            reinterpret_cast<const gpuconv_vector<In, V>*>(row + e0) - LEFT_VECTORS;
#pragma unroll
        for (int k = 0; k < VECTORS; ++k) {
            GPUCONV_TRACE_LOAD(start + k);
            vectors[k] = start[k];
        }
        if (SCALAR_HALO) {
#pragma unroll
            for (int t = 0; t < LEFT; ++t) {
                GPUCONV_TRACE_LOAD(row + e0 - LEFT + t);
                left[t] = row[e0 - LEFT + t];
            }
#pragma unroll
            for (int t = 0; t < RIGHT; ++t) {
                GPUCONV_TRACE_LOAD(row + e0 + V + t);
                right[t] = row[e0 + V + t];
            }
        }
    }

    // Window element t (0 = the first left halo element); t is a compile-time constant.
    __device__ __forceinline__ In element(int t) const {
        if (SCALAR_HALO) {
            if (t < LEFT) return left[t];
            if (t < LEFT + V) return vectors[0].v[t - LEFT];
            return right[t - LEFT - V];
        }
        return vectors[(t + SKIP) / V].v[(t + SKIP) % V];
    }
};

// The window of one input row, as Acc: from the raw row on the fast path, else element by
// element through the border rule (threads whose window crosses the row's ends, or rows
// that are not 16-byte aligned). `row` is null for a constant-border row.
template <typename In, typename Acc, int KW, int C, int V>
__device__ __forceinline__ void gpuconv_window_of(
    const In* __restrict__ row, const gpuconv_raw_row<In, KW, C, V>& raw, bool fast, int e0,
    int width, int border, Acc border_value, Acc (&window)[gpuconv_raw_row<In, KW, C, V>::WINDOW]) {
    using Raw = gpuconv_raw_row<In, KW, C, V>;
    if (row == nullptr) {
#pragma unroll
        for (int t = 0; t < Raw::WINDOW; ++t) window[t] = border_value;
    } else if (fast) {
#pragma unroll
        for (int t = 0; t < Raw::WINDOW; ++t) window[t] = gpuconv_to_acc<Acc>(raw.element(t));
    } else {
#pragma unroll
        for (int t = 0; t < Raw::WINDOW; ++t) {
            const int element = e0 - Raw::LEFT + t;
            // floor division (element may be negative): which pixel, which channel
            const int pixel = element >= 0 ? element / C : -((-element + C - 1) / C);
            const int channel = element - pixel * C;
            const int source = gpuconv_source_index(pixel, width, border);
            Acc value = border_value;
            if (source >= 0) {
                GPUCONV_CHECK_INDEX(row, source * C + channel);
                GPUCONV_TRACE_LOAD(row + source * C + channel);
                value = gpuconv_to_acc<Acc>(row[source * C + channel]);
            }
            window[t] = value;
        }
    }
}

// Stores V results of output row `y` from element e0: one vector store, or element by
// element at the row's end or when rows are not 16-byte aligned.
template <typename Out, int V>
__device__ __forceinline__ void gpuconv_store_row(Out* __restrict__ output, int y,
                                                  int row_elements, int e0, bool full_store,
                                                  const Out (&values)[V]) {
    const long long offset = (long long)y * row_elements + e0;
    if (full_store) {
        GPUCONV_CHECK_INDEX(output, offset + V - 1);
        gpuconv_store_vector<Out, V>(output + offset, values);
    } else {
#pragma unroll
        for (int v = 0; v < V; ++v) {
            if (e0 + v < row_elements) {
                GPUCONV_CHECK_INDEX(output, offset + v);
                GPUCONV_TRACE_STORE(output + offset + v);
                output[offset + v] = values[v];
            }
        }
    }
}

// One input row's work, shared by both strip loops of gpuconv_window: `window` (this
// row's elements as Acc) added into the ring of KH x V accumulators, and the output row it
// completes stored. `phase` (the row's position modulo KH) must be a compile-time constant
// once inlined and unrolled, so that the ring stays in registers.
template <typename Out, typename Acc, int KH, int KW, int C, int V, bool SEPARABLE, int TAPS,
          int WINDOW>
__device__ __forceinline__ void gpuconv_window_step(const Acc (&window)[WINDOW],
                                                    const Acc (&taps)[TAPS], Acc (&ring)[KH][V],
                                                    int phase, int step, Out* __restrict__ output,
                                                    int y0, int row_elements, int e0,
                                                    bool full_store) {
    // This input row is row i of the kernel for output row step - i, whose
    // accumulators sit in ring slot (step - i) mod KH = (phase - i) mod KH.
    // Rows above the strip land in slots zeroed before their own first row.
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
        gpuconv_store_row<Out, V>(output, y0 + done, row_elements, e0, full_store, values);
    }
}

// The interior loop (gpuconv_window_tuning::interior): strips whose rows all lie inside the
// image, on threads on the fast path (most of an image), run a second loop with no border
// rule, no null row and a row pointer that steps by one row. On 8-bit images only: there
// it costs no register (PREDICTED by the SASS count, gpuconv/_gpumodel, not yet measured:
// warp instructions per pixel at 8192 x 8192 from 0.829 to 0.663 for grey 3x3, 0.748 to
// 0.586 for sobel, 2.56 to 2.08 for RGB 3x3); the 32-bit grey kernels (1.075 to 0.669)
// and the 16-bit ones spilled under their register caps with it (sm_80, sm_90).
// GPUCONV_WINDOW_INTERIOR=0 or 1 overrides, for tuning sweeps and the model's checks
// against measurements made before it.

// Tuned on an H100 (benchmarks/results/gpu-window-variants*-h100-2026-11-25.log), all
// without spills: 32-bit pixels run best with the loads of 4 rows issued together and at
// most 128 registers (4 blocks per SM; in colour that cap spilled, so none); 8- and 16-bit
// grey images with each row loaded just before its use (fewer registers, more warps).
// Retuned on an H200 (benchmarks/results/gpu-retune-h200-2026-11-26/, two sweeps): 8-bit
// colour also with each row loaded just before its use (0.598 against 0.654 ms, 8192 x 8192
// RGB 3x3); 3x3 grey kernels with integer sums on 8- and 16-bit images capped so that more
// blocks fit an SM, without a spill: 6 blocks (80 registers) where the kernel is not
// separable (uint8 0.126 against 0.143 ms, uint16 0.122 against 0.140), 5 (96 registers)
// for the separable 8-bit one (0.136 against 0.152; under 6 it spilled). Caps of 8 and
// more spilled and ran no faster, nor did any cap help the box kernel (6: 0.469 against
// 0.322 ms); under 6 the float-sum 3x3 kernels spilled. V = 4 (half the registers) lost.
// The macros override, for tuning sweeps.
// The STACK instantiations of 32-bit grey images keep 3 blocks per SM: their two frame
// pointers live in registers, and under the cap of 4 (128 registers) they spilled (sm_80).
template <typename In, int C, bool STACK = false, int TAPS = 0, bool SEPARABLE = false,
          typename Acc = float>
struct gpuconv_window_tuning {
#ifdef GPUCONV_WINDOW_GROUP_ROWS
    static constexpr int group_rows = GPUCONV_WINDOW_GROUP_ROWS;
#else
    static constexpr int group_rows = sizeof(In) >= 4 ? 4 : (C > 1 && sizeof(In) > 1 ? 1 : 0);
#endif
#ifdef GPUCONV_WINDOW_INTERIOR
    static constexpr bool interior = GPUCONV_WINDOW_INTERIOR;
#else
    static constexpr bool interior = sizeof(In) == 1;
#endif
#ifdef GPUCONV_WINDOW_MIN_BLOCKS
    static constexpr int min_blocks = GPUCONV_WINDOW_MIN_BLOCKS;
#else
    static constexpr int min_blocks =
        sizeof(In) >= 4 && C == 1 ? (STACK ? 3 : 4)
        : sizeof(In) <= 2 && C == 1 && TAPS == 9 && !STACK && !gpuconv_is_float<Acc>::value
            ? (SEPARABLE ? (sizeof(In) == 1 ? 5 : 1) : 6)
            : 1;
#endif
};

template <typename In, typename Out, typename Acc, int KH, int KW, int C, int V, bool SEPARABLE,
          bool STACK = false>
__global__ void __launch_bounds__(
    GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y,
    gpuconv_window_tuning<In, C, STACK, KH * KW, SEPARABLE, Acc>::min_blocks)
gpuconv_window(const In* __restrict__ image, Out* __restrict__ output,
               const Acc* __restrict__ weights, int height, int width, int anchor_y,
               int border, Acc border_value, int rows_per_strip, int vector_ok) {
    using Raw = gpuconv_raw_row<In, KW, C, V>;
    constexpr int TAPS = SEPARABLE ? KH + KW : KH * KW;
    // Rows loaded together (0: each row just before its use): a multiple of KH, so that
    // ring slots stay compile-time.
    constexpr int GROUP_ROWS = gpuconv_window_tuning<In, C>::group_rows;
    constexpr bool BATCH = GROUP_ROWS > 0;
    constexpr int GROUP = KH * (BATCH ? (GROUP_ROWS + KH - 1) / KH : 1);

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    if (STACK) {
        // An (N, H, W, C) stack, C-contiguous: blockIdx.z is the frame (gridDim.z = N, one
        // launch for the stack). The pointers move once; single images take STACK = false,
        // whose code has no such offset (it cost ~10% more instructions per pixel there).
        image += (long long)blockIdx.z * height * row_elements;
        output += (long long)blockIdx.z * height * row_elements;
    }
    const bool fast =
        vector_ok && e0 - Raw::REACH_LEFT >= 0 && e0 + V + Raw::REACH_RIGHT <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;

    Acc taps[TAPS];
#pragma unroll
    for (int k = 0; k < TAPS; ++k) {
        GPUCONV_CHECK_INDEX(weights, k);
        GPUCONV_TRACE_LOAD(weights + k);
        taps[k] = weights[k];
    }

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        const int steps = rows + KH - 1;  // input rows this strip reads
        Acc ring[KH][V];
        if (gpuconv_window_tuning<In, C>::interior && fast && y0 - anchor_y >= 0 &&
            y0 - anchor_y + steps <= height) {
            const In* row = image + (long long)(y0 - anchor_y) * row_elements;
            for (int base = 0; base < steps; base += GROUP) {
                Raw raw[GROUP];
#pragma unroll
                for (int g = 0; g < GROUP; ++g) {
                    if (BATCH && base + g < steps) raw[g].load(row + (long long)g * row_elements, e0);
                }
#pragma unroll
                for (int g = 0; g < GROUP; ++g) {
                    const int step = base + g;
                    if (step >= steps) break;
                    if (!BATCH) raw[g].load(row + (long long)g * row_elements, e0);
                    Acc window[Raw::WINDOW];
#pragma unroll
                    for (int t = 0; t < Raw::WINDOW; ++t)
                        window[t] = gpuconv_to_acc<Acc>(raw[g].element(t));
                    gpuconv_window_step<Out, Acc, KH, KW, C, V, SEPARABLE>(
                        window, taps, ring, g % KH, step, output, y0, row_elements, e0, true);
                }
                row += (long long)GROUP * row_elements;
            }
            continue;
        }
        for (int base = 0; base < steps; base += GROUP) {
            // Issue the loads of GROUP input rows before using any of them.
            const In* source[GROUP];
            Raw raw[GROUP];
#pragma unroll
            for (int g = 0; g < GROUP; ++g) {
                if (!BATCH) break;
                const int row = gpuconv_source_index(y0 - anchor_y + base + g, height, border);
                source[g] = base + g < steps && row >= 0
                                ? image + (long long)row * row_elements : nullptr;
                if (fast && source[g] != nullptr) raw[g].load(source[g], e0);
            }
#pragma unroll
            for (int g = 0; g < GROUP; ++g) {
                const int step = base + g;
                if (step >= steps) break;
                if (!BATCH) {
                    const int row = gpuconv_source_index(y0 - anchor_y + step, height, border);
                    source[g] = row >= 0 ? image + (long long)row * row_elements : nullptr;
                    if (fast && source[g] != nullptr) raw[g].load(source[g], e0);
                }
                Acc window[Raw::WINDOW];
                gpuconv_window_of<In, Acc, KW, C, V>(source[g], raw[g], fast, e0, width,
                                                     border, border_value, window);
                gpuconv_window_step<Out, Acc, KH, KW, C, V, SEPARABLE>(
                    window, taps, ring, g % KH, step, output, y0, row_elements, e0, full_store);
            }
        }
    }
}

// gpuconv_box<In, Out, Acc, KW, C, V>(image, output, weights, height, width, kernel_height,
//                                     anchor_y, border, border_value, rows_per_strip, vector_ok)
//   A kernel whose taps all equal scale = weights[0], on an integer image:
//   out = scale * (window sum), the window sum kept exactly in int as running sums. Each
//   thread keeps the column sums of its window's elements (kernel_height rows each); one
//   row down, it adds the row entering the window and subtracts the one leaving it (both
//   re-read: L1/L2 hits), then sums the column sums along the row by a running sum too.
//   O(1) additions per pixel whatever the kernel size. kernel_height and anchor_y are
//   run-time values; KW is compile-time (the window lives in registers) with the column
//   anchor KW / 2. Launch as gpuconv_window. plan_launch takes this path only when every
//   window sum fits in int and border_value is an integer.
// GPUCONV_BOX_MIN_BLOCKS (undefined by default) sets the box kernel's second launch bound,
// as it was when the calibration data of gpuconv/_gpumodel was measured (4).
#ifdef GPUCONV_BOX_MIN_BLOCKS
#define GPUCONV_BOX_LAUNCH_BOUNDS \
    __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y, GPUCONV_BOX_MIN_BLOCKS)
#else
// The explicit 1: with the block size alone ptxas capped the box kernel at 128 registers
// and spilled (sm_80, sm_90 16-bit); it needs up to ~170.
#define GPUCONV_BOX_LAUNCH_BOUNDS \
    __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y, 1)
#endif
template <typename In, typename Out, typename Acc, int KW, int C, int V, bool STACK = false>
__global__ void GPUCONV_BOX_LAUNCH_BOUNDS
gpuconv_box(const In* __restrict__ image, Out* __restrict__ output,
            const Acc* __restrict__ weights, int height, int width, int kernel_height,
            int anchor_y, int border, int border_value, int rows_per_strip, int vector_ok) {
    using Raw = gpuconv_raw_row<In, KW, C, V>;
    constexpr int WINDOW = Raw::WINDOW;

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    if (STACK) {
        // An (N, H, W, C) stack, C-contiguous: blockIdx.z is the frame (gridDim.z = N, one
        // launch for the stack). The pointers move once; single images take STACK = false,
        // whose code has no such offset (it cost ~10% more instructions per pixel there).
        image += (long long)blockIdx.z * height * row_elements;
        output += (long long)blockIdx.z * height * row_elements;
    }
    const bool fast =
        vector_ok && e0 - Raw::REACH_LEFT >= 0 && e0 + V + Raw::REACH_RIGHT <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;
    GPUCONV_CHECK_INDEX(weights, 0);
    GPUCONV_TRACE_LOAD(weights);
    const Acc scale = weights[0];

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        int column_sums[WINDOW];
#pragma unroll
        for (int t = 0; t < WINDOW; ++t) column_sums[t] = 0;
        // The first output row's window: kernel_height whole rows.
        for (int i = 0; i < kernel_height; ++i) {
            const int row = gpuconv_source_index(y0 - anchor_y + i, height, border);
            const In* source = row < 0 ? nullptr : image + (long long)row * row_elements;
            Raw raw;
            if (fast && source != nullptr) raw.load(source, e0);
            int window[WINDOW];
            gpuconv_window_of<In, int, KW, C, V>(source, raw, fast, e0, width, border,
                                                 border_value, window);
#pragma unroll
            for (int t = 0; t < WINDOW; ++t) column_sums[t] += window[t];
        }
        for (int r = 0; r < rows; ++r) {
            if (r > 0) {  // one row down: add the entering row, subtract the leaving one
                const int entering_row =
                    gpuconv_source_index(y0 + r - anchor_y + kernel_height - 1, height, border);
                const int leaving_row = gpuconv_source_index(y0 + r - 1 - anchor_y, height, border);
                const In* entering =
                    entering_row < 0 ? nullptr : image + (long long)entering_row * row_elements;
                const In* leaving =
                    leaving_row < 0 ? nullptr : image + (long long)leaving_row * row_elements;
                Raw raw_entering, raw_leaving;
                if (fast && entering != nullptr) raw_entering.load(entering, e0);
                if (fast && leaving != nullptr) raw_leaving.load(leaving, e0);
                int window[WINDOW];
                gpuconv_window_of<In, int, KW, C, V>(entering, raw_entering, fast, e0, width,
                                                     border, border_value, window);
#pragma unroll
                for (int t = 0; t < WINDOW; ++t) column_sums[t] += window[t];
                gpuconv_window_of<In, int, KW, C, V>(leaving, raw_leaving, fast, e0, width,
                                                     border, border_value, window);
#pragma unroll
                for (int t = 0; t < WINDOW; ++t) column_sums[t] -= window[t];
            }
            // Along the row: the first C sums whole, then each from the one C before it.
            int sums[V];
#pragma unroll
            for (int v = 0; v < V; ++v) {
                if (v < C) {
                    int sum = column_sums[v];
#pragma unroll
                    for (int j = 1; j < KW; ++j) sum += column_sums[v + j * C];
                    sums[v] = sum;
                } else {
                    sums[v] = sums[v - C] + column_sums[v + (KW - 1) * C] - column_sums[v - C];
                }
            }
            Out values[V];
#pragma unroll
            for (int v = 0; v < V; ++v) values[v] = gpuconv_store<Out>(Acc(sums[v]) * scale);
            gpuconv_store_row<Out, V>(output, y0 + r, row_elements, e0, full_store, values);
        }
    }
}

// ---------------------------------------------------------------------------------------
// gpuconv_window_dp4a<In, Out, Acc, KH, KW, C, V, SEPARABLE[, STACK]>(the arguments of
//                                                                     gpuconv_window)
//   gpuconv_window for the case whose taps pack into bytes: an 8-bit unsigned image into
//   itself (In = Out = unsigned char, Acc = int), 3 x 3, the 9 taps row-major (SEPARABLE =
//   false), every tap an integer in [-128, 127] and a constant border value in [0, 255]
//   (window.py checks; the template parameters are gpuconv_window's, so that its launch
//   arithmetic and every tool that reads name expressions serve both).
//   A thread keeps its row window as packed bytes (gpuconv_byte_window). For each output
//   element it gathers the three taps' bytes of that row into one 32-bit word (a byte
//   permute, or none where they already sit in one word), and one dp4a per kernel row
//   multiplies them by that row's packed taps and adds into the ring. Per input row and 8
//   grey pixels: 6 byte permutes and 24 dp4a, where gpuconv_window runs 72 IMAD and 10
//   byte conversions. The sums are exact ints, as in gpuconv_window: the same results.

// gpuconv_source_index for a pixel at most `width` beyond either end of the row (what a
// window's halo reaches, but in images narrower than their kernel): the reflection, the
// wrap or the clamp without gpuconv_source_index's modulo by a run-time period (about 20
// instructions, most of a border element's cost); the modulo where it is farther.
__device__ __forceinline__ int gpuconv_near_source_index(int p, int size, int border) {
    if (p >= 0 && p < size) return p;
    if (p < -size || p >= 2 * size || size == 1 || border == GPUCONV_BORDER_CONSTANT)
        return gpuconv_source_index(p, size, border);
    if (border == GPUCONV_BORDER_REPLICATE) return p < 0 ? 0 : size - 1;
    if (border == GPUCONV_BORDER_WRAP) return p < 0 ? p + size : p - size;
    if (border == GPUCONV_BORDER_REFLECT) return p < 0 ? -1 - p : 2 * size - 1 - p;
    // REFLECT101, within one period of the row's ends (p in [-size, 2 size), size >= 2)
    const int reflected = p < 0 ? -p : 2 * size - 2 - p;
    return reflected >= 0 && reflected < size ? reflected : gpuconv_source_index(p, size, border);
}

// The window of one input row (elements e0 - LEFT .. e0 + V + LEFT - 1, LEFT = RADIUS x C)
// as packed bytes: window element t is byte t + OFFSET of `words` (little-endian): the HALO
// words left of the thread's V bytes, those V bytes, and the HALO words right of them (one
// word each side for 3 x 3 kernels). The halo words are L1 hits (the neighbours load them
// as their own). Element e (from e0) is byte e + 4 x HALO.
template <int C, int V, int RADIUS = 1>
struct gpuconv_byte_window {
    static constexpr int LEFT = RADIUS * C;          // halo elements each side
    static constexpr int HALO = (LEFT + 3) / 4;      // halo words each side
    static constexpr int OWN = V / 4;                // words of the thread's V bytes
    static constexpr int WORDS = OWN + 2 * HALO;
    static constexpr int OFFSET = 4 * HALO - LEFT;  // byte of window element 0
    static constexpr int WINDOW = V + 2 * LEFT;
    static constexpr int REACH = 4 * HALO;  // bytes loaded each side
    unsigned words[WORDS];

    // Fast path: the row 16-byte aligned, [e0 - REACH, e0 + V + REACH) inside it.
    __device__ __forceinline__ void load(const unsigned char* __restrict__ row, int e0) {
        GPUCONV_CHECK_INDEX(row, e0 - REACH);
        GPUCONV_CHECK_INDEX(row, e0 + V + REACH - 1);
        using Vector = gpuconv_vector<unsigned, OWN>;
        const Vector* own = reinterpret_cast<const Vector*>(row + e0);
        const unsigned* left = reinterpret_cast<const unsigned*>(row + e0) - HALO;
        const unsigned* right = reinterpret_cast<const unsigned*>(row + e0 + V);
#pragma unroll
        for (int w = 0; w < HALO; ++w) {
            GPUCONV_TRACE_LOAD(left + w);
            GPUCONV_TRACE_LOAD(right + w);
            words[w] = left[w];
            words[HALO + OWN + w] = right[w];
        }
        GPUCONV_TRACE_LOAD(own);
        const Vector vector = *own;
#pragma unroll
        for (int w = 0; w < OWN; ++w) words[HALO + w] = vector.v[w];
    }

    // Through the border rule (threads at the row's ends, rows not 16-byte aligned); `row`
    // null for a constant-border row. A rolled loop over the words, each shifted in from
    // the top: a word inside the row of a 16-byte aligned row (`aligned`) is read whole,
    // the others element by element (no unrolled border arithmetic per element: few
    // registers, as the fast path needs them), near the row's ends without the border
    // rule's modulo. Element by element for the whole window, the warps that hold these
    // threads added 26-150 % to the 8-bit window kernels' instructions at 8192 x 8192; so,
    // 13-70 % (90 % for the 21-wide RGB box's pieces; PREDICTED, H100 model, its edge
    // warps: benchmarks/gpu_model.py --edges). The box kernels with column sums in
    // registers no longer come here at the row's ends of aligned rows
    // (gpuconv_box_packed_mirror); the dp4a 3 x 3 kernels do (13-35 %).
    // The OFFSET bytes left of the window hold their elements too, unused.
    __device__ __forceinline__ void fill(const unsigned char* __restrict__ row, int e0,
                                         int width, int border, int border_value,
                                         bool aligned) {
        const int row_elements = width * C;
#pragma unroll 1
        for (int w = WORDS - 1; w >= 0; --w) {
            const int first = e0 - REACH + 4 * w;  // the word's first element
            unsigned word = 0;
            if (row != nullptr && aligned && first >= 0 && first + 4 <= row_elements) {
                GPUCONV_CHECK_INDEX(row, first + 3);
                GPUCONV_TRACE_LOAD(reinterpret_cast<const unsigned*>(row + first));
                word = *reinterpret_cast<const unsigned*>(row + first);
            } else {
#pragma unroll 1
                for (int b = 3; b >= 0; --b) {
                    const int element = first + b;
                    // floor division (element may be negative): which pixel, which channel
                    const int pixel = element >= 0 ? element / C : -((-element + C - 1) / C);
                    const int channel = element - pixel * C;
                    const int source = gpuconv_near_source_index(pixel, width, border);
                    unsigned value = unsigned(border_value);
                    if (source >= 0 && row != nullptr) {
                        GPUCONV_CHECK_INDEX(row, source * C + channel);
                        GPUCONV_TRACE_LOAD(row + source * C + channel);
                        value = row[source * C + channel];
                    }
                    word = word << 8 | (value & 0xffu);
                }
            }
#pragma unroll
            for (int v = WORDS - 1; v > 0; --v) words[v] = words[v - 1];
            words[0] = word;
        }
    }

    // The bytes of window elements v, v + C, v + 2C (output element v's three taps) in one
    // word: in bytes 0-2 (`high` false) or 1-3 (`high` true: a word used as it is). v is a
    // compile-time constant once unrolled, so the branches and selectors fold away. In
    // grey every word holds 3 consecutive bytes itself or with one permute; in colour the
    // three bytes span up to three words: one permute or two.
    __device__ __forceinline__ unsigned taps_of(int v, bool& high) const {
        const int p0 = OFFSET + v, p1 = p0 + C, p2 = p0 + 2 * C;
        const int a = p0 / 4, b = p1 / 4, c = p2 / 4;
        high = false;
        if (a == c && C == 1) {  // three bytes of one word: the word itself
            high = p0 % 4 == 1;
            return words[a];
        }
        if (c - a <= 1 || b == a || b == c) {  // two words: one permute
            const int shift_b = (b - a) * 4, shift_c = (c - a) * 4;
            const unsigned upper = c > a ? words[c] : words[a];
            return __byte_perm(words[a], upper,
                               (p0 - 4 * a) | (p1 - 4 * a - (b > a ? shift_b - 4 : 0)) << 4 |
                                   (p2 - 4 * a - (c > a ? shift_c - 4 : 0)) << 8);
        }
        // three words: the first two bytes, then the third
        const unsigned low = __byte_perm(words[a], words[b], (p0 - 4 * a) | (p1 - 4 * a) << 4);
        return __byte_perm(low, words[c], 0x0 | 0x1 << 4 | (p2 - 4 * c + 4) << 8);
    }
};

// Stores V uint8 results of one output row from `offset`, packed four to a word: one vector
// store, or byte by byte at the row's end or when rows are not 16-byte aligned.
template <typename Out, int V>
__device__ __forceinline__ void gpuconv_store_packed_row(
    Out* __restrict__ output, long long offset, int row_elements, int e0, bool full_store,
    const gpuconv_vector<unsigned, V / 4>& packed) {
    if (full_store) {
        using Vector = gpuconv_vector<unsigned, V / 4>;
        Vector* target = reinterpret_cast<Vector*>(output + offset);
        GPUCONV_CHECK_INDEX(output, offset + V - 1);
        GPUCONV_TRACE_STORE(target);
        *target = packed;
    } else {
#pragma unroll
        for (int v = 0; v < V; ++v) {
            if (e0 + v < row_elements) {
                GPUCONV_CHECK_INDEX(output, offset + v);
                GPUCONV_TRACE_STORE(output + offset + v);
                output[offset + v] = Out(packed.v[v / 4] >> (8 * (v % 4)));
            }
        }
    }
}

// One input row's work: its packed taps' dp4a into the ring of 3 x V sums, and the output
// row it completes stored (as gpuconv_window_step, with KH = 3).
template <typename Out, int C, int V>
__device__ __forceinline__ void gpuconv_dp4a_step(const gpuconv_byte_window<C, V>& window,
                                                  const unsigned (&taps)[3],
                                                  const unsigned (&taps_high)[3],
                                                  int (&ring)[3][V], int phase, int step,
                                                  Out* __restrict__ output, int y0,
                                                  int row_elements, int e0, bool full_store) {
#pragma unroll
    for (int v = 0; v < V; ++v) {
        bool high;
        const unsigned pixels = window.taps_of(v, high);
#pragma unroll
        for (int i = 0; i < 3; ++i) {
            const int slot = (phase - i + 3) % 3;
            ring[slot][v] =
                gpuconv_dp4a_u8s8(pixels, high ? taps_high[i] : taps[i], i == 0 ? 0 : ring[slot][v]);
        }
    }
    const int done = step - 2;
    if (done >= 0) {  // clamped and packed four to a word, stored as one vector
        const int slot = (phase + 1) % 3;
        gpuconv_vector<unsigned, V / 4> packed;
#pragma unroll
        for (int w = 0; w < V / 4; ++w)
            packed.v[w] = gpuconv_pack_u8(ring[slot][4 * w], ring[slot][4 * w + 1],
                                          ring[slot][4 * w + 2], ring[slot][4 * w + 3]);
        const long long offset = (long long)(y0 + done) * row_elements + e0;
        gpuconv_store_packed_row<Out, V>(output, offset, row_elements, e0, full_store, packed);
    }
}

// 8 blocks of 128 threads per SM: at most 64 registers, half the SM's warps resident. With
// no cap ptxas took 126-128 registers (a quarter of the warps) and the model predicted the
// kernels latency-bound (grey 3x3 55 % of copy, RGB 58 %); capped, DRAM-bound (100 %, 97 %),
// with no spill on sm_80 or sm_90 (PREDICTED, H100 model; not yet measured on a GPU).
#ifndef GPUCONV_DP4A_MIN_BLOCKS
#define GPUCONV_DP4A_MIN_BLOCKS 8
#endif
template <typename In, typename Out, typename Acc, int KH, int KW, int C, int V, bool SEPARABLE,
          bool STACK = false>
__global__ void __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y,
                                  GPUCONV_DP4A_MIN_BLOCKS)
gpuconv_window_dp4a(const In* __restrict__ image, Out* __restrict__ output,
                    const Acc* __restrict__ weights, int height, int width, int anchor_y,
                    int border, Acc border_value, int rows_per_strip, int vector_ok) {
    static_assert(sizeof(In) == 1 && In(-1) > In(0) && sizeof(Out) == 1 && Out(-1) > Out(0) &&
                      sizeof(Acc) == 4 && Acc(-1) < Acc(0) && Acc(1) / Acc(2) == Acc(0) &&
                      KH == 3 && KW == 3 && !SEPARABLE && V % 4 == 0,
                  "gpuconv_window_dp4a: 3 x 3, unsigned char to unsigned char, int taps");
    using Window = gpuconv_byte_window<C, V>;
    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    if (STACK) {
        image += (long long)blockIdx.z * height * row_elements;
        output += (long long)blockIdx.z * height * row_elements;
    }
    const bool fast =
        vector_ok && e0 - Window::REACH >= 0 && e0 + V + Window::REACH <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;

    unsigned taps[3], taps_high[3];  // each kernel row's taps as bytes 0-2, and as 1-3
#pragma unroll
    for (int i = 0; i < 3; ++i) {
        unsigned packed = 0;
#pragma unroll
        for (int j = 0; j < 3; ++j) {
            GPUCONV_CHECK_INDEX(weights, 3 * i + j);
            GPUCONV_TRACE_LOAD(weights + 3 * i + j);
            packed |= (unsigned(weights[3 * i + j]) & 0xffu) << (8 * j);
        }
        taps[i] = packed;
        taps_high[i] = packed << 8;
    }

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        const int steps = rows + 2;  // input rows this strip reads
        int ring[3][V];
        if (fast && y0 - anchor_y >= 0 && y0 - anchor_y + steps <= height) {
            // Interior strip: no border rule, the row pointer steps by one row.
            const unsigned char* row = image + (long long)(y0 - anchor_y) * row_elements;
            for (int base = 0; base < steps; base += 3) {
#pragma unroll
                for (int g = 0; g < 3; ++g) {
                    const int step = base + g;
                    if (step >= steps) break;
                    Window window;
                    window.load(row + (long long)g * row_elements, e0);
                    gpuconv_dp4a_step<Out, C, V>(window, taps, taps_high, ring, g, step, output,
                                                 y0, row_elements, e0, true);
                }
                row += 3LL * row_elements;
            }
            continue;
        }
        for (int base = 0; base < steps; base += 3) {
#pragma unroll
            for (int g = 0; g < 3; ++g) {
                const int step = base + g;
                if (step >= steps) break;
                const int row = gpuconv_source_index(y0 - anchor_y + step, height, border);
                const unsigned char* source =
                    row >= 0 ? image + (long long)row * row_elements : nullptr;
                Window window;
                if (fast && source != nullptr)
                    window.load(source, e0);
                else
                    window.fill(source, e0, width, border, border_value, vector_ok);
                gpuconv_dp4a_step<Out, C, V>(window, taps, taps_high, ring, g, step, output, y0,
                                             row_elements, e0, full_store);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// gpuconv_box_packed<In, Out, Acc, KW, C, V[, STACK]>(the arguments of gpuconv_box)
//   gpuconv_box for 8-bit images into 8-bit (In = Out = unsigned char, grey or RGB, odd KW:
//   3-9 and 21 in window.py), where every column sum fits 16 bits: kernel_height x 255 <
//   65536 and a constant border value in [0, 255] (window.py checks). The column sums of
//   two neighbouring elements share one 32-bit word (two 16-bit halves): a row entering or
//   leaving the window is spread from bytes to halves by one byte permute per two elements
//   and added or subtracted in one 32-bit add, which is exact because each half stays in
//   [0, 65535]; the halves are unpacked once per output row for the running sum along it,
//   in 32-bit ints.
//   The store: the float product rounded by one cvt.rni (NaN to 0, half to even,
//   saturating, as gpuconv_store) and four results clamped and packed by two cvt.pack.sat.
//   The same results as gpuconv_box. Launch as gpuconv_box.
//   Wide windows (the 21-wide box on RGB: 60 halo elements) take V = 64 elements a thread,
//   so that the halo is less of the work (a 128-element window for 64 outputs), and keep
//   their 64 column-sum words in dynamic shared memory (gpuconv_box_packed_shared_columns):
//   in registers they spilled under every cap that fits 6 blocks an SM. PREDICTED (H100
//   model, 8192 x 8192; not yet run on a GPU): 1.73 warp instructions per pixel, 61 % of
//   copy, where the shared-memory separable kernel ran it at 23.6 and 6 % (measured 5 %);
//   its edge warps (the threads at the row's ends, and the warps that wait for them) add
//   90 % (benchmarks/gpu_model.py --edges): their pieces outside the row go byte by byte.

// The rounded level of one window sum before the clamp to [0, 255]: the store rule's
// rounding of `sum * scale` (float sums: cvt.rni; int sums: the exact product).
__device__ __forceinline__ int gpuconv_box_level(int sum, float scale) {
    return __float2int_rn(float(sum) * scale);
}
__device__ __forceinline__ int gpuconv_box_level(int sum, int scale) { return sum * scale; }

// Windows wider than this many words (the 21-wide box on RGB, V = 64: 32 words) keep
// their column sums in dynamic shared memory, not registers (window.py: shared_bytes).
#define GPUCONV_BOX_PACKED_REGISTER_WORDS 16

// gpuconv_box_packed's threads at the row's ends (the edge lanes: e0 = 0, or e0 + V = the
// row's elements), column sums in registers (V = 16): they read their windows by the
// middle threads' loads, whose halo words outside the row are the neighbouring row's bytes
// (inside the image, except left of its first row and right of its last: those two source
// rows take the border rule), and after each row's update replace the column sums outside
// the row. Under REFLECT101, REFLECT and REPLICATE each such column (all its rows mapped by
// the same rule) is the column of the pixel inside the row that it repeats, which lies in
// the thread's own window: one byte permute per two columns. Under CONSTANT it is
// kernel_height x value. Through the border rule element by element, their warps added
// 23-70 % to these kernels' instructions; now 0.3-1.1 % (PREDICTED, H100 model, 8192 x 8192,
// benchmarks/gpu_model.py --edges).
// WRAP, rows not 16-byte aligned and rows shorter than V + REACH take the border rule. In
// an aligned row (its elements a multiple of 16) a thread's 16 elements end at the row's
// end or 16 or more before it, at least REACH: there every thread whose window crosses the
// row's ends is an edge lane.
// The 21-wide box on RGB (column sums in shared memory, V = 64) takes the border rule:
// every way of this tried there (its edge lanes' pieces outside the row as zeros and the
// columns replaced, or read as the middle threads' are) cost the middle threads 1-4 % of
// their instructions at its 80-register cap, more than its 61 % of copy can give.

// 1: the edge lane at the row's start, 2: at its end, 0: any other thread. (Rows of at
// least V + REACH elements, with 2 C <= V: the pixels repeated lie in the lane's window.)
template <int C, int V, int REACH>
__device__ __forceinline__ int gpuconv_box_packed_edge(int e0, int row_elements, int border,
                                                       int vector_ok) {
    if (2 * C > V || !vector_ok || border == GPUCONV_BORDER_WRAP || row_elements < V + REACH)
        return 0;
    return e0 == 0 ? 1 : e0 + V == row_elements ? 2 : 0;
}

// The element (from e0) whose column sum the column of element e repeats under the border
// rule `mode` (REFLECT101, REFLECT or REPLICATE): e < 0 for the thread at the row's start
// (`right` false), e >= V for the one at its end (the row ends at element V). The border
// rule itself is gpuconv_near_source_index's, on a row of SPAN pixels laid so that the
// thread's e0 is its element 0 or SPAN x C - V (a compile-time constant once unrolled).
template <int C, int V>
__device__ __forceinline__ int gpuconv_mirror_element(int e, int mode, bool right) {
    constexpr int SPAN = 1 << 12;  // pixels: farther than any window reaches
    const int origin = right ? SPAN * C - V : 0;
    const int element = origin + e;
    const int pixel = element >= 0 ? element / C : -((-element + C - 1) / C);  // floor
    const int channel = element - pixel * C;
    return gpuconv_near_source_index(pixel, SPAN, mode) * C + channel - origin;
}

// One edge lane's column-sum words outside the row (word k: the sums of elements 2k - B
// and 2k - B + 1 from e0), those of the LEFT elements beyond the row's end that its outputs
// read: each from the two words it repeats (one byte permute; the indices and selectors
// compile-time constants once unrolled), or the constant border's kernel_height x value.
template <int C, int V, int B, int LEFT, bool RIGHT, int PAIRS>
__device__ __forceinline__ void gpuconv_box_packed_mirror_side(unsigned (&columns)[PAIRS],
                                                               int border,
                                                               unsigned constant_pair) {
    constexpr int FIRST = RIGHT ? (V + B) / 2 : (B - LEFT) / 2;
    constexpr int LAST = RIGHT ? (V + LEFT - 1 + B) / 2 : B / 2 - 1;
    auto repeat = [&](const int mode) {
#pragma unroll
        for (int k = FIRST; k <= LAST; ++k) {
            const int s0 = gpuconv_mirror_element<C, V>(2 * k - B, mode, RIGHT) + B;
            const int s1 = gpuconv_mirror_element<C, V>(2 * k - B + 1, mode, RIGHT) + B;
            columns[k] = __byte_perm(columns[s0 / 2], columns[s1 / 2],
                                     (s0 % 2 ? 0x32 : 0x10) | (s1 % 2 ? 0x7600 : 0x5400));
        }
    };
    if (border == GPUCONV_BORDER_REFLECT101) {
        repeat(GPUCONV_BORDER_REFLECT101);
    } else if (border == GPUCONV_BORDER_REFLECT) {
        repeat(GPUCONV_BORDER_REFLECT);
    } else if (border == GPUCONV_BORDER_REPLICATE) {
        repeat(GPUCONV_BORDER_REPLICATE);
    } else {  // CONSTANT
#pragma unroll
        for (int k = FIRST; k <= LAST; ++k) columns[k] = constant_pair;
    }
}

// The edge lane at the row's start (`right` false) or at its end.
template <int C, int V, int B, int LEFT, int PAIRS>
__device__ __forceinline__ void gpuconv_box_packed_mirror(unsigned (&columns)[PAIRS], bool right,
                                                          int border, int kernel_height,
                                                          int border_value) {
    const unsigned constant_pair = unsigned(kernel_height * (border_value & 0xff)) * 0x10001u;
    if (right)
        gpuconv_box_packed_mirror_side<C, V, B, LEFT, true>(columns, border, constant_pair);
    else
        gpuconv_box_packed_mirror_side<C, V, B, LEFT, false>(columns, border, constant_pair);
}

// gpuconv_box_packed's column sums in shared memory: one output row's update of the
// thread's PIECES x 8 column-sum words, slot k at slots[k x THREADS] (a warp's 32 slots
// are consecutive words: no bank conflict). The window is read in pieces of 16 elements,
// each piece's 8 words updated before the next is read: 8 window registers, not 2 x 32.
// r = 0: the sums of the first kernel_height rows; after it, the entering row added and the
// leaving one subtracted in one pass (one load and one store of each slot).
// Threads on the fast path (the window inside the row, rows 16-byte aligned) read every
// piece by one vector load (a constant-border row: the value in every byte), their first
// row's sums half the pieces at a time in registers. The others (the row's ends, rows not
// aligned) take a rolled loop over the pieces, each through the border rule where it is
// not inside the row, the slots indexed at run time: one copy of the border code, not one
// per piece (24 copies spilled under the 6-block cap).
template <int C, int PIECES>
__device__ __forceinline__ void gpuconv_box_packed_shared_columns(
    unsigned* slots, const unsigned char* __restrict__ image, int r, int y0, int first_element,
    int row_elements, int width, int height, int kernel_height, int anchor_y, int border,
    int border_value, bool fast, int vector_ok) {
    constexpr int THREADS = GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y;
    constexpr int HALF = PIECES / 2;  // (a quarter at a time spilled under the 6-block cap)
    static_assert(PIECES % 2 == 0, "gpuconv_box_packed_shared_columns: halves");
    using Piece = gpuconv_byte_window<C, 16, 0>;  // 16 elements, no halo: 4 words
    const unsigned constant = (unsigned(border_value) & 0xffu) * 0x01010101u;
    auto row_of = [&](int y) -> const unsigned char* {
        const int row = gpuconv_source_index(y, height, border);
        return row < 0 ? nullptr : image + (long long)row * row_elements;
    };
    // the fast path's piece: one vector load, or a constant-border row's value
    auto load = [&](Piece& piece, const unsigned char* source, int p) {
        if (source != nullptr) {
            piece.load(source, first_element + 16 * p);
        } else {
#pragma unroll
            for (int w = 0; w < 4; ++w) piece.words[w] = constant;
        }
    };
    // the others' piece (a piece of an aligned row lies wholly inside it or wholly outside)
    auto read = [&](Piece& piece, const unsigned char* source, int p) {
        const int start = first_element + 16 * p;
        if (source != nullptr && vector_ok && start >= 0 && start + 16 <= row_elements)
            piece.load(source, start);
        else
            piece.fill(source, start, width, border, border_value, false);
    };
    auto add = [&](unsigned* slot, const Piece& in, const Piece& out) {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            // exact per 16-bit half: each half of the result lies in [0, 65535]
            GPUCONV_TRACE_LOAD(slot + 2 * w * THREADS);
            GPUCONV_TRACE_LOAD(slot + (2 * w + 1) * THREADS);
            GPUCONV_TRACE_STORE(slot + 2 * w * THREADS);
            GPUCONV_TRACE_STORE(slot + (2 * w + 1) * THREADS);
            slot[2 * w * THREADS] += __byte_perm(in.words[w], 0u, 0x4140) -
                                     __byte_perm(out.words[w], 0u, 0x4140);
            slot[(2 * w + 1) * THREADS] += __byte_perm(in.words[w], 0u, 0x4342) -
                                           __byte_perm(out.words[w], 0u, 0x4342);
        }
    };
    Piece none;  // a row that adds nothing (the first row's sums)
#pragma unroll
    for (int w = 0; w < 4; ++w) none.words[w] = 0;
    if (r == 0 && fast) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            unsigned sums[8 * HALF];
#pragma unroll
            for (int k = 0; k < 8 * HALF; ++k) sums[k] = 0;
            for (int i = 0; i < kernel_height; ++i) {
                const unsigned char* source = row_of(y0 - anchor_y + i);
#pragma unroll
                for (int q = 0; q < HALF; ++q) {
                    Piece piece;
                    load(piece, source, half * HALF + q);
#pragma unroll
                    for (int w = 0; w < 4; ++w) {
                        sums[8 * q + 2 * w] += __byte_perm(piece.words[w], 0u, 0x4140);
                        sums[8 * q + 2 * w + 1] += __byte_perm(piece.words[w], 0u, 0x4342);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < 8 * HALF; ++k) {
                GPUCONV_TRACE_STORE(slots + (8 * HALF * half + k) * THREADS);
                slots[(8 * HALF * half + k) * THREADS] = sums[k];
            }
        }
    } else if (r == 0) {
#pragma unroll 1
        for (int k = 0; k < 8 * PIECES; ++k) {
            GPUCONV_TRACE_STORE(slots + k * THREADS);
            slots[k * THREADS] = 0;
        }
        for (int i = 0; i < kernel_height; ++i) {
            const unsigned char* source = row_of(y0 - anchor_y + i);
#pragma unroll 1
            for (int p = 0; p < PIECES; ++p) {
                Piece piece;
                read(piece, source, p);
                add(slots + 8 * p * THREADS, piece, none);
            }
        }
    } else {
        const unsigned char* entering = row_of(y0 + r - anchor_y + kernel_height - 1);
        const unsigned char* leaving = row_of(y0 + r - 1 - anchor_y);
        if (fast) {
#pragma unroll
            for (int p = 0; p < PIECES; ++p) {
                Piece in, out;
                load(in, entering, p);
                load(out, leaving, p);
                add(slots + 8 * p * THREADS, in, out);
            }
        } else {
#pragma unroll 1
            for (int p = 0; p < PIECES; ++p) {
                Piece in, out;
                read(in, entering, p);
                read(out, leaving, p);
                add(slots + 8 * p * THREADS, in, out);
            }
        }
    }
    // A compiler barrier, as in gpuconv_box_float_step: the sums along the row read the
    // slots back from shared memory, not from the registers they were stored from.
    asm volatile("" ::: "memory");
}

// 8 blocks of 128 threads per SM (at most 64 registers): uncapped, the RGB instantiations
// took 87-91 registers and the model predicted 44 % of copy for 7 x 7 RGB, capped 81 % (48-56
// registers, no spill on sm_80 or sm_90); grey ones take 45-48 either way. PREDICTED (H100
// model), not yet measured. GPUCONV_BOX_PACKED_MIN_BLOCKS overrides, for tuning sweeps.
// Windows whose column sums are in shared memory (32 KiB a block for the 21-wide box on
// RGB: 6 blocks an SM at most on sm_90, 4 on sm_80's 164 KiB): on sm_90 6 blocks (80
// registers, no spill; under 8, 64 registers, they spilled 39-61 instructions' worth), the
// STACK twins 5 (under 6 their frame pointers spilled the strip loop's counters); 4 on
// older GPUs (under 6, sm_80 spilled 48-64 bytes). PREDICTED (H100 model, 8192 x 8192):
// 61 % of copy at 6, about 43 % uncapped (112 registers, 4 blocks). The two macros
// override, for tuning sweeps.
#ifndef GPUCONV_BOX_PACKED_MIN_BLOCKS
#define GPUCONV_BOX_PACKED_MIN_BLOCKS 8
#endif
#ifndef GPUCONV_BOX_PACKED_SHARED_MIN_BLOCKS
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define GPUCONV_BOX_PACKED_SHARED_MIN_BLOCKS 4
#else
#define GPUCONV_BOX_PACKED_SHARED_MIN_BLOCKS 6
#endif
#endif
#ifndef GPUCONV_BOX_PACKED_SHARED_STACK_MIN_BLOCKS
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define GPUCONV_BOX_PACKED_SHARED_STACK_MIN_BLOCKS 4
#else
#define GPUCONV_BOX_PACKED_SHARED_STACK_MIN_BLOCKS 5
#endif
#endif
template <typename In, typename Out, typename Acc, int KW, int C, int V, bool STACK = false>
__global__ void __launch_bounds__(
    GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y,
    gpuconv_byte_window<C, V, KW / 2>::WORDS > GPUCONV_BOX_PACKED_REGISTER_WORDS
        ? (STACK ? GPUCONV_BOX_PACKED_SHARED_STACK_MIN_BLOCKS : GPUCONV_BOX_PACKED_SHARED_MIN_BLOCKS)
        : GPUCONV_BOX_PACKED_MIN_BLOCKS)
gpuconv_box_packed(const In* __restrict__ image, Out* __restrict__ output,
                   const Acc* __restrict__ weights, int height, int width, int kernel_height,
                   int anchor_y, int border, int border_value, int rows_per_strip,
                   int vector_ok) {
    static_assert(sizeof(In) == 1 && In(-1) > In(0) && sizeof(Out) == 1 && Out(-1) > Out(0) &&
                      sizeof(Acc) == 4 && V % 4 == 0 && KW % 2 == 1,
                  "gpuconv_box_packed: unsigned char to unsigned char, odd KW");
    constexpr int RADIUS = KW / 2;
    using Window = gpuconv_byte_window<C, V, RADIUS>;
    constexpr int PAIRS = 2 * Window::WORDS;  // pair k: elements 2k - B and 2k - B + 1 from e0
    constexpr int B = 4 * Window::HALO;

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    if (STACK) {
        image += (long long)blockIdx.z * height * row_elements;
        output += (long long)blockIdx.z * height * row_elements;
    }
    constexpr int REACH = Window::REACH;
    const bool fast = vector_ok && e0 - REACH >= 0 && e0 + V + REACH <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;
    GPUCONV_CHECK_INDEX(weights, 0);
    GPUCONV_TRACE_LOAD(weights);
    const Acc scale = weights[0];

    // Wide windows: the column sums in shared memory (PAIRS words a thread), in pieces.
    constexpr bool SHARED_COLUMNS = Window::WORDS > GPUCONV_BOX_PACKED_REGISTER_WORDS;
    static_assert(!SHARED_COLUMNS || Window::WORDS % 4 == 0, "whole pieces of 16 elements");
    unsigned* slots = nullptr;
    if constexpr (SHARED_COLUMNS) {
        GPUCONV_DYNAMIC_SHARED(unsigned, shared_slots);
        slots = shared_slots + threadIdx.y * GPUCONV_WINDOW_BLOCK_X + threadIdx.x;
    }
    // Column sums in registers: the edge lanes read their windows as the middle threads
    // do (gpuconv_box_packed_mirror), except from the two source rows where those loads
    // would leave the image: left of row 0 (left_lane) and right of row height - 1. (Two
    // flags: an int, or the rows as a range, cost the middle threads 1-5 registers.)
    const int edge = gpuconv_box_packed_edge<C, V, REACH>(e0, row_elements, border, vector_ok);
    const bool left_lane = edge == 1, right_lane = edge == 2;

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int rows = min(rows_per_strip, height - y0);
        unsigned columns[SHARED_COLUMNS ? 1 : PAIRS];  // two 16-bit column sums per word
#pragma unroll
        for (int k = 0; k < (SHARED_COLUMNS ? 0 : PAIRS); ++k) columns[k] = 0;
        for (int r = 0; r < rows; ++r) {
            if constexpr (SHARED_COLUMNS) {
                gpuconv_box_packed_shared_columns<C, Window::WORDS / 4>(
                    slots, image, r, y0, e0 - REACH, row_elements, width, height,
                    kernel_height, anchor_y, border, border_value, fast, vector_ok);
            } else {
                // The first output row's window: kernel_height whole rows; then one row down:
                // the entering row added, the leaving one subtracted.
                const int first = r == 0 ? 0 : kernel_height;
                const int last = r == 0 ? kernel_height : kernel_height + 2;
                for (int i = first; i < last; ++i) {
                    const bool leaving = i == kernel_height + 1;
                    const int y = leaving ? y0 + r - 1 - anchor_y
                                          : y0 + r - anchor_y + min(i, kernel_height - 1);
                    const int row = gpuconv_source_index(y, height, border);
                    const In* source = row < 0 ? nullptr : image + (long long)row * row_elements;
                    Window window;
                    if (fast ? row >= 0  // (row -1: a constant-border row, no source)
                             : (left_lane && row >= 1) ||
                                   (right_lane && row >= 0 && row < height - 1))
                        window.load(source, e0);
                    else
                        window.fill(source, e0, width, border, border_value, vector_ok);
#pragma unroll
                    for (int w = 0; w < Window::WORDS; ++w) {
                        const unsigned low = __byte_perm(window.words[w], 0u, 0x4140);
                        const unsigned high = __byte_perm(window.words[w], 0u, 0x4342);
                        columns[2 * w] = leaving ? columns[2 * w] - low : columns[2 * w] + low;
                        columns[2 * w + 1] =
                            leaving ? columns[2 * w + 1] - high : columns[2 * w + 1] + high;
                    }
                }
                if (left_lane || right_lane)
                    gpuconv_box_packed_mirror<C, V, B, Window::LEFT>(columns, right_lane, border,
                                                                     kernel_height, border_value);
            }
            // Along the row: the first C sums whole, then each from the one C before it.
            // Stored in pieces of 16 elements (one vector store), each as soon as it is
            // summed: the 21-wide RGB kernel (V = 64) then keeps 4 packed words, not 16.
            constexpr int PIECE = V < 16 ? V : 16;
            const long long offset = (long long)(y0 + r) * row_elements + e0;
            int sums[V];
            gpuconv_vector<unsigned, PIECE / 4> packed;
#pragma unroll
            for (int v = 0; v < V; ++v) {
                auto column = [&](int e) {
                    constexpr int THREADS = GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y;
                    const int k = (e + B) / 2;
                    if constexpr (SHARED_COLUMNS) GPUCONV_TRACE_LOAD(slots + k * THREADS);
                    const unsigned word = SHARED_COLUMNS ? slots[k * THREADS] : columns[k];
                    return int((word >> (16 * ((e + B) % 2))) & 0xffffu);
                };
                if (v < C) {
                    int sum = 0;
#pragma unroll
                    for (int j = -RADIUS; j <= RADIUS; ++j) sum += column(v + j * C);
                    sums[v] = sum;
                } else {
                    sums[v] = sums[v - C] + column(v + RADIUS * C) - column(v - (RADIUS + 1) * C);
                }
                if (v % 4 == 3)  // four results packed as soon as they are summed
                    packed.v[v % PIECE / 4] = gpuconv_pack_u8(
                        gpuconv_box_level(sums[v - 3], scale), gpuconv_box_level(sums[v - 2], scale),
                        gpuconv_box_level(sums[v - 1], scale), gpuconv_box_level(sums[v], scale));
                if (v % PIECE == PIECE - 1) {
                    const int first = v + 1 - PIECE;  // the piece's first element, from e0
                    const bool whole = PIECE == V ? full_store : vector_ok && e0 + v < row_elements;
                    gpuconv_store_packed_row<Out, PIECE>(output, offset + first, row_elements,
                                                         e0 + first, whole, packed);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// gpuconv_box_float<In, Out, Acc, K, C, V[, STACK]>(the arguments of gpuconv_window)
//   A K x K kernel whose taps all equal scale = weights[0], on a float image with float
//   sums (float32 grey, K in window.py's FLOAT_BOX_SIZES): out = scale x (the window's
//   sum). gpuconv_box's running sums would be cheaper, but not in floats: a value leaving
//   the window leaves its rounding error behind (after a large value, a sum of small ones
//   would be wrong in every digit) and an inf, once in, never leaves (inf - inf = NaN). So
//   every sum here is direct, over exactly the window's taps, as the other float paths:
//   - along the row, a thread's V outputs share the K - V + 1 window elements that all of
//     them cover, summed once (pairwise), and each adds its few others from partial sums
//     shared with its neighbours: K + 3 V - 6 additions for V outputs, not V (K - 1);
//   - down the strip, van Herk / Gil-Werman: the strip's input rows in blocks of K, each
//     output the suffix sum of one block plus the prefix sum of the next (3 additions per
//     output, see gpuconv_box_float_step), then scaled and stored. No multiply per tap and
//     no tap in a register.
//   PREDICTED (gpuconv/_gpumodel, H100, 8192 x 8192; not yet run on a GPU): 7 x 7 from 43 %
//   to 99 % of copy (the shared-memory separable kernel: 4.81 warp instructions per pixel,
//   this one 0.57), 21 x 21 from 25 % to 98 % (7.62 to 0.75); both DRAM-bound.
//   Launch as gpuconv_window, with K x V x sizeof(Acc) bytes of dynamic shared memory per
//   thread (window.py, window_launch). C = 1 only.

// The sum of values[FIRST .. FIRST + COUNT), pairwise (FIRST, COUNT compile-time).
template <int FIRST, int COUNT, typename Acc, int N>
__device__ __forceinline__ Acc gpuconv_pairwise_sum(const Acc (&values)[N]) {
    static_assert(COUNT >= 1 && FIRST + COUNT <= N, "gpuconv_pairwise_sum: range");
    if constexpr (COUNT == 1) {
        return values[FIRST];
    } else {
        return gpuconv_pairwise_sum<FIRST, COUNT / 2>(values) +
               gpuconv_pairwise_sum<FIRST + COUNT / 2, COUNT - COUNT / 2>(values);
    }
}

// One input row's work in gpuconv_box_float (both of its strip loops): the row's V sums
// along it, then down the strip (van Herk / Gil-Werman: no subtraction, 3 additions per
// output whatever K). The strip's input rows fall in blocks of K; `phase` is the row's
// place in its block (a compile-time constant once unrolled), `first` says block 0.
//   Output row y (input rows y .. y + K - 1 of the strip) starts in block b = y / K at
//   j = y mod K: its sum is the suffix sum S_b[j] (rows j .. K - 1 of block b) plus the
//   prefix sum P_{b+1}[j - 1] (rows 0 .. j - 1 of block b + 1), or S_b[0] alone for j = 0.
//   So each row adds itself into P and completes output row step - (K - 1) from
//   S_{b-1}[phase + 1] + P; it leaves its own V sums in slot `phase` (whose S_{b-1} the
//   row before used); the block's last row turns the K slots into suffix sums and
//   completes S_b[0]. Every output is summed over exactly its window's taps.
//   The slots (K x V sums a thread) live in shared memory, slot i of thread t at
//   slots[i x THREADS + t] (a warp's slot: 32 consecutive vectors, no bank conflict): in
//   registers, 21 x 4 of them spilled (sm_90, any register cap).
template <typename Out, typename Acc, int K, int V, int WINDOW>
__device__ __forceinline__ void gpuconv_box_float_step(const Acc (&window)[WINDOW],
                                                       gpuconv_vector<Acc, V>* slots,
                                                       Acc (&prefix)[V], int phase, bool first,
                                                       int step, Acc scale,
                                                       Out* __restrict__ output, int y0,
                                                       int row_elements, int e0,
                                                       bool full_store) {
    constexpr int THREADS = GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y;
    // Along the row: output v sums window[v .. v + K). All V share window[V - 1 .. K); v
    // also takes window[v .. V - 1) (`left`, built from the right) and window[K .. K + v)
    // (`right`, built from the left).
    const Acc shared = gpuconv_pairwise_sum<V - 1, K - V + 1>(window);
    Acc left[V], right[V];
    gpuconv_vector<Acc, V> across;
#pragma unroll
    for (int v = V - 2; v >= 0; --v) left[v] = v == V - 2 ? window[v] : window[v] + left[v + 1];
#pragma unroll
    for (int v = 1; v < V; ++v) right[v] = v == 1 ? window[K] : right[v - 1] + window[K - 1 + v];
#pragma unroll
    for (int v = 0; v < V; ++v) {
        across.v[v] = v < V - 1 ? left[v] + shared : shared;
        if (v > 0) across.v[v] += right[v];
    }
    // Down the strip.
    Acc sums[V];
    bool done = false;
    if (phase < K - 1) {
        if (!first) {
            GPUCONV_TRACE_LOAD(slots + (phase + 1) * THREADS);
            const gpuconv_vector<Acc, V> suffix = slots[(phase + 1) * THREADS];
#pragma unroll
            for (int v = 0; v < V; ++v) {
                prefix[v] = phase == 0 ? across.v[v] : prefix[v] + across.v[v];
                sums[v] = suffix.v[v] + prefix[v];
            }
            done = true;
        }
        GPUCONV_TRACE_STORE(slots + phase * THREADS);
        slots[phase * THREADS] = across;
        // A compiler barrier: without it the block's last row took these sums from the
        // registers they were stored from, not from shared memory, keeping K x V of them
        // live (168 registers for K = 21, with spills under any cap that fits 3 blocks).
        asm volatile("" ::: "memory");
    } else {
        gpuconv_vector<Acc, V> suffix = across;
        GPUCONV_TRACE_STORE(slots + (K - 1) * THREADS);
        slots[(K - 1) * THREADS] = suffix;
#pragma unroll
        for (int i = K - 2; i >= 0; --i) {
            GPUCONV_TRACE_LOAD(slots + i * THREADS);
            const gpuconv_vector<Acc, V> row = slots[i * THREADS];
#pragma unroll
            for (int v = 0; v < V; ++v) suffix.v[v] = row.v[v] + suffix.v[v];
            if (i > 0) {  // S_b[0] is used now, and only now
                GPUCONV_TRACE_STORE(slots + i * THREADS);
                slots[i * THREADS] = suffix;
            }
        }
#pragma unroll
        for (int v = 0; v < V; ++v) sums[v] = suffix.v[v];
        done = true;
    }
    if (done) {
        Out values[V];
#pragma unroll
        for (int v = 0; v < V; ++v) values[v] = gpuconv_store<Out>(sums[v] * scale);
        gpuconv_store_row<Out, V>(output, y0 + step - (K - 1), row_elements, e0, full_store,
                                  values);
    }
}

// The window of one grey row through the border rule (threads at the row's ends, rows that
// are not 16-byte aligned; `row` null for a constant-border row), from element `first`: a
// rolled loop that shifts four values at a time in from the top, each group inside the
// row loaded directly, the others element by element, reflected near the row's ends
// without the border rule's modulo. Unrolled, the positions of the K + V - 1 elements were
// kept in registers for the whole strip (they do not change from row to row), which cost
// the fast path its registers. One element at a time, through the modulo (the whole
// window shifted by one each time), the warps holding these threads added 60 % to the
// 21-wide box's instructions at 8192 x 8192; this way 30 % (PREDICTED, H100 model,
// benchmarks/gpu_model.py --edges: of copy with them 78 % -> 96 %).
template <typename In, typename Acc, int WINDOW>
__device__ __forceinline__ void gpuconv_float_window_fill(const In* __restrict__ row, int first,
                                                          int width, int border,
                                                          Acc border_value,
                                                          Acc (&window)[WINDOW]) {
    constexpr int GROUPS = (WINDOW + 3) / 4;  // the top group's extra elements fall off
#pragma unroll 1
    for (int g = GROUPS - 1; g >= 0; --g) {
        Acc values[4];
        const int start = first + 4 * g;
        if (row != nullptr && start >= 0 && start + 4 <= width) {  // inside the row
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                GPUCONV_CHECK_INDEX(row, start + k);
                GPUCONV_TRACE_LOAD(row + start + k);
                values[k] = gpuconv_to_acc<Acc>(row[start + k]);
            }
        } else {
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int source =
                    row == nullptr ? -1 : gpuconv_near_source_index(start + k, width, border);
                values[k] = border_value;
                if (source >= 0) {
                    GPUCONV_CHECK_INDEX(row, source);
                    GPUCONV_TRACE_LOAD(row + source);
                    values[k] = gpuconv_to_acc<Acc>(row[source]);
                }
            }
        }
#pragma unroll
        for (int w = WINDOW - 1; w >= 4; --w) window[w] = window[w - 4];
#pragma unroll
        for (int k = 0; k < 4 && k < WINDOW; ++k) window[k] = values[k];
    }
}

// GPUCONV_BOX_FLOAT_MIN_BLOCKS (blocks of 128 threads per SM) sets the register cap, for
// tuning sweeps. The default, 4 (128 registers), binds none: K = 7 takes 72, 9 takes 80,
// 21 takes 110 (sm_90; 118 before its fill took four elements at a time); under 6 (80)
// the 21-wide one spilled. The model predicts both DRAM-bound either way (PREDICTED, H100;
// not yet measured).
#ifndef GPUCONV_BOX_FLOAT_MIN_BLOCKS
#define GPUCONV_BOX_FLOAT_MIN_BLOCKS 4
#endif
template <typename In, typename Out, typename Acc, int K, int C, int V, bool STACK = false>
__global__ void __launch_bounds__(GPUCONV_WINDOW_BLOCK_X * GPUCONV_WINDOW_BLOCK_Y,
                                  GPUCONV_BOX_FLOAT_MIN_BLOCKS)
gpuconv_box_float(const In* __restrict__ image, Out* __restrict__ output,
                  const Acc* __restrict__ weights, int height, int width, int anchor_y,
                  int border, Acc border_value, int rows_per_strip, int vector_ok) {
    static_assert(C == 1 && K >= V && K % 2 == 1 && gpuconv_is_float<Acc>::value,
                  "gpuconv_box_float: grey, odd K >= V, float sums");
    using Raw = gpuconv_raw_row<In, K, C, V>;
    // K x V sums per thread (window.py: shared_bytes = K x V x sizeof(Acc) x 128)
    using Slot = gpuconv_vector<Acc, V>;
    GPUCONV_DYNAMIC_SHARED(Slot, shared_slots);
    Slot* slots =
        shared_slots + threadIdx.y * GPUCONV_WINDOW_BLOCK_X + threadIdx.x;

    const int row_elements = width * C;
    const int e0 = (blockIdx.x * GPUCONV_WINDOW_BLOCK_X + threadIdx.x) * V;
    if (e0 >= row_elements) return;  // no barrier in this kernel: leaving early is safe
    if (STACK) {
        image += (long long)blockIdx.z * height * row_elements;
        output += (long long)blockIdx.z * height * row_elements;
    }
    const bool fast =
        vector_ok && e0 - Raw::REACH_LEFT >= 0 && e0 + V + Raw::REACH_RIGHT <= row_elements;
    const bool full_store = vector_ok && e0 + V <= row_elements;
    GPUCONV_CHECK_INDEX(weights, 0);
    GPUCONV_TRACE_LOAD(weights);
    const Acc scale = weights[0];

    const int strips = (height + rows_per_strip - 1) / rows_per_strip;
    for (int strip = blockIdx.y * GPUCONV_WINDOW_BLOCK_Y + threadIdx.y; strip < strips;
         strip += gridDim.y * GPUCONV_WINDOW_BLOCK_Y) {
        const int y0 = strip * rows_per_strip;
        const int steps = min(rows_per_strip, height - y0) + K - 1;  // input rows it reads
        Acc prefix[V];
        if (fast && y0 - anchor_y >= 0 && y0 - anchor_y + steps <= height) {
            // Every row inside the image and the thread's window inside the row (most of
            // an image): no border rule, a row pointer that steps by one row.
            const In* row = image + (long long)(y0 - anchor_y) * row_elements;
            for (int base = 0; base < steps; base += K) {
#pragma unroll
                for (int phase = 0; phase < K; ++phase) {  // the slot: compile-time
                    const int step = base + phase;
                    if (step >= steps) break;
                    Raw raw;
                    raw.load(row, e0);
                    row += row_elements;
                    Acc window[Raw::WINDOW];  // element t: e0 - K / 2 + t
#pragma unroll
                    for (int t = 0; t < Raw::WINDOW; ++t)
                        window[t] = gpuconv_to_acc<Acc>(raw.element(t));
                    gpuconv_box_float_step<Out, Acc, K, V>(window, slots, prefix, phase,
                                                           base == 0, step, scale, output, y0,
                                                           row_elements, e0, true);
                }
            }
            continue;
        }
        for (int base = 0; base < steps; base += K) {
#pragma unroll
            for (int phase = 0; phase < K; ++phase) {
                const int step = base + phase;
                if (step >= steps) break;
                const int row = gpuconv_source_index(y0 - anchor_y + step, height, border);
                const In* source = row >= 0 ? image + (long long)row * row_elements : nullptr;
                Acc window[Raw::WINDOW];
                if (fast && source != nullptr) {
                    Raw raw;
                    raw.load(source, e0);
#pragma unroll
                    for (int t = 0; t < Raw::WINDOW; ++t)
                        window[t] = gpuconv_to_acc<Acc>(raw.element(t));
                } else {
                    gpuconv_float_window_fill<In, Acc, Raw::WINDOW>(source, e0 - Raw::LEFT, width,
                                                                    border, border_value, window);
                }
                gpuconv_box_float_step<Out, Acc, K, V>(window, slots, prefix, phase, base == 0,
                                                       step, scale, output, y0, row_elements,
                                                       e0, full_store);
            }
        }
    }
}
