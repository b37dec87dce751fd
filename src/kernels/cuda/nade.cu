// Fused NADE kernels for CUDA: the O(nd) recurrence a_{i+1} = a_i + x_i W[:, i] of
// src/models/nade_fused.rs (logits and their gradient) and nade_fused_loss.rs (log p and its
// gradient), plus sequential sampling. Host side: src/kernels/nade_cuda.rs.
//
// Parameters travel packed as P = [W^T (n rows); c (1 row); V (n rows)], (2n + 1, d) f32
// row-major; x, logits, gradients are (B, n) row-major. All kernels assume contiguous inputs.
//
// Determinism: no atomics. Every output element (and every element of a partial buffer) is
// written by exactly one thread, and every sum is taken in an order fixed by the launch
// configuration, which depends only on the shapes. Same inputs, same bits.
//
// Precision: the hidden units use sigmoid_fast (__expf and an approximate reciprocal, see
// there); what is returned as a probability or enters log p uses precise expf / log1pf and
// IEEE division (nvcc's defaults; this file must not be built with --use_fast_math).

#define FULL_MASK 0xffffffffu

// Warps per block of the logits and gradient kernels (the host side, nade_cuda.rs, has the
// same constants).
#define WARPS 8
#define THREADS (WARPS * 32)
// Pixels per tile of the gradient kernel's main pass: two values per pixel fill 32 lanes.
#define GRAD_TILE 16

// sigmoid(a) for the hidden units, fast: t = e^{-|a|} by ex2.approx, 1 / (1 + t) by
// rcp.approx, sigmoid = 1 / (1 + t) for a >= 0 and t / (1 + t) otherwise. Finite and in
// [0, 1] for every finite a (NaN stays NaN). Error: __expf's relative error is about
// 2^-22 + |a| 2^-24 (the rounding of a log2(e)), damped by t / (1 + t) for a >= 0; the
// reciprocal and the product add an ulp or two. So the relative error is at most about
// (|a| + 8) * 6e-8, and the absolute error below 5e-7 for every a (e^{-|a|} |a| <= 0.37).
__device__ __forceinline__ float sigmoid_fast(float a) {
    const float t = __expf(-fabsf(a));
    const float r = __fdividef(1.0f, 1.0f + t);
    return a >= 0.0f ? r : t * r;
}

// sigmoid(l) to within an ulp or two: precise expf, IEEE division.
__device__ __forceinline__ float sigmoid_precise(float l) {
    const float t = expf(-fabsf(l));
    return l >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
}

// Sum over the warp by an xor butterfly: a fixed order, and every lane ends with the same bits
// (each step adds the same two numbers on both lanes of a pair, and float addition commutes).
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1) {
        v += __shfl_xor_sync(FULL_MASK, v, off);
    }
    return v;
}

// Transposing reduction: every lane holds 32 values s[0..32); on return lane L holds
// sum over lanes of s[L] (a reduce-scatter). At each step a lane keeps the half of its values
// whose index has the step's bit equal to its own lane bit and sends the other half to its
// partner: 16 + 8 + 4 + 2 + 1 = 31 shuffles for 32 sums, instead of 5 * 32. Fixed order.
// s is clobbered. (The steps are a template so that every index is a compile-time constant and
// s stays in registers.)
template <int OFF>
__device__ __forceinline__ void transpose_step(float (&s)[32], int lane) {
    const bool upper = (lane & OFF) != 0;
#pragma unroll
    for (int j = 0; j < OFF; ++j) {
        const float send = upper ? s[j] : s[j + OFF];
        const float keep = upper ? s[j + OFF] : s[j];
        s[j] = keep + __shfl_xor_sync(FULL_MASK, send, OFF);
    }
}

__device__ __forceinline__ float transpose_sum(float (&s)[32], int lane) {
    transpose_step<16>(s, lane);
    transpose_step<8>(s, lane);
    transpose_step<4>(s, lane);
    transpose_step<2>(s, lane);
    transpose_step<1>(s, lane);
    return s[0];
}

