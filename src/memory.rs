//! Memory estimates before large allocations, and the check that refuses a job which cannot
//! fit: one clear line naming the size, the memory available and the flag or key to change,
//! instead of the kernel's OOM killer a minute later.
//!
//! The estimates count what a job is still to allocate (what it already holds, the loaded
//! data or checkpoint, is no longer in the available memory): for training the parameters,
//! their gradients, Adam's two moments, the batch working set of the model's kernel
//! ([`ModelConfig::working_floats`]) and the copies a checkpoint write makes; for evaluation
//! the batch working set; for sampling the batches in flight, the images and Bernoulli means
//! kept, and the PNG grid. They err low: for NADE-500 at batch 100 they come to 1/2 to 9/10
//! of the peak RSS `nade bench` measures (blocked training 1.6 of 2.4 GB, plain 2.1 of 2.4,
//! plain evaluation 0.9 of 1.8), so a job they refuse would not have fit, while one they pass
//! can still run out of memory.
//!
//! Available memory: Linux's MemAvailable (/proc/meminfo) and, when this process's cgroup (or
//! an ancestor) sets a memory limit, that limit's headroom, the smaller of the two. Elsewhere
//! nothing is known and nothing is refused. Only host memory is checked: on a GPU the device
//! reports its own out-of-memory error.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use candle_core::Device;

use crate::config::TrainSection;
use crate::models::{ModelConfig, Pass};

/// Bytes of one f32.
const F32: f64 = 4.0;

/// Memory a job needs, and what to change to need less.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    /// What the memory is for: "training", "evaluation", "sampling".
    pub job: &'static str,
    /// The estimated peak, in bytes.
    pub bytes: f64,
    /// The flag or key whose value drives the largest part, as the user wrote it:
    /// `model.hidden = 100000000`, `--count 10000000`.
    pub knob: String,
}

/// Memory the system can still give this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Available {
    pub bytes: u64,
    /// Where the number comes from, for the message.
    pub source: &'static str,
}

/// `need`, or an error when it exceeds the available memory: "{knob}: {job} needs about
/// {size} of memory, but {available} is available ({source}); lower {knob}".
pub fn check(need: &Need) -> Result<()> {
    match available() {
        Some(available) => check_against(need, &available),
        None => Ok(()),
    }
}

/// [`check`] against a given amount of available memory.
pub fn check_against(need: &Need, available: &Available) -> Result<()> {
    if need.bytes > available.bytes as f64 {
        let flag = need.knob.split([' ', '=']).next().unwrap_or_default();
        bail!(
            "{}: {} needs about {} of memory, but {} is available ({}); lower {flag}",
            need.knob,
            need.job,
            human_bytes(need.bytes),
            human_bytes(available.bytes as f64),
            available.source
        );
    }
    Ok(())
}

/// Training of `cfg` as `train` says, on `device`, with `train_len` training and
/// `valid_len` validation images already loaded. The peak is the largest of a step (the
/// gradients and the batch working set), a validation batch, and a checkpoint write, which
/// encodes the parameters and moments into one buffer and then the file's bytes into another.
pub fn training(
    cfg: &ModelConfig,
    train: &TrainSection,
    train_len: usize,
    valid_len: usize,
    device: &Device,
) -> Need {
    let params = cfg.num_params() as f64 * F32;
    let save = 2.0 * 3.0 * params;
    let working = |batch: usize, pass| cfg.working_floats(batch, pass, device) * F32;
    let step = working(
        train.batch_size.min(train_len.max(1)),
        Pass::Train { step: 0 },
    );
    let valid = working(train.eval_batch_size.min(valid_len.max(1)), Pass::Eval);
    // Where the model lives on a GPU, the host holds only the checkpoint write's copies.
    let on_host = |bytes: f64| if device.is_cpu() { bytes } else { 0.0 };
    // The parameters and Adam's two moments (SGD keeps one: this is its upper bound) stay;
    // the rest comes and goes.
    let bytes = on_host(3.0 * params) + save.max(on_host(params + step)).max(on_host(valid));
    // What grows with the model, and what grows with each batch size: the knob to name.
    let model_sized = on_host(3.0 * params + working(1, Pass::Train { step: 0 })) + save;
    let (step_batch, valid_batch) = (
        on_host(step - working(1, Pass::Train { step: 0 })),
        on_host(valid - working(1, Pass::Eval)),
    );
    let knob = if step_batch > model_sized.max(valid_batch) {
        format!("train.batch_size = {}", train.batch_size)
    } else if valid_batch > model_sized {
        format!("train.eval_batch_size = {}", train.eval_batch_size)
    } else {
        model_size_knob(cfg)
    };
    Need {
        job: "training",
        bytes,
        knob,
    }
}

/// The key that sets the model's size: `model.hidden`, or for FVSBN the data's dimension.
fn model_size_knob(cfg: &ModelConfig) -> String {
    match cfg.hidden() {
        Some(hidden) => format!("model.hidden = {hidden}"),
        None => format!("model.n = {} (the data's dimension)", cfg.n()),
    }
}

