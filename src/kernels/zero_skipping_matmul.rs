//! x W on the CPU with our own register tile (AVX-512, AVX2), skipping the zeros of x that a
//! block of 8 rows shares: deep NADE's upper layers (src/kernels/deepnade_walk.rs). Its exact
//! walk feeds them one image's consecutive steps as consecutive rows; between two steps the
//! first layer's pre-activations move by one column of W1, so the units a ReLU cuts to zero
//! stay the same for most of them. Measured with `nade eval` on the shipped 2 x 500 model
//! (1,000 MNIST validation images, one ordering): 51.6% of the entries the upper layer reads
//! are 0, and 49.9% of the columns are 0 in all 8 rows of a block; with the untrained
//! weights and synthetic images of `nade bench`, 47.8% and 43.3%. A block of rows multiplies
//! only the rows of W its own nonzero columns select.
//!
//! The values do not depend on the blocking or the threads: every output element is one
//! chain of multiply-adds over its row's entries in ascending order, of which only exact
//! zeros are left out (a term 0 * w adds nothing to a finite sum).

use super::simd;

/// Rows per block: the rows that share one list of nonzero columns, and the rows of the
/// register tile (8 x 32 f32 are 16 AVX-512 registers).
const MR: usize = 8;
/// Columns of W per panel, the columns of the register tile.
const NR: usize = 32;

/// W (k x n) in panels of NR columns, each k x NR row-major, the last one padded with zeros:
/// the layout the register tile reads a row of W from with one contiguous load.
pub struct Panels {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Packs row-major `w` (k x n).
    pub fn new(w: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(w.len(), k * n, "zero-skipping matmul: W is not {k} x {n}");
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        for (p, panel) in data.chunks_mut(k * NR).enumerate() {
            let cols = p * NR..((p + 1) * NR).min(n);
            for (row, out) in panel.chunks_mut(NR).enumerate() {
                out[..cols.len()].copy_from_slice(&w[row * n + cols.start..row * n + cols.end]);
            }
        }
        Self { k, n, data }
    }

    fn panel(&self, p: usize) -> &[f32] {
        &self.data[p * self.k * NR..(p + 1) * self.k * NR]
    }
}

/// out = x W for row-major x (rows x k) and out (rows x n), on the calling thread (callers
/// share work between threads by rows). Rows are blocked MR at a time in order, so the rows
/// that share their zeros should be consecutive.
pub fn product(x: &[f32], rows: usize, w: &Panels, out: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    assert_eq!(
        x.len(),
        rows * k,
        "zero-skipping matmul: x is not {rows} x {k}"
    );
    assert_eq!(
        out.len(),
        rows * n,
        "zero-skipping matmul: out is not {rows} x {n}"
    );
    // Per block: its nonzero columns, and x restricted to them, transposed (one column's MR
    // values together, rows past the end zero).
    let blocks: Vec<(Vec<u32>, Vec<f32>)> = x.chunks(MR * k).map(|b| pack_block(b, k)).collect();
    let mut tile = [[0f32; NR]; MR];
    // Panel-major: a panel (k x NR floats) stays in the core's cache for every block.
    for p in 0..n.div_ceil(NR) {
        let panel = w.panel(p);
        let cols = p * NR..((p + 1) * NR).min(n);
        for (b, (columns, packed)) in blocks.iter().enumerate() {
            register_tile(columns, packed, panel, &mut tile);
            for (r, tile_r) in tile.iter().take(rows - b * MR).enumerate() {
                let row = (b * MR + r) * n;
                out[row + cols.start..row + cols.end].copy_from_slice(&tile_r[..cols.len()]);
            }
        }
    }
}

