//! Deep NADE's exact walk off the CPU's host walk (src/models/deepnade.rs; the CPU walks in
//! host memory with kernels/deepnade_walk.rs): a block of S steps of R walks in a few launches
//! instead of a few tensor ops per step. Which dimension each walk predicts and observes at
//! each step of an evaluation is known in advance, so the block's steps are batched:
//!
//! 1. [`first_layer_steps`]: g(a1) of every walk before each of its S steps, a1 updated by
//!    the table row each step observes (one launch): (S R, h1) activations, rows step-major.
//! 2. The layers above, as products of all S R rows at once (candle's matmul: cuBLAS).
//! 3. [`output_units`]: the one output unit each row reads, V[d] . g(z + b) + c[d] (one launch).
//! 4. [`log_lik`]: each walk's log-likelihood, sum of x l - softplus(l) in f64 (one launch),
//!    so that nothing crosses to the host before the walks end.
//!
//! On CUDA these are the kernels of cuda/deepnade.cu; elsewhere the same loops run on the
//! host (what the CPU tests compare with the host walk; Metal goes through them too).

use candle_core::{DType, Device, Result, Tensor};

use super::deepnade_walk::Act;

/// The activation's code in cuda/deepnade.cu.
#[cfg(feature = "cuda")]
fn act_code(act: Act) -> i32 {
    match act {
        Act::Relu => 0,
        Act::Sigmoid => 1,
        Act::Tanh => 2,
    }
}

fn act_f32(act: Act, x: f32) -> f32 {
    match act {
        Act::Relu => x.max(0.0),
        Act::Sigmoid => {
            let t = (-x.abs()).exp();
            if x >= 0.0 {
                1.0 / (1.0 + t)
            } else {
                t / (1.0 + t)
            }
        }
        Act::Tanh => x.tanh(),
    }
}

/// S steps of the first layer of R walks: `a1` (R, h1), `table` (T, h1), `entries` (S, R)
/// u32 (rows of the table). Returns ((S + 1) R, h1): row s R + r is g(a1_r before step s),
/// row S R + r is a1_r after the S steps (a1_r += table[entries[s, r]] after each step s).
pub fn first_layer_steps(
    a1: &Tensor,
    table: &Tensor,
    entries: &Tensor,
    act: Act,
) -> Result<Tensor> {
    let (rows, h1) = a1.dims2()?;
    let (steps, entry_rows) = entries.dims2()?;
    let (table_rows, table_h1) = table.dims2()?;
    if entry_rows != rows || table_h1 != h1 {
        candle_core::bail!(
            "deepnade steps: a1 {:?}, table {:?}, entries {:?} do not fit",
            a1.dims(),
            table.dims(),
            entries.dims()
        );
    }
    #[cfg(feature = "cuda")]
    if a1.device().is_cuda() {
        return cuda::first_layer_steps(a1, table, entries, act, steps);
    }
    let device = a1.device().clone();
    let a1v = host_f32(a1)?;
    let tv = host_f32(table)?;
    let ev = host_u32(entries)?;
    let mut out = vec![0f32; (steps + 1) * rows * h1];
    for r in 0..rows {
        let mut a = a1v[r * h1..(r + 1) * h1].to_vec();
        for s in 0..steps {
            let row = s * rows + r;
            for (o, &x) in out[row * h1..(row + 1) * h1].iter_mut().zip(&a) {
                *o = act_f32(act, x);
            }
            let e = ev[row] as usize;
            if e >= table_rows {
                candle_core::bail!("deepnade steps: entry {e} of a table of {table_rows} rows");
            }
            for (x, &t) in a.iter_mut().zip(&tv[e * h1..(e + 1) * h1]) {
                *x += t;
            }
        }
        let row = steps * rows + r;
        out[row * h1..(row + 1) * h1].copy_from_slice(&a);
    }
    Tensor::from_vec(out, ((steps + 1) * rows, h1), &Device::Cpu)?.to_device(&device)
}

