//! The fused NADE passes on CUDA ([`super::nade_logits`], [`super::nade_log_prob`] and
//! [`super::nade_sample`] hold the CPU versions, with the same math), at the storage
//! level so that candle `CustomOp` `cuda_fwd` methods can call them. The kernels are in
//! `cuda/nade.cu` (compiled to PTX by build.rs); their launch configurations are described
//! there and chosen here.
//!
//! All inputs are f32 and contiguous (any start offset); every result is deterministic: no
//! atomics, sums in an order fixed by the shapes.

use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaSlice, CudaView, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::WrapErr;
use candle_core::{bail, CudaDevice, CudaStorage, Layout, Result, Shape};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/nade.ptx"));
const MODULE: &str = "nade_fused_cuda";

/// WARPS * 32 (THREADS in nade.cu): hidden units per block of `nade_logits`.
const THREADS: u32 = 256;
/// Block size of `nade_log_prob_terms` (LP_THREADS in nade.cu: its reduction assumes it).
const LP_THREADS: u32 = 256;
/// Warps per block of `nade_grad_tiles_M` (GRAD_WARPS in nade.cu); each holds M images.
const GRAD_WARPS: usize = 8;
/// Output tile (rows and columns) of `nade_grad_finish` (FIN_TILE in nade.cu), 256 threads.
const FIN_TILE: usize = 64;
/// At most this many partial sums ((2n, d) each) in `nade_grad_tiles_M`: 100 MB at n = 784,
/// d = 500. Image groups beyond it are looped over.
const MAX_SLICES: usize = 32;
/// `nade_grad_tiles_M` takes the largest M (images per thread) that still gives this many
/// blocks. Measured on an H200 (n = 784, d = 500, log p + gradient, images/s): B = 100:
/// M = 1 211k, 2 297k, 4 271k, 8 233k; B = 1000: 411k, 550k, 644k, 697k. 100 picks M = 2
/// (112 blocks) at B = 100 and M = 8 (256 blocks) at B = 1000.
const GRAD_MIN_BLOCKS: usize = 100;
/// `nade_logits` splits the pixels of a small batch into chunks until the grid has about this
/// many blocks: 8 blocks of 256 threads fill one of an H100's 132 SMs (1,056 in all), while
/// the batch alone (B x d / 256 blocks: 200 at B = 100, d = 500) leaves most of them idle
/// with one serial walk over 784 pixels each.
const LOGITS_TARGET_BLOCKS: usize = 1024;
/// Largest block of `nade_sample` (one thread per hidden unit up to this).
const SAMPLE_MAX_THREADS: usize = 512;

/// logits without the output bias, (B, n), from x (B, n) and packed (2n + 1, d).
pub fn logits(
    x: &CudaStorage,
    xl: &Layout,
    packed: &CudaStorage,
    pl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (batch, n, d) = dims(xl, pl)?;
    let dev = &x.device;
    let (xv, pv) = (view(x, xl, "x")?, view(packed, pl, "packed parameters")?);
    let out = if batch == 0 {
        zeros(dev, 0)?
    } else {
        logits_slice(dev, &xv, &pv, batch, n, d)?
    };
    Ok((wrap(dev, out), Shape::from((batch, n))))
}

/// d(loss)/d(packed), shape (2n + 1, d) = [dW^T; dc; dV], given grad = d(loss)/d(logits)
/// (B, n). Same math as NadeLogitsGrad in nade_logits.rs.
pub fn logits_grad(
    x: &CudaStorage,
    xl: &Layout,
    packed: &CudaStorage,
    pl: &Layout,
    grad: &CudaStorage,
    gl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (batch, n, d) = dims(xl, pl)?;
    same_shape(gl, xl, "grad", "x")?;
    let dev = &x.device;
    let (xv, pv) = (view(x, xl, "x")?, view(packed, pl, "packed parameters")?);
    let gv = view(grad, gl, "grad")?;
    let out = grad_slice(dev, &xv, &pv, &gv, batch, n, d)?;
    Ok((wrap(dev, out), Shape::from((2 * n + 1, d))))
}

