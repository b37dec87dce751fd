//! What `nade train` tells its user while it runs: the start banner, progress within an epoch
//! (bars on a terminal, plain lines elsewhere, so a run under `| tee` or `nohup` is not silent
//! for a whole epoch), and the line after each epoch with the run's ETA.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::progress::human_duration;
use crate::train_state::EpochRecord;

/// How progress within an epoch is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// indicatif bars on stderr.
    Bars,
    /// A plain line on stderr now and then ([`LINE_INTERVAL`]).
    Lines,
    /// Nothing within epochs (the banner and epoch lines still print).
    Off,
}

impl Progress {
    /// Bars when stderr is a terminal, else plain lines.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Progress::Bars
        } else {
            Progress::Lines
        }
    }
}

/// At most one plain progress line per this long (fast epochs print none: their epoch line
/// comes soon enough).
pub const LINE_INTERVAL: Duration = Duration::from_secs(10);

/// When a plain progress line is due: after a new tenth of the epoch's batches, and at least
/// `interval` after the previous line.
#[derive(Debug)]
pub struct LineSchedule {
    batches: usize,
    interval: Duration,
    /// The tenth of the batches the last line reported (0: none yet).
    tenth_shown: usize,
}

impl LineSchedule {
    pub fn new(batches: usize, interval: Duration) -> Self {
        Self {
            batches: batches.max(1),
            interval,
            tenth_shown: 0,
        }
    }

    /// Whether to print a line now that `done` batches are done, `since_last` after the
    /// previous line (or the start of the epoch).
    pub fn due(&mut self, done: usize, since_last: Duration) -> bool {
        let tenth = done * 10 / self.batches;
        if tenth > self.tenth_shown && done < self.batches && since_last >= self.interval {
            self.tenth_shown = tenth;
            return true;
        }
        false
    }
}

/// Progress within one epoch, in the chosen form.
pub struct EpochProgress {
    bar: ProgressBar,
    lines: Option<(LineSchedule, Instant)>,
    start: Instant,
    batches: usize,
    epoch: usize,
    epochs: usize,
}

impl EpochProgress {
    /// `epoch` is 1-based.
    pub fn new(mode: Progress, batches: usize, epoch: usize, epochs: usize) -> Self {
        let bar = if mode == Progress::Bars {
            let bar = ProgressBar::new(batches as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} {bar:30} {pos}/{len} batches [{elapsed}<{eta}] {msg}",
                )
                .expect("static template"),
            );
            bar.set_prefix(format!("{epoch} of {epochs}"));
            bar
        } else {
            ProgressBar::hidden()
        };
        let now = Instant::now();
        let lines =
            (mode == Progress::Lines).then(|| (LineSchedule::new(batches, LINE_INTERVAL), now));
        Self {
            bar,
            lines,
            start: now,
            batches,
            epoch,
            epochs,
        }
    }

    /// After batch `done` (1-based), with `seen` images and their summed loss so far.
    pub fn batch_done(&mut self, done: usize, seen: usize, loss_sum: f64) {
        self.bar.inc(1);
        let elapsed = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = seen as f64 / elapsed;
        let nll = loss_sum / seen.max(1) as f64;
        if done % 10 == 1 {
            self.bar
                .set_message(format!("NLL {nll:.3}  {rate:.0} images/s"));
        }
        if let Some((schedule, last)) = &mut self.lines {
            if schedule.due(done, last.elapsed()) {
                *last = Instant::now();
                let left = elapsed / done as f64 * (self.batches - done) as f64;
                eprintln!(
                    "epoch {} of {}: {}% ({done} of {} batches), NLL {nll:.3}, {rate:.0} images/s, {} of the epoch left",
                    self.epoch,
                    self.epochs,
                    done * 100 / self.batches,
                    self.batches,
                    human_duration(left)
                );
            }
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }

    pub fn abandon(&self) {
        self.bar.abandon();
    }
}

/// The line after an epoch: its numbers, "epoch k of N" and the time the run may still take.
pub fn epoch_line(r: &EpochRecord, epochs: usize, eta_seconds: Option<f64>) -> String {
    let eta = match eta_seconds {
        Some(s) => format!("  ETA <= {}", human_duration(s)),
        None => String::new(),
    };
    let (valid, valid_time) = match r.valid_nll {
        Some(v) => (
            format!("{v:8.3}"),
            format!("  (valid {:.1} s)", r.valid_seconds),
        ),
        // An epoch that train.valid_every skips.
        None => (format!("{:>8}", "-"), String::new()),
    };
    format!(
        "epoch {} of {epochs}  train {:8.3}  valid {valid}  best {:8.3} (epoch {})  lr {:.2e}  {:6.1} s  {:6.0} images/s{valid_time}{eta}",
        r.epoch, r.train_nll, r.best_valid, r.best_epoch, r.lr, r.train_seconds, r.train_images_per_s
    )
}

/// The most recent epochs (and validations) whose times the ETA uses.
const ETA_WINDOW: usize = 25;

