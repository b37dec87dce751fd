// Runs the kernels of src/kernels/cuda/nade.cu on the CPU emulation (cuda_emu.h) with the
// launch logic of src/kernels/nade_cuda.rs, and checks them against a plain double-precision
// reference of the same math, including determinism (two runs, same bits).
// Build and run: scripts/cuda/emu_test.sh.
#include "cuda_emu.h"
#include "../../src/kernels/cuda/nade.cu"

#include <cstring>
#include <random>
#include <string>

using Vec = std::vector<float>;

static int failures = 0;

static void check(const char* what, const Vec& got, const std::vector<double>& want, double tol) {
    double worst = 0;
    size_t at = 0;
    for (size_t e = 0; e < want.size(); ++e) {
        const double err = std::fabs(got[e] - want[e]) / (1.0 + std::fabs(want[e]));
        if (!(err <= worst)) {  // NaN counts as worst
            worst = err;
            at = e;
        }
    }
    const bool ok = worst <= tol;
    std::printf("  %-10s %s  worst rel err %.2e at %zu (got %.7g, want %.7g)\n", what,
                ok ? "ok  " : "FAIL", worst, at, want.empty() ? 0.0 : got[at],
                want.empty() ? 0.0 : want[at]);
    if (!ok) ++failures;
}

static void same_bits(const char* what, const Vec& a, const Vec& b) {
    const bool ok = a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    if (!ok) {
        std::printf("  %-10s FAIL  not deterministic\n", what);
        ++failures;
    }
}

// ---- host launch logic, as in nade_cuda.rs ----
static const int kThreads = THREADS;

// chunk: pixels per block (a multiple of 32; 0: all n, one chunk).
static Vec logits(const Vec& x, const Vec& p, int B, int n, int d, int chunk = 0) {
    const int groups = (d + kThreads - 1) / kThreads;
    if (chunk == 0) chunk = (n + 31) / 32 * 32;
    const unsigned chunks = unsigned((n + chunk - 1) / chunk);
    Vec out(size_t(B) * n, -1.0f);
    if (groups == 1) {
        emu_launch({unsigned(B), 1, chunks}, {kThreads, 1, 1},
                   [&] { nade_logits(x.data(), p.data(), out.data(), n, d, chunk); });
    } else {
        Vec part(size_t(B) * groups * n, -1.0f);
        emu_launch({unsigned(B), unsigned(groups), chunks}, {kThreads, 1, 1},
                   [&] { nade_logits(x.data(), p.data(), part.data(), n, d, chunk); });
        emu_launch({3, 1, 1}, {64, 1, 1},
                   [&] { nade_sum_parts(part.data(), out.data(), B, n, groups); });
    }
    return out;
}

// Gradient launch parameters: m images per thread (0: the host's rule), at most max_slices
// slices.
struct GradCfg {
    int m = 0;
    int max_slices = 32;
};

static int grad_images(int B, int d, int max_slices) {
    const int kblocks = (d + 31) / 32;
    for (int m : {8, 4, 2}) {
        const int groups = (B + GRAD_WARPS * m - 1) / (GRAD_WARPS * m);
        if (std::min(groups, max_slices) * kblocks >= 256) return m;
    }
    return 1;
}

