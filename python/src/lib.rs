//! `nade._nade`: the Rust engine of nade for Python (pyo3, abi3). The package users import is
//! python/nade/__init__.py: it checks and converts numpy arrays, and hands this module plain
//! bytes (0/1 values as u8, row-major) with their shape; results come back as bytes that
//! numpy views without another copy. Every long call releases the GIL; errors are Python
//! exceptions with the CLI's one-line messages (FileNotFoundError, ValueError for bad input,
//! RuntimeError otherwise), and a panic inside nade becomes a RuntimeError, never an abort.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use candle_core::{DType, Device};
use pyo3::exceptions::{PyFileNotFoundError, PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use nade::checkpoint::{self, Loaded};
use nade::data::BinaryDataset;
use nade::device::DeviceChoice;
use nade::image_grid;
use nade::keep::KeepSpec;
use nade::memory;
use nade::models::RunChoices;
use nade::progress::Progress;
use nade::sample::{self, WalkOrder};
use nade::tile_shape::TileShape;
use nade::train::Progress as TrainProgress;
use nade::train_overrides::{ConfigSource, TrainOverrides};

// The extension's Rust allocations go through mimalloc, as the nade binary's do (src/main.rs:
// candle's many short-lived buffers); with the system allocator the 10,000 test images of
// NADE-500 took 13% longer than `nade eval`. Python's own allocations are untouched, and
// every buffer handed to Python is copied into Python's memory first.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Images per batch of sampling and completion: the CLI's default `--batch`, so that a seed
/// gives the images `nade sample` and `nade complete` give.
const SAMPLE_BATCH: usize = 100;

/// An anyhow error as the Python exception a user expects: FileNotFoundError where a file is
/// missing, else RuntimeError, with the CLI's one-line message (the causes joined by ": ").
fn py_err(e: anyhow::Error) -> PyErr {
    let message = format!("{e:#}");
    let missing = e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if missing {
        PyFileNotFoundError::new_err(message)
    } else {
        PyRuntimeError::new_err(message)
    }
}

/// Runs `f` with the GIL released; an error becomes the matching exception, a panic a
/// RuntimeError (the interpreter goes on). `f` runs on the calling Python thread, which is
/// not one of the CPU pool's threads, so each of its parallel loops is handed to the pool
/// and waited for: the cheapest way for a short call (one batch).
fn released<T: Send>(py: Python<'_>, f: impl FnOnce() -> anyhow::Result<T> + Send) -> PyResult<T> {
    py.allow_threads(|| catch_unwind(AssertUnwindSafe(f)))
        .map_err(|panic| {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown".into());
            PyRuntimeError::new_err(format!("nade: internal error (a panic: {what})"))
        })?
        .map_err(py_err)
}

/// [`released`] for a call of `batches` batches: past one, `f` runs on a worker of the CPU
/// pool, so the call is handed over once and its loops run where they start, as the CLI's
/// main thread (a member of the pool) runs them. A hand-off per loop costs tens of
/// microseconds: on the 10,000 test images, 9% of NADE-500's evaluation; for one batch the
/// one hand-off of the whole call is the larger cost.
fn released_batches<T: Send>(
    py: Python<'_>,
    batches: usize,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> PyResult<T> {
    match batches > 1 {
        true => released(py, || rayon::scope(|_| f())),
        false => released(py, f),
    }
}

/// The CPU threads of this process, fixed by the first call that computes (0: all cores).
static THREADS: OnceLock<usize> = OnceLock::new();

/// Starts the CPU pools with `wanted` threads unless a call did already; returns the count
/// in force and whether this call chose it.
fn start_threads(wanted: usize) -> PyResult<(usize, bool)> {
    nade::threads::validate(wanted, "threads").map_err(|e| PyValueError::new_err(e.to_string()))?;
    if wanted > 0 {
        nade::threads::check_against_cores(wanted, nade::threads::cores(), "threads")
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    let mut started = false;
    let chosen = *THREADS.get_or_init(|| {
        started = true;
        nade::threads::quiet_candle_pool();
        if wanted > 0 {
            let value = wanted.to_string();
            std::env::set_var("RAYON_NUM_THREADS", &value);
            std::env::set_var("CANDLE_NUM_THREADS", &value);
        }
        // Python's threads call in from outside the pool, so no use_current_thread (the
        // CLI's choice) here. It fails only if a pool started already, and then that serves.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(wanted)
            .build_global();
        wanted
    });
    Ok((chosen, started))
}

/// `nade.load(..., threads=)`: None takes what is in force (all cores if nothing is); a
/// count other than the one in force is an error, not a silent change.
fn init_threads(threads: Option<usize>) -> PyResult<()> {
    let (chosen, started) = start_threads(threads.unwrap_or(0))?;
    match threads {
        Some(wanted) if !started && wanted != chosen => Err(PyValueError::new_err(format!(
            "threads={wanted}: this process already computes with threads={chosen} (the CPU \
             thread pool is set once per process, by the first nade call)"
        ))),
        _ => Ok(()),
    }
}

/// A run file's train.threads: applies if no nade call has started the pool yet, else the
/// pool in force serves (a file's value is a default, not a demand).
fn init_threads_once(threads: usize) -> PyResult<()> {
    start_threads(threads).map(|_| ())
}

fn parse_device_choice(device: &str) -> PyResult<DeviceChoice> {
    Ok(match device {
        "cpu" => DeviceChoice::Cpu,
        "cuda" => DeviceChoice::Cuda,
        "metal" => DeviceChoice::Metal,
        "auto" => DeviceChoice::Auto,
        other => {
            return Err(PyValueError::new_err(format!(
                "device={other:?}: expected \"cpu\", \"cuda\", \"metal\" or \"auto\""
            )))
        }
    })
}

fn parse_device(device: &str) -> PyResult<Device> {
    nade::device::select(parse_device_choice(device)?)
        .map_err(|e| PyValueError::new_err(format!("{e:#}")))
}

fn parse_order(order: &str) -> PyResult<WalkOrder> {
    order
        .parse()
        .map_err(|e| PyValueError::new_err(format!("order={order:?}: {e}")))
}

/// 0/1 bytes of `rows` rows as a data set, checked by the Python side already.
fn dataset(x: &[u8], rows: usize, n: usize) -> anyhow::Result<BinaryDataset> {
    anyhow::ensure!(
        x.len() == rows * n,
        "{} values for {rows} rows of n = {n}",
        x.len()
    );
    BinaryDataset::new(n, x.to_vec())
}

/// Needs below this pass unchecked: reading /proc/meminfo and the cgroup's files costs about
/// 70 us, more than a whole evaluation of one image; a machine without 64 MiB free has failed
/// before this call.
const UNCHECKED_NEED_BYTES: f64 = 64.0 * 1024.0 * 1024.0;

/// [`memory::check`] of needs that could fail: a clear error instead of an abort of the
/// interpreter by the allocator.
fn check_memory(need: memory::Need) -> anyhow::Result<()> {
    match need.bytes < UNCHECKED_NEED_BYTES {
        true => Ok(()),
        false => memory::check(&need),
    }
}

/// Refuses a sampling or completion of `count` vectors that would not fit in memory, as the
/// CLI does (a clear error, not an abort of the interpreter).
fn check_sampling_memory(
    loaded: &Loaded,
    count: usize,
    device: &Device,
    what: String,
) -> anyhow::Result<()> {
    check_memory(memory::sampling(&memory::SamplingJob {
        cfg: loaded.model.config(),
        count,
        batch: SAMPLE_BATCH,
        workers: sample::workers(device, count.div_ceil(SAMPLE_BATCH)),
        grid_pixels: 0,
        amat: false,
        count_flag: what,
    }))
}

fn f64_bytes(values: &[f64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// The run-time choices of an evaluation: (MADE's `masks`, deep NADE's `orders`).
type Choices = (Option<usize>, Option<usize>);

/// log p(x_kept) per row under the first component and under the whole model (f64 bytes
/// each), and the number of components.
type KeptBytes<'py> = (Bound<'py, PyByteArray>, Bound<'py, PyByteArray>, usize);

/// A checkpoint loaded on a device; the Python `nade.Model` holds one.
#[pyclass(frozen, module = "nade._nade")]
struct Checkpoint {
    path: PathBuf,
    device: Device,
    loaded: Arc<Loaded>,
    /// The same file loaded with run-time choices (`masks`, `orders`), made on first use.
    variants: Mutex<HashMap<Choices, Arc<Loaded>>>,
}

impl Checkpoint {
    fn with_choices(
        &self,
        masks: Option<usize>,
        orders: Option<usize>,
    ) -> anyhow::Result<Arc<Loaded>> {
        if masks.is_none() && orders.is_none() {
            return Ok(self.loaded.clone());
        }
        let mut variants = self
            .variants
            .lock()
            .map_err(|_| anyhow::anyhow!("a thread panicked holding the model's variants"))?;
        if let Some(found) = variants.get(&(masks, orders)) {
            return Ok(found.clone());
        }
        let choices = RunChoices {
            kernel: None,
            masks,
            orders,
        };
        let loaded = Arc::new(checkpoint::load_with(&self.path, &self.device, &choices)?);
        variants.insert((masks, orders), loaded.clone());
        Ok(loaded)
    }

    fn n(&self) -> usize {
        self.loaded.model.config().n()
    }

    /// The batches of an evaluation of `rows` rows.
    fn eval_batches(&self, rows: usize) -> usize {
        rows.div_ceil(self.loaded.model.config().eval_batch().max(1))
    }

    /// Runs `pass(model, data, batch)` over the `rows` rows of `x` as `nade eval` would: the
    /// model with those masks / orderings, its evaluation batch, the memory check first.
    fn evaluate<T>(
        &self,
        x: &[u8],
        rows: usize,
        masks: Option<usize>,
        orders: Option<usize>,
        pass: impl FnOnce(&dyn nade::models::Autoregressive, &BinaryDataset, usize) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let loaded = self.with_choices(masks, orders)?;
        let model = loaded.model.as_ref();
        let data = dataset(x, rows, self.n())?;
        let batch = model.config().eval_batch();
        check_memory(memory::evaluation(
            model.config(),
            batch,
            rows,
            &self.device,
        ))?;
        pass(model, &data, batch)
    }
}

#[pymethods]
impl Checkpoint {
    #[new]
    #[pyo3(signature = (path, device = "auto", threads = None))]
    fn new(py: Python<'_>, path: PathBuf, device: &str, threads: Option<usize>) -> PyResult<Self> {
        init_threads(threads)?;
        let device = parse_device(device)?;
        let loaded = released(py, || checkpoint::load(&path, &device, None))?;
        Ok(Self {
            path,
            device,
            loaded: Arc::new(loaded),
            variants: Mutex::new(HashMap::new()),
        })
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.loaded.model.config().kind()
    }

    #[getter(n)]
    fn py_n(&self) -> usize {
        self.n()
    }

    /// The model's config as JSON (what the checkpoint stores).
    #[getter]
    fn config_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.loaded.model.config().structure())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))
    }

    #[getter]
    fn num_parameters(&self) -> usize {
        self.loaded.model.config().num_params()
    }

    #[getter]
    fn describe(&self) -> String {
        self.loaded.model.config().describe()
    }

    #[getter]
    fn device(&self) -> &'static str {
        nade::device::name(&self.device)
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// log p(x) per row, f64 bytes.
    #[pyo3(signature = (x, rows, masks = None, orders = None))]
    fn log_prob<'py>(
        &self,
        py: Python<'py>,
        x: &[u8],
        rows: usize,
        masks: Option<usize>,
        orders: Option<usize>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let values = released_batches(py, self.eval_batches(rows), || {
            self.evaluate(x, rows, masks, orders, |model, data, batch| {
                let log_p = nade::eval::log_probs(model, data, batch, &self.device, |_, _| ())?;
                Ok(log_p.into_iter().map(f64::from).collect::<Vec<f64>>())
            })
        })?;
        Ok(PyByteArray::new(py, &f64_bytes(&values)))
    }

    /// (mean NLL in nats, its standard error) as `nade eval` reports them.
    #[pyo3(signature = (x, rows, masks = None, orders = None))]
    fn nll(
        &self,
        py: Python<'_>,
        x: &[u8],
        rows: usize,
        masks: Option<usize>,
        orders: Option<usize>,
    ) -> PyResult<(f64, f64)> {
        released_batches(py, self.eval_batches(rows), || {
            self.evaluate(x, rows, masks, orders, |model, data, batch| {
                let summary = nade::eval::nll(model, data, batch, &self.device, false)?;
                Ok((summary.nll_nats, summary.std_err))
            })
        })
    }

    /// p(x_i = 1 | x_<i) in the model's order, f32 bytes (rows, n).
    fn conditionals<'py>(
        &self,
        py: Python<'py>,
        x: &[u8],
        rows: usize,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let n = self.n();
        let values = released_batches(py, self.eval_batches(rows), || {
            let model = self.loaded.model.as_ref();
            let data = dataset(x, rows, n)?;
            let batch = model.config().eval_batch();
            let mut out = Vec::with_capacity(rows * n);
            for first in (0..rows).step_by(batch.max(1)) {
                let last = (first + batch).min(rows);
                let logits = model.logits(&data.tensor_range(first, last, &self.device)?)?;
                let logits = logits
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                out.extend(logits.into_iter().map(|l| {
                    let t = (-l.abs()).exp();
                    if l >= 0.0 {
                        1.0 / (1.0 + t)
                    } else {
                        t / (1.0 + t)
                    }
                }));
            }
            Ok(out)
        })?;
        Ok(PyByteArray::new(py, &f32_bytes(&values)))
    }

    /// `count` images as `nade sample --seed SEED --order ORDER`, u8 bytes (count, n).
    #[pyo3(signature = (count, seed = 0, order = "stored"))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        count: usize,
        seed: u64,
        order: &str,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let order = parse_order(order)?;
        let images = released_batches(py, count.div_ceil(SAMPLE_BATCH), || {
            check_sampling_memory(&self.loaded, count, &self.device, format!("count={count}"))?;
            let samples = sample::sample_in_order(
                self.loaded.model.as_ref(),
                count,
                SAMPLE_BATCH,
                seed,
                order,
                &self.device,
                &Progress::Hidden,
            )?;
            Ok(samples.images.pixels().to_vec())
        })?;
        Ok(PyByteArray::new(py, &images))
    }

    /// `samples` completions of each row of x keeping `mask` (0/1 bytes, (rows, n)), as
    /// `nade complete`; u8 bytes (rows * samples, n), row-major by image then sample.
    #[pyo3(signature = (x, rows, mask, samples = 1, seed = 0, order = None))]
    #[allow(clippy::too_many_arguments)]
    fn complete<'py>(
        &self,
        py: Python<'py>,
        x: &[u8],
        rows: usize,
        mask: &[u8],
        samples: usize,
        seed: u64,
        order: Option<&str>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let model = self.loaded.model.as_ref();
        let order = match order {
            Some(o) => parse_order(o)?,
            None => WalkOrder::completion_default(model),
        };
        let n = self.n();
        let (given, masks) = (
            dataset(x, rows, n).map_err(|e| PyValueError::new_err(e.to_string()))?,
            dataset(mask, rows, n).map_err(|e| PyValueError::new_err(e.to_string()))?,
        );
        sample::check_conditioning(model, &masks)
            .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        let images = released_batches(py, (rows * samples).div_ceil(SAMPLE_BATCH), || {
            let what = format!("{rows} images x samples={samples}");
            check_sampling_memory(&self.loaded, rows * samples, &self.device, what)?;
            let done = sample::complete_in_order(
                model,
                &given,
                &masks,
                samples,
                SAMPLE_BATCH,
                seed,
                order,
                &self.device,
            )?;
            Ok(done.pixels().to_vec())
        })?;
        Ok(PyByteArray::new(py, &images))
    }

    /// log p(x_kept) per row: (under the first ordering or mask, the model's, components),
    /// f64 bytes each; None where the model does not give it.
    fn log_prob_kept<'py>(
        &self,
        py: Python<'py>,
        x: &[u8],
        rows: usize,
        mask: &[u8],
    ) -> PyResult<Option<KeptBytes<'py>>> {
        let n = self.n();
        let model = self.loaded.model.as_ref();
        let masks = dataset(mask, rows, n).map_err(|e| PyValueError::new_err(e.to_string()))?;
        sample::check_conditioning(model, &masks)
            .map_err(|e| PyValueError::new_err(format!("{e:#}")))?;
        let kept = released(py, || {
            let data = dataset(x, rows, n)?;
            let kept = model.kept_log_prob(
                &data.tensor_range(0, rows, &self.device)?,
                &masks.tensor_range(0, rows, &self.device)?,
            )?;
            Ok(kept.map(|k| (f64_bytes(&k.first), f64_bytes(&k.model), k.components)))
        })?;
        Ok(kept.map(|(first, whole, k)| {
            (
                PyByteArray::new(py, &first),
                PyByteArray::new(py, &whole),
                k,
            )
        }))
    }
}