/// The nonzero columns of a block of up to MR rows (row-major, k wide), and their values,
/// MR per column. Every column is written and the cursor advances past the nonzero ones
/// only: which columns are zero is data, a branch on it would be mispredicted half the time.
fn pack_block(block: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let block_rows = block.len() / k;
    let mut nonzero = vec![false; k];
    for row in block.chunks_exact(k) {
        nonzero_or(row, &mut nonzero);
    }
    let (mut columns, mut packed) = (vec![0u32; k + 1], vec![0f32; (k + 1) * MR]);
    let mut count = 0;
    // The block's rows, rows past its end reading as a row of zeros.
    let zeros = vec![0f32; k];
    let rows: [&[f32]; MR] = std::array::from_fn(|r| {
        if r < block_rows {
            &block[r * k..(r + 1) * k]
        } else {
            &zeros[..]
        }
    });
    for (c, &nz) in nonzero.iter().enumerate() {
        let column: &mut [f32; MR] = (&mut packed[count * MR..(count + 1) * MR])
            .try_into()
            .expect("MR wide");
        for (v, row) in column.iter_mut().zip(&rows) {
            *v = row[c];
        }
        columns[count] = c as u32;
        count += usize::from(nz);
    }
    columns.truncate(count);
    packed.truncate(count * MR);
    (columns, packed)
}

crate::dispatch_isa! {
    /// nonzero[c] |= row[c] != 0.
    fn nonzero_or(row: &[f32], nonzero: &mut [bool]) {
        nonzero_or_inline(row, nonzero)
    }
}

#[inline(always)]
fn nonzero_or_inline(row: &[f32], nonzero: &mut [bool]) {
    for (nz, &v) in nonzero.iter_mut().zip(row) {
        *nz |= v != 0.0;
    }
}

/// tile = x_block W[:, panel] over the listed columns: for each listed column c, the MR
/// values of x in `packed` times row c of the panel. LLVM vectorizes the portable loop across
/// the rows and gathers, so the x86 kernels spell out the registers.
fn register_tile(columns: &[u32], packed: &[f32], panel: &[f32], tile: &mut [[f32; NR]; MR]) {
    register_tile_on(simd::isa(), columns, packed, panel, tile)
}

/// [`register_tile`] with the kernel of `isa`, which the CPU must have (the tests run each).
fn register_tile_on(
    isa: simd::Isa,
    columns: &[u32],
    packed: &[f32],
    panel: &[f32],
    tile: &mut [[f32; NR]; MR],
) {
    assert!(
        packed.len() >= columns.len() * MR,
        "zero-skipping matmul: packed x too short"
    );
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: isa() checked the CPU's features; the kernels read packed[..columns.len() *
        // MR] (asserted above) and panel rows through bounds-checked slices.
        simd::Isa::Avx512 => return unsafe { register_tile_avx512(columns, packed, panel, tile) },
        simd::Isa::Avx2 => return unsafe { register_tile_avx2(columns, packed, panel, tile) },
        simd::Isa::Portable => {}
    }
    let mut acc = [[0f32; NR]; MR];
    for (&c, xs) in columns.iter().zip(packed.chunks_exact(MR)) {
        let w = &panel[c as usize * NR..(c as usize + 1) * NR];
        for (acc_r, &x) in acc.iter_mut().zip(xs) {
            for (a, &wv) in acc_r.iter_mut().zip(w) {
                *a = simd::madd::<{ cfg!(target_arch = "aarch64") }>(x, wv, *a);
            }
        }
    }
    *tile = acc;
}

/// MR x 32 accumulators in 16 of the 32 zmm registers; per column two loads of W and MR
/// broadcasts of x for 2 MR fused multiply-adds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn register_tile_avx512(
    columns: &[u32],
    packed: &[f32],
    panel: &[f32],
    tile: &mut [[f32; NR]; MR],
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for (j, &c) in columns.iter().enumerate() {
        let w = &panel[c as usize * NR..(c as usize + 1) * NR];
        let (w0, w1) = (
            _mm512_loadu_ps(w.as_ptr()),
            _mm512_loadu_ps(w.as_ptr().add(16)),
        );
        let xs = packed.as_ptr().add(j * MR);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x = _mm512_set1_ps(*xs.add(r));
            acc_r[0] = _mm512_fmadd_ps(x, w0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(x, w1, acc_r[1]);
        }
    }
    for (out, acc_r) in tile.iter_mut().zip(&acc) {
        _mm512_storeu_ps(out.as_mut_ptr(), acc_r[0]);
        _mm512_storeu_ps(out.as_mut_ptr().add(16), acc_r[1]);
    }
}