/// Evaluation of `images` images `batch` at a time (`--batch`) with a loaded model.
pub fn evaluation(cfg: &ModelConfig, batch: usize, images: usize, device: &Device) -> Need {
    let batch_bytes = cfg.working_floats(batch.min(images.max(1)), Pass::Eval, device) * F32;
    Need {
        job: "evaluation",
        bytes: if device.is_cpu() { batch_bytes } else { 0.0 },
        knob: format!("--batch {batch}"),
    }
}

/// What sampling (or completing) `count` images holds: `workers` batches of `batch` in
/// flight, the images and their Bernoulli means, the grid's tiles, image and PNG bytes
/// (`grid_pixels`, one byte each), and with `amat` the text written.
pub struct SamplingJob<'a> {
    pub cfg: &'a ModelConfig,
    pub count: usize,
    pub batch: usize,
    pub workers: usize,
    pub grid_pixels: u64,
    pub amat: bool,
    /// The flag that sets the count: `--count 100000` (complete: `--count 100 --samples 50`).
    pub count_flag: String,
}

/// Sampling or completion as `job` describes.
pub fn sampling(job: &SamplingJob) -> Need {
    let n = job.cfg.n() as f64;
    let batch = job.batch.min(job.count.max(1)) as f64;
    // Per batch: the uniforms, the (empty or kept) evidence, the drawn values and means on the
    // device and their host copies; the sampler's running state (B, hidden or n).
    let state = job.cfg.hidden().unwrap_or(job.cfg.n()) as f64;
    let per_batch = (7.0 * n + state) * batch * F32;
    let in_flight = job.workers.max(1) as f64 * per_batch;
    let count = job.count as f64;
    let kept = count * n * (1.0 + F32); // 0/1 bytes and f32 means
    let grid = count * n + 2.0 * job.grid_pixels as f64; // tiles, image, PNG bytes
    let amat = if job.amat { 2.0 * count * n } else { 0.0 };
    let knob = if in_flight > kept + grid.max(amat) {
        format!("--batch {}", job.batch)
    } else {
        job.count_flag.clone()
    };
    Need {
        job: "sampling",
        bytes: in_flight + kept + grid.max(amat),
        knob,
    }
}

/// The memory this process can still get, where it can be known (Linux).
pub fn available() -> Option<Available> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let system = Available {
        bytes: mem_available(&meminfo)?,
        source: "MemAvailable in /proc/meminfo",
    };
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| cgroup_headroom(&text, Path::new("/sys/fs/cgroup")));
    Some(match cgroup {
        Some(bytes) if bytes < system.bytes => Available {
            bytes,
            source: "the memory limit of this process's cgroup",
        },
        _ => system,
    })
}

/// MemAvailable of a /proc/meminfo text, in bytes.
pub fn mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Limits at or above this are "no limit" (cgroup v1 writes 2^63 rounded down to a page).
const NO_LIMIT: u64 = 1 << 60;

/// The smallest limit minus usage over this process's memory cgroup and its ancestors, from
/// the text of /proc/self/cgroup and the cgroup mount `root`: cgroup v2 (`0::/path`,
/// memory.max and memory.current) or v1 (`N:memory:/path`, memory.limit_in_bytes and
/// memory.usage_in_bytes under root/memory). None where no limit is set.
pub fn cgroup_headroom(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut candidates: Vec<(PathBuf, &str, &str)> = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push((root.join(relative), "memory.max", "memory.current"));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push((
                root.join("memory").join(relative),
                "memory.limit_in_bytes",
                "memory.usage_in_bytes",
            ));
        }
    }
    let read =
        |path: PathBuf| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let mut headroom: Option<u64> = None;
    for (dir, limit_file, usage_file) in candidates {
        let mount = if limit_file == "memory.max" {
            root.to_path_buf()
        } else {
            root.join("memory")
        };
        let mut at = Some(dir.as_path());
        while let Some(dir) = at.filter(|d| d.starts_with(&mount)) {
            // memory.max reads "max" where there is no limit: no number, no constraint.
            if let (Some(limit), Some(usage)) =
                (read(dir.join(limit_file)), read(dir.join(usage_file)))
            {
                if limit < NO_LIMIT {
                    let room = limit.saturating_sub(usage);
                    headroom = Some(headroom.map_or(room, |h| h.min(room)));
                }
            }
            at = dir.parent();
        }
    }
    headroom
}

