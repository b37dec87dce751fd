//! Ctrl-C (SIGINT) during training: the first one asks the epoch loop to stop between two
//! minibatches, so that every file is whole and `--resume` continues from the last completed
//! epoch; a second one, or one outside the epoch loop (loading data, the final test pass),
//! ends the process at once as SIGINT normally does. Files are written atomically, so even
//! that leaves no broken file (a temporary at most, removed by the next run).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Set while an epoch loop is running and can stop cleanly.
static ARMED: AtomicBool = AtomicBool::new(false);
/// Set by the first Ctrl-C while armed.
static STOP: AtomicBool = AtomicBool::new(false);

/// The exit status of a process ended by SIGINT (128 + 2), for the clean stop too.
pub const EXIT_STATUS: u8 = 130;

/// Installs the handler (once per process; the `nade train` command does).
pub fn install() -> Result<()> {
    ctrlc::set_handler(|| {
        if ARMED.load(Ordering::SeqCst) && !STOP.swap(true, Ordering::SeqCst) {
            eprintln!("\nCtrl-C: stopping after this minibatch (Ctrl-C again to stop at once)");
        } else {
            std::process::exit(EXIT_STATUS.into());
        }
    })
    .context("cannot install the Ctrl-C handler")
}

/// Whether a Ctrl-C asked the running epoch loop to stop.
pub fn requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Asks the running epoch loop (or the next one) to stop between minibatches, as a first
/// Ctrl-C does: for hosts with their own signal handling (the Python package, whose
/// KeyboardInterrupt arrives in the interpreter, not here).
pub fn request_stop() {
    STOP.store(true, Ordering::SeqCst);
}

/// Forgets an earlier stop request, before a new run in the same process (the CLI runs
/// once per process; a Python session may train many times).
pub fn reset() {
    STOP.store(false, Ordering::SeqCst);
}

/// While the returned guard lives, Ctrl-C asks for a clean stop instead of ending the process.
pub fn arm() -> Armed {
    ARMED.store(true, Ordering::SeqCst);
    Armed(())
}

pub struct Armed(());

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// The error a cleanly stopped run returns; its text says what is saved and how to go on.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}
