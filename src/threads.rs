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
    if threads > 0 {
        if let Some(warning) = check_against_cores(threads, cores(), key)? {
            eprintln!("warning: {warning}");
        }
        let value = threads.to_string();
        std::env::set_var("RAYON_NUM_THREADS", &value);
        std::env::set_var("CANDLE_NUM_THREADS", &value);
    }
    // The calling (main) thread is one of the pool's workers: a parallel loop it starts
    // runs on it and the others by work stealing, where a thread outside the pool would
    // hand the loop over and sleep until it is done (a futex wake and wait per loop: a
    // fifth of the cycles of deep NADE's sampling, four loops per step), and N threads
    // are N, not N workers beside an idle main thread.
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .use_current_thread()
        .build_global()
    {
        // Only if some computation ran first: a bug of ours, not the user's.
        bail!("{key} = {threads}: the thread pool had already started ({e})");
    }
    Ok(())
}

/// Makes candle's barrier pool (the workers of its element-wise ops) sleep as soon as an op is
/// done, unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is set: by default they spin for 25,000
/// pauses waiting for the next op, and on 2 cores the spinners took the cores that the
/// products' threads needed (perf: 22% of a MADE evaluation's cycles in candle-bp-0). Call
/// it before any computation, as [`set`].
pub fn quiet_candle_pool() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "0");
    }
}

/// 0 or a positive count up to [`MAX`].
pub fn validate(threads: usize, key: &str) -> Result<()> {
    if threads > MAX {
        bail!("{key} = {threads}: must be 0 (all cores) or a thread count up to {MAX}");
    }
    Ok(())
}

/// How many times the cores a thread count may be: past it the threads only take turns
/// (`--threads 1000` on 2 cores made a 0.1 s evaluation take 20 s).
pub const MAX_PER_CORE: usize = 8;

/// The cores this process may run on (affinity and cgroup quota included); 1 if unknown.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `threads` against the machine's `cores`: an error past [`MAX_PER_CORE`] times them, a
/// warning (returned) past them, else nothing. The config's own check ([`validate`]) does
/// not look at the machine: a run file means the same everywhere; this runs when the
/// threads are started.
pub fn check_against_cores(threads: usize, cores: usize, key: &str) -> Result<Option<String>> {
    let limit = MAX_PER_CORE * cores;
    if threads > limit {
        bail!(
            "{key} = {threads}: this machine gives the process {cores} cores; more than {limit} threads ({MAX_PER_CORE} per core) only slow the work down (0 = all cores)"
        );
    }
    Ok((threads > cores).then(|| {
        format!(
            "{key} = {threads}: more threads than the {cores} cores this machine gives the process; they take turns, which slows the work down"
        )
    }))
}

/// The threads CPU work runs on now (rayon's global pool).
pub fn current() -> usize {
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_past_the_cores_warn_and_absurd_ones_are_refused() {
        assert_eq!(check_against_cores(2, 2, "--threads").unwrap(), None);
        assert_eq!(check_against_cores(1, 2, "--threads").unwrap(), None);
        let warning = check_against_cores(3, 2, "--threads").unwrap().unwrap();
        assert!(
            warning.contains("--threads = 3") && warning.contains("2 cores"),
            "{warning}"
        );
        assert!(check_against_cores(16, 2, "--threads").unwrap().is_some());
        let e = check_against_cores(1000, 2, "train.threads")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.threads = 1000") && e.contains("16"),
            "{e}"
        );
        assert!(check_against_cores(17, 2, "--threads").is_err());
    }
}
