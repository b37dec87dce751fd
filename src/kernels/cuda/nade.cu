// Fused NADE kernels for CUDA: the O(nd) recurrence a_{i+1} = a_i + x_i W[:, i] of
// src/kernels/nade_logits.rs (logits and their gradient) and nade_log_prob.rs (log p and its
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

// Warps per block of the logits kernel (the host side, nade_cuda.rs, has the same constants,
// and those of the gradient kernels below).
#define WARPS 8
#define THREADS (WARPS * 32)

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
// Grid (B, groups, chunks), block THREADS. Block (b, group, z) owns image b, the hidden units
// k in [group * THREADS, (group + 1) * THREADS), one per thread, a_k in a register, and the
// pixels i in [z * chunk, (z + 1) * chunk) (chunk a multiple of 32: a small batch is split
// along the pixels too, so that it fills the GPU). The block first brings a to pixel z * chunk:
// c + the W^T[i] of the earlier pixels with x[b, i] != 0, added in order i as the walk itself
// would, so the logits have the same bits whatever the chunks. Then its pixels go by tiles of
// 32: each lane accumulates V[i, k] h_i[k] for the 32 pixels of the tile in registers (adding
// W^T[i, k] after pixel i where x[b, i] != 0: a warp-uniform branch, the tile's x come from
// one ballot), then transpose_sum leaves the warp's sum for pixel i0 + L in lane L, and warp 0
// adds the WARPS warps' sums in warp order. The result goes to part[b][group][i]: with groups
// == 1 that is the logits (B, n) themselves; otherwise nade_sum_parts adds the groups.
extern "C" __global__ void __launch_bounds__(THREADS)
nade_logits(const float* __restrict__ x, const float* __restrict__ p, float* __restrict__ part,
            int n, int d, int chunk) {
    const int b = blockIdx.x;
    const int group = blockIdx.y;
    const int groups = gridDim.y;
    const int first = blockIdx.z * chunk;
    const int end = min(n, first + chunk);
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
    for (int i0 = 0; i0 < first; i0 += 32) {  // first is a multiple of 32, at most n
        const unsigned ones = __ballot_sync(FULL_MASK, xb[i0 + lane] != 0.0f);
        if (live) {
#pragma unroll
            for (int j = 0; j < 32; ++j) {
                if ((ones >> j) & 1u) {
                    a += wt[(size_t)(i0 + j) * D + k];
                }
            }
        }
    }
    for (int i0 = first; i0 < end; i0 += 32) {
        const int m = min(32, end - i0);
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
// Gradient of the logits (same math as NadeLogitsGrad in nade_logits.rs), given g = dL/dlogits:
//   h_i = sigmoid(a_i), da_i = g_i V_i * h_i * (1 - h_i), P_j = sum_{i <= j} da_i,
//   dV_i = sum_b g_{b,i} h_{b,i},  dW^T_j = sum_b [x_{b,j} != 0] (P_{b,n} - P_{b,j}),
//   dc = sum_b P_{b,n}.
// In two kernels: nade_grad_tiles_M walks every image once and produces the sums over images
// of g h (for dV) and of -[x_j != 0] P_j (for dW^T), per slice of images, plus P_n per image;
// nade_grad_finish adds the slices and the rest: dW^T += X^T P_n (a matrix product, X the
// (B, n) indicator [x != 0]) and dc = 1^T P_n.
//
// nade_grad_tiles_M: a thread owns one hidden unit k (lane) and M images, whose a and P it keeps
// in registers; the reduction over the thread's images is a plain in-register sum. Block
// (kb, s), GRAD_WARPS warps: units kb * 32 + lane (the loads of W^T[i, k], V[i, k] are
// coalesced), warp w the images img0 + w M + m (m < M) of image group grp = s, s + slices,
// ... (GRAD_WARPS M images each). Pixels go by tiles of GRAD_TILE: (g, [x != 0]) of the tile
// and the block's images staged in shared memory (read as warp broadcasts), W^T and V of the
// tile prefetched into registers. Per pixel each warp leaves its sums in red; after a
// __syncthreads the warps' sums are added in warp order and stored (coalesced) into the
// slice's partial part[row][s] ((2n, slices, d): rows [0, n) the dW^T term, [n, 2n) dV), by a
// plain store for the slice's first group and a read-add-store by the same thread for later
// ones. The tile's staging and prefetch of the next tile happen in the same phase (the
// buffers they write were last read before the __syncthreads). Finally P_n goes to
// pn[img][k] ((B, d)). Every element of part and pn is written by one thread, every sum in a
// fixed order: deterministic.
#define GRAD_WARPS 8
#define GRAD_THREADS (GRAD_WARPS * 32)
#define GRAD_TILE 16  // a power of two

template <int M>
__device__ __forceinline__ void grad_tiles(const float* __restrict__ x,
                                           const float* __restrict__ g,
                                           const float* __restrict__ p, float* __restrict__ part,
                                           float* __restrict__ pn, int batch, int n, int d) {
    constexpr int IMGS = GRAD_WARPS * M;
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int k = blockIdx.x * 32 + lane;
    const bool live = k < d;
    const int slice = blockIdx.y;
    const int slices = gridDim.y;
    const int groups = (batch + IMGS - 1) / IMGS;
    const size_t D = (size_t)d;
    const float* wt = p;
    const float* c = p + (size_t)n * D;
    const float* v = c + D;

    // (g, [x != 0]) for pixel i0 + j, image img0 + r at gx[j][r]; rows padded by one (fewer
    // bank conflicts on the staging stores).
    __shared__ float2 gx[GRAD_TILE][IMGS + 1];
    // Per warp and pixel j: red[j] the dV sum, red[GRAD_TILE + j] the dW^T sum.
    __shared__ float red[2 * GRAD_TILE][GRAD_WARPS][32];

    float vv[GRAD_TILE], ww[GRAD_TILE];
    // Stages tile i0 of group img0 and prefetches its V, W^T (0 past n or d: such pixels and
    // units contribute nothing, as do images past the batch, staged as g = x = 0).
    auto stage = [&](int img0, int i0) {
        for (int e = threadIdx.x; e < IMGS * GRAD_TILE; e += GRAD_THREADS) {
            const int r = e / GRAD_TILE;
            const int col = e - r * GRAD_TILE;
            const int img = img0 + r;
            const int i = i0 + col;
            float gv = 0.0f, xv = 0.0f;
            if (img < batch && i < n) {
                const size_t o = (size_t)img * n + i;
                gv = g[o];
                xv = x[o] != 0.0f ? 1.0f : 0.0f;
            }
            gx[col][r] = make_float2(gv, xv);
        }
#pragma unroll
        for (int j = 0; j < GRAD_TILE; ++j) {
            const bool in = live && i0 + j < n;
            const size_t row = (size_t)(i0 + j) * D + k;
            vv[j] = in ? v[row] : 0.0f;
            ww[j] = in ? wt[row] : 0.0f;
        }
    };

    for (int grp = slice; grp < groups; grp += slices) {
        const bool first = grp == slice;
        const int img0 = grp * IMGS;
        float a[M], P[M];
#pragma unroll
        for (int m = 0; m < M; ++m) {
            a[m] = live ? c[k] : 0.0f;
            P[m] = 0.0f;
        }
        stage(img0, 0);
        for (int i0 = 0; i0 < n; i0 += GRAD_TILE) {
            __syncthreads();  // gx staged; red read by the previous tile's sums
#pragma unroll
            for (int j = 0; j < GRAD_TILE; ++j) {
                float sv = 0.0f, sw = 0.0f;
#pragma unroll
                for (int m = 0; m < M; ++m) {
                    const float2 e = gx[j][warp * M + m];
                    const float h = sigmoid_fast(a[m]);
                    sv = fmaf(e.x, h, sv);
                    P[m] = fmaf(e.x * vv[j], h - h * h, P[m]);
                    if (e.y != 0.0f) {
                        sw -= P[m];
                        a[m] += ww[j];
                    }
                }
                red[j][warp][lane] = sv;
                red[GRAD_TILE + j][warp][lane] = sw;
            }
            __syncthreads();  // red written; gx, vv, ww read
            for (int q = warp; q < 2 * GRAD_TILE; q += GRAD_WARPS) {
                float s = red[q][0][lane];
#pragma unroll
                for (int w = 1; w < GRAD_WARPS; ++w) {
                    s += red[q][w][lane];
                }
                const int i = i0 + (q & (GRAD_TILE - 1));
                const int row = q < GRAD_TILE ? n + i : i;
                if (live && i < n) {
                    float* dst = part + ((size_t)row * slices + slice) * D + k;
                    *dst = first ? s : *dst + s;
                }
            }
            if (i0 + GRAD_TILE < n) {
                stage(img0, i0 + GRAD_TILE);
            }
        }
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const int img = img0 + warp * M + m;
            if (live && img < batch) {
                pn[(size_t)img * D + k] = P[m];
            }
        }
        // The next group's first stage writes gx, last read before this group's final
        // __syncthreads: no further barrier needed.
    }
}

#define GRAD_TILES(M)                                                                          \
    extern "C" __global__ void __launch_bounds__(GRAD_THREADS, 2)                              \
        nade_grad_tiles_##M(const float* __restrict__ x, const float* __restrict__ g,          \
                            const float* __restrict__ p, float* __restrict__ part,             \
                            float* __restrict__ pn, int batch, int n, int d) {                 \
        grad_tiles<M>(x, g, p, part, pn, batch, n, d);                                         \
    }
