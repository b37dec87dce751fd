//! Strictly lower-triangular masks: entry (i, j) is 1 when j < i, i.e. when x_j may
//! influence the conditional of x_i.

use candle_core::{Device, Result, Tensor};

pub fn strictly_lower(size: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..size * size)
        .map(|k| if k % size < k / size { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(values, (size, size), device)
}