/// log p(x) per image (B,) with b (n) the output bias, and the gradient of
/// sum_b w_b log p(x_b) as (d packed (2n + 1, d), d b (n)); weights None = all ones. Same
/// math as nade_log_prob.rs. Returns (log p, d packed, d b).
pub fn log_prob_grad(
    x: &CudaStorage,
    xl: &Layout,
    packed: &CudaStorage,
    pl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
    weights: Option<(&CudaStorage, &Layout)>,
) -> Result<(CudaStorage, CudaStorage, CudaStorage)> {
    let (batch, n, d) = dims(xl, pl)?;
    elem_count(bl, n, "b")?;
    let dev = &x.device;
    let (xv, pv) = (view(x, xl, "x")?, view(packed, pl, "packed parameters")?);
    let bv = view(b, bl, "b")?;
    let wv = match weights {
        Some((w, wl)) => {
            elem_count(wl, batch, "weights")?;
            Some(view(w, wl, "weights")?)
        }
        None => None,
    };
    if batch == 0 {
        let d_packed = zeros(dev, (2 * n + 1) * d)?;
        return Ok((
            wrap(dev, zeros(dev, 0)?),
            wrap(dev, d_packed),
            wrap(dev, zeros(dev, n)?),
        ));
    }
    let (batch_i, n_i) = (int(batch, "batch")?, int(n, "n")?);
    let logits = logits_slice(dev, &xv, &pv, batch, n, d)?;

    let (log_p, g) = log_prob_terms(dev, &logits, &xv, &bv, wv.as_ref(), batch, n)?;

    // d b = sum over images of g, in image order.
    let mut d_b = zeros(dev, n)?;
    let f = kernel(dev, "nade_column_sum")?;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(&g);
    launch.arg(&mut d_b);
    launch.arg(&batch_i);
    launch.arg(&n_i);
    // SAFETY: as above.
    unsafe { launch.launch(config(grid(n.div_ceil(32))?, 1, 256)) }.w()?;

    let d_packed = grad_slice(dev, &xv, &pv, &g.as_view(), batch, n, d)?;
    Ok((wrap(dev, log_p), wrap(dev, d_packed), wrap(dev, d_b)))
}

/// log p(x) per image (B,) with b (n) the output bias, without a gradient (evaluation): the
/// logits kernel and the per-image likelihood kernel of [`log_prob_grad`], nothing else.
pub fn log_prob(
    x: &CudaStorage,
    xl: &Layout,
    packed: &CudaStorage,
    pl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
) -> Result<(CudaStorage, Shape)> {
    let (batch, n, d) = dims(xl, pl)?;
    elem_count(bl, n, "b")?;
    let dev = &x.device;
    if batch == 0 {
        return Ok((wrap(dev, zeros(dev, 0)?), Shape::from(0)));
    }
    let (xv, pv) = (view(x, xl, "x")?, view(packed, pl, "packed parameters")?);
    let bv = view(b, bl, "b")?;
    let logits = logits_slice(dev, &xv, &pv, batch, n, d)?;
    // The kernel also writes g = x - sigmoid(l), which evaluation does not use.
    let (log_p, _) = log_prob_terms(dev, &logits, &xv, &bv, None, batch, n)?;
    Ok((wrap(dev, log_p), Shape::from(batch)))
}

/// `nade_log_prob_terms`: log p per image and g = w (x - sigmoid(l)), l = logits + b (w = 1
/// without weights), from the logits without the bias.
fn log_prob_terms(
    dev: &CudaDevice,
    logits: &CudaSlice<f32>,
    xv: &CudaView<f32>,
    bv: &CudaView<f32>,
    weights: Option<&CudaView<f32>>,
    batch: usize,
    n: usize,
) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
    let n_i = int(n, "n")?;
    let mut log_p = zeros(dev, batch)?;
    let mut g = zeros(dev, batch * n)?;
    let has_weights = i32::from(weights.is_some());
    // Without weights the kernel never reads its weights argument: x stands in.
    let w_arg = weights.unwrap_or(xv);
    let f = kernel(dev, "nade_log_prob_terms")?;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(logits);
    launch.arg(xv);
    launch.arg(bv);
    launch.arg(w_arg);
    launch.arg(&has_weights);
    launch.arg(&mut log_p);
    launch.arg(&mut g);
    launch.arg(&n_i);
    // SAFETY: the arguments match the kernel's signature; every index stays in bounds.
    unsafe { launch.launch(config(grid(batch)?, 1, LP_THREADS)) }.w()?;
    Ok((log_p, g))
}

