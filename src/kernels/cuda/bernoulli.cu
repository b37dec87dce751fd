// The Bernoulli log-likelihood of a batch and its gradient in one launch (host side:
// src/kernels/bernoulli_log_prob.rs, whose CPU pass has the same math): per row b,
// log_p[b] = sum_i w_i [x_i l_i - softplus(l_i)] (w = 1 without weights), and, when asked,
// grad[b, i] = w_i (x_i - sigmoid(l_i)). l, x, w, grad are (B, n) row-major f32.
//
// Block b, BL_THREADS threads: thread t sums the terms i = t, t + BL_THREADS, ... in f64, then
// a tree in shared memory adds the threads' sums in a fixed order. Deterministic; precise expf
// and log1pf (no --use_fast_math).

#define BL_THREADS 256

extern "C" __global__ void __launch_bounds__(BL_THREADS)
bernoulli_log_prob(const float* __restrict__ l, const float* __restrict__ x,
                   const float* __restrict__ w, int has_w, float* __restrict__ log_p,
                   float* __restrict__ grad, int has_grad, int n) {
    __shared__ double part[BL_THREADS];
    const size_t row = (size_t)blockIdx.x * n;
    double sum = 0.0;
    for (int i = threadIdx.x; i < n; i += BL_THREADS) {
        const float li = l[row + i], xi = x[row + i];
        const float wi = has_w ? w[row + i] : 1.0f;
        const float t = expf(-fabsf(li));
        // softplus(l) = max(l, 0) + log1p(e^{-|l|}); sigmoid(l) from the same t.
        const float softplus = fmaxf(li, 0.0f) + log1pf(t);
        sum += (double)(wi * (xi * li - softplus));
        if (has_grad) {
            const float sigmoid = li >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
            grad[row + i] = wi * (xi - sigmoid);
        }
    }
    part[threadIdx.x] = sum;
    __syncthreads();
    for (int half = BL_THREADS / 2; half > 0; half >>= 1) {
        if ((int)threadIdx.x < half) part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0) log_p[blockIdx.x] = (float)part[0];
}
