//! Strictly lower-triangular masks: entry (i, j) is 1 when j < i, i.e. when x_j may
//! influence the conditional of x_i.

use candle_core::{Device, Result, Tensor};

pub fn strictly_lower(size: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..size * size)
        .map(|k| if k % size < k / size { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(values, (size, size), device)
}

/// The connectivity mask of a MADE layer from the degrees of its units: entry (i, j) is 1 when
/// unit i of the layer may see unit j of the layer below, i.e. rows[i] >= cols[j] between
/// hidden layers, rows[i] > cols[j] (`strict`) into the outputs (Germain et al. 2015, eq. 12-13).
pub fn degree_mask(
    rows: &[usize],
    cols: &[usize],
    strict: bool,
    device: &Device,
) -> Result<Tensor> {
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|&r| {
            cols.iter().map(move |&c| {
                if r > c || (!strict && r == c) {
                    1.0
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(values, (rows.len(), cols.len()), device)
}
