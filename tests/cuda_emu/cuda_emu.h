// A minimal CPU emulation of the CUDA features src/kernels/cuda/nade.cu uses, to test the
// kernels' indexing and synchronisation on a machine without a GPU (scripts/cuda/emu_test.sh).
// One OS thread per CUDA thread, blocks one after another; __syncthreads is a block barrier,
// shuffles and ballots exchange through per-warp arrays between two warp barriers. A kernel
// that calls __syncthreads or a shuffle from divergent code deadlocks here (as it may on the
// GPU). Not an emulation of the GPU's floating point: __expf / __fdividef are the precise ones.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static  // one block at a time: a static local is the block's shared memory
#define __align__(n) __attribute__((aligned(n)))

struct float2 {
    float x, y;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }

using std::max;
using std::min;

inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }

struct EmuWarp {
    std::barrier<> bar{32};
    float f[32];
    unsigned u[32];
};
inline EmuWarp* emu_warps = nullptr;
inline std::barrier<>* emu_block = nullptr;

inline void __syncthreads() { emu_block->arrive_and_wait(); }

inline float __shfl_xor_sync(unsigned, float v, int off) {
    EmuWarp& w = emu_warps[threadIdx.x >> 5];
    const int l = threadIdx.x & 31;
    w.f[l] = v;
    w.bar.arrive_and_wait();
    const float r = w.f[l ^ off];
    w.bar.arrive_and_wait();
    return r;
}

inline unsigned __ballot_sync(unsigned, int pred) {
    EmuWarp& w = emu_warps[threadIdx.x >> 5];
    const int l = threadIdx.x & 31;
    w.u[l] = pred ? 1u : 0u;
    w.bar.arrive_and_wait();
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= w.u[i] << i;
    w.bar.arrive_and_wait();
    return r;
}

// Runs kernel(args...) on a grid of blocks, one block at a time.
template <class F>
void emu_launch(dim3 grid, dim3 block, F kernel) {
    if (block.x % 32 != 0 || block.y != 1 || block.z != 1) {
        std::fprintf(stderr, "emu_launch: block must be (32 m, 1, 1)\n");
        std::abort();
    }
    gridDim = grid;
    blockDim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                std::barrier<> bar(block.x);
                std::unique_ptr<EmuWarp[]> warps(new EmuWarp[block.x / 32]);
                emu_block = &bar;
                emu_warps = warps.get();
                std::vector<std::thread> threads;
                threads.reserve(block.x);
                for (unsigned t = 0; t < block.x; ++t) {
                    threads.emplace_back([=] {
                        threadIdx = dim3{t, 0, 0};
                        blockIdx = dim3{bx, by, bz};
                        kernel();
                    });
                }
                for (auto& th : threads) th.join();
            }
}