static Vec grad(const Vec& x, const Vec& p, const Vec& g, int B, int n, int d, GradCfg cfg) {
    const size_t len = (2 * size_t(n) + 1) * d;
    const int m = cfg.m ? cfg.m : grad_images(B, d, cfg.max_slices);
    const int groups = (B + GRAD_WARPS * m - 1) / (GRAD_WARPS * m);
    const int slices = std::min(groups, cfg.max_slices);
    // Garbage-filled, as the device buffers are not zeroed.
    Vec part(2 * size_t(n) * slices * d, -7.0f), pn(size_t(B) * d, -7.0f), out(len, -7.0f);
    const dim3 tg{unsigned((d + 31) / 32), unsigned(slices), 1};
    const dim3 tb{GRAD_THREADS, 1, 1};
    auto run = [&](auto kernel) {
        emu_launch(tg, tb,
                   [&] { kernel(x.data(), g.data(), p.data(), part.data(), pn.data(), B, n, d); });
    };
    switch (m) {
        case 1: run(nade_grad_tiles_1); break;
        case 2: run(nade_grad_tiles_2); break;
        case 4: run(nade_grad_tiles_4); break;
        case 8: run(nade_grad_tiles_8); break;
        default: std::abort();
    }
    const unsigned rows = unsigned((n + 1 + FIN_TILE - 1) / FIN_TILE + (n + FIN_TILE - 1) / FIN_TILE);
    emu_launch({unsigned((d + FIN_TILE - 1) / FIN_TILE), rows, 1}, {256, 1, 1}, [&] {
        nade_grad_finish(x.data(), pn.data(), part.data(), out.data(), B, n, d, slices);
    });
    return out;
}

struct LogProbGrad {
    Vec log_p, d_packed, d_b;
};

static LogProbGrad log_prob_grad(const Vec& x, const Vec& p, const Vec& b, const Vec* w, int B,
                                 int n, int d, GradCfg cfg) {
    const Vec l = logits(x, p, B, n, d);
    Vec log_p(B, -1.0f), g(size_t(B) * n, -1.0f), d_b(n, -1.0f);
    emu_launch({unsigned(B), 1, 1}, {LP_THREADS, 1, 1}, [&] {
        nade_log_prob_terms(l.data(), x.data(), b.data(), w ? w->data() : x.data(), w ? 1 : 0,
                            log_p.data(), g.data(), n);
    });
    emu_launch({unsigned((n + 31) / 32), 1, 1}, {256, 1, 1},
               [&] { nade_column_sum(g.data(), d_b.data(), B, n); });
    return {log_p, grad(x, p, g, B, n, d, cfg), d_b};
}

static void sample(const Vec& p, const Vec& b, const Vec& kept, const Vec& obs, const Vec& u,
                   int B, int n, int d, int threads, Vec& values, Vec& probs) {
    values.assign(size_t(B) * n, -1.0f);
    probs.assign(size_t(B) * n, -1.0f);
    Vec scratch(size_t(B) * d, 0.0f);
    emu_launch({unsigned(B), 1, 1}, {unsigned(threads), 1, 1}, [&] {
        nade_sample(p.data(), b.data(), kept.data(), obs.data(), u.data(), values.data(),
                    probs.data(), scratch.data(), n, d);
    });
}

// ---- double reference ----
static double sig(double a) { return 1.0 / (1.0 + std::exp(-a)); }

// h[b][i][k] for all b, i, k.
static std::vector<double> hidden(const Vec& x, const Vec& p, int B, int n, int d) {
    std::vector<double> h(size_t(B) * n * d), a(d);
    const float* c = p.data() + size_t(n) * d;
    for (int b = 0; b < B; ++b) {
        for (int k = 0; k < d; ++k) a[k] = c[k];
        for (int i = 0; i < n; ++i) {
            for (int k = 0; k < d; ++k) h[(size_t(b) * n + i) * d + k] = sig(a[k]);
            if (x[size_t(b) * n + i] != 0.0f)
                for (int k = 0; k < d; ++k) a[k] += p[size_t(i) * d + k];
        }
    }
    return h;
}

static std::vector<double> ref_logits(const std::vector<double>& h, const Vec& p, int B, int n,
                                      int d) {
    std::vector<double> l(size_t(B) * n);
    const float* v = p.data() + size_t(n + 1) * d;
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < n; ++i) {
            double s = 0;
            for (int k = 0; k < d; ++k) s += v[size_t(i) * d + k] * h[(size_t(b) * n + i) * d + k];
            l[size_t(b) * n + i] = s;
        }
    return l;
}