/// One output unit per row of `z` (J, width): V[dims[j]] . u_j + c[dims[j]] with u_j =
/// g(z_j + bias) when `bias` is given, else z_j (already the top layer's activations).
/// `v` (n, width), `c` (n), `dims` (J) u32. Returns (J) f32.
pub fn output_units(
    z: &Tensor,
    bias: Option<&Tensor>,
    v: &Tensor,
    c: &Tensor,
    dims: &Tensor,
    act: Act,
) -> Result<Tensor> {
    let (rows, width) = z.dims2()?;
    let (n, v_width) = v.dims2()?;
    if v_width != width || dims.dims1()? != rows || c.dims1()? != n {
        candle_core::bail!(
            "deepnade steps: z {:?}, V {:?}, c {:?}, dims {:?} do not fit",
            z.dims(),
            v.dims(),
            c.dims(),
            dims.dims()
        );
    }
    if let Some(b) = bias {
        if b.dims1()? != width {
            candle_core::bail!("deepnade steps: bias {:?} for width {width}", b.dims());
        }
    }
    #[cfg(feature = "cuda")]
    if z.device().is_cuda() {
        return cuda::output_units(z, bias, v, c, dims, act);
    }
    let device = z.device().clone();
    let (zv, vv, cv, dv) = (host_f32(z)?, host_f32(v)?, host_f32(c)?, host_u32(dims)?);
    let bv = bias.map(host_f32).transpose()?;
    let mut out = Vec::with_capacity(rows);
    for (j, &d) in dv.iter().enumerate() {
        let d = d as usize;
        if d >= n {
            candle_core::bail!("deepnade steps: dimension {d} of n = {n}");
        }
        let zj = &zv[j * width..(j + 1) * width];
        let vd = &vv[d * width..(d + 1) * width];
        let dot: f32 = match &bv {
            Some(b) => zj
                .iter()
                .zip(b)
                .zip(vd)
                .map(|((&x, &b), &w)| w * act_f32(act, x + b))
                .sum(),
            None => zj.iter().zip(vd).map(|(&x, &w)| w * x).sum(),
        };
        out.push(dot + cv[d]);
    }
    Tensor::from_vec(out, rows, &Device::Cpu)?.to_device(&device)
}

/// The log-likelihoods of R walks before a block: zeros (R) f64, on the device where
/// [`log_lik`] keeps them (CUDA, else the host).
pub fn log_lik_start(rows: usize, device: &Device) -> Result<Tensor> {
    let home = if device.is_cuda() {
        device.clone()
    } else {
        Device::Cpu
    };
    Tensor::zeros(rows, DType::F64, &home)
}

/// `ll` (R) f64 plus, per walk r, the sum over the block's steps s (in order) of
/// x l - softplus(l) with l = logits[s, r] ((S, R) f32) and x = 1 where entries[s, r] >= n;
/// an entry >= 2n (the walk has ended) adds nothing. In f64, stable for any l.
pub fn log_lik(ll: &Tensor, logits: &Tensor, entries: &Tensor, n: usize) -> Result<Tensor> {
    let (steps, rows) = entries.dims2()?;
    if logits.dims() != entries.dims() || ll.dims1()? != rows {
        candle_core::bail!(
            "deepnade steps: ll {:?}, logits {:?}, entries {:?} do not fit",
            ll.dims(),
            logits.dims(),
            entries.dims()
        );
    }
    #[cfg(feature = "cuda")]
    if ll.device().is_cuda() {
        return cuda::log_lik(ll, logits, entries, n, steps);
    }
    let mut sums = ll.to_device(&Device::Cpu)?.to_vec1::<f64>()?;
    let (lv, ev) = (host_f32(logits)?, host_u32(entries)?);
    for (r, sum) in sums.iter_mut().enumerate() {
        for s in 0..steps {
            let e = ev[s * rows + r] as usize;
            if e >= 2 * n {
                continue;
            }
            let x = if e >= n { 1.0 } else { 0.0 };
            let l = lv[s * rows + r] as f64;
            *sum += x * l - (l.max(0.0) + (-l.abs()).exp().ln_1p());
        }
    }
    Tensor::from_vec(sums, rows, &Device::Cpu)?.to_device(ll.device())
}

fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

fn host_u32(t: &Tensor) -> Result<Vec<u32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::U32)?
        .flatten_all()?
        .to_vec1::<u32>()
}

#[cfg(feature = "cuda")]
mod cuda {
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{
        CudaSlice, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
    };
    use candle_core::cuda_backend::{CudaDType, WrapErr};
    use candle_core::op::BackpropOp;
    use candle_core::{CudaDevice, CudaStorage, Result, Shape, Storage, Tensor};

    use super::{act_code, Act};

