//! Vector kernels for the fused CPU paths: a branch-free exp / sigmoid and chunked dot
//! products that LLVM turns into SIMD code. They are `#[inline(always)]` so that, inlined into
//! a caller compiled with `#[target_feature(enable = "avx512f")]` (or avx2 + fma), they use the
//! wide registers, while the same source also serves the portable build.

/// Lanes of the partial sums: 16 f32 fill one AVX-512 register (two AVX2 ones). Float addition
/// is not associative, so LLVM vectorizes a reduction only when the code spells out the lanes.
const LANES: usize = 16;

/// a * b + c, fused into one instruction where the caller's instruction set has FMA (the
/// `FMA` parameter, set per instruction set by [`dispatch_isa!`]): `mul_add` without hardware
/// FMA would be a slow libm call.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// e^x for x <= 0 to about 2 ulp (Cephes' expf): x = k ln 2 + r, |r| <= ln2 / 2, e^r by a
/// degree-6 polynomial, 2^k by writing the exponent bits. Input below -87 is clamped (the
/// result is then ~1e-38 instead of smaller), so the result is always finite.
#[inline(always)]
pub fn exp_nonpositive<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that k * LN2_HI is exact (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let shifted = madd::<FMA>(x, LOG2E, ROUND);
    let k = shifted - ROUND;
    let r = madd::<FMA>(-k, LN2_LO, madd::<FMA>(-k, LN2_HI, x));
    let mut p = 1.987_569_1e-4f32;
    p = madd::<FMA>(p, r, 1.398_199_9e-3);
    p = madd::<FMA>(p, r, 8.333_452e-3);
    p = madd::<FMA>(p, r, 4.166_579_6e-2);
    p = madd::<FMA>(p, r, 1.666_666_5e-1);
    p = madd::<FMA>(p, r, 0.5); // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r = madd::<FMA>(p, r * r, r + 1.0);
    let k_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    e_r * f32::from_bits(((k_bits + 127) << 23) as u32)
}

/// sigmoid(a) = 1 / (1 + e^-a) without a division (the slowest vector instruction in the
/// loop): with t = e^-|a| in (0, 1], 1 / (1 + t) is found by three Newton steps from a linear
/// guess that is within 1/17 on [1, 2] (errors 1/17 -> 3e-3 -> 1e-5 -> 1e-10), and
/// sigmoid(a) = 1 - sigmoid(-a) = t / (1 + t) for a < 0. Finite and in [0, 1] for any input.
#[inline(always)]
pub fn sigmoid<const FMA: bool>(a: f32) -> f32 {
    let t = exp_nonpositive::<FMA>(-a.abs());
    let y = recip_on_1_2::<FMA>(1.0 + t);
    if a >= 0.0 {
        y
    } else {
        t * y
    }
}

/// 1 / x for x in [1, 2]: three Newton steps from a linear guess within 1/17 (see `sigmoid`).
#[inline(always)]
fn recip_on_1_2<const FMA: bool>(x: f32) -> f32 {
    let mut y = madd::<FMA>(x, -8.0 / 17.0, 24.0 / 17.0);
    for _ in 0..3 {
        y *= madd::<FMA>(-x, y, 2.0);
    }
    y
}

/// ln(y) for y in [1, 2] to about 1 ulp (Cephes' logf without its range reduction, which
/// [1, 2] does not need beyond one halving): y = 2^e m with m in [sqrt(1/2), sqrt(2)),
/// f = m - 1 exact, ln m = f - f^2 / 2 + f^3 P(f), and e ln 2 added in two parts.
#[inline(always)]
fn ln_on_1_2<const FMA: bool>(y: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let high = y >= std::f32::consts::SQRT_2;
    let e = if high { 1.0f32 } else { 0.0 };
    let f = if high { y * 0.5 } else { y } - 1.0;
    let z = f * f;
    let mut p = 7.037_683_6e-2f32;
    p = madd::<FMA>(p, f, -1.151_461e-1);
    p = madd::<FMA>(p, f, 1.167_699_9e-1);
    p = madd::<FMA>(p, f, -1.242_014_1e-1);
    p = madd::<FMA>(p, f, 1.424_932_3e-1);
    p = madd::<FMA>(p, f, -1.666_805_8e-1);
    p = madd::<FMA>(p, f, 2.000_071_5e-1);
    p = madd::<FMA>(p, f, -2.499_999_4e-1);
    p = madd::<FMA>(p, f, 3.333_333e-1);
    let tail = madd::<FMA>(e, LN2_LO, madd::<FMA>(-0.5, z, p * f * z));
    madd::<FMA>(e, LN2_HI, f + tail)
}

