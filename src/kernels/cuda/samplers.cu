// Sequential samplers of FVSBN and the per-pixel MLP on CUDA: all n steps of an image in one
// block, one launch for the batch. Host side: src/kernels/samplers.rs. Each block walks
// i = 0..n: p_i = sigmoid(l_i) from the values so far, x_i = kept[i] where observed[i] != 0,
// else x_i = 1 exactly when u[i] < p_i. probs and values are (B, n) row-major.

// sigmoid(l) with precise expf and IEEE division.
__device__ __forceinline__ float sigmoid_precise(float l) {
    const float t = expf(-fabsf(l));
    return l >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
}

// Thread 0's step: the probability, the value, and the value for the other threads.
__device__ __forceinline__ float choose(float l, int e, const float* kept, const float* observed,
                                        const float* u, float* values, float* probs) {
    const float p = sigmoid_precise(l);
    const float x = observed[e] != 0.0f ? (kept[e] != 0.0f ? 1.0f : 0.0f)
                                        : (u[e] < p ? 1.0f : 0.0f);
    probs[e] = p;
    values[e] = x;
    return x;
}

// FVSBN: l_i = b_i + sum_{j<i} W[i, j] x_j. The block keeps the running pre-activations of all
// dimensions in shared memory (n floats): after x_i = 1 every thread adds its share of row i of
// wmt = (W * strictly-lower mask)^T, i.e. W[k, i] for k > i, a contiguous row.
extern "C" __global__ void fvsbn_sample(const float* __restrict__ wmt, const float* __restrict__ b,
                                        const float* __restrict__ kept,
                                        const float* __restrict__ observed,
                                        const float* __restrict__ u, float* __restrict__ values,
                                        float* __restrict__ probs, int n) {
    extern __shared__ float pre[];
    __shared__ float x_i;
    const size_t row = (size_t)blockIdx.x * n;
    for (int k = threadIdx.x; k < n; k += blockDim.x) {
        pre[k] = b[k];
    }
    __syncthreads();
    for (int i = 0; i < n; ++i) {
        if (threadIdx.x == 0) {
            x_i = choose(pre[i], (int)0, kept + row + i, observed + row + i, u + row + i,
                         values + row + i, probs + row + i);
        }
        __syncthreads();
        if (x_i != 0.0f) {
            const float* w = wmt + (size_t)i * n;
            for (int k = i + 1 + threadIdx.x; k < n; k += blockDim.x) {
                pre[k] += w[k];
            }
        }
        __syncthreads();
    }
}

// MLP: h_i = sigmoid(c_i + A[i, :, :i] x_<i) (d units), l_i = b_i + alpha_i . h_i. A is
// (n, d, n): the row A[i, k, :] is contiguous, so warp w computes the dot products of units
// k = w, w + warps, ... with the values so far (x in shared memory), reduced by shuffles in a
// fixed order; warp 0 then adds alpha_i . h_i in unit order.
extern "C" __global__ void mlp_sample(const float* __restrict__ a, const float* __restrict__ c,
                                      const float* __restrict__ alpha,
                                      const float* __restrict__ b, const float* __restrict__ kept,
                                      const float* __restrict__ observed,
                                      const float* __restrict__ u, float* __restrict__ values,
                                      float* __restrict__ probs, int n, int d) {
    extern __shared__ float shared[];
    float* x = shared;       // n values so far
    float* h = shared + n;   // d hidden units of the current pixel
    const int warp = threadIdx.x >> 5;
    const int lane = threadIdx.x & 31;
    const int warps = blockDim.x >> 5;
    const size_t row = (size_t)blockIdx.x * n;
    for (int i = 0; i < n; ++i) {
        for (int k = warp; k < d; k += warps) {
            const float* a_ik = a + ((size_t)i * d + k) * n;
            float s = 0.0f;
            for (int j = lane; j < i; j += 32) {
                s += a_ik[j] * x[j];
            }
#pragma unroll
            for (int off = 16; off >= 1; off >>= 1) {
                s += __shfl_xor_sync(0xffffffffu, s, off);
            }
            if (lane == 0) {
                h[k] = sigmoid_precise(c[(size_t)i * d + k] + s);
            }
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float l = b[i];
            for (int k = 0; k < d; ++k) {
                l += alpha[(size_t)i * d + k] * h[k];
            }
            x[i] = choose(l, 0, kept + row + i, observed + row + i, u + row + i, values + row + i,
                          probs + row + i);
        }
        __syncthreads();
    }
}
