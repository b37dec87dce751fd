//! How many threads the CPU work uses: `--threads N` and `train.threads` (0 = all cores).
//!
//! Three pools compute on the CPU: rayon's global pool (our fused kernels, the sampler's
//! batches, gemm's matmuls), candle's own rayon pool and its barrier pool. Candle sizes its
//! pools and each matmul from `RAYON_NUM_THREADS` / `CANDLE_NUM_THREADS`, read when first
//! needed, so [`set`] writes both variables and then builds rayon's global pool: it must run
//! before any computation, while the process has one thread.

use anyhow::{bail, Result};

/// The largest thread count accepted: beyond it a typo, not a choice.
pub const MAX: usize = 1024;

/// Uses `threads` threads for all CPU work from now on; 0 keeps the defaults (all cores, or
/// what `RAYON_NUM_THREADS` says). `key` names the flag or config key in errors.
pub fn set(threads: usize, key: &str) -> Result<()> {
    validate(threads, key)?;
    if threads == 0 {
        return Ok(());
    }
    let value = threads.to_string();
    std::env::set_var("RAYON_NUM_THREADS", &value);
    std::env::set_var("CANDLE_NUM_THREADS", &value);
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        // Only if some computation ran first: a bug of ours, not the user's.
        bail!("{key} = {threads}: the thread pool had already started ({e})");
    }
    Ok(())
}

/// 0 or a positive count up to [`MAX`].
pub fn validate(threads: usize, key: &str) -> Result<()> {
    if threads > MAX {
        bail!("{key} = {threads}: must be 0 (all cores) or a thread count up to {MAX}");
    }
    Ok(())
}

/// The threads CPU work runs on now (rayon's global pool).
pub fn current() -> usize {
    rayon::current_num_threads()
}