static std::vector<double> ref_grad(const std::vector<double>& h, const Vec& x, const Vec& p,
                                    const std::vector<double>& g, int B, int n, int d) {
    const size_t nd = size_t(n) * d;
    std::vector<double> out((2 * size_t(n) + 1) * d, 0.0), P(d), sfx(d);
    const float* v = p.data() + size_t(n + 1) * d;
    for (int b = 0; b < B; ++b) {
        // Suffix form, as FusedGrad: dW^T_j += [x_j != 0] sum_{i > j} da_i.
        std::fill(sfx.begin(), sfx.end(), 0.0);
        for (int i = n - 1; i >= 0; --i) {
            const double gi = g[size_t(b) * n + i];
            if (x[size_t(b) * n + i] != 0.0f)
                for (int k = 0; k < d; ++k) out[size_t(i) * d + k] += sfx[k];
            for (int k = 0; k < d; ++k) {
                const double hk = h[(size_t(b) * n + i) * d + k];
                out[nd + d + size_t(i) * d + k] += gi * hk;
                sfx[k] += gi * v[size_t(i) * d + k] * hk * (1 - hk);
            }
        }
        for (int k = 0; k < d; ++k) out[nd + k] += sfx[k];
    }
    return out;
}

// ---- cases ----
static Vec uniform(std::mt19937& rng, size_t len, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    Vec out(len);
    for (auto& e : out) e = dist(rng);
    return out;
}

