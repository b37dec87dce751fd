//! f32 matrix products on the CPU, cut into tiles that rayon's threads share, each tile one
//! single-threaded call of the gemm crate (the kernels candle's CPU matmul calls). Two reasons
//! not to go through candle's matmul:
//!
//! - Threads. gemm shares a product between threads only when the output has many rows: at
//!   the models' batch of 100 it ran on one core of two. Measured on a 2-core Zen 4 with
//!   AVX-512, (100 x 784)(784 x 500): 85-93 GFLOP/s through candle with 1 or 2 threads, and
//!   167-182 GFLOP/s as tiles 32 columns wide on 2 threads (PyTorch 2.15: 168).
//! - Structure. A MADE layer's masked weights with its units sorted by degree are a staircase:
//!   each output unit reads a prefix of the inputs, half of them on average. Here a band of
//!   output columns reads only the rows and depth its entries need, so the zeros of the mask
//!   are not multiplied (src/kernels/masked_linear.rs): 327 GFLOP/s dense-equivalent on the
//!   product above.
//!
//! Tiles have fixed sizes, not sizes from the thread count, so every value comes out the same
//! whatever the threads: each entry is computed by one gemm call with the same arguments.

use std::ops::Range;

use rayon::prelude::*;

/// A read-only matrix: element (r, c) is data[r * row_stride + c * col_stride].
#[derive(Clone, Copy)]
pub struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> View<'a> {
    /// `data` as a row-major (rows x cols) matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "tiled matmul: {} values for a {rows} x {cols} matrix",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, without a copy.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// Address of element (r, c); r <= rows and c <= cols (an empty block may start at the end).
    fn at(&self, r: usize, c: usize) -> *const f32 {
        self.data
            .as_ptr()
            .wrapping_add(r * self.row_stride + c * self.col_stride)
    }
}

/// The rows and the depth (the shared dimension) that one band of output columns needs:
/// entries of the band outside `rows` are zero, and terms outside `depth` are zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Band {
    pub rows: Range<usize>,
    pub depth: Range<usize>,
}

/// Output columns per tile of a dense product; at batch 100, 32 was the fastest of 16 to 128.
const DENSE_COLS: usize = 32;
/// Output rows per tile: past this many, a band is cut into row blocks, so that a batch of
/// 1,000 also gives each thread several tiles.
const TILE_ROWS: usize = 256;

/// A B as a row-major (a.rows x b.cols) vector.
pub fn product(a: View, b: View) -> Vec<f32> {
    let (m, k) = (a.rows, a.cols);
    product_in_bands(a, b, DENSE_COLS, |_| Band {
        rows: 0..m,
        depth: 0..k,
    })
}