/// 24.4 GB, 512.0 MB, 3.0 kB (decimal units).
pub fn human_bytes(bytes: f64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < units.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} bytes")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NadeKernel;

    fn nade(kernel: NadeKernel) -> ModelConfig {
        ModelConfig::from_legacy("nade", 784, Some(500))
            .unwrap()
            .with_kernel(&kernel.to_string())
            .unwrap()
    }

    /// NADE-500 with the plain kernel, batch 100: the (B, n, n) masked input and five
    /// (B, n, d) activations, doubled for the backward pass, dominate; the parameters, their
    /// gradients and Adam's moments add 4 x 785,284 floats.
    #[test]
    fn training_estimate_of_plain_nade_500() {
        let train = TrainSection {
            eval_batch_size: 100,
            ..TrainSection::default() // batch_size 100
        };
        let need = training(
            &nade(NadeKernel::Plain),
            &train,
            50_000,
            10_000,
            &Device::Cpu,
        );
        let (b, n, d) = (100.0, 784.0, 500.0);
        let step = 2.0 * (b * n * n + 5.0 * b * n * d + 6.0 * b * n);
        let params = 785_284.0;
        assert_eq!(need.bytes, 4.0 * (3.0 * params + params + step));
        assert_eq!(need.bytes, 2_076_052_544.0);
        assert_eq!(need.knob, "train.batch_size = 100");
        assert_eq!(need.job, "training");
        // The default validation batch of 500 holds a (500, 784, 784) masked input: 4.4 GB.
        let need = training(
            &nade(NadeKernel::Plain),
            &TrainSection::default(),
            50_000,
            10_000,
            &Device::Cpu,
        );
        let valid = 500.0 * n * n + 4.0 * 500.0 * n * d + 6.0 * 500.0 * n;
        assert_eq!(need.bytes, 4.0 * (3.0 * params + valid));
        assert_eq!(need.knob, "train.eval_batch_size = 500");
    }

    /// A model far too large: the parameters dominate and the key named is model.hidden.
    #[test]
    fn a_huge_model_names_model_hidden() {
        let cfg = ModelConfig::from_legacy("nade", 784, Some(100_000_000)).unwrap();
        let need = training(&cfg, &TrainSection::default(), 50_000, 10_000, &Device::Cpu);
        assert!(need.bytes > 2.5e12, "{}", need.bytes);
        assert_eq!(need.knob, "model.hidden = 100000000");
        let available = Available {
            bytes: 8_000_000_000,
            source: "a test",
        };
        let e = check_against(&need, &available).unwrap_err().to_string();
        assert!(
            e.starts_with("model.hidden = 100000000: training needs about ")
                && e.contains("but 8.0 GB is available (a test); lower model.hidden"),
            "{e}"
        );
        // A small model passes the same check.
        let small = training(
            &nade(NadeKernel::Fused),
            &TrainSection::default(),
            50_000,
            10_000,
            &Device::Cpu,
        );
        check_against(&small, &available).unwrap();
    }

    /// FVSBN has no hidden size: its estimate is 9 x the parameters (a checkpoint write: the
    /// parameters and moments kept, and two copies of them while encoding).
    #[test]
    fn training_estimate_of_fvsbn() {
        let cfg = ModelConfig::from_legacy("fvsbn", 784, None).unwrap();
        let need = training(&cfg, &TrainSection::default(), 50_000, 10_000, &Device::Cpu);
        assert_eq!(need.bytes, 9.0 * 4.0 * (784.0 * 784.0 + 784.0));
        assert_eq!(need.knob, "model.n = 784 (the data's dimension)");
    }

    #[test]
    fn sampling_estimate_names_count_or_batch() {
        let cfg = nade(NadeKernel::Fused);
        let job = |count, batch| SamplingJob {
            cfg: &cfg,
            count,
            batch,
            workers: 2,
            grid_pixels: 1000,
            amat: false,
            count_flag: format!("--count {count}"),
        };
        let need = sampling(&job(10_000_000, 100));
        // The images (1 byte) and means (4 bytes) of 10 million 784-pixel samples, at least.
        assert!(need.bytes > 5.0 * 784.0 * 1e7, "{}", need.bytes);
        assert_eq!(need.knob, "--count 10000000");
        assert_eq!(sampling(&job(1000, 1000)).knob, "--batch 1000");
    }

    #[test]
    fn mem_available_and_cgroup_limits() {
        let meminfo =
            "MemTotal:       32000000 kB\nMemFree:  100 kB\nMemAvailable:   24310164 kB\n";
        assert_eq!(mem_available(meminfo), Some(24_310_164 * 1024));
        assert_eq!(mem_available("MemTotal: 1 kB\n"), None);

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, text: &str| {
            let file = root.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, text).unwrap();
        };
        // v2: the job's own group has no limit, its parent has 4 GB of which 1 GB is used.
        write("jobs/memory.max", "4000000000\n");
        write("jobs/memory.current", "1000000000\n");
        write("jobs/run/memory.max", "max\n");
        write("jobs/run/memory.current", "5\n");
        assert_eq!(cgroup_headroom("0::/jobs/run\n", root), Some(3_000_000_000));
        // v1: the memory controller's group, no limit anywhere (2^63 rounded to a page).
        write(
            "memory/api/x/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write("memory/api/x/memory.usage_in_bytes", "7815168\n");
        let v1 = "4:memory:/api/x\n1:cpu:/\n";
        assert_eq!(cgroup_headroom(v1, root), None);
        write("memory/api/memory.limit_in_bytes", "2000000000\n");
        write("memory/api/memory.usage_in_bytes", "500000000\n");
        assert_eq!(cgroup_headroom(v1, root), Some(1_500_000_000));
        assert_eq!(cgroup_headroom("0::/elsewhere\n", root), None);
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(512.0), "512 bytes");
        assert_eq!(human_bytes(24.4e9), "24.4 GB");
        assert_eq!(human_bytes(2.5e12), "2.5 TB");
    }
}
