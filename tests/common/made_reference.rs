//! MADE in float64, written from the text of issue 14 alone (not from src/models/made.rs):
//! h_l = g(b_l + (W_l * M_l) h_{l-1}), logits = c + (V * M_V) h_L (+ (A * M_A) x), with
//! m0(d) = 1 + position of d in order[k], M_l[u, u'] = deg_l[u] >= deg_{l-1}[u'],
//! M_V[d, u] = m0(d) > deg_L[u], M_A[d, d'] = m0(d) > m0(d'); log p(x) = logsumexp_k log p_k(x)
//! - log K. One logit at a time, each mask entry decided where it is used.

use std::collections::HashMap;

/// The tensors of a MADE file by name, as f32 values (integers for the buffers).
pub struct MadeReference {
    pub n: usize,
    pub hidden: Vec<usize>,
    pub masks: usize,
    pub activation: String,
    pub p: HashMap<String, Vec<f32>>,
}

impl MadeReference {
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

    /// m0 and the hidden degrees of mask k.
    fn degrees(&self, k: usize) -> (Vec<usize>, Vec<Vec<usize>>) {
        let n = self.n;
        let mut m0 = vec![0; n];
        for t in 0..n {
            m0[self.p["order"][k * n + t] as usize] = t + 1;
        }
        let hidden = self
            .hidden
            .iter()
            .enumerate()
            .map(|(l, &h)| {
                let name = format!("degrees{}", l + 1);
                (0..h).map(|u| self.p[&name][k * h + u] as usize).collect()
            })
            .collect();
        (m0, hidden)
    }

    /// The n logits of x under mask k, one dimension at a time.
    pub fn logits(&self, k: usize, x: &[f64]) -> Vec<f64> {
        self.logits_with_dropout(k, x, &[])
    }

    /// [`MadeReference::logits`] with unit u of hidden layer l multiplied by keep[l][u] after
    /// its activation (dropout in training; no entry for a layer: all kept).
    pub fn logits_with_dropout(&self, k: usize, x: &[f64], keep: &[Vec<f64>]) -> Vec<f64> {
        let n = self.n;
        let (m0, degrees) = self.degrees(k);
        (0..n)
            .map(|d| {
                let mut below: Vec<f64> = x.to_vec();
                let mut below_deg = m0.clone();
                for (l, &h) in self.hidden.iter().enumerate() {
                    let (w, b) = (format!("W{}", l + 1), format!("b{}", l + 1));
                    let width = below.len();
                    let layer: Vec<f64> = (0..h)
                        .map(|u| {
                            let mut a = self.at(&b, u);
                            for j in 0..width {
                                if degrees[l][u] >= below_deg[j] {
                                    a += self.at(&w, u * width + j) * below[j];
                                }
                            }
                            self.g(a) * keep.get(l).map_or(1.0, |keep| keep[u])
                        })
                        .collect();
                    below = layer;
                    below_deg = degrees[l].clone();
                }
                let mut logit = self.at("c", d);
                for (u, &h_u) in below.iter().enumerate() {
                    if m0[d] > below_deg[u] {
                        logit += self.at("V", d * below.len() + u) * h_u;
                    }
                }
                if self.p.contains_key("A") {
                    for j in 0..n {
                        if m0[d] > m0[j] {
                            logit += self.at("A", d * n + j) * x[j];
                        }
                    }
                }
                logit
            })
            .collect()
    }

    /// log p_k(x).
    pub fn log_prob_of_mask(&self, k: usize, x: &[f64]) -> f64 {
        self.logits(k, x)
            .iter()
            .zip(x)
            .map(|(&l, &v)| v * l - (l.max(0.0) + (-l.abs()).exp().ln_1p()))
            .sum()
    }

    /// log p(x) of the mixture of the first `used` masks.
    pub fn log_prob(&self, x: &[f64], used: usize) -> f64 {
        let each: Vec<f64> = (0..used).map(|k| self.log_prob_of_mask(k, x)).collect();
        let top = each.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        top + each.iter().map(|v| (v - top).exp()).sum::<f64>().ln() - (used as f64).ln()
    }
}
