// intrinsics.cu: the device intrinsics the CUDA emulator maps, against CUDA's documented
// results (tests/test_cuda_emulator.py).
//   float_conversions(const float* in, int* rounded, unsigned* unsigned_rounded,
//                     float* saturated, float* rinted, int count)
//       __float2int_rn, __float2uint_rn, __saturatef, rintf of each input.
//   mixed_min_max(const int* a, const unsigned* b, const float* x, const float* y,
//                 unsigned* int_results, float* float_results, int count)
//       min/max of int and unsigned (CUDA compares as unsigned), fminf/fmaxf and
//       min/max of floats (a NaN operand yields the other one), __umul24, __fmaf_rn.
//   byte_intrinsics(const unsigned* a, const unsigned* b, const unsigned* selectors,
//                   unsigned* out, int count)
//       __byte_perm(a, b, selector), and __dp4a in its signed and unsigned forms.
//   lookup_table(int* out): reads the __device__ array tables::lookup.
//   math_overloads(const float* x, float* f, double* d, long long* l): abs, sqrt, isnan &
//       co. resolve to the float, double and long long overloads, as in CUDA.
namespace tables {
__device__ int lookup[4];
}

__global__ void float_conversions(const float* in, int* rounded, unsigned* unsigned_rounded,
                                  float* saturated, float* rinted, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    rounded[i] = __float2int_rn(in[i]);
    unsigned_rounded[i] = __float2uint_rn(in[i]);
    saturated[i] = __saturatef(in[i]);
    rinted[i] = rintf(in[i]);
}

__global__ void mixed_min_max(const int* a, const unsigned* b, const float* x, const float* y,
                              unsigned* int_results, float* float_results, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    int_results[4 * i + 0] = min(a[i], b[i]);
    int_results[4 * i + 1] = max(a[i], b[i]);
    int_results[4 * i + 2] = (unsigned)min(a[i], (int)b[i]);
    int_results[4 * i + 3] = __umul24((unsigned)a[i], b[i]);
    float_results[4 * i + 0] = fminf(x[i], y[i]);
    float_results[4 * i + 1] = max(x[i], y[i]);
    float_results[4 * i + 2] = __fmaf_rn(x[i], y[i], 1.0f);
    float_results[4 * i + 3] = fmaxf(x[i], y[i]);
}

__global__ void byte_intrinsics(const unsigned* a, const unsigned* b, const unsigned* selectors,
                                unsigned* out, int count) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    out[3 * i + 0] = __byte_perm(a[i], b[i], selectors[i]);
    out[3 * i + 1] = (unsigned)__dp4a((int)a[i], (int)b[i], -7);
    out[3 * i + 2] = __dp4a(a[i], b[i], 7u);
}

__global__ void lookup_table(int* out) {
    out[threadIdx.x] = tables::lookup[threadIdx.x] * 10;
}

__global__ void math_overloads(const float* x, float* f, double* d, long long* l) {
    f[0] = abs(x[0]);
    f[1] = sqrt(x[1]);
    f[2] = isnan(x[2]) ? 1.0f : 0.0f;
    f[3] = floor(x[0]);
    d[0] = abs((double)x[0] * 3.0);
    l[0] = abs(-5000000000LL);
    l[1] = max(3LL, -5000000000LL);
    l[2] = isinf(x[3] / 0.0f);
}
