// The in-place Adam step on CUDA, element for element the CPU loops of src/kernels/adam.rs
// (same operations in the same order, f32). Host side: src/kernels/adam.rs.

// moments = [m (numel) | v (numel)] <- decayed moments plus the scaled gradient and its square.
extern "C" __global__ void adam_moments(float* __restrict__ moments, const float* __restrict__ g,
                                        long long numel, float beta1, float beta2,
                                        float grad_scale) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < numel;
         e += (long long)gridDim.x * blockDim.x) {
        const float ge = g[e] * grad_scale;
        moments[e] = beta1 * moments[e] + (1.0f - beta1) * ge;
        moments[numel + e] = beta2 * moments[numel + e] + (1.0f - beta2) * ge * ge;
    }
}

// weights <- decay * weights - lr * (m / correction1) / (sqrt(v / correction2) + eps).
extern "C" __global__ void adam_apply(float* __restrict__ w, const float* __restrict__ moments,
                                      long long numel, float lr, float decay, float correction1,
                                      float correction2, float eps) {
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < numel;
         e += (long long)gridDim.x * blockDim.x) {
        const float step =
            (moments[e] / correction1) / (sqrtf(moments[numel + e] / correction2) + eps);
        w[e] = decay * w[e] - lr * step;
    }
}
