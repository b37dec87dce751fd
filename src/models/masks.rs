//! The autoregressive structure: strictly lower-triangular masks (entry (i, j) is 1 when
//! j < i, i.e. when x_j may influence the conditional of x_i) and the stored orderings of
//! MADE and deep NADE, checked as they are read. MADE's degree masks are built by the layer
//! that applies them (kernels::masked_linear::DegreeMask).

use candle_core::{Device, Result, Tensor};

pub fn strictly_lower(size: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..size * size)
        .map(|k| if k % size < k / size { 1.0 } else { 0.0 })
        .collect();
    Tensor::from_vec(values, (size, size), device)
}

/// The rows of an integer `order` buffer ((K, n)) read from a checkpoint, each checked to be a
/// permutation of 0..n. The error names the row and what is wrong with it: a value out of
/// range, or the first value that appears twice and the first one missing.
pub fn read_orderings(n: usize, order: &Tensor) -> Result<Vec<Vec<usize>>> {
    let rows = order.to_device(&Device::Cpu)?.to_vec2::<i64>()?;
    let last = n.saturating_sub(1);
    rows.iter()
        .enumerate()
        .map(|(k, row)| {
            // Error::Msg, not bail!: no backtrace is captured into a message users read.
            let bad = |what: String| {
                candle_core::Error::Msg(format!(
                    "tensor `order`: row {k} is not a permutation of 0..{last}: {what}"
                ))
            };
            let mut seen = vec![false; n];
            let mut duplicate = None;
            for &d in row {
                if d < 0 || d as usize >= n {
                    return Err(bad(format!("it holds {d}, outside 0..{last}")));
                }
                if std::mem::replace(&mut seen[d as usize], true) && duplicate.is_none() {
                    duplicate = Some(d);
                }
            }
            if let Some(d) = duplicate {
                let missing = seen.iter().position(|&s| !s).unwrap_or(0);
                return Err(bad(format!("{d} appears twice and {missing} is missing")));
            }
            Ok(row.iter().map(|&d| d as usize).collect())
        })
        .collect()
}