/// The 0/1 masks (u8 bytes, (rows, n)) of a `--keep` spec for `rows` vectors of n values.
#[pyfunction]
#[pyo3(signature = (spec, rows, n, seed = 0, shape = None))]
fn keep_masks<'py>(
    py: Python<'py>,
    spec: &str,
    rows: usize,
    n: usize,
    seed: u64,
    shape: Option<(usize, usize)>,
) -> PyResult<Bound<'py, PyByteArray>> {
    let bad = |e: anyhow::Error| PyValueError::new_err(format!("keep={spec:?}: {e:#}"));
    let parsed: KeepSpec = spec
        .parse()
        .map_err(|e| PyValueError::new_err(format!("keep={spec:?}: {e}")))?;
    let shape = parse_shape(shape)?;
    let shape = TileShape::for_model(shape, n).map_err(bad)?;
    let masks = parsed.masks(shape, rows, seed).map_err(bad)?;
    Ok(PyByteArray::new(py, masks.pixels()))
}

/// (u8 bytes, rows, n) of a .amat file.
#[pyfunction]
fn read_amat<'py>(
    py: Python<'py>,
    path: PathBuf,
) -> PyResult<(Bound<'py, PyByteArray>, usize, usize)> {
    let data = released(py, || nade::data::amat::read_amat(&path))?;
    Ok((PyByteArray::new(py, data.pixels()), data.len(), data.n()))
}