    const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/deepnade.ptx"));
    const MODULE: &str = "nade_deepnade_steps";
    /// Threads per block of `deepnade_first_layer` (units of one walk per block).
    const FIRST_THREADS: usize = 256;
    /// Warps per block of `deepnade_output` (one row each).
    const OUTPUT_WARPS: usize = 8;

    /// A contiguous copy (when needed) of `t` and its storage, as a view of `T` elements.
    struct Input {
        tensor: Tensor,
    }

    impl Input {
        fn new(t: &Tensor) -> Result<Self> {
            Ok(Self {
                tensor: t.detach().contiguous()?,
            })
        }

        fn with_view<T: CudaDType + DeviceRepr, R>(
            &self,
            what: &str,
            f: impl FnOnce(&CudaDevice, CudaView<'_, T>) -> Result<R>,
        ) -> Result<R> {
            let (storage, layout) = self.tensor.storage_and_layout();
            let Storage::Cuda(s) = &*storage else {
                candle_core::bail!("deepnade steps: {what} must be on the CUDA device");
            };
            let Some((start, end)) = layout.contiguous_offsets() else {
                candle_core::bail!("deepnade steps: {what} is not contiguous");
            };
            let Ok(slice) = s.as_cuda_slice::<T>() else {
                candle_core::bail!("deepnade steps: {what} has dtype {:?}", s.dtype());
            };
            f(&s.device, slice.slice(start..end))
        }
    }

    fn wrap<T: CudaDType + DeviceRepr>(
        dev: &CudaDevice,
        slice: CudaSlice<T>,
        shape: impl Into<Shape>,
    ) -> Tensor {
        Tensor::from_storage(
            Storage::Cuda(CudaStorage::wrap_cuda_slice(slice, dev.clone())),
            shape,
            BackpropOp::none(),
            false,
        )
    }

    fn int(v: usize, what: &str) -> Result<i32> {
        i32::try_from(v)
            .map_err(|_| candle_core::Error::Msg(format!("deepnade steps: {what} = {v} too large")))
    }

    fn blocks(count: usize) -> Result<u32> {
        match u32::try_from(count) {
            Ok(b) if b > 0 && b <= i32::MAX as u32 => Ok(b),
            _ => candle_core::bail!("deepnade steps: grid of {count} blocks out of range"),
        }
    }

