// Runs the kernels of src/kernels/cuda/deepnade.cu on the CPU emulation (cuda_emu.h) with the
// launch logic of src/kernels/deepnade_steps.rs, and checks them against a plain
// double-precision reference of the same math (the CPU loops of deepnade_steps.rs), including
// determinism (two runs, same bits). Build and run: scripts/cuda/emu_test.sh.
#include "cuda_emu.h"
#include "../../src/kernels/cuda/deepnade.cu"

#include <cstring>
#include <random>
#include <string>

using Vec = std::vector<float>;

static int failures = 0;

template <class T>
static void check(const char* what, const std::vector<T>& got, const std::vector<double>& want,
                  double tol) {
    double worst = 0;
    size_t at = 0;
    for (size_t e = 0; e < want.size(); ++e) {
        const double err = std::fabs(double(got[e]) - want[e]) / (1.0 + std::fabs(want[e]));
        if (!(err <= worst)) {  // NaN counts as worst
            worst = err;
            at = e;
        }
    }
    const bool ok = worst <= tol && got.size() >= want.size();
    std::printf("  %-12s %s  worst rel err %.2e at %zu (got %.9g, want %.9g)\n", what,
                ok ? "ok  " : "FAIL", worst, at, want.empty() ? 0.0 : double(got[at]),
                want.empty() ? 0.0 : want[at]);
    if (!ok) ++failures;
}

template <class T>
static void same_bits(const char* what, const std::vector<T>& a, const std::vector<T>& b) {
    if (a.size() != b.size() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) != 0) {
        std::printf("  %-12s FAIL  not deterministic\n", what);
        ++failures;
    }
}

// ---- host launch logic, as in deepnade_steps.rs ----
static const unsigned kFirstThreads = 256;
static const unsigned kOutputWarps = 8;

static Vec first_layer(const Vec& a1, const Vec& table, const std::vector<unsigned>& entries,
                       int rows, int h1, int steps, int act) {
    Vec out(size_t(steps + 1) * rows * h1, -7.0f);
    const unsigned chunks = (h1 + kFirstThreads - 1) / kFirstThreads;
    emu_launch({unsigned(rows) * chunks, 1, 1}, {kFirstThreads, 1, 1}, [&] {
        deepnade_first_layer(a1.data(), table.data(), entries.data(), out.data(), rows, h1, steps,
                             act);
    });
    return out;
}

static Vec output(const Vec& z, const Vec* bias, const Vec& v, const Vec& c,
                  const std::vector<unsigned>& dims, int rows, int width, int act) {
    Vec out(rows, -7.0f);
    const unsigned grid = (rows + kOutputWarps - 1) / kOutputWarps;
    emu_launch({grid, 1, 1}, {kOutputWarps * 32, 1, 1}, [&] {
        deepnade_output(z.data(), bias ? bias->data() : c.data(), bias ? 1 : 0, v.data(),
                        c.data(), dims.data(), out.data(), rows, width, act);
    });
    return out;
}

static std::vector<double> log_lik(const std::vector<double>& ll, const Vec& logits,
                                   const std::vector<unsigned>& entries, int rows, int steps,
                                   int n) {
    std::vector<double> out(rows, -7.0);
    emu_launch({unsigned((rows + 255) / 256), 1, 1}, {256, 1, 1}, [&] {
        deepnade_log_lik(ll.data(), logits.data(), entries.data(), out.data(), rows, steps, n);
    });
    return out;
}

// ---- reference ----
static double act_ref(int act, double x) {
    if (act == DN_RELU) return std::max(x, 0.0);
    if (act == DN_SIGMOID) return 1.0 / (1.0 + std::exp(-x));
    return std::tanh(x);
}

static Vec uniform(std::mt19937& rng, size_t len, float lo, float hi) {
    std::uniform_real_distribution<float> dist(lo, hi);
    Vec out(len);
    for (auto& e : out) e = dist(rng);
    return out;
}