/// Sequential sampling / completion of B images in ONE launch: walks i = 0..n; where
/// observed[r, i] != 0 the value kept[r, i] is used (as 1 where it is nonzero, else 0), else
/// x_i = 1 exactly when uniforms[r, i] < p_i = sigmoid(l_i) (strictly less). Returns
/// (values (B, n) f32 in {0, 1}, probs (B, n) f32 = p(x_i = 1 | x_<i) at every i, observed
/// ones included).
#[allow(clippy::too_many_arguments)]
pub fn sample(
    packed: &CudaStorage,
    pl: &Layout,
    b: &CudaStorage,
    bl: &Layout,
    kept: &CudaStorage,
    kl: &Layout,
    observed: &CudaStorage,
    ol: &Layout,
    uniforms: &CudaStorage,
    ul: &Layout,
) -> Result<(CudaStorage, CudaStorage)> {
    let (rows, d) = pl.shape().dims2()?;
    if rows % 2 == 0 {
        bail!("NADE CUDA sample: packed parameters have {rows} rows, expected 2n + 1");
    }
    let n = (rows - 1) / 2;
    check_nd(n, d)?;
    let (batch, un) = ul.shape().dims2()?;
    if un != n {
        bail!("NADE CUDA sample: uniforms have {un} columns, the parameters n = {n}");
    }
    same_shape(kl, ul, "kept", "uniforms")?;
    same_shape(ol, ul, "observed", "uniforms")?;
    elem_count(bl, n, "b")?;
    int(batch, "batch")?;
    let dev = &packed.device;
    let pv = view(packed, pl, "packed parameters")?;
    let bv = view(b, bl, "b")?;
    let kv = view(kept, kl, "kept")?;
    let ov = view(observed, ol, "observed")?;
    let uv = view(uniforms, ul, "uniforms")?;
    let mut values = zeros(dev, batch * n)?;
    let mut probs = zeros(dev, batch * n)?;
    if batch > 0 {
        let (n_i, d_i) = (int(n, "n")?, int(d, "d")?);
        // Activations, one row of d per image (global memory: any d works).
        let mut scratch = zeros(dev, batch * d)?;
        let threads = d.next_multiple_of(32).min(SAMPLE_MAX_THREADS) as u32;
        let f = kernel(dev, "nade_sample")?;
        let stream = dev.cuda_stream();
        let mut launch = stream.launch_builder(&f);
        launch.arg(&pv);
        launch.arg(&bv);
        launch.arg(&kv);
        launch.arg(&ov);
        launch.arg(&uv);
        launch.arg(&mut values);
        launch.arg(&mut probs);
        launch.arg(&mut scratch);
        launch.arg(&n_i);
        launch.arg(&d_i);
        // SAFETY: the arguments match the kernel's signature; every index stays in bounds.
        unsafe { launch.launch(config(grid(batch)?, 1, threads)) }.w()?;
    }
    Ok((wrap(dev, values), wrap(dev, probs)))
}

/// nade_logits (+ nade_sum_parts when d > THREADS): (B, n) logits without the bias; B > 0.
fn logits_slice(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    p: &CudaView<f32>,
    batch: usize,
    n: usize,
    d: usize,
) -> Result<CudaSlice<f32>> {
    let (n_i, d_i) = (int(n, "n")?, int(d, "d")?);
    // Block (b, group, z): image b, hidden units [group * THREADS, (group + 1) * THREADS),
    // pixels [z * chunk, (z + 1) * chunk).
    let groups = d.div_ceil(THREADS as usize);
    let chunk = logits_chunk(batch * groups, n);
    let chunk_i = int(chunk, "chunk")?;
    let mut cfg = config(grid(batch)?, grid_y(groups)?, THREADS);
    cfg.grid_dim.2 = grid_y(n.div_ceil(chunk))?;
    let f = kernel(dev, "nade_logits")?;
    let stream = dev.cuda_stream();
    let mut out = zeros(dev, batch * n)?;
    if groups == 1 {
        let mut launch = stream.launch_builder(&f);
        launch.arg(x);
        launch.arg(p);
        launch.arg(&mut out);
        launch.arg(&n_i);
        launch.arg(&d_i);
        launch.arg(&chunk_i);
        // SAFETY: the arguments match the kernel's signature; every index stays in bounds.
        unsafe { launch.launch(cfg) }.w()?;
    } else {
        // (B, groups, n) partial logits, added in group order.
        let mut part = zeros(dev, batch * groups * n)?;
        let mut launch = stream.launch_builder(&f);
        launch.arg(x);
        launch.arg(p);
        launch.arg(&mut part);
        launch.arg(&n_i);
        launch.arg(&d_i);
        launch.arg(&chunk_i);
        // SAFETY: as above.
        unsafe { launch.launch(cfg) }.w()?;
        sum_parts(dev, &part, &mut out, batch, n, groups)?;
    }
    Ok(out)
}