    fn config(grid: u32, threads: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (grid, 1, 1),
            block_dim: (threads as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn function(
        dev: &CudaDevice,
        name: &str,
    ) -> Result<candle_core::cuda_backend::cudarc::driver::CudaFunction> {
        Ok(dev
            .get_or_load_custom_func(name, MODULE, PTX)?
            .into_cuda_function())
    }

    pub(super) fn first_layer_steps(
        a1: &Tensor,
        table: &Tensor,
        entries: &Tensor,
        act: Act,
        steps: usize,
    ) -> Result<Tensor> {
        let (rows, h1) = a1.dims2()?;
        let (a1, table, entries) = (
            Input::new(&a1.to_dtype(candle_core::DType::F32)?)?,
            Input::new(&table.to_dtype(candle_core::DType::F32)?)?,
            Input::new(&entries.to_dtype(candle_core::DType::U32)?)?,
        );
        let (rows_i, h1_i, steps_i) = (int(rows, "rows")?, int(h1, "h1")?, int(steps, "steps")?);
        let len = (steps + 1) * rows * h1;
        a1.with_view::<f32, _>("a1", |dev, av| {
            table.with_view::<f32, _>("table", |_, tv| {
                entries.with_view::<u32, _>("entries", |_, ev| {
                    // SAFETY: the kernel writes every element of out (each (row, k < h1)).
                    let mut out = unsafe { dev.alloc::<f32>(len.max(1)) }?;
                    if rows > 0 && h1 > 0 {
                        let chunks = h1.div_ceil(FIRST_THREADS);
                        let f = function(dev, "deepnade_first_layer")?;
                        let stream = dev.cuda_stream();
                        let mut launch = stream.launch_builder(&f);
                        launch.arg(&av);
                        launch.arg(&tv);
                        launch.arg(&ev);
                        launch.arg(&mut out);
                        launch.arg(&rows_i);
                        launch.arg(&h1_i);
                        launch.arg(&steps_i);
                        let code = act_code(act);
                        launch.arg(&code);
                        // SAFETY: the arguments match the kernel's signature; the entries are
                        // rows of the table (the model writes them), every other index is
                        // below the shapes.
                        unsafe { launch.launch(config(blocks(rows * chunks)?, FIRST_THREADS)) }
                            .w()?;
                    }
                    Ok(wrap(dev, out, ((steps + 1) * rows, h1)))
                })
            })
        })
    }

    pub(super) fn output_units(
        z: &Tensor,
        bias: Option<&Tensor>,
        v: &Tensor,
        c: &Tensor,
        dims: &Tensor,
        act: Act,
    ) -> Result<Tensor> {
        let (rows, width) = z.dims2()?;
        let f32_in = |t: &Tensor| Input::new(&t.to_dtype(candle_core::DType::F32)?);
        let (z, v, c) = (f32_in(z)?, f32_in(v)?, f32_in(c)?);
        // Without a bias the kernel never reads it: c stands in.
        let bias = bias.map(f32_in).transpose()?;
        let has_bias = i32::from(bias.is_some());
        let bias = bias.as_ref().unwrap_or(&c);
        let dims = Input::new(&dims.to_dtype(candle_core::DType::U32)?)?;
        let (rows_i, width_i) = (int(rows, "rows")?, int(width, "width")?);
        z.with_view::<f32, _>("z", |dev, zv| {
            bias.with_view::<f32, _>("bias", |_, bv| {
                v.with_view::<f32, _>("V", |_, vv| {
                    c.with_view::<f32, _>("c", |_, cv| {
                        dims.with_view::<u32, _>("dims", |_, dv| {
                            // SAFETY: the kernel writes every one of the rows outputs.
                            let mut out = unsafe { dev.alloc::<f32>(rows.max(1)) }?;
                            if rows > 0 {
                                let f = function(dev, "deepnade_output")?;
                                let stream = dev.cuda_stream();
                                let mut launch = stream.launch_builder(&f);
                                launch.arg(&zv);
                                launch.arg(&bv);
                                launch.arg(&has_bias);
                                launch.arg(&vv);
                                launch.arg(&cv);
                                launch.arg(&dv);
                                launch.arg(&mut out);
                                launch.arg(&rows_i);
                                launch.arg(&width_i);
                                let code = act_code(act);
                                launch.arg(&code);
                                let grid = blocks(rows.div_ceil(OUTPUT_WARPS))?;
                                // SAFETY: the arguments match the kernel's signature; dims
                                // are dimensions below n (the model's orderings).
                                unsafe { launch.launch(config(grid, OUTPUT_WARPS * 32)) }.w()?;
                            }
                            Ok(wrap(dev, out, rows))
                        })
                    })
                })
            })
        })
    }

    pub(super) fn log_lik(
        ll: &Tensor,
        logits: &Tensor,
        entries: &Tensor,
        n: usize,
        steps: usize,
    ) -> Result<Tensor> {
        let rows = ll.dims1()?;
        let ll = Input::new(ll)?;
        let logits = Input::new(&logits.to_dtype(candle_core::DType::F32)?)?;
        let entries = Input::new(&entries.to_dtype(candle_core::DType::U32)?)?;
        let (rows_i, steps_i, n_i) = (int(rows, "rows")?, int(steps, "steps")?, int(n, "n")?);
        ll.with_view::<f64, _>("ll", |dev, llv| {
            logits.with_view::<f32, _>("logits", |_, lv| {
                entries.with_view::<u32, _>("entries", |_, ev| {
                    // SAFETY: the kernel writes every one of the rows outputs.
                    let mut out = unsafe { dev.alloc::<f64>(rows.max(1)) }?;
                    if rows > 0 {
                        let f = function(dev, "deepnade_log_lik")?;
                        let stream = dev.cuda_stream();
                        let mut launch = stream.launch_builder(&f);
                        launch.arg(&llv);
                        launch.arg(&lv);
                        launch.arg(&ev);
                        launch.arg(&mut out);
                        launch.arg(&rows_i);
                        launch.arg(&steps_i);
                        launch.arg(&n_i);
                        // SAFETY: the arguments match the kernel's signature; every index is
                        // below the shapes.
                        unsafe { launch.launch(config(blocks(rows.div_ceil(256))?, 256)) }.w()?;
                    }
                    Ok(wrap(dev, out, rows))
                })
            })
        })
    }
}