static void run_case(int B, int n, int d, GradCfg cfg, int sample_threads, unsigned seed) {
    std::printf("case B=%d n=%d d=%d grad m=%d (%s) slices<=%d sample threads=%d\n", B, n, d,
                cfg.m ? cfg.m : grad_images(B, d, cfg.max_slices), cfg.m ? "forced" : "auto",
                cfg.max_slices, sample_threads);
    std::mt19937 rng(seed);
    // Packed [W^T; c; V], scaled like the model's initialisation but larger so that the
    // sigmoids are not all near 1/2.
    Vec p = uniform(rng, (2 * size_t(n) + 1) * d, -1.0f, 1.0f);
    for (size_t e = 0; e < size_t(n) * d; ++e) p[e] *= 3.0f / std::sqrt(float(n));
    for (size_t e = size_t(n + 1) * d; e < p.size(); ++e) p[e] *= 3.0f / std::sqrt(float(d));
    Vec b = uniform(rng, n, -1.0f, 1.0f);
    Vec x(size_t(B) * n);
    for (auto& e : x) e = std::uniform_real_distribution<float>(0, 1)(rng) < 0.3f ? 1.0f : 0.0f;
    Vec gup = uniform(rng, size_t(B) * n, -1.0f, 1.0f);
    Vec w = uniform(rng, B, 0.0f, 2.0f);

    const auto h = hidden(x, p, B, n, d);
    const auto l_ref = ref_logits(h, p, B, n, d);

    // logits
    const Vec l1 = logits(x, p, B, n, d), l2 = logits(x, p, B, n, d);
    check("logits", l1, l_ref, 2e-5);
    same_bits("logits", l1, l2);
    // Split along the pixels (nade_cuda.rs's logits_chunk for small batches): the same bits.
    for (int chunk : {32, 64}) {
        if (chunk < n) same_bits("chunked", l1, logits(x, p, B, n, d, chunk));
    }

    // logits_grad
    const std::vector<double> gd(gup.begin(), gup.end());
    const auto grad_ref = ref_grad(h, x, p, gd, B, n, d);
    const Vec g1 = grad(x, p, gup, B, n, d, cfg), g2 = grad(x, p, gup, B, n, d, cfg);
    check("grad", g1, grad_ref, 2e-5);
    same_bits("grad", g1, g2);

    // log_prob_grad, with and without weights
    for (const Vec* wp : {(const Vec*)nullptr, (const Vec*)&w}) {
        std::vector<double> lp_ref(B, 0.0), gl(size_t(B) * n), db_ref(n, 0.0);
        for (int r = 0; r < B; ++r) {
            const double wr = wp ? (*wp)[r] : 1.0;
            for (int i = 0; i < n; ++i) {
                const size_t e = size_t(r) * n + i;
                const double li = l_ref[e] + b[i];
                lp_ref[r] += x[e] * li - std::max(li, 0.0) - std::log1p(std::exp(-std::fabs(li)));
                gl[e] = wr * (x[e] - sig(li));
                db_ref[i] += gl[e];
            }
        }
        const auto dp_ref = ref_grad(h, x, p, gl, B, n, d);
        const auto r1 = log_prob_grad(x, p, b, wp, B, n, d, cfg);
        const auto r2 = log_prob_grad(x, p, b, wp, B, n, d, cfg);
        std::printf(" %s\n", wp ? "weighted" : "unweighted");
        check("log_p", r1.log_p, lp_ref, 2e-5);
        check("d_packed", r1.d_packed, dp_ref, 2e-5);
        check("d_b", r1.d_b, db_ref, 2e-5);
        same_bits("log_p", r1.log_p, r2.log_p);
        same_bits("d_packed", r1.d_packed, r2.d_packed);
        same_bits("d_b", r1.d_b, r2.d_b);
    }

    // sample: the first k pixels observed (a prefix, as the CPU sampler), plus scattered ones.
    const int k = n / 3;
    Vec obs(size_t(B) * n, 0.0f);
    for (int r = 0; r < B; ++r)
        for (int i = 0; i < n; ++i)
            obs[size_t(r) * n + i] = (i < k || (i % 7 == 3 && r % 2 == 0)) ? 1.0f : 0.0f;
    const Vec u = uniform(rng, size_t(B) * n, 0.0f, 1.0f);
    Vec v1, p1, v2, p2;
    sample(p, b, x, obs, u, B, n, d, sample_threads, v1, p1);
    sample(p, b, x, obs, u, B, n, d, sample_threads, v2, p2);
    same_bits("values", v1, v2);
    same_bits("probs", p1, p2);
    // Teacher-forced reference: p_i from the kernel's own x_<i; x_i must follow the rule exactly.
    const auto hs = hidden(v1, p, B, n, d);
    const auto ls = ref_logits(hs, p, B, n, d);
    std::vector<double> p_ref(size_t(B) * n);
    int bad_rule = 0;
    for (size_t e = 0; e < p_ref.size(); ++e) {
        p_ref[e] = sig(ls[e] + b[e % n]);
        const float want = obs[e] != 0.0f ? (x[e] != 0.0f ? 1.0f : 0.0f) : (u[e] < p1[e] ? 1.0f : 0.0f);
        if (v1[e] != want) ++bad_rule;
    }
    check("probs", p1, p_ref, 2e-5);
    std::printf("  %-10s %s  %d values break the rule\n", "values", bad_rule ? "FAIL" : "ok  ",
                bad_rule);
    if (bad_rule) ++failures;
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    // d < 32, n < tiles; d not a multiple of 32 with groups = 1; n not a multiple of 16 or 32;
    // images per thread 1 (the host's choice at these sizes), 2, 8 with partial groups.
    run_case(5, 3, 7, {}, 32, 1);
    run_case(37, 45, 70, {}, 64, 2);
    run_case(37, 45, 70, {8, 32}, 64, 2);
    if (!quick) {
        // d > 256: two groups in the logits (nade_sum_parts), several column blocks in the
        // gradient; more groups than slices (the group loop: read-add-store into the partial
        // sums); n + 1 > 64 (two row tiles in nade_grad_finish); the sampler with
        // d > blockDim (each thread owns several units).
        run_case(70, 50, 300, {2, 2}, 64, 3);
        run_case(129, 33, 20, {1, 3}, 32, 4);
        run_case(100, 70, 40, {4, 32}, 32, 5);
        run_case(130, 20, 100, {8, 32}, 32, 6);
        run_case(200, 20, 40, {8, 2}, 32, 7);
    }
    std::printf(failures ? "%d FAILURES\n" : "all ok\n", failures);
    return failures ? 1 : 0;
}
