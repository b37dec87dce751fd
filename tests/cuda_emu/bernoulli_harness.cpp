// Runs src/kernels/cuda/bernoulli.cu on the CPU emulation (cuda_emu.h) with the launch of
// src/kernels/bernoulli_log_prob.rs (a block of BL_THREADS per row), against a double-precision
// reference, with and without weights and the gradient, and checks determinism.
// Build and run: scripts/cuda/emu_test.sh.
#include "cuda_emu.h"
#include "../../src/kernels/cuda/bernoulli.cu"

#include <cstring>
#include <random>
#include <string>

using Vec = std::vector<float>;

static int failures = 0;

static void check(const char* what, const Vec& got, const std::vector<double>& want, double tol) {
    double worst = 0;
    size_t at = 0;
    for (size_t e = 0; e < want.size(); ++e) {
        const double err = std::fabs(double(got[e]) - want[e]) / (1.0 + std::fabs(want[e]));
        if (!(err <= worst)) {  // NaN counts as worst
            worst = err;
            at = e;
        }
    }
    const bool ok = worst <= tol;
    std::printf("  %-8s %s  worst rel err %.2e at %zu (got %.9g, want %.9g)\n", what,
                ok ? "ok  " : "FAIL", worst, at, want.empty() ? 0.0 : double(got[at]),
                want.empty() ? 0.0 : want[at]);
    if (!ok) ++failures;
}

static void run_case(int B, int n, bool weighted, bool with_grad, unsigned seed) {
    std::printf("case B=%d n=%d %s %s\n", B, n, weighted ? "weighted" : "unweighted",
                with_grad ? "with gradient" : "value only");
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> logit(-40.0f, 40.0f), unit(0.0f, 1.0f);
    Vec l(size_t(B) * n), x(size_t(B) * n), w(size_t(B) * n);
    for (size_t e = 0; e < l.size(); ++e) {
        // Mostly moderate logits, some large ones (softplus and sigmoid at their tails).
        l[e] = e % 7 == 0 ? logit(rng) : logit(rng) / 8.0f;
        x[e] = unit(rng) < 0.3f ? 1.0f : 0.0f;
        w[e] = unit(rng) < 0.2f ? 0.0f : 2.0f * unit(rng);
    }
    std::vector<double> lp_ref(B, 0.0), g_ref(size_t(B) * n);
    for (int b = 0; b < B; ++b)
        for (int i = 0; i < n; ++i) {
            const size_t e = size_t(b) * n + i;
            const double li = l[e], wi = weighted ? w[e] : 1.0;
            const double softplus = std::max(li, 0.0) + std::log1p(std::exp(-std::fabs(li)));
            lp_ref[b] += wi * (x[e] * li - softplus);
            g_ref[e] = wi * (x[e] - 1.0 / (1.0 + std::exp(-li)));
        }
    auto run = [&](Vec& grad) {
        Vec log_p(B, -7.0f);
        grad.assign(with_grad ? size_t(B) * n : 1, -7.0f);
        emu_launch({unsigned(B), 1, 1}, {BL_THREADS, 1, 1}, [&] {
            bernoulli_log_prob(l.data(), x.data(), weighted ? w.data() : x.data(), weighted ? 1 : 0,
                               log_p.data(), grad.data(), with_grad ? 1 : 0, n);
        });
        return log_p;
    };
    Vec g1, g2;
    const Vec a = run(g1), b = run(g2);
    check("log_p", a, lp_ref, 1e-6);
    if (with_grad) check("grad", g1, g_ref, 1e-6);
    if (std::memcmp(a.data(), b.data(), a.size() * 4) != 0 ||
        std::memcmp(g1.data(), g2.data(), g1.size() * 4) != 0) {
        std::printf("  FAIL  not deterministic\n");
        ++failures;
    }
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    // n below one block's threads, n over it (several terms per thread), n = 0.
    run_case(3, 5, false, true, 1);
    run_case(4, 300, true, true, 2);
    if (!quick) {
        run_case(5, 784, true, false, 3);
        run_case(2, 0, false, true, 4);
        run_case(6, 513, false, false, 5);
    }
    std::printf(failures ? "%d FAILURES\n" : "all ok\n", failures);
    return failures ? 1 : 0;
}
