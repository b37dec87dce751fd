//! Vector kernels for the fused CPU paths: a branch-free exp / sigmoid and chunked dot
//! products that LLVM turns into SIMD code. They are `#[inline(always)]` so that, inlined into
//! a caller compiled with `#[target_feature(enable = "avx512f")]` (or avx2 + fma), they use the
//! wide registers, while the same source also serves the portable build.

/// Lanes of the partial sums: 16 f32 fill one AVX-512 register (two AVX2 ones). Float addition
/// is not associative, so LLVM vectorizes a reduction only when the code spells out the lanes.
const LANES: usize = 16;

/// e^x for x in [-87, 88] to about 2 ulp (Cephes' expf): x = k ln 2 + r, |r| <= ln2 / 2,
/// e^r by a degree-6 polynomial, 2^k by writing the exponent bits. Out-of-range input is
/// clamped, so the result is always finite and positive.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that k * LN2_HI is exact (Cody-Waite reduction).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let k = shifted - ROUND;
    let r = x - k * LN2_HI - k * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5; // Cephes: 5.0000001201e-1, which is 0.5 in f32
    let e_r = p * r * r + r + 1.0;
    let k_bits = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let two_k = f32::from_bits(((k_bits + 127) << 23) as u32);
    e_r * two_k
}

#[inline(always)]
pub fn sigmoid(a: f32) -> f32 {
    1.0 / (1.0 + exp(-a))
}

/// out[k] = sigmoid(a[k]).
#[inline(always)]
pub fn sigmoid_into(a: &[f32], out: &mut [f32]) {
    for (o, &x) in out.iter_mut().zip(a) {
        *o = sigmoid(x);
    }
}

/// sum_k v[k] * sigmoid(a[k]): one NADE conditional's logit without storing h.
#[inline(always)]
pub fn dot_sigmoid(v: &[f32], a: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (v_chunks, a_chunks) = (v.chunks_exact(LANES), a.chunks_exact(LANES));
    let (v_tail, a_tail) = (v_chunks.remainder(), a_chunks.remainder());
    for (vc, ac) in v_chunks.zip(a_chunks) {
        for k in 0..LANES {
            acc[k] += vc[k] * sigmoid(ac[k]);
        }
    }
    let mut tail = 0f32;
    for (&vk, &ak) in v_tail.iter().zip(a_tail) {
        tail += vk * sigmoid(ak);
    }
    acc.iter().sum::<f32>() + tail
}

/// sum_k u[k] * v[k].
#[inline(always)]
pub fn dot(u: &[f32], v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (u_chunks, v_chunks) = (u.chunks_exact(LANES), v.chunks_exact(LANES));
    let (u_tail, v_tail) = (u_chunks.remainder(), v_chunks.remainder());
    for (uc, vc) in u_chunks.zip(v_chunks) {
        for k in 0..LANES {
            acc[k] += uc[k] * vc[k];
        }
    }
    let mut tail = 0f32;
    for (&uk, &vk) in u_tail.iter().zip(v_tail) {
        tail += uk * vk;
    }
    acc.iter().sum::<f32>() + tail
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
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yk, &xk) in y.iter_mut().zip(x) {
        *yk += alpha * xk;
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
/// each instruction set.
#[macro_export]
macro_rules! dispatch_isa {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? $body
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? $body
                match $crate::simd::isa() {
                    // SAFETY: isa() checked that the CPU has these features.
                    $crate::simd::Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Isa::Portable => {}
                }
            }
            $body
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulp_of_libm_and_finite_everywhere() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_3;
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "max relative error {worst:e}"
        );
        for x in [-1e30f32, -1e4, 1e4, 1e30, f32::MAX, f32::MIN] {
            assert!(exp(x).is_finite() && exp(x) >= 0.0, "exp({x}) = {}", exp(x));
            assert!((0.0..=1.0).contains(&sigmoid(x)), "sigmoid({x})");
        }
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
            assert!((dot(&u, &v) as f64 - plain).abs() < 1e-4, "len {len}");
            let with_sigmoid: f64 = u
                .iter()
                .zip(&v)
                .map(|(&a, &b)| b as f64 / (1.0 + (-(a as f64)).exp()))
                .sum();
            assert!(
                (dot_sigmoid(&v, &u) as f64 - with_sigmoid).abs() < 1e-4,
                "len {len}"
            );
        }
    }
}