static void run_case(int rows, int n, int h1, int width, int steps, unsigned seed) {
    std::printf("case rows=%d n=%d h1=%d width=%d steps=%d\n", rows, n, h1, width, steps);
    std::mt19937 rng(seed);
    const int table_rows = 2 * n + 1;
    Vec table = uniform(rng, size_t(table_rows) * h1, -1.0f, 1.0f);
    for (int k = 0; k < h1; ++k) table[size_t(2 * n) * h1 + k] = 0.0f;  // row 2n: nothing
    const Vec a1 = uniform(rng, size_t(rows) * h1, -1.0f, 1.0f);
    std::vector<unsigned> entries(size_t(steps) * rows), dims(size_t(steps) * rows);
    for (int s = 0; s < steps; ++s)
        for (int r = 0; r < rows; ++r) {
            const unsigned d = (s * 7 + r * 3) % n;
            dims[size_t(s) * rows + r] = d;
            // Walks with r % 3 = 1 or 2 end 1 or 2 steps before the block does.
            const bool ended = s >= steps - (r % 3);
            const bool one = std::uniform_real_distribution<float>(0, 1)(rng) < 0.4f;
            entries[size_t(s) * rows + r] = ended ? 2 * n : (one ? n + d : d);
        }
    for (int act : {DN_RELU, DN_SIGMOID, DN_TANH}) {
        std::printf(" act %d\n", act);
        // first layer
        std::vector<double> want(size_t(steps + 1) * rows * h1);
        for (int r = 0; r < rows; ++r)
            for (int k = 0; k < h1; ++k) {
                double a = a1[size_t(r) * h1 + k];
                for (int s = 0; s < steps; ++s) {
                    const size_t row = size_t(s) * rows + r;
                    want[row * h1 + k] = act_ref(act, a);
                    a += table[size_t(entries[row]) * h1 + k];
                }
                want[(size_t(steps) * rows + r) * h1 + k] = a;
            }
        const Vec f1 = first_layer(a1, table, entries, rows, h1, steps, act);
        const Vec f2 = first_layer(a1, table, entries, rows, h1, steps, act);
        check("first_layer", f1, want, 1e-5);
        same_bits("first_layer", f1, f2);

        // output, with and without the top bias
        const int J = steps * rows;
        const Vec z = uniform(rng, size_t(J) * width, -2.0f, 2.0f);
        const Vec bias = uniform(rng, width, -1.0f, 1.0f);
        const Vec v = uniform(rng, size_t(n) * width, -1.0f, 1.0f);
        const Vec c = uniform(rng, n, -1.0f, 1.0f);
        for (const Vec* bp : {(const Vec*)nullptr, &bias}) {
            std::vector<double> lw(J);
            for (int j = 0; j < J; ++j) {
                const unsigned d = dims[j];
                double acc = c[d];
                for (int k = 0; k < width; ++k) {
                    const double zk = z[size_t(j) * width + k];
                    acc += double(v[size_t(d) * width + k]) *
                           (bp ? act_ref(act, zk + (*bp)[k]) : zk);
                }
                lw[j] = acc;
            }
            const Vec o1 = output(z, bp, v, c, dims, J, width, act);
            const Vec o2 = output(z, bp, v, c, dims, J, width, act);
            check(bp ? "output+bias" : "output", o1, lw, 2e-5);
            same_bits("output", o1, o2);
        }
    }

    // log-likelihoods, from a start that is not zero
    const Vec logits = uniform(rng, size_t(steps) * rows, -30.0f, 30.0f);
    std::vector<double> ll(rows);
    for (int r = 0; r < rows; ++r) ll[r] = -0.5 * r;
    std::vector<double> want(ll);
    for (int r = 0; r < rows; ++r)
        for (int s = 0; s < steps; ++s) {
            const unsigned e = entries[size_t(s) * rows + r];
            if (e >= unsigned(2 * n)) continue;
            const double x = e >= unsigned(n) ? 1.0 : 0.0, l = logits[size_t(s) * rows + r];
            want[r] += x * l - (std::max(l, 0.0) + std::log1p(std::exp(-std::fabs(l))));
        }
    const auto l1 = log_lik(ll, logits, entries, rows, steps, n);
    const auto l2 = log_lik(ll, logits, entries, rows, steps, n);
    check("log_lik", l1, want, 1e-12);
    same_bits("log_lik", l1, l2);
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
    // h1 < 32 and a partial warp in the output; widths not multiples of 32.
    run_case(5, 4, 7, 5, 3, 1);
    run_case(9, 11, 40, 37, 6, 2);
    if (!quick) {
        // h1 > 256: two blocks per walk in the first layer; rows > 256: two blocks in the
        // log-likelihoods; more output rows than one block's warps.
        run_case(3, 6, 300, 70, 4, 3);
        run_case(300, 5, 33, 64, 2, 4);
    }
    std::printf(failures ? "%d FAILURES\n" : "all ok\n", failures);
    return failures ? 1 : 0;
}