/// Writes 0/1 rows to a .amat file (atomically).
#[pyfunction]
fn write_amat(py: Python<'_>, path: PathBuf, x: &[u8], rows: usize, n: usize) -> PyResult<()> {
    let data = dataset(x, rows, n).map_err(|e| PyValueError::new_err(e.to_string()))?;
    released(py, || nade::data::amat::write_amat(&path, &data))
}

/// A PNG grid of `rows` vectors of n values: 0/1 bytes, or with `probs` f32 Bernoulli means
/// (native-endian bytes) drawn as gray levels, as `nade sample [--probs]` draws them; each
/// tile `shape` (h, w) or the most nearly square layout of n, each pixel `scale` x `scale`.
#[pyfunction]
#[pyo3(signature = (path, values, rows, n, probs = false, scale = 2, shape = None, columns = None))]
#[allow(clippy::too_many_arguments)]
fn save_grid(
    py: Python<'_>,
    path: PathBuf,
    values: &[u8],
    rows: usize,
    n: usize,
    probs: bool,
    scale: u32,
    shape: Option<(usize, usize)>,
    columns: Option<usize>,
) -> PyResult<()> {
    let bad = |e: anyhow::Error| PyValueError::new_err(format!("{e:#}"));
    let shape = TileShape::for_model(parse_shape(shape)?, n).map_err(bad)?;
    image_grid::check_png_name("path", &path).map_err(bad)?;
    if !(1..=32).contains(&scale) {
        return Err(PyValueError::new_err(format!(
            "scale={scale}: expected 1 to 32"
        )));
    }
    let width = if probs { 4 } else { 1 };
    if values.len() != rows * n * width {
        return Err(PyValueError::new_err(format!(
            "{} bytes for {rows} rows of n = {n}",
            values.len()
        )));
    }
    let columns = columns
        .unwrap_or_else(|| image_grid::near_square_columns(rows))
        .max(1);
    let grid_rows = rows.div_ceil(columns);
    let extent = image_grid::grid_extent(grid_rows, columns, shape, scale);
    image_grid::check_size(extent, &format!("{rows} vectors, scale={scale}")).map_err(bad)?;
    released(py, || {
        let tiles: Vec<Vec<u8>> = match probs {
            false => values
                .chunks(n.max(1))
                .map(image_grid::binary_tile)
                .collect(),
            true => values
                .chunks(4 * n.max(1))
                .map(|row| {
                    let p: Vec<f32> = row
                        .chunks_exact(4)
                        .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    image_grid::prob_tile(&p)
                })
                .collect(),
        };
        let img = image_grid::render(&tiles, shape, columns, scale)?;
        image_grid::write_png(&path, &img)
    })
}