/// Pixels per block of `nade_logits` (a multiple of 32): `NADE_CUDA_LOGITS_CHUNK` if set (for
/// tuning; rounded up to a multiple of 32), else the largest chunk that still gives about
/// LOGITS_TARGET_BLOCKS blocks for `blocks` = B x groups, all n pixels once the batch alone
/// fills the GPU. The logits have the same bits for every chunk (see nade.cu).
fn logits_chunk(blocks: usize, n: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        std::env::var("NADE_CUDA_LOGITS_CHUNK")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|&c| c > 0)
    });
    let whole = n.next_multiple_of(32);
    if let Some(c) = forced {
        return c.next_multiple_of(32).min(whole);
    }
    let chunks = LOGITS_TARGET_BLOCKS
        .div_ceil(blocks.max(1))
        .clamp(1, whole / 32);
    n.div_ceil(chunks).next_multiple_of(32)
}

/// Images per thread of `nade_grad_tiles_M`: `NADE_CUDA_GRAD_IMAGES` (1, 2, 4 or 8) if set (for
/// tuning; the results' last bits depend on it), else the largest M in {8, 4, 2} that gives
/// at least GRAD_MIN_BLOCKS blocks, else 1. More images per thread: more independent work per
/// thread and fewer partial sums; fewer: more threads.
fn grad_images(batch: usize, d: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = *FORCED.get_or_init(|| {
        std::env::var("NADE_CUDA_GRAD_IMAGES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .filter(|m| [1, 2, 4, 8].contains(m))
    });
    if let Some(m) = forced {
        return m;
    }
    let kblocks = d.div_ceil(32);
    [8, 4, 2]
        .into_iter()
        .find(|&m| batch.div_ceil(GRAD_WARPS * m).min(MAX_SLICES) * kblocks >= GRAD_MIN_BLOCKS)
        .unwrap_or(1)
}

/// nade_grad_tiles_M, then nade_grad_finish: the (2n + 1, d) packed gradient.
fn grad_slice(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    p: &CudaView<f32>,
    g: &CudaView<f32>,
    batch: usize,
    n: usize,
    d: usize,
) -> Result<CudaSlice<f32>> {
    let len = (2 * n + 1) * d;
    if batch == 0 {
        return zeros(dev, len);
    }
    let (batch_i, n_i, d_i) = (int(batch, "batch")?, int(n, "n")?, int(d, "d")?);
    // Block (kb, s): hidden units kb * 32 .. + 32, image groups of GRAD_WARPS * m images
    // s, s + slices, ...; slice s sums into its own part[.][s] of part (2n, slices, d), and
    // P_n goes to pn (B, d).
    let m = grad_images(batch, d);
    let slices = batch.div_ceil(GRAD_WARPS * m).min(MAX_SLICES);
    let slices_i = int(slices, "slices")?;
    // SAFETY (both): the kernels write every element before anything reads it (part: the
    // first group of every slice stores each (row, slice, k < d); pn: every (image, k < d)).
    let mut part = unsafe { dev.alloc::<f32>(2 * n * slices * d) }?;
    let mut pn = unsafe { dev.alloc::<f32>(batch * d) }?;
    let f = kernel(dev, &format!("nade_grad_tiles_{m}"))?;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(x);
    launch.arg(g);
    launch.arg(p);
    launch.arg(&mut part);
    launch.arg(&mut pn);
    launch.arg(&batch_i);
    launch.arg(&n_i);
    launch.arg(&d_i);
    let cfg = config(
        grid(d.div_ceil(32))?,
        grid_y(slices)?,
        (GRAD_WARPS * 32) as u32,
    );
    // SAFETY: the arguments match the kernel's signature; every index stays in bounds.
    unsafe { launch.launch(cfg) }.w()?;

    // Every (row, k < d) of out is written by nade_grad_finish.
    // SAFETY: as above.
    let mut out = unsafe { dev.alloc::<f32>(len) }?;
    let f = kernel(dev, "nade_grad_finish")?;
    let mut launch = stream.launch_builder(&f);
    launch.arg(x);
    launch.arg(&pn);
    launch.arg(&part);
    launch.arg(&mut out);
    launch.arg(&batch_i);
    launch.arg(&n_i);
    launch.arg(&d_i);
    launch.arg(&slices_i);
    // Rows of blocks: (n + 1) / 64 for dW^T and dc (the product), n / 64 for dV.
    let rows = (n + 1).div_ceil(FIN_TILE) + n.div_ceil(FIN_TILE);
    let cfg = config(grid(d.div_ceil(FIN_TILE))?, grid_y(rows)?, 256);
    // SAFETY: as above.
    unsafe { launch.launch(cfg) }.w()?;
    Ok(out)
}

/// out[r, c] = sum_{q < parts} part[r, q, c], in order q = 0, 1, ...
fn sum_parts(
    dev: &CudaDevice,
    part: &CudaSlice<f32>,
    out: &mut CudaSlice<f32>,
    rows: usize,
    cols: usize,
    parts: usize,
) -> Result<()> {
    let (rows_i, cols_i) = (rows as i64, cols as i64);
    let parts_i = int(parts, "parts")?;
    // Grid-stride loop: the block count only bounds the parallelism.
    let blocks = (rows * cols).div_ceil(256).clamp(1, 1 << 16);
    let f = kernel(dev, "nade_sum_parts")?;
    let stream = dev.cuda_stream();
    let mut launch = stream.launch_builder(&f);
    launch.arg(part);
    launch.arg(out);
    launch.arg(&rows_i);
    launch.arg(&cols_i);
    launch.arg(&parts_i);
    // SAFETY: the arguments match the kernel's signature; every index stays in bounds.
    unsafe { launch.launch(config(grid(blocks)?, 1, 256)) }.w()?;
    Ok(())
}

fn kernel(dev: &CudaDevice, name: &str) -> Result<CudaFunction> {
    Ok(dev
        .get_or_load_custom_func(name, MODULE, PTX)?
        .into_cuda_function())
}

fn config(grid_x: u32, grid_y: u32, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid_x, grid_y, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid x dimension: 1 to 2^31 - 1 blocks.
fn grid(blocks: usize) -> Result<u32> {
    match u32::try_from(blocks) {
        Ok(b) if b > 0 && b <= i32::MAX as u32 => Ok(b),
        _ => bail!("NADE CUDA kernels: grid of {blocks} blocks out of range"),
    }
}

/// A grid y or z dimension: 1 to 65535 blocks (the logits' groups, d / 256, and pixel chunks,
/// at most n / 32, the gradient's slices, at most MAX_SLICES, and nade_grad_finish's row
/// tiles, about 2n / 64).
fn grid_y(blocks: usize) -> Result<u32> {
    if blocks == 0 || blocks > 65535 {
        bail!("NADE CUDA kernels: grid y dimension of {blocks} blocks out of range (d too large?)");
    }
    Ok(blocks as u32)
}

/// A zeroed device buffer of `len` floats (at least one: zero-byte allocations may fail; the
/// shapes returned with the buffers say how much of them is used).
fn zeros(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    dev.alloc_zeros::<f32>(len.max(1))
}

fn wrap(dev: &CudaDevice, slice: CudaSlice<f32>) -> CudaStorage {
    CudaStorage::wrap_cuda_slice(slice, dev.clone())
}

/// The f32 elements of a contiguous layout.
fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> Result<CudaView<'a, f32>> {
    let Ok(slice) = s.as_cuda_slice::<f32>() else {
        bail!("NADE CUDA kernels: {what} must be f32");
    };
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(slice.slice(start..end)),
        None => bail!(
            "NADE CUDA kernels: {what} must be contiguous (shape {:?}, stride {:?}); call \
             .contiguous() first",
            l.shape(),
            l.stride()
        ),
    }
}