// ---------------------------------------------------------------------------------------------
// Logits without the output bias.
//
// Grid (B, groups), block THREADS. Block (b, group) owns image b and the hidden units
// k in [group * THREADS, (group + 1) * THREADS), one per thread, a_k in a register. Pixels go
// by tiles of 32: each lane accumulates V[i, k] h_i[k] for the 32 pixels of the tile in
// registers (adding W^T[i, k] after pixel i where x[b, i] != 0: a warp-uniform branch, the
// tile's x come from one ballot), then transpose_sum leaves the warp's sum for pixel i0 + L in
// lane L, and warp 0 adds the WARPS warps' sums in warp order. The result goes to
// part[b][group][i]: with groups == 1 that is the logits (B, n) themselves; otherwise
// nade_sum_parts adds the groups.
extern "C" __global__ void __launch_bounds__(THREADS)
nade_logits(const float* __restrict__ x, const float* __restrict__ p, float* __restrict__ part,
            int n, int d) {
    const int b = blockIdx.x;
    const int group = blockIdx.y;
    const int groups = gridDim.y;
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int k = group * THREADS + threadIdx.x;
    const bool live = k < d;
    const size_t D = (size_t)d;
    const float* wt = p;
    const float* c = p + (size_t)n * D;
    const float* v = c + D;
    const float* xb = x + (size_t)b * n;
    float* out = part + ((size_t)b * groups + group) * n;

    __shared__ float red[WARPS][32];
    float a = live ? c[k] : 0.0f;
    for (int i0 = 0; i0 < n; i0 += 32) {
        const int m = min(32, n - i0);
        const unsigned ones = __ballot_sync(FULL_MASK, lane < m && xb[i0 + lane] != 0.0f);
        float s[32];
#pragma unroll
        for (int j = 0; j < 32; ++j) {
            s[j] = 0.0f;
            if (live && j < m) {
                const size_t row = (size_t)(i0 + j) * D + k;
                s[j] = v[row] * sigmoid_fast(a);
                if ((ones >> j) & 1u) {
                    a += wt[row];
                }
            }
        }
        red[warp][lane] = transpose_sum(s, lane);
        __syncthreads();
        if (warp == 0 && lane < m) {
            float t = red[0][lane];
#pragma unroll
            for (int w = 1; w < WARPS; ++w) {
                t += red[w][lane];
            }
            out[i0 + lane] = t;
        }
        __syncthreads();
    }
}

// out[r, col] = sum_{q < parts} part[r, q, col] in order q = 0, 1, ...: part is
// (rows, parts, cols), out (rows, cols). Grid-stride over the rows * cols outputs.
extern "C" __global__ void nade_sum_parts(const float* __restrict__ part, float* __restrict__ out,
                                          long long rows, long long cols, int parts) {
    const long long total = rows * cols;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const long long r = e / cols;
        const long long col = e - r * cols;
        const float* src = part + r * parts * cols + col;
        float s = src[0];
        for (int q = 1; q < parts; ++q) {
            s += src[q * cols];
        }
        out[e] = s;
    }
}