/// AVX2 has 16 ymm registers: the tile runs as four 4 x 16 quarters (8 accumulators each),
/// each a pass over the columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn register_tile_avx2(
    columns: &[u32],
    packed: &[f32],
    panel: &[f32],
    tile: &mut [[f32; NR]; MR],
) {
    use std::arch::x86_64::*;
    const ROWS: usize = 4;
    const COLS: usize = 16;
    for r0 in (0..MR).step_by(ROWS) {
        for c0 in (0..NR).step_by(COLS) {
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            for (j, &c) in columns.iter().enumerate() {
                let w = &panel[c as usize * NR + c0..c as usize * NR + c0 + COLS];
                let (w0, w1) = (
                    _mm256_loadu_ps(w.as_ptr()),
                    _mm256_loadu_ps(w.as_ptr().add(8)),
                );
                let xs = packed.as_ptr().add(j * MR + r0);
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*xs.add(r));
                    acc_r[0] = _mm256_fmadd_ps(x, w0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(x, w1, acc_r[1]);
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let out = tile[r0 + r][c0..].as_mut_ptr();
                _mm256_storeu_ps(out, acc_r[0]);
                _mm256_storeu_ps(out.add(8), acc_r[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x with runs of rows that share zero columns, and rows of every length around the
    /// block and panel sizes.
    fn sparse_x(rows: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        let dead: Vec<bool> = (0..k).map(|_| next() < 0.0).collect();
        (0..rows * k)
            .map(|i| {
                let v = next();
                if dead[i % k] || v < -0.3 {
                    0.0
                } else {
                    v
                }
            })
            .collect()
    }

    #[test]
    fn equals_the_sequential_sum_for_any_shape() {
        for &(rows, k, n) in &[
            (1, 1, 1),
            (7, 13, 33),
            (8, 32, 32),
            (67, 50, 70),
            (130, 9, 5),
        ] {
            let x = sparse_x(rows, k, rows as u64 * 31 + k as u64);
            let w = sparse_x(k, n, 7)
                .iter()
                .map(|v| v + 0.25)
                .collect::<Vec<_>>();
            let mut got = vec![f32::NAN; rows * n];
            product(&x, rows, &Panels::new(&w, k, n), &mut got);
            for r in 0..rows {
                for c in 0..n {
                    // The same chain of multiply-adds, zeros included: they add nothing.
                    let want = (0..k).fold(0f32, |acc, j| {
                        let (a, b) = (x[r * k + j], w[j * n + c]);
                        match simd::isa() {
                            simd::Isa::Portable if !cfg!(target_arch = "aarch64") => acc + a * b,
                            _ => a.mul_add(b, acc),
                        }
                    });
                    assert_eq!(
                        got[r * n + c].to_bits(),
                        want.to_bits(),
                        "({rows} x {k} x {n}) [{r}, {c}]"
                    );
                }
            }
        }
    }

    /// Every kernel this CPU can run (not only the widest, which `product` picks) gives the
    /// same bits: the AVX2 tile runs in quarters, the portable one as plain loops.
    #[test]
    fn every_instruction_set_gives_the_same_tile() {
        let k = 37;
        let x = sparse_x(MR, k, 11);
        let w = sparse_x(k, NR, 5);
        let (columns, packed) = pack_block(&x, k);
        let panel = Panels::new(&w, k, NR);
        let mut isas = vec![simd::isa()];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            isas.push(simd::Isa::Avx2);
        }
        if cfg!(target_arch = "aarch64") {
            isas.push(simd::Isa::Portable);
        }
        let mut want = [[0f32; NR]; MR];
        register_tile_on(isas[0], &columns, &packed, panel.panel(0), &mut want);
        assert!(want.iter().flatten().any(|&v| v != 0.0));
        for &isa in &isas[1..] {
            let mut got = [[f32::NAN; NR]; MR];
            register_tile_on(isa, &columns, &packed, panel.panel(0), &mut got);
            let bits =
                |t: &[[f32; NR]; MR]| t.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{isa:?}");
        }
    }

    #[test]
    fn an_all_zero_block_gives_zero_rows() {
        let (rows, k, n) = (16, 20, 40);
        let mut x = sparse_x(rows, k, 3);
        x[..MR * k].iter_mut().for_each(|v| *v = 0.0);
        let w = vec![1.5f32; k * n];
        let mut got = vec![f32::NAN; rows * n];
        product(&x, rows, &Panels::new(&w, k, n), &mut got);
        assert!(got[..MR * n].iter().all(|&v| v == 0.0));
        assert!(got[MR * n..].iter().any(|&v| v != 0.0));
    }
}
