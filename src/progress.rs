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
                        "{verb} {now} of {total} {unit} ({}%, {} {unit}/s, about {} left)",
                        now * 100 / (*total).max(1),
                        rate_text(rate),
                        human_duration(left)
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

/// A rate with one decimal below 10 (a 128-ordering evaluation runs at 4.4
/// images/s, which `{:.0}` would print as 4), whole numbers above.
pub fn rate_text(rate: f64) -> String {
    if rate < 10.0 {
        format!("{rate:.1}")
    } else {
        format!("{rate:.0}")
    }
}

/// 42 s, 12 min, 3 h 05 min.
pub fn human_duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", (s + 30) / 60),
        _ => {
            let minutes = (s + 30) / 60;
            format!("{} h {:02} min", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(human_duration(0.4), "0 s");
        assert_eq!(human_duration(42.0), "42 s");
        assert_eq!(human_duration(12.0 * 60.0 + 10.0), "12 min");
        assert_eq!(human_duration(3.0 * 3600.0 + 5.0 * 60.0), "3 h 05 min");
    }

    #[test]
    fn slow_rates_keep_a_decimal() {
        assert_eq!(rate_text(4.44), "4.4");
        assert_eq!(rate_text(0.06), "0.1");
        assert_eq!(rate_text(3228.4), "3228");
    }
}