/// A B as a row-major (a.rows x b.cols) vector, computed band by band: the output columns are
/// cut into bands `width` wide, and `band(columns)` says which rows and depth a band needs.
/// Entries outside every band's rows are zero.
pub fn product_in_bands(
    a: View,
    b: View,
    width: usize,
    band: impl Fn(Range<usize>) -> Band,
) -> Vec<f32> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "tiled matmul: {m} x {k} times {} x {n}", b.rows);
    let width = width.max(1);
    // Tiles to multiply, and blocks outside every band to zero (rows x columns each): c is
    // not zero-filled first, so that each entry is written once (a MADE weight gradient's
    // bands cover about half of its 392,000 entries, a forward's all of them).
    let mut tiles = Vec::new();
    let mut zeros = Vec::new();
    for start in (0..n).step_by(width) {
        let cols = start..(start + width).min(n);
        let Band { rows, depth } = band(cols.clone());
        assert!(
            rows.end <= m && depth.end <= k,
            "tiled matmul: band {rows:?} x {depth:?} outside {m} x {k}"
        );
        if depth.is_empty() || rows.is_empty() {
            zeros.push((0..m, cols));
            continue;
        }
        zeros.push((0..rows.start, cols.clone()));
        zeros.push((rows.end..m, cols.clone()));
        for first in rows.clone().step_by(TILE_ROWS) {
            let rows = first..(first + TILE_ROWS).min(rows.end);
            tiles.push((rows, cols.clone(), depth.clone()));
        }
    }
    zeros.retain(|(rows, _)| !rows.is_empty());
    let mut c: Vec<f32> = Vec::with_capacity(m * n);
    let out = SharedOut(c.as_mut_ptr());
    zeros.into_par_iter().for_each(|(rows, cols)| {
        for r in rows {
            // SAFETY: the block is inside c's allocation (m x n) and written by no other task.
            unsafe { std::ptr::write_bytes(out.at(r * n + cols.start), 0, cols.len()) };
        }
    });
    tiles.into_par_iter().for_each(|(rows, cols, depth)| {
        // SAFETY: the tiles are disjoint blocks of c (bands of distinct columns, each cut into
        // distinct row blocks, none overlapping a zeroed block), inside it (checked above),
        // and c outlives the loop; the operands' blocks are inside their slices (View::new
        // checked their sizes). gemm writes the tile without reading it (alpha 0, read_dst
        // false).
        unsafe {
            gemm::gemm(
                rows.len(),
                cols.len(),
                depth.len(),
                out.at(rows.start * n + cols.start),
                1,
                n as isize,
                false,
                a.at(rows.start, depth.start),
                a.col_stride as isize,
                a.row_stride as isize,
                b.at(depth.start, cols.start),
                b.col_stride as isize,
                b.row_stride as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    });
    // SAFETY: every entry of the m x n output was written: each band's columns are either
    // zeroed in full or cut into its rows' tiles and the zeroed rows above and below them.
    unsafe { c.set_len(m * n) };
    c
}

/// The output's address, shared by the tiles that write disjoint blocks of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: each tile writes its own block (see product_in_bands).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// (A method, not `.0` in the closure: a closure would capture the bare pointer.)
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005) | 1;
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The product in f64, entry by entry, with the bands' zeros.
    fn naive(a: View, b: View, band_of: impl Fn(usize) -> Band) -> Vec<f64> {
        let get = |v: &View, r: usize, c: usize| unsafe { *v.at(r, c) } as f64;
        let mut c = vec![0f64; a.rows * b.cols];
        for j in 0..b.cols {
            let Band { rows, depth } = band_of(j);
            for i in rows {
                c[i * b.cols + j] = depth.clone().map(|p| get(&a, i, p) * get(&b, p, j)).sum();
            }
        }
        c
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}");
        for (at, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "{what}: entry {at} is {g}, want {w}"
            );
        }
    }

    #[test]
    fn dense_products_of_every_layout_equal_the_naive_one() {
        // Sizes below, at and past the tiles' edges (32 columns, 256 rows).
        for (m, k, n) in [
            (1, 1, 1),
            (3, 5, 7),
            (100, 37, 65),
            (300, 20, 33),
            (0, 4, 3),
        ] {
            let (a_data, b_data) = (values(m * k, 1), values(k * n, 2));
            let a = View::new(&a_data, m, k);
            let a_t = View::new(&a_data, k, m).t();
            let b = View::new(&b_data, k, n);
            let b_t = View::new(&b_data, n, k).t();
            for (name, a, b) in [("A B", a, b), ("A^T B", a_t, b), ("A B^T", a, b_t)] {
                let want = naive(a, b, |_| Band {
                    rows: 0..m,
                    depth: 0..k,
                });
                assert_close(&product(a, b), &want, &format!("{name}, {m} x {k} x {n}"));
            }
        }
    }

    #[test]
    fn banded_products_read_only_their_bands_and_leave_zeros_outside() {
        let (m, k, n) = (270, 50, 45);
        let (a_data, b_data) = (values(m * k, 3), values(k * n, 4));
        let (a, b) = (View::new(&a_data, m, k), View::new(&b_data, k, n));
        // A band is cut by the columns that start it; the last band is narrower.
        let band_at = |first: usize| Band {
            rows: (first * 3).min(m)..(first * 3 + 200).min(m),
            depth: first / 2..(first + 10).min(k),
        };
        for width in [1, 7, 16] {
            let got = product_in_bands(a, b, width, |cols| band_at(cols.start));
            let want = naive(a, b, |j| band_at(j / width * width));
            assert_close(&got, &want, &format!("bands {width} wide"));
        }
    }

    #[test]
    fn values_do_not_depend_on_the_thread_count() {
        let (m, k, n) = (300, 200, 100);
        let (a_data, b_data) = (values(m * k, 5), values(k * n, 6));
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| product(View::new(&a_data, m, k), View::new(&b_data, k, n)))
        };
        let one = run(1);
        for threads in [2, 3, 5] {
            assert!(one == run(threads), "{threads} threads");
        }
    }
}
