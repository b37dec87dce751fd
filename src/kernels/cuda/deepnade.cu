// Deep NADE's exact walk on CUDA: the element-wise parts of a block of steps, around the
// products (cuBLAS, through candle's matmul) of the layers above the first. Host side:
// src/kernels/deepnade_steps.rs, which describes the walk; the CPU has its own walk
// (src/kernels/deepnade_walk.rs).
//
// Layouts (row-major, f32 unless said): a1 (R, h1), the first layer's pre-activations of R
// walks; table (2n + 1, h1), what observing a dimension adds to a1 (row 2n is zero: nothing
// observed); entries (S, R) u32, the table row walk r observes after step s; a block's rows
// are step-major, row s R + r = walk r before its step s.
//
// Determinism: no atomics; every output element is written by one thread, every sum taken in
// an order fixed by the shapes. Precision: precise expf / tanhf / log1p (nvcc's defaults; no
// --use_fast_math), so that the walk matches the CPU's to the products' rounding.

#define DN_FULL_MASK 0xffffffffu
#define DN_RELU 0
#define DN_SIGMOID 1
#define DN_TANH 2

__device__ __forceinline__ float dn_act(int act, float x) {
    if (act == DN_RELU) return fmaxf(x, 0.0f);
    if (act == DN_SIGMOID) {
        const float t = expf(-fabsf(x));
        return x >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
    }
    return tanhf(x);
}

// Grid (chunks * R), block 32 m: block (r, chunk) owns walk r and units k = chunk * blockDim.x
// + threadIdx.x. For s = 0..S-1: out[s R + r, k] = g(a), then a += table[entries[s, r], k];
// finally out[S R + r, k] = a (a1 after the block's steps). out is ((S + 1) R, h1).
extern "C" __global__ void deepnade_first_layer(const float* __restrict__ a1,
                                                const float* __restrict__ table,
                                                const unsigned* __restrict__ entries,
                                                float* __restrict__ out, int rows, int h1,
                                                int steps, int act) {
    const int chunks = (h1 + blockDim.x - 1) / blockDim.x;
    const int r = blockIdx.x / chunks;
    const int k = (blockIdx.x % chunks) * blockDim.x + threadIdx.x;
    if (r >= rows || k >= h1) return;
    const size_t H = (size_t)h1;
    float a = a1[(size_t)r * H + k];
    for (int s = 0; s < steps; ++s) {
        const size_t row = (size_t)s * rows + r;
        out[row * H + k] = dn_act(act, a);
        a += table[(size_t)entries[row] * H + k];
    }
    out[((size_t)steps * rows + r) * H + k] = a;
}

// Block 32 m (m warps), one warp per row j of z (J, width), rows j = blockIdx.x * m + warp:
// out[j] = sum_k V[dims[j], k] u_k + c[dims[j]], u_k = g(z[j, k] + bias[k]) when has_bias,
// else z[j, k] (z already holds the top layer's activations). Lane L sums k = L, L + 32, ...
// in order, then an xor butterfly (fixed order) adds the lanes.
extern "C" __global__ void deepnade_output(const float* __restrict__ z,
                                           const float* __restrict__ bias, int has_bias,
                                           const float* __restrict__ v,
                                           const float* __restrict__ c,
                                           const unsigned* __restrict__ dims,
                                           float* __restrict__ out, int rows, int width,
                                           int act) {
    const int warps = blockDim.x >> 5;
    const int lane = threadIdx.x & 31;
    const int j = blockIdx.x * warps + (threadIdx.x >> 5);
    if (j >= rows) return;  // warp-uniform: the whole warp leaves together
    const size_t W = (size_t)width;
    const unsigned d = dims[j];
    const float* zj = z + (size_t)j * W;
    const float* vd = v + (size_t)d * W;
    float acc = 0.0f;
    for (int k = lane; k < width; k += 32) {
        const float u = has_bias ? dn_act(act, zj[k] + bias[k]) : zj[k];
        acc += vd[k] * u;
    }
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
        acc += __shfl_xor_sync(DN_FULL_MASK, acc, off);
    }
    if (lane == 0) out[j] = acc + c[d];
}

// One thread per walk r: out[r] = ll[r] + sum over s = 0..S-1 (in order) of
// x l - softplus(l) in double, l = logits[s, r], x = 1 when entries[s, r] >= n; entries equal
// to 2n (nothing observed: the walk has ended) add nothing.
extern "C" __global__ void deepnade_log_lik(const double* __restrict__ ll,
                                            const float* __restrict__ logits,
                                            const unsigned* __restrict__ entries,
                                            double* __restrict__ out, int rows, int steps,
                                            int n) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= rows) return;
    double sum = ll[r];
    for (int s = 0; s < steps; ++s) {
        const size_t at = (size_t)s * rows + r;
        const unsigned e = entries[at];
        if (e >= 2u * (unsigned)n) continue;
        const double x = e >= (unsigned)n ? 1.0 : 0.0;
        const double l = (double)logits[at];
        sum += x * l - (fmax(l, 0.0) + log1p(exp(-fabs(l))));
    }
    out[r] = sum;
}
