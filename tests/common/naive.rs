//! Each model's logits written straight from its formula, one dimension at a time, in f64:
//! the reference the parallel logits are held to (tests/suite/models.rs). The match is exhaustive,
//! so a new model does not compile until it has its reference here; tests/suite/models.rs needs no
//! edit for it.

use std::collections::HashMap;

use nade::models::ModelConfig;

/// logits[i] = logit of p(x_i = 1 | x_<i) under the model's own order (deep NADE: its
/// first stored ordering), from the model's tensors `p` by checkpoint name.
pub fn naive_logits(cfg: &ModelConfig, p: &HashMap<String, Vec<f32>>, x: &[f32]) -> Vec<f64> {
    let sigmoid = |a: f64| 1.0 / (1.0 + (-a).exp());
    let g = |name: &str, k: usize| p[name][k] as f64;
    let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    match cfg {
        ModelConfig::Fvsbn(c) => {
            let n = c.n;
            (0..n)
                .map(|i| g("b", i) + (0..i).map(|j| g("W", i * n + j) * x[j]).sum::<f64>())
                .collect()
        }
        ModelConfig::Mlp(c) => {
            let (n, d) = (c.n, c.hidden);
            (0..n)
                .map(|i| {
                    let hidden = (0..d).map(|k| {
                        let a = g("c", i * d + k)
                            + (0..i)
                                .map(|j| g("A", (i * d + k) * n + j) * x[j])
                                .sum::<f64>();
                        g("alpha", i * d + k) * sigmoid(a)
                    });
                    g("b", i) + hidden.sum::<f64>()
                })
                .collect()
        }
        ModelConfig::Nade(c) => {
            let (n, d) = (c.n, c.hidden);
            let mut a: Vec<f64> = (0..d).map(|k| g("c", k)).collect();
            let mut logits = Vec::with_capacity(n);
            for (i, &x_i) in x.iter().enumerate() {
                logits.push(
                    g("b", i)
                        + (0..d)
                            .map(|k| g("V", i * d + k) * sigmoid(a[k]))
                            .sum::<f64>(),
                );
                for (k, a_k) in a.iter_mut().enumerate() {
                    *a_k += g("W", k * n + i) * x_i;
                }
            }
            logits
        }
        ModelConfig::Made(c) => super::made_reference(c, p).logits(0, &x),
        ModelConfig::DeepNade(c) => {
            let reference = super::deepnade_reference::DeepNadeReference {
                n: c.n,
                hidden: c.hidden.clone(),
                activation: c.activation.to_string(),
                p: p.clone(),
            };
            // One full pass per conditional, walking the first stored ordering.
            let order: Vec<usize> = p["order"][..c.n].iter().map(|&d| d as usize).collect();
            let mut observed = vec![0.0; c.n];
            let mut logits = vec![0.0; c.n];
            for &i in &order {
                logits[i] = reference.logit(&x, &observed, i);
                observed[i] = 1.0;
            }
            logits
        }
        ModelConfig::Mixture(_) => panic!("a mixture has no single set of conditionals"),
    }
}