/// What the run may still take: the epochs left times the median training time of the last
/// [`ETA_WINDOW`] epochs, plus the validations left (every `valid_every`th epoch and the
/// last) times the median of the last [`ETA_WINDOW`] validations (none until the first is
/// timed). Medians of recent epochs, so that an epoch stretched by a pause (a stopped
/// process, a suspended machine) or the epochs of a run resumed on a faster or slower machine
/// do not hold the estimate. An upper bound as far as early stopping may end the run sooner.
/// None when no epoch remains.
pub fn eta_seconds(history: &[EpochRecord], epochs: usize, valid_every: usize) -> Option<f64> {
    let done = history.last()?.epoch;
    if done >= epochs {
        return None;
    }
    let recent_median = |times: Vec<f64>| -> f64 {
        let mut recent: Vec<f64> = times.into_iter().rev().take(ETA_WINDOW).collect();
        recent.sort_by(f64::total_cmp);
        match recent.len() {
            0 => 0.0,
            k if k % 2 == 1 => recent[k / 2],
            k => (recent[k / 2 - 1] + recent[k / 2]) / 2.0,
        }
    };
    let train = recent_median(history.iter().map(|r| r.train_seconds).collect());
    let valid = recent_median(
        history
            .iter()
            .filter(|r| r.valid_nll.is_some())
            .map(|r| r.valid_seconds)
            .collect(),
    );
    let every = valid_every.max(1);
    let validations = epochs / every - done / every + usize::from(!epochs.is_multiple_of(every));
    Some(train * (epochs - done) as f64 + valid * validations as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_after_a_new_tenth_and_no_closer_than_the_interval() {
        let second = Duration::from_secs(1);
        let mut s = LineSchedule::new(100, 10 * second);
        // Within the first tenth: never, however long it took.
        assert!(!s.due(5, 60 * second));
        // A new tenth but too soon after the start: not yet; later in the same tenth: yes.
        assert!(!s.due(10, 9 * second));
        assert!(s.due(11, 10 * second));
        // The same tenth again: no.
        assert!(!s.due(15, 30 * second));
        assert!(s.due(20, 10 * second));
        // The epoch's end has its own line.
        assert!(!s.due(100, 60 * second));
        // A zero interval: one line per tenth.
        let mut every = LineSchedule::new(20, Duration::ZERO);
        let shown = (1..=20).filter(|&d| every.due(d, Duration::ZERO)).count();
        assert_eq!(shown, 9);
    }

    fn record(epoch: usize, seconds: f64) -> EpochRecord {
        EpochRecord {
            epoch,
            train_nll: 90.0,
            valid_nll: Some(91.0),
            best_valid: 91.0,
            best_epoch: epoch,
            lr: 1e-3,
            mean_grad_norm: 1.0,
            train_seconds: seconds - 1.0,
            train_images_per_s: 1000.0,
            valid_seconds: 1.0,
        }
    }

    #[test]
    fn the_eta_is_recent_median_times_the_epochs_and_validations_left() {
        let history = [record(1, 10.0), record(2, 20.0)];
        // Training: median of 9 and 19 s = 14 s per epoch; validation 1 s, every epoch.
        assert_eq!(eta_seconds(&history, 10, 1), Some(14.0 * 8.0 + 8.0));
        assert_eq!(eta_seconds(&history, 2, 1), None);
        assert_eq!(eta_seconds(&[], 10, 1), None);
        let line = epoch_line(&history[1], 10, eta_seconds(&history, 10, 1));
        assert!(
            line.starts_with("epoch 2 of 10 ") && line.ends_with("ETA <= 2 min"),
            "{line}"
        );
        let skipped = EpochRecord {
            valid_nll: None,
            valid_seconds: 0.0,
            ..record(3, 10.0)
        };
        let line = epoch_line(&skipped, 10, None);
        assert!(
            line.contains("valid        -  best") && !line.contains("(valid"),
            "{line}"
        );
        // Validating every 4th epoch of 10 after epoch 3: epochs 4 and 8, and the last (10).
        let run = [record(1, 10.0), record(2, 10.0), skipped];
        assert_eq!(eta_seconds(&run, 10, 4), Some(9.0 * 7.0 + 3.0));
        // Every 5th of 10 after epoch 3: 5 and 10 (the last is one of them).
        assert_eq!(eta_seconds(&run, 10, 5), Some(9.0 * 7.0 + 2.0));
    }

    #[test]
    fn a_paused_epoch_and_old_epochs_do_not_hold_the_eta() {
        // 30 epochs of 2 s on an old machine, then 25 of 5 s now; one of them paused for 600 s.
        let mut history: Vec<EpochRecord> = (1..=55)
            .map(|e| record(e, if e <= 30 { 3.0 } else { 6.0 }))
            .collect();
        history[40].train_seconds = 600.0;
        assert_eq!(eta_seconds(&history, 100, 1), Some(5.0 * 45.0 + 45.0));
    }
}