GRAD_TILES(1)
GRAD_TILES(2)
GRAD_TILES(4)
GRAD_TILES(8)

// nade_grad_finish: the packed gradient out ((2n + 1, d)) from part ((2n, slices, d)) and
// pn ((B, d)). Block 256 threads (16 x 16), 64 x 64 outputs, 4 x 4 per thread (rows
// r0 + 4 ty + u, columns k0 + 4 tx + v). Grid (ceil(d / 64), ceil((n + 1) / 64) + ceil(n / 64)):
// - the first ceil((n + 1) / 64) rows of blocks do the product Y = X1^T P_n, X1 = [X, 1]
//   (B, n + 1), so that Y's last row is dc: images by chunks of FIN_K staged in shared memory,
//   each thread's sums in image order; then out[j] = sum_s part[j][s] (in slice order) + Y[j]
//   for j < n (dW^T), out[n] = Y[n] (dc);
// - the others: out[n + 1 + i] = sum_s part[n + i][s] (dV), in slice order.
#define FIN_TILE 64
#define FIN_K 16
extern "C" __global__ void __launch_bounds__(256)
nade_grad_finish(const float* __restrict__ x, const float* __restrict__ pn,
                 const float* __restrict__ part, float* __restrict__ out, int batch, int n,
                 int d, int slices) {
    const int tx = threadIdx.x & 15;
    const int ty = threadIdx.x >> 4;
    const int k0 = blockIdx.x * FIN_TILE + 4 * tx;
    const int prod_tiles = (n + 1 + FIN_TILE - 1) / FIN_TILE;
    const size_t D = (size_t)d;
    const size_t S = (size_t)slices;

    if ((int)blockIdx.y >= prod_tiles) {
        const int i0 = ((int)blockIdx.y - prod_tiles) * FIN_TILE + 4 * ty;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
#pragma unroll
            for (int w = 0; w < 4; ++w) {
                const int i = i0 + u;
                const int k = k0 + w;
                if (i < n && k < d) {
                    const float* src = part + (size_t)(n + i) * S * D + k;
                    float s = src[0];
                    for (int q = 1; q < slices; ++q) {
                        s += src[q * D];
                    }
                    out[(size_t)(n + 1 + i) * D + k] = s;
                }
            }
        }
        return;
    }

    const int j0 = blockIdx.y * FIN_TILE;
    __shared__ __align__(16) float xs[FIN_K][FIN_TILE];
    __shared__ __align__(16) float ps[FIN_K][FIN_TILE];
    float acc[4][4];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            acc[u][w] = 0.0f;
        }
    }
    for (int b0 = 0; b0 < batch; b0 += FIN_K) {
        for (int e = threadIdx.x; e < FIN_K * FIN_TILE; e += 256) {
            const int bb = e / FIN_TILE;
            const int col = e - bb * FIN_TILE;
            const int b = b0 + bb;
            const int j = j0 + col;
            const int k = blockIdx.x * FIN_TILE + col;
            float xv = 0.0f, pv = 0.0f;
            if (b < batch) {
                if (j < n) {
                    xv = x[(size_t)b * n + j] != 0.0f ? 1.0f : 0.0f;
                } else if (j == n) {
                    xv = 1.0f;
                }
                if (k < d) {
                    pv = pn[(size_t)b * D + k];
                }
            }
            xs[bb][col] = xv;
            ps[bb][col] = pv;
        }
        __syncthreads();
#pragma unroll
        for (int bb = 0; bb < FIN_K; ++bb) {
            const float4 xr = *reinterpret_cast<const float4*>(&xs[bb][4 * ty]);
            const float4 pr = *reinterpret_cast<const float4*>(&ps[bb][4 * tx]);
            const float xa[4] = {xr.x, xr.y, xr.z, xr.w};
            const float pa[4] = {pr.x, pr.y, pr.z, pr.w};
#pragma unroll
            for (int u = 0; u < 4; ++u) {
#pragma unroll
                for (int w = 0; w < 4; ++w) {
                    acc[u][w] = fmaf(xa[u], pa[w], acc[u][w]);
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
#pragma unroll
        for (int w = 0; w < 4; ++w) {
            const int j = j0 + 4 * ty + u;
            const int k = k0 + w;
            if (j <= n && k < d) {
                float s = acc[u][w];
                if (j < n) {
                    const float* src = part + (size_t)j * S * D + k;
                    float t = src[0];
                    for (int q = 1; q < slices; ++q) {
                        t += src[q * D];
                    }
                    s = t + s;
                }
                out[(size_t)j * D + k] = s;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// log p(x_b) and g_{b,i} = w_b (x_{b,i} - sigmoid(l_{b,i})), l = logits + bias (same math as
// nade_log_prob.rs): grid (B), block 256 (exactly: the reduction below assumes it). Each
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

// out[i] = sum_b g[b, i]: block 256 threads (8 warps) owns the columns blockIdx.x * 32 + lane;
// warp w sums the rows [w chunk, (w + 1) chunk) in order (chunk = ceil(batch / 8)), then warp 0
// adds the 8 warps' sums in warp order. A fixed order.
extern "C" __global__ void __launch_bounds__(256)
nade_column_sum(const float* __restrict__ g, float* __restrict__ out, int batch, int n) {
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int i = blockIdx.x * 32 + lane;
    const int chunk = (batch + 7) / 8;
    const int b1 = min(batch, (warp + 1) * chunk);
    __shared__ float red[8][32];
    float s = 0.0f;
    if (i < n) {
#pragma unroll 8
        for (int b = warp * chunk; b < b1; ++b) {
            s += g[(size_t)b * n + i];
        }
    }
    red[warp][lane] = s;
    __syncthreads();
    if (warp == 0 && i < n) {
        float t = red[0][lane];
#pragma unroll
        for (int w = 1; w < 8; ++w) {
            t += red[w][lane];
        }
        out[i] = t;
    }
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