/// `shape=(h, w)` as a tile shape (checked against n by `TileShape::for_model`).
fn parse_shape(shape: Option<(usize, usize)>) -> PyResult<Option<TileShape>> {
    shape
        .map(|(h, w)| {
            format!("{h}x{w}")
                .parse::<TileShape>()
                .map_err(|e| PyValueError::new_err(format!("shape=({h}, {w}): {e}")))
        })
        .transpose()
}

/// Trains as `nade train` does: `config` is a run file's path (`is_path`) or its TOML text,
/// or None with `resume` (the folder of the run to continue; `resume_here`: the run in the
/// config's own output folder); the other arguments override the file's values as the
/// CLI's flags do. Returns the run's summary as JSON. Ctrl-C stops
/// between minibatches with every file saved (resume with `resume=` the run's folder), then
/// raises KeyboardInterrupt.
#[pyfunction]
#[pyo3(signature = (config, is_path, resume = None, resume_here = false, data = None, dataset = None, out = None, epochs = None, seed = None, device = None, progress = true, test = true, force = false))]
#[allow(clippy::too_many_arguments)]
fn train(
    py: Python<'_>,
    config: Option<String>,
    is_path: bool,
    resume: Option<PathBuf>,
    resume_here: bool,
    data: Option<PathBuf>,
    dataset: Option<String>,
    out: Option<PathBuf>,
    epochs: Option<usize>,
    seed: Option<u64>,
    device: Option<&str>,
    progress: bool,
    test: bool,
    force: bool,
) -> PyResult<String> {
    let device = device.map(parse_device_choice).transpose()?;
    let overrides = TrainOverrides {
        config: config.map(|c| match is_path {
            true => ConfigSource::File(PathBuf::from(c)),
            false => ConfigSource::Toml(c),
        }),
        resume,
        epochs,
        seed,
        device,
        out,
        data,
        dataset,
        ..Default::default()
    };
    let config_error = |e: anyhow::Error| {
        // A missing run file is FileNotFoundError; everything else about the config is a
        // bad value.
        let missing = e.chain().any(|cause| {
            cause
                .downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        });
        match missing {
            true => PyFileNotFoundError::new_err(format!("{e:#}")),
            false => PyValueError::new_err(format!("{e:#}")),
        }
    };
    let mut overrides = overrides;
    if resume_here {
        overrides.resume = Some(overrides.resolve().map_err(config_error)?.output.dir);
    }
    let cfg = overrides.resolve().map_err(config_error)?;
    // The process's CPU pool is set once: the run file's train.threads applies only if no
    // nade call has started it.
    init_threads_once(cfg.train.threads)?;
    let opts = nade::train::Options {
        resume: overrides.resume.is_some(),
        progress: if progress {
            TrainProgress::for_stderr()
        } else {
            TrainProgress::Off
        },
        test,
        force,
    };
    nade::interrupt::reset();
    let run = std::thread::spawn(move || {
        catch_unwind(AssertUnwindSafe(|| nade::train::run(&cfg, &opts)))
    });
    // Wait with the GIL released, taking it back every 50 ms so that Python sees Ctrl-C
    // (its SIGINT handler only sets a flag that check_signals reads).
    let mut interrupted = None;
    while !run.is_finished() {
        if interrupted.is_none() {
            if let Err(e) = py.check_signals() {
                nade::interrupt::request_stop();
                interrupted = Some(e);
            }
        }
        py.allow_threads(|| std::thread::sleep(Duration::from_millis(50)));
    }
    let result = run
        .join()
        .map_err(|_| PyRuntimeError::new_err("nade: the training thread ended unexpectedly"))?
        .map_err(|_| PyRuntimeError::new_err("nade: internal error (a panic while training)"))?;
    match (result, interrupted) {
        (Ok(summary), None) => {
            serde_json::to_string(&summary).map_err(|e| PyRuntimeError::new_err(e.to_string()))
        }
        (Err(e), Some(_)) if e.downcast_ref::<nade::interrupt::Interrupted>().is_some() => {
            Err(PyKeyboardInterrupt::new_err(format!("{e:#}")))
        }
        (_, Some(signal)) => Err(signal),
        (Err(e), None) => Err(py_err(e)),
    }
}

/// Whether this build has CUDA, Metal (the features it was built with).
#[pyfunction]
fn features() -> Vec<&'static str> {
    let mut out = Vec::new();
    if cfg!(feature = "cuda") {
        out.push("cuda");
    }
    if cfg!(feature = "metal") {
        out.push("metal");
    }
    out
}

#[pymodule]
fn _nade(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Checkpoint>()?;
    m.add_function(wrap_pyfunction!(keep_masks, m)?)?;
    m.add_function(wrap_pyfunction!(read_amat, m)?)?;
    m.add_function(wrap_pyfunction!(write_amat, m)?)?;
    m.add_function(wrap_pyfunction!(save_grid, m)?)?;
    m.add_function(wrap_pyfunction!(train, m)?)?;
    m.add_function(wrap_pyfunction!(features, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