/// (softplus(a), sigmoid(a)) from one e^-|a|, finite for any finite a: softplus(a) =
/// max(a, 0) + ln(1 + t) with t = e^-|a| in (0, 1], where ln(1 + t) is ln of the rounded
/// y = 1 + t plus the rounding error (t - (y - 1)) / y, so that it stays accurate when t is
/// tiny (there ln y = 0 and the correction is t); 1 / y also gives the sigmoid.
#[inline(always)]
pub fn softplus_sigmoid<const FMA: bool>(a: f32) -> (f32, f32) {
    let (t, ln_1p_t, r) = ln_1p_exp_neg_abs_parts::<FMA>(a);
    let sigmoid = if a >= 0.0 { r } else { t * r };
    (a.max(0.0) + ln_1p_t, sigmoid)
}

/// ln(1 + e^-|a|), softplus(a) less max(a, 0), as [`softplus_sigmoid`] computes it: inlined
/// where a scalar libm `exp` and `log1p` per pixel cost an eighth of a NADE training pass.
#[inline(always)]
pub fn ln_1p_exp_neg_abs<const FMA: bool>(a: f32) -> f32 {
    ln_1p_exp_neg_abs_parts::<FMA>(a).1
}

/// (ln(1 + e^-|a|), sigmoid(a)) from one e^-|a|: the values [`ln_1p_exp_neg_abs`] and
/// [`sigmoid`] give, to the bit (the same t, the same 1 / (1 + t)), for half the work where a
/// pass needs both (NADE's training step, at every pixel).
#[inline(always)]
pub fn ln_1p_exp_neg_abs_and_sigmoid<const FMA: bool>(a: f32) -> (f32, f32) {
    let (t, ln_1p_t, r) = ln_1p_exp_neg_abs_parts::<FMA>(a);
    (ln_1p_t, if a >= 0.0 { r } else { t * r })
}

/// (t = e^-|a|, ln(1 + t), 1 / (1 + t)).
#[inline(always)]
fn ln_1p_exp_neg_abs_parts<const FMA: bool>(a: f32) -> (f32, f32, f32) {
    let t = exp_nonpositive::<FMA>(-a.abs());
    let y = 1.0 + t;
    let r = recip_on_1_2::<FMA>(y);
    (t, madd::<FMA>(t - (y - 1.0), r, ln_on_1_2::<FMA>(y)), r)
}

/// out[k] = sigmoid(a[k]).
#[inline(always)]
pub fn sigmoid_into<const FMA: bool>(a: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = sigmoid::<FMA>(x);
    }
}

