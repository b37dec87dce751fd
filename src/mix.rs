//! `nade mix`: a weighted mixture of trained checkpoints ([`crate::models::mixture`]), its
//! weights fit by EM on a data split (the validation split: the weights are a choice of
//! model, made where every other choice is) or given.
//!
//! EM for the weights of fixed components: with r_ij = w_j p_j(x_i) / sum_k w_k p_k(x_i),
//! w_j <- mean_i r_ij, which never lowers the likelihood of the split; from uniform weights
//! until no weight moves by more than 1e-12 (or 100,000 iterations). Components whose
//! weight ends below `min_weight` are dropped and the rest refit: they would cost their
//! evaluation for nothing.

use anyhow::{bail, Result};

use crate::models::mixture::{Component, MixtureConfig};
use crate::models::Autoregressive;

/// How the weights are chosen.
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    /// EM on the given split's log-likelihoods.
    Fit,
    /// 1 / J each.
    Uniform,
    /// As given, in the components' order (normalized to sum to 1).
    Given(Vec<f64>),
}

impl std::str::FromStr for Weights {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fit" => Ok(Weights::Fit),
            "uniform" => Ok(Weights::Uniform),
            list => {
                let values = list
                    .split(',')
                    .map(|v| match v.trim().parse::<f64>() {
                        Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
                        _ => Err(format!(
                            "{v:?} is not a positive number (expected fit, uniform, or positive weights such as 0.5,0.3,0.2)"
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Weights::Given(values))
            }
        }
    }
}

impl std::fmt::Display for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weights::Fit => f.write_str("fit"),
            Weights::Uniform => f.write_str("uniform"),
            Weights::Given(values) => {
                let parts: Vec<String> = values.iter().map(|v| v.to_string()).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

/// Where EM stops: no weight moves by more than this in an iteration.
const EM_TOLERANCE: f64 = 1e-12;
const EM_MAX_ITERATIONS: usize = 100_000;

/// The weights that maximize sum_i log sum_j w_j p_j(x_i) for `log_p[j][i]` = log p_j(x_i),
/// by EM from uniform weights, and the iterations it took.
pub fn fit_weights(log_p: &[Vec<f64>]) -> (Vec<f64>, usize) {
    let components = log_p.len();
    let images = log_p[0].len();
    // [image][component]: one image's terms side by side.
    let rows: Vec<Vec<f64>> = (0..images)
        .map(|i| log_p.iter().map(|lp| lp[i]).collect())
        .collect();
    let mut w = vec![1.0 / components as f64; components];
    let mut next = vec![0.0; components];
    let mut terms = vec![0.0; components];
    for iteration in 1..=EM_MAX_ITERATIONS {
        let log_w: Vec<f64> = w.iter().map(|v| v.ln()).collect();
        next.iter_mut().for_each(|v| *v = 0.0);
        for row in &rows {
            for ((t, lw), lp) in terms.iter_mut().zip(&log_w).zip(row) {
                *t = lw + lp;
            }
            let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = terms.iter().map(|t| (t - top).exp()).sum();
            for (acc, t) in next.iter_mut().zip(&terms) {
                *acc += (t - top).exp() / total;
            }
        }
        let mut moved: f64 = 0.0;
        for (wj, acc) in w.iter_mut().zip(&next) {
            let updated = acc / images as f64;
            moved = moved.max((updated - *wj).abs());
            *wj = updated;
        }
        if moved <= EM_TOLERANCE {
            return (w, iteration);
        }
    }
    (w, EM_MAX_ITERATIONS)
}

/// Mean -log sum_j w_j p_j(x_i) over the images, in f64.
pub fn mixture_nll(log_p: &[Vec<f64>], weights: &[f64]) -> f64 {
    let images = log_p[0].len();
    let mut sum = 0.0;
    for i in 0..images {
        let terms: Vec<f64> = weights
            .iter()
            .zip(log_p)
            .map(|(w, lp)| w.ln() + lp[i])
            .collect();
        let top = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        sum -= top + terms.iter().map(|t| (t - top).exp()).sum::<f64>().ln();
    }
    sum / images as f64
}

/// The weights `how` chooses for the components' log-likelihoods `log_p[j][i]`, with the
/// indices of the components kept (EM drops those below `min_weight`, then refits the rest),
/// and EM's iterations (0 where nothing was fit).
pub fn choose_weights(
    log_p: &[Vec<f64>],
    how: &Weights,
    min_weight: f64,
) -> Result<(Vec<f64>, Vec<usize>, usize)> {
    let all: Vec<usize> = (0..log_p.len()).collect();
    match how {
        Weights::Uniform => Ok((vec![1.0 / log_p.len() as f64; log_p.len()], all, 0)),
        Weights::Given(given) => {
            if given.len() != log_p.len() {
                bail!(
                    "--weights: {} weights for {} checkpoints",
                    given.len(),
                    log_p.len()
                );
            }
            let total: f64 = given.iter().sum();
            Ok((given.iter().map(|w| w / total).collect(), all, 0))
        }
        Weights::Fit => {
            let mut kept = all;
            loop {
                let subset: Vec<Vec<f64>> = kept.iter().map(|&j| log_p[j].clone()).collect();
                let (w, iterations) = fit_weights(&subset);
                let mut keep: Vec<usize> =
                    (0..kept.len()).filter(|&k| w[k] >= min_weight).collect();
                if keep.is_empty() {
                    // Every weight below the bar: the best component alone.
                    let best = (0..w.len()).fold(0, |b, k| if w[k] > w[b] { k } else { b });
                    keep.push(best);
                }
                if keep.len() == kept.len() {
                    return Ok((w, kept, iterations));
                }
                kept = keep.iter().map(|&k| kept[k]).collect();
            }
        }
    }
}

/// The mixture config of `models` (their structures) under `weights`, which sum to 1.
pub fn mixture_config(models: &[&dyn Autoregressive], weights: &[f64]) -> Result<MixtureConfig> {
    let n = models[0].config().n();
    let cfg = MixtureConfig {
        n,
        components: models
            .iter()
            .zip(weights)
            .map(|(m, &weight)| Component {
                weight,
                model: m.config().structure(),
            })
            .collect(),
    };
    crate::models::ModelSpec::validate(&cfg)?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Data drawn from a known two-component mixture of known densities: EM finds its weights
    /// (within sampling error), never lowers the likelihood below uniform weights', and a
    /// component that explains nothing is dropped.
    #[test]
    fn em_recovers_the_weights_of_a_known_mixture() {
        use rand::Rng;
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Two "models" over 4 outcomes, and data from 0.3 p0 + 0.7 p1.
        let p = [[0.7, 0.1, 0.1, 0.1], [0.05, 0.05, 0.45, 0.45]];
        // A model with nearly all its mass on outcomes the data never shows.
        let useless = [0.001, 0.001, 0.001, 0.001];
        let mut log_p = vec![Vec::new(), Vec::new(), Vec::new()];
        for _ in 0..20_000 {
            let from = usize::from(rng.random::<f64>() >= 0.3);
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let outcome = (0..4)
                .find(|&o| {
                    acc += p[from][o];
                    u < acc
                })
                .unwrap_or(3);
            log_p[0].push(f64::ln(p[0][outcome]));
            log_p[1].push(f64::ln(p[1][outcome]));
            log_p[2].push(f64::ln(useless[outcome]));
        }
        let (w, iterations) = fit_weights(&log_p[..2]);
        assert!(iterations > 1);
        assert!((w[0] - 0.3).abs() < 0.02, "{w:?}");
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(mixture_nll(&log_p[..2], &w) <= mixture_nll(&log_p[..2], &[0.5, 0.5]));
        let (w3, kept, _) = choose_weights(&log_p, &Weights::Fit, 1e-3).unwrap();
        assert_eq!(kept, [0, 1], "{w3:?}");
        assert!((w3[0] - w[0]).abs() < 1e-9);
    }

    #[test]
    fn weights_parse_and_bad_ones_are_named() {
        assert_eq!("fit".parse::<Weights>(), Ok(Weights::Fit));
        assert_eq!("uniform".parse::<Weights>(), Ok(Weights::Uniform));
        assert_eq!("1,3".parse::<Weights>(), Ok(Weights::Given(vec![1.0, 3.0])));
        let err = "0.5,-1".parse::<Weights>().unwrap_err();
        assert!(err.contains("\"-1\""), "{err}");
        let log_p = vec![vec![0.0], vec![0.0]];
        let (w, _, _) = choose_weights(&log_p, &Weights::Given(vec![1.0, 3.0]), 0.0).unwrap();
        assert_eq!(w, [0.25, 0.75]);
        let err = choose_weights(&log_p, &Weights::Given(vec![1.0]), 0.0).unwrap_err();
        assert!(err.to_string().contains("1 weights for 2 checkpoints"));
    }
}