/// (B, n, d) from x (B, n) and packed (2n + 1, d), checked.
fn dims(xl: &Layout, pl: &Layout) -> Result<(usize, usize, usize)> {
    let (batch, n) = xl.shape().dims2()?;
    let (rows, d) = pl.shape().dims2()?;
    if rows != 2 * n + 1 {
        bail!(
            "NADE CUDA kernels: packed parameters have {rows} rows, expected 2n + 1 = {}",
            2 * n + 1
        );
    }
    check_nd(n, d)?;
    int(batch, "batch")?;
    Ok((batch, n, d))
}

fn check_nd(n: usize, d: usize) -> Result<()> {
    if n == 0 || d == 0 {
        bail!("NADE CUDA kernels: need n >= 1 and d >= 1, got n = {n}, d = {d}");
    }
    int(n, "n")?;
    int(d, "d")?;
    Ok(())
}

fn same_shape(l: &Layout, want: &Layout, what: &str, like: &str) -> Result<()> {
    if l.shape() != want.shape() {
        bail!(
            "NADE CUDA kernels: {what} has shape {:?}, {like} {:?}",
            l.shape(),
            want.shape()
        );
    }
    Ok(())
}

fn elem_count(l: &Layout, want: usize, what: &str) -> Result<()> {
    if l.shape().elem_count() != want {
        bail!(
            "NADE CUDA kernels: {what} has shape {:?}, expected {want} elements",
            l.shape()
        );
    }
    Ok(())
}

/// The kernels take sizes as int.
fn int(v: usize, what: &str) -> Result<i32> {
    match i32::try_from(v) {
        Ok(v) => Ok(v),
        Err(_) => bail!("NADE CUDA kernels: {what} = {v} does not fit in an int"),
    }
}