/// sum_k v[k] * sigmoid(a[k]): one NADE conditional's logit without storing h.
#[inline(always)]
pub fn dot_sigmoid<const FMA: bool>(v: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (v_chunks, a_chunks) = (v.chunks_exact(LANES), a.chunks_exact(LANES));
    let (v_tail, a_tail) = (v_chunks.remainder(), a_chunks.remainder());
    for (vc, ac) in v_chunks.zip(a_chunks) {
        for k in 0..LANES {
            acc[k] = madd::<FMA>(vc[k], sigmoid::<FMA>(ac[k]), acc[k]);
        }
    }
    let mut tail = 0f32;
    for (&vk, &ak) in v_tail.iter().zip(a_tail) {
        tail = madd::<FMA>(vk, sigmoid::<FMA>(ak), tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// sum_k u[k] * v[k].
#[inline(always)]
pub fn dot<const FMA: bool>(u: &[f32], v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (u_chunks, v_chunks) = (u.chunks_exact(LANES), v.chunks_exact(LANES));
    let (u_tail, v_tail) = (u_chunks.remainder(), v_chunks.remainder());
    for (uc, vc) in u_chunks.zip(v_chunks) {
        for k in 0..LANES {
            acc[k] = madd::<FMA>(uc[k], vc[k], acc[k]);
        }
    }
    let mut tail = 0f32;
    for (&uk, &vk) in u_tail.iter().zip(v_tail) {
        tail = madd::<FMA>(uk, vk, tail);
    }
    acc.iter().sum::<f32>() + tail
}

/// [u_r . v for each of the four rows u_r], each summed exactly as [`dot`] sums it (the same
/// lanes in the same order, so the same value to the bit), interleaved: one dot is a chain
/// of len / 16 dependent FMAs, bound by their latency, while four independent chains overlap.
/// (Spelled out per row: written generically over the row count, LLVM kept the partial sums
/// on the stack and went scalar.)
#[inline(always)]
pub fn dot4<const FMA: bool>(u: [&[f32]; 4], v: &[f32]) -> [f32; 4] {
    let len = v.len();
    let [u0, u1, u2, u3] = u.map(|row| &row[..len]);
    let (mut a0, mut a1, mut a2, mut a3) =
        ([0f32; LANES], [0f32; LANES], [0f32; LANES], [0f32; LANES]);
    let chunks = v
        .chunks_exact(LANES)
        .zip(u0.chunks_exact(LANES))
        .zip(u1.chunks_exact(LANES))
        .zip(u2.chunks_exact(LANES))
        .zip(u3.chunks_exact(LANES));
    for ((((vc, c0), c1), c2), c3) in chunks {
        for k in 0..LANES {
            a0[k] = madd::<FMA>(c0[k], vc[k], a0[k]);
            a1[k] = madd::<FMA>(c1[k], vc[k], a1[k]);
            a2[k] = madd::<FMA>(c2[k], vc[k], a2[k]);
            a3[k] = madd::<FMA>(c3[k], vc[k], a3[k]);
        }
    }
    let done = len - len % LANES;
    let finish = |acc: &[f32; LANES], row: &[f32]| {
        let mut tail = 0f32;
        for (&uk, &vk) in row[done..].iter().zip(&v[done..]) {
            tail = madd::<FMA>(uk, vk, tail);
        }
        acc.iter().sum::<f32>() + tail
    };
    [
        finish(&a0, u0),
        finish(&a1, u1),
        finish(&a2, u2),
        finish(&a3, u3),
    ]
}

/// The backward step of one NADE conditional l = v . h with upstream gradient g:
/// dv[k] += g h[k], and s[k] += g v[k] h[k] (1 - h[k]) (the gradient reaching a[k]).
#[inline(always)]
pub fn hidden_grads<const FMA: bool>(g: f32, h: &[f32], v: &[f32], dv: &mut [f32], s: &mut [f32]) {
    // Equal lengths up front let LLVM drop the bounds checks and vectorize.
    let d = h.len();
    let (v, dv, s) = (&v[..d], &mut dv[..d], &mut s[..d]);
    for k in 0..d {
        let h_k = h[k];
        dv[k] = madd::<FMA>(g, h_k, dv[k]);
        s[k] = madd::<FMA>(g * v[k], h_k - h_k * h_k, s[k]);
    }
}

/// [`hidden_grads`] of four consecutive conditionals that share h, in one pass: h, its slope
/// and the running sum s are loaded and stored once for the four instead of four times, and
/// each value gets the same operations in the same order as four calls would give it (s takes
/// the four terms one after the other), so the results are the same to the bit. `dv` holds
/// the four rows dv_0..dv_3, d values each, one after the other.
#[inline(always)]
pub fn hidden_grads4<const FMA: bool>(
    g: [f32; 4],
    h: &[f32],
    v: [&[f32]; 4],
    dv: &mut [f32],
    s: &mut [f32],
) {
    let d = h.len();
    let [v0, v1, v2, v3] = v.map(|row| &row[..d]);
    let s = &mut s[..d];
    let (dv0, rest) = dv.split_at_mut(d);
    let (dv1, rest) = rest.split_at_mut(d);
    let (dv2, dv3) = rest.split_at_mut(d);
    let dv3 = &mut dv3[..d];
    for k in 0..d {
        let h_k = h[k];
        let slope = h_k - h_k * h_k;
        dv0[k] = madd::<FMA>(g[0], h_k, dv0[k]);
        dv1[k] = madd::<FMA>(g[1], h_k, dv1[k]);
        dv2[k] = madd::<FMA>(g[2], h_k, dv2[k]);
        dv3[k] = madd::<FMA>(g[3], h_k, dv3[k]);
        let mut s_k = madd::<FMA>(g[0] * v0[k], slope, s[k]);
        s_k = madd::<FMA>(g[1] * v1[k], slope, s_k);
        s_k = madd::<FMA>(g[2] * v2[k], slope, s_k);
        s[k] = madd::<FMA>(g[3] * v3[k], slope, s_k);
    }
}

/// y[k] += x[k].
#[inline(always)]
pub fn add_assign(y: &mut [f32], x: &[f32]) {
    for (yk, &xk) in y.iter_mut().zip(x) {
        *yk += xk;
    }
}

/// y[k] += alpha * x[k].
#[inline(always)]
pub fn axpy<const FMA: bool>(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yk, &xk) in y.iter_mut().zip(x) {
        *yk = madd::<FMA>(alpha, xk, *yk);
    }
}

/// The widest instruction set this CPU offers, checked once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Avx512,
    Avx2,
    Portable,
}

pub fn isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(|| {
            if std::is_x86_feature_detected!("avx512f") {
                Isa::Avx512
            } else if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            {
                Isa::Avx2
            } else {
                Isa::Portable
            }
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Isa::Portable
    }
}

/// Defines `$name(args) -> ret` that runs `$body` compiled for the widest ISA the CPU has.
/// The body must be a call to an `#[inline(always)]` function so that it is re-compiled for
/// each instruction set; it sees a `const FMA: bool` saying whether fused multiply-add is
/// available there, to pass on to the kernels of this module.
#[macro_export]
macro_rules! dispatch_isa {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    // Bodies without explicit FMA (plain IEEE arithmetic) leave it unused.
                    #[allow(dead_code)]
                    const FMA: bool = true;
                    $body
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    // Bodies without explicit FMA (plain IEEE arithmetic) leave it unused.
                    #[allow(dead_code)]
                    const FMA: bool = true;
                    $body
                }
                match $crate::kernels::simd::isa() {
                    // SAFETY: isa() checked that the CPU has these features.
                    $crate::kernels::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::kernels::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::kernels::simd::Isa::Portable => {}
                }
            }
            // AArch64 always has FMA; other targets get separate multiply and add.
            #[allow(dead_code)]
            const FMA: bool = cfg!(target_arch = "aarch64");
            $body
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_sigmoid_are_within_a_few_ulp_and_finite_everywhere() {
        fn check<const FMA: bool>() {
            let (mut worst_exp, mut worst_sigmoid) = (0f64, 0f64);
            let mut x = -87.0f32;
            while x <= 0.0 {
                let (got, want) = (exp_nonpositive::<FMA>(x) as f64, (x as f64).exp());
                worst_exp = worst_exp.max(((got - want) / want).abs());
                x += 0.000_7;
            }
            let mut a = -30.0f32;
            while a < 30.0 {
                let got = sigmoid::<FMA>(a) as f64;
                let want = 1.0 / (1.0 + (-(a as f64)).exp());
                worst_sigmoid = worst_sigmoid.max(((got - want) / want).abs());
                a += 0.000_9;
            }
            let eps = f32::EPSILON as f64;
            assert!(worst_exp < 3.0 * eps, "FMA {FMA}: exp error {worst_exp:e}");
            assert!(
                worst_sigmoid < 4.0 * eps,
                "FMA {FMA}: sigmoid error {worst_sigmoid:e}"
            );
            for a in [-1e30f32, -1e4, -88.0, 88.0, 1e4, 1e30, f32::MAX, f32::MIN] {
                let s = sigmoid::<FMA>(a);
                assert!((0.0..=1.0).contains(&s), "sigmoid({a}) = {s}");
            }
            assert_eq!(sigmoid::<FMA>(1e4), 1.0);
            assert!(sigmoid::<FMA>(-1e4) < 1e-37);
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn softplus_and_its_sigmoid_are_within_a_few_ulp_and_finite_everywhere() {
        fn check<const FMA: bool>() {
            let (mut worst_softplus, mut worst_sigmoid) = (0f64, 0f64);
            let mut a = -100.0f32;
            while a < 100.0 {
                let (softplus, sigmoid) = softplus_sigmoid::<FMA>(a);
                let a64 = a as f64;
                let want = a64.max(0.0) + (-a64.abs()).exp().ln_1p();
                let want_sigmoid = 1.0 / (1.0 + (-a64).exp());
                if a > -87.0 {
                    worst_softplus = worst_softplus.max(((softplus as f64 - want) / want).abs());
                    worst_sigmoid =
                        worst_sigmoid.max(((sigmoid as f64 - want_sigmoid) / want_sigmoid).abs());
                } else {
                    // Below -87, e^a is clamped near 1e-38 (exp_nonpositive): both are ~e^a.
                    assert!((softplus as f64 - want).abs() < 1e-37, "softplus({a})");
                    assert!(
                        (sigmoid as f64 - want_sigmoid).abs() < 1e-37,
                        "sigmoid({a})"
                    );
                }
                a += 0.000_37;
            }
            let eps = f32::EPSILON as f64;
            assert!(
                worst_softplus < 4.0 * eps,
                "FMA {FMA}: softplus error {worst_softplus:e}"
            );
            assert!(
                worst_sigmoid < 4.0 * eps,
                "FMA {FMA}: sigmoid error {worst_sigmoid:e}"
            );
            for a in [-1e30f32, -1e4, 1e4, 1e30, f32::MAX, f32::MIN] {
                let (softplus, sigmoid) = softplus_sigmoid::<FMA>(a);
                assert!(
                    softplus.is_finite() && softplus >= a.max(0.0),
                    "softplus({a})"
                );
                assert!((0.0..=1.0).contains(&sigmoid), "sigmoid({a}) = {sigmoid}");
            }
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn the_shared_exp_gives_the_separate_values_to_the_bit() {
        fn check<const FMA: bool>() {
            for k in -4000..=4000 {
                let a = k as f32 * 0.0123 + (k % 7) as f32 * 1e-4;
                let (ln_1p, s) = ln_1p_exp_neg_abs_and_sigmoid::<FMA>(a);
                assert_eq!(
                    ln_1p.to_bits(),
                    ln_1p_exp_neg_abs::<FMA>(a).to_bits(),
                    "{a}"
                );
                assert_eq!(s.to_bits(), sigmoid::<FMA>(a).to_bits(), "{a}");
            }
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn interleaved_dots_equal_single_dots_to_the_bit() {
        fn check<const FMA: bool>() {
            for len in [0, 1, 15, 16, 17, 33, 500] {
                let row = |r: usize| -> Vec<f32> {
                    (0..len)
                        .map(|k| ((k * 7 + r * 3) % 13) as f32 / 7.0 - 0.9)
                        .collect()
                };
                let (u0, u1, u2, u3) = (row(0), row(1), row(2), row(3));
                let v: Vec<f32> = (0..len).map(|k| ((k * 5 % 11) as f32).sin()).collect();
                let single = [&u0, &u1, &u2, &u3].map(|u| dot::<FMA>(u, &v).to_bits());
                let four = dot4::<FMA>([&u0, &u1, &u2, &u3], &v).map(f32::to_bits);
                assert_eq!(four, single, "len {len}");
            }
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn four_hidden_grads_in_one_pass_equal_four_calls_to_the_bit() {
        fn check<const FMA: bool>() {
            for d in [1, 15, 16, 17, 500] {
                let h: Vec<f32> = (0..d).map(|k| (k * 7 % 13) as f32 / 13.0).collect();
                let v: Vec<Vec<f32>> = (0..4)
                    .map(|r| {
                        (0..d)
                            .map(|k| ((k * 5 + r) % 11) as f32 / 3.0 - 1.7)
                            .collect()
                    })
                    .collect();
                let g = [0.3f32, -0.71, 0.0, 1.13];
                let start: Vec<f32> = (0..4 * d).map(|k| (k % 9) as f32 * 0.1).collect();
                let (mut dv_one, mut s_one) = (start.clone(), vec![0.25f32; d]);
                for r in 0..4 {
                    let dv_r = &mut dv_one[r * d..(r + 1) * d];
                    hidden_grads::<FMA>(g[r], &h, &v[r], dv_r, &mut s_one);
                }
                let (mut dv_four, mut s_four) = (start, vec![0.25f32; d]);
                let rows = [&v[0][..], &v[1][..], &v[2][..], &v[3][..]];
                hidden_grads4::<FMA>(g, &h, rows, &mut dv_four, &mut s_four);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&dv_four), bits(&dv_one), "d {d}");
                assert_eq!(bits(&s_four), bits(&s_one), "d {d}");
            }
        }
        check::<false>();
        check::<true>();
    }

    #[test]
    fn dots_equal_their_plain_sums() {
        for len in [0, 1, 15, 16, 17, 500] {
            let u: Vec<f32> = (0..len)
                .map(|k| ((k * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let v: Vec<f32> = (0..len)
                .map(|k| ((k * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let plain: f64 = u.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (dot::<false>(&u, &v) as f64 - plain).abs() < 1e-4,
                "len {len}"
            );
            let with_sigmoid: f64 = u
                .iter()
                .zip(&v)
                .map(|(&a, &b)| b as f64 / (1.0 + (-(a as f64)).exp()))
                .sum();
            assert!(
                (dot_sigmoid::<false>(&v, &u) as f64 - with_sigmoid).abs() < 1e-4,
                "len {len}"
            );
        }
    }
}
