//! Deep NADE in float64, written from the text of issue 15 alone (not from
//! src/models/deepnade.rs): with m the 0/1 mask of the observed dimensions,
//! h_1 = g(W1 [x * m ; m] + b1) (W1 [h1, 2n]: columns 0..n multiply x * m, n..2n multiply m),
//! h_l = g(W_l h_{l-1} + b_l), logits = V h_L + c; log p_o(x) = sum_t log p(x_{o_t} | x_{o_<t})
//! with one full pass per conditional; log p(x) = logsumexp_k log p_{o_k}(x) - log K over the
//! first K rows of `order`.

use std::collections::HashMap;

/// The tensors of a deep NADE file by name, as f32 values (integers for `order`).
pub struct DeepNadeReference {
    pub n: usize,
    pub hidden: Vec<usize>,
    pub activation: String,
    pub p: HashMap<String, Vec<f32>>,
}

impl DeepNadeReference {
    fn g(&self, a: f64) -> f64 {
        match self.activation.as_str() {
            "relu" => a.max(0.0),
            "sigmoid" => 1.0 / (1.0 + (-a).exp()),
            "tanh" => a.tanh(),
            other => panic!("activation {other}"),
        }
    }

    fn at(&self, name: &str, i: usize) -> f64 {
        self.p[name][i] as f64
    }

    /// The logit of dimension i given x where m = 1, one full pass.
    pub fn logit(&self, x: &[f64], m: &[f64], i: usize) -> f64 {
        let n = self.n;
        let input: Vec<f64> = (0..n)
            .map(|d| x[d] * m[d])
            .chain(m.iter().copied())
            .collect();
        let mut h = input;
        for (l, &units) in self.hidden.iter().enumerate() {
            let (w, b) = (format!("W{}", l + 1), format!("b{}", l + 1));
            let width = h.len();
            h = (0..units)
                .map(|u| {
                    let a: f64 = (0..width).map(|j| self.at(&w, u * width + j) * h[j]).sum();
                    self.g(a + self.at(&b, u))
                })
                .collect();
        }
        let top = h.len();
        (0..top)
            .map(|j| self.at("V", i * top + j) * h[j])
            .sum::<f64>()
            + self.at("c", i)
    }

    /// log p_o(x) under the ordering `order`.
    pub fn log_prob_in(&self, x: &[f64], order: &[usize]) -> f64 {
        let mut m = vec![0.0; self.n];
        let mut total = 0.0;
        for &i in order {
            let l = self.logit(x, &m, i);
            // log sigmoid(s) = -softplus(-s), s = l for x_i = 1 and -l for x_i = 0.
            let s = if x[i] > 0.5 { l } else { -l };
            total -= (-s).max(0.0) + (-s.abs()).exp().ln_1p();
            m[i] = 1.0;
        }
        total
    }

    /// The ensemble of the first k stored orderings.
    pub fn log_prob(&self, x: &[f64], k: usize) -> f64 {
        let n = self.n;
        let per: Vec<f64> = (0..k)
            .map(|r| {
                let order: Vec<usize> = (0..n)
                    .map(|t| self.p["order"][r * n + t] as usize)
                    .collect();
                self.log_prob_in(x, &order)
            })
            .collect();
        let top = per.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top + per.iter().map(|v| (v - top).exp()).sum::<f64>().ln() - (k as f64).ln()
    }
}