// ---------------------------------------------------------------------------------------------
// Gradient of the logits (same math as FusedGrad in nade_fused.rs), given g = dL/dlogits:
//   h_i = sigmoid(a_i), da_i = g_i V_i * h_i * (1 - h_i), P_j = sum_{i <= j} da_i,
//   dV_i = sum_b g_{b,i} h_{b,i},  dW^T_j = sum_b [x_{b,j} != 0] (P_{b,n} - P_{b,j}),
//   dc = sum_b P_{b,n}.
//
// Hidden units are independent given x, so a warp owns one unit k and 32 images (lane =
// image), which makes the reduction over images a reduction over lanes, and W^T[i, k], V[i, k]
// warp-uniform loads. Grid (ceil(d / WARPS), slices), block THREADS: block (kb, s) owns units
// kb * WARPS + warp and the image groups s, s + slices, s + 2 slices, ... (32 images each).
// Each slice accumulates a full packed gradient in part[s] ((2n + 1, d), zeroed by the host):
// every element of it is read-modify-written by one thread only, in group order (and between
// the passes that touch the same element from different lanes there is a __syncthreads), so
// the result is deterministic. The host adds the slices in order (nade_sum_parts).
//
// Per group: pass 1 walks the pixels by tiles of GRAD_TILE (x and g of the tile staged in
// shared memory), keeping a and P in registers; lane values s[j] = g h (for dV) and
// s[GRAD_TILE + j] = -[x != 0] P_j (for dW^T) are reduced over the images by one
// transpose_sum. Pass 2 adds [x_{b,j} != 0] P_{b,n} to dW^T, by tiles of 32 pixels. Then dc.
__device__ __forceinline__ void load_tile(float (*tile)[33], const float* __restrict__ src,
                                          int batch, int n, int img0, int i0, int width) {
    for (int e = threadIdx.x; e < 32 * width; e += blockDim.x) {
        const int r = e / width;
        const int col = e - r * width;
        const int img = img0 + r;
        const int i = i0 + col;
        tile[r][col] = (img < batch && i < n) ? src[(size_t)img * n + i] : 0.0f;
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
nade_grad_partial(const float* __restrict__ x, const float* __restrict__ g,
                  const float* __restrict__ p, float* __restrict__ part, int batch, int n, int d) {
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int k = blockIdx.x * WARPS + warp;
    const bool live = k < d;
    const int groups = (batch + 31) / 32;
    const size_t D = (size_t)d;
    const float* wt = p;
    const float* c = p + (size_t)n * D;
    const float* v = c + D;
    float* dwt = part + (size_t)blockIdx.y * (2 * (size_t)n + 1) * D;
    float* dc = dwt + (size_t)n * D;
    float* dv = dc + D;

    __shared__ float xs[32][33];
    __shared__ float gs[32][33];
    for (int grp = blockIdx.y; grp < groups; grp += gridDim.y) {
        const int img0 = grp * 32;
        // Lanes past the batch see x = g = 0 and contribute nothing (P stays 0).
        float a = live ? c[k] : 0.0f;
        float P = 0.0f;

        // Pass 1.
        for (int i0 = 0; i0 < n; i0 += GRAD_TILE) {
            load_tile(xs, x, batch, n, img0, i0, GRAD_TILE);
            load_tile(gs, g, batch, n, img0, i0, GRAD_TILE);
            __syncthreads();
            float s[32];
#pragma unroll
            for (int j = 0; j < GRAD_TILE; ++j) {
                s[j] = 0.0f;
                s[GRAD_TILE + j] = 0.0f;
                if (i0 + j < n) {
                    const size_t row = (size_t)(i0 + j) * D + k;
                    const float gj = gs[lane][j];
                    const float vk = live ? v[row] : 0.0f;
                    const float h = sigmoid_fast(a);
                    s[j] = gj * h;
                    P = fmaf(gj * vk, h - h * h, P);
                    if (xs[lane][j] != 0.0f) {
                        s[GRAD_TILE + j] = -P;
                        if (live) {
                            a += wt[row];
                        }
                    }
                }
            }
            __syncthreads();  // the tile is read: the next load_tile may overwrite it
            const float r = transpose_sum(s, lane);
            const int i = i0 + (lane & (GRAD_TILE - 1));
            if (live && i < n) {
                if (lane < GRAD_TILE) {
                    dv[(size_t)i * D + k] += r;
                } else {
                    dwt[(size_t)i * D + k] += r;
                }
            }
        }

        // Pass 2: dW^T_j += sum_b [x_{b,j} != 0] P_{b,n}.
        for (int i0 = 0; i0 < n; i0 += 32) {
            load_tile(xs, x, batch, n, img0, i0, 32);
            __syncthreads();
            float s[32];
#pragma unroll
            for (int j = 0; j < 32; ++j) {
                s[j] = xs[lane][j] != 0.0f ? P : 0.0f;
            }
            __syncthreads();
            const float r = transpose_sum(s, lane);
            if (live && i0 + lane < n) {
                dwt[(size_t)(i0 + lane) * D + k] += r;
            }
        }

        const float total = warp_sum(P);
        if (live && lane == 0) {
            dc[k] += total;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// log p(x_b) and g_{b,i} = w_b (x_{b,i} - sigmoid(l_{b,i})), l = logits + bias (same math as
// nade_fused_loss.rs): grid (B), block 256 (exactly: the reduction below assumes it). Each
// thread sums its pixels' terms x l - softplus(l) in double, in pixel order, then a tree over
// the 256 threads in shared memory: a fixed order.
#define LP_THREADS 256
extern "C" __global__ void __launch_bounds__(LP_THREADS)
nade_log_prob_terms(const float* __restrict__ logits, const float* __restrict__ x,
                    const float* __restrict__ bias, const float* __restrict__ weights,
                    int has_weights, float* __restrict__ log_p, float* __restrict__ g, int n) {
    const int b = blockIdx.x;
    const int tid = threadIdx.x;
    const float w = has_weights ? weights[b] : 1.0f;
    double acc = 0.0;
    for (int i = tid; i < n; i += LP_THREADS) {
        const size_t e = (size_t)b * n + i;
        const float l = logits[e] + bias[i];
        const float xi = x[e];
        // x l - softplus(l), softplus(l) = max(l, 0) + log(1 + e^{-|l|}).
        acc += (double)(xi * l - fmaxf(l, 0.0f)) - (double)log1pf(expf(-fabsf(l)));
        g[e] = w * (xi - sigmoid_precise(l));
    }
    __shared__ double red[LP_THREADS];
    red[tid] = acc;
    __syncthreads();
    for (int s = LP_THREADS / 2; s > 0; s >>= 1) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        log_p[b] = (float)red[0];
    }
}

// out[i] = sum_b g[b, i], in order b = 0, 1, ...: one thread per column.
extern "C" __global__ void nade_column_sum(const float* __restrict__ g, float* __restrict__ out,
                                           int batch, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) {
        return;
    }
    float s = 0.0f;
    for (int b = 0; b < batch; ++b) {
        s += g[(size_t)b * n + i];
    }
    out[i] = s;
}

// ---------------------------------------------------------------------------------------------
// Sequential sampling / completion: grid (B), one block per image, blockDim a multiple of 32
// (at most 1024). Thread t owns hidden units t, t + blockDim, ...; their activations live in
// scratch[b] (d floats, global memory, so that any d works; only the owning thread touches
// them, so no synchronisation is needed for them). Per pixel: each thread sums V[i, k] h[k]
// over its units in order, a warp_sum, the warps' sums in shared memory, warp 0 sums those;
// thread 0 adds the bias, p = sigmoid(l), decides x_i (the kept value, as 0/1, where observed,
// else u < p) and broadcasts it through shared memory; then a += W^T[i] where x_i = 1.
extern "C" __global__ void __launch_bounds__(1024)
nade_sample(const float* __restrict__ p, const float* __restrict__ bias,
            const float* __restrict__ kept, const float* __restrict__ observed,
            const float* __restrict__ u, float* __restrict__ values, float* __restrict__ probs,
            float* __restrict__ scratch, int n, int d) {
    const int r = blockIdx.x;
    const int tid = threadIdx.x;
    const int nt = blockDim.x;
    const int warp = tid >> 5;
    const int lane = tid & 31;
    const int nwarps = nt >> 5;
    const size_t D = (size_t)d;
    const float* wt = p;
    const float* c = p + (size_t)n * D;
    const float* v = c + D;
    float* a = scratch + (size_t)r * D;
    const size_t base = (size_t)r * n;

    __shared__ float red[32];
    __shared__ float x_shared;
    for (int k = tid; k < d; k += nt) {
        a[k] = c[k];
    }
    for (int i = 0; i < n; ++i) {
        const float* vi = v + (size_t)i * D;
        float part = 0.0f;
        for (int k = tid; k < d; k += nt) {
            part = fmaf(vi[k], sigmoid_fast(a[k]), part);
        }
        part = warp_sum(part);
        if (lane == 0) {
            red[warp] = part;
        }
        __syncthreads();
        if (warp == 0) {
            const float t = warp_sum(lane < nwarps ? red[lane] : 0.0f);
            if (lane == 0) {
                const size_t e = base + i;
                const float prob = sigmoid_precise(t + bias[i]);
                float xi;
                if (observed[e] != 0.0f) {
                    xi = kept[e] != 0.0f ? 1.0f : 0.0f;
                } else {
                    xi = u[e] < prob ? 1.0f : 0.0f;
                }
                probs[e] = prob;
                values[e] = xi;
                x_shared = xi;
            }
        }
        // x_shared is written; red is read (the next write to either comes after the next
        // pixel's first __syncthreads, which every thread reaches only after reading x_shared).
        __syncthreads();
        if (x_shared != 0.0f) {
            const float* wi = wt + (size_t)i * D;
            for (int k = tid; k < d; k += nt) {
                a[k] += wi[k];
            }
        }
    }
}
