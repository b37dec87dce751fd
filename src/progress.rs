//! Progress of a long job over a known number of items, safe to advance from several
//! threads: an indicatif bar on a terminal, plain lines on stderr otherwise (one at every
//! tenth of the job, so `| tee` and log files see it move), or nothing.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub enum Progress {
    Hidden,
    Bar(ProgressBar),
    Lines {
        /// What is done, for the lines: "sampled".
        verb: String,
        /// What is counted: "images".
        unit: String,
        total: usize,
        done: AtomicUsize,
        start: Instant,
    },
}

impl Progress {
    /// A bar when stderr is a terminal, plain lines when it is not.
    pub fn to_stderr(verb: &str, unit: &str, total: usize) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{verb} {{bar:40}} {{pos}}/{{len}} {unit} [{{elapsed_precise}}<{{eta_precise}}] {{per_sec}}"
                ))
                .expect("static template"),
            );
            Progress::Bar(bar)
        } else {
            Self::lines(verb, unit, total)
        }
    }

    /// Plain lines on stderr at every tenth of `total`.
    pub fn lines(verb: &str, unit: &str, total: usize) -> Self {
        Progress::Lines {
            verb: verb.into(),
            unit: unit.into(),
            total,
            done: AtomicUsize::new(0),
            start: Instant::now(),
        }
    }

    /// `k` more items done.
    pub fn inc(&self, k: usize) {
        match self {
            Progress::Hidden => {}
            Progress::Bar(bar) => bar.inc(k as u64),
            Progress::Lines {
                verb,
                unit,
                total,
                done,
                start,
            } => {
                let before = done.fetch_add(k, Ordering::Relaxed);
                let now = before + k;
                let tenth = |d: usize| d * 10 / (*total).max(1);
                // Exactly one caller crosses each tenth, so each line is printed once.
                if tenth(now) > tenth(before) {
                    let seconds = start.elapsed().as_secs_f64();
                    let rate = now as f64 / seconds.max(1e-9);
                    let left = total.saturating_sub(now) as f64 / rate.max(1e-9);
                    eprintln!(
                        "{verb} {now} of {total} {unit} ({}%, {rate:.0} {unit}/s, about {left:.0} s left)",
                        now * 100 / (*total).max(1)
                    );
                }
            }
        }
    }

    /// Removes the bar (lines stay as printed).
    pub fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
