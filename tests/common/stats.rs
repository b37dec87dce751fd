//! The statistics of the sampler tests: Pearson's chi-square and its 0.999 quantile, and the
//! exact p(x) of a small model by enumeration.

use candle_core::{Device, Tensor};
use nade::models::{Autoregressive, Pass};

/// Index of a binary vector in all_binary_vectors order: bit j is x_j.
pub fn index_of(row: &[u8]) -> usize {
    row.iter()
        .enumerate()
        .map(|(j, &v)| usize::from(v) << j)
        .sum()
}

/// Pearson's chi-square of observed counts against expected ones, cells with an expected
/// count below 5 pooled into one; returns (statistic, degrees of freedom).
pub fn chi_square(counts: &[u64], expected: &[f64]) -> (f64, usize) {
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pooled_obs, mut pooled_exp) = (0.0, 0.0);
    for (&o, &e) in counts.iter().zip(expected) {
        if e < 5.0 {
            pooled_obs += o as f64;
            pooled_exp += e;
        } else {
            stat += (o as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pooled_exp > 0.0 {
        stat += (pooled_obs - pooled_exp).powi(2) / pooled_exp;
        cells += 1;
    }
    (stat, cells - 1)
}

/// The 0.999 quantile of chi-square with `df` degrees of freedom, by Wilson-Hilferty:
/// df (1 - 2/(9 df) + z sqrt(2/(9 df)))^3 with z = 3.0902 the 0.999 normal quantile
/// (within 1% of the exact quantile for df >= 10: 29.59 exact vs 29.67 at df = 10).
pub fn chi2_999(df: usize) -> f64 {
    let k = df as f64;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + 3.0902 * a.sqrt()).powi(3)
}

/// Exact p(x) of every x in {0,1}^n, by enumeration.
pub fn exact_probs(model: &dyn Autoregressive, n: usize, device: &Device) -> Vec<f64> {
    let x = Tensor::from_vec(super::all_binary_vectors(n), (1 << n, n), device).unwrap();
    model
        .log_prob(&x, Pass::Eval)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|&lp| (lp as f64).exp())
        .collect()
}

/// The counts `draws` samples of `model` would have per x of {0,1}^n ([`exact_probs`] times
/// draws): what a chi-square test of a sampler compares its counts with.
pub fn expected_counts(
    model: &dyn Autoregressive,
    n: usize,
    device: &Device,
    draws: usize,
) -> Vec<f64> {
    exact_probs(model, n, device)
        .iter()
        .map(|p| p * draws as f64)
        .collect()
}
