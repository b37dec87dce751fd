//! One training run per output folder at a time.
//!
//! `nade train` takes an exclusive advisory lock (flock on Unix, LockFileEx on Windows) on
//! `DIR/.nade-run.lock` before it looks at the folder, and holds it until the run has written
//! its last file. A second run on the same folder, new or `--resume`, is refused at once with
//! the holder's process id and command line, which the holder wrote into the file. The
//! operating system drops the lock when the holder ends in any way (`kill -9` included), so a
//! crash never leaves a folder locked; the file itself stays, empty of meaning until the next
//! run locks it again.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = ".nade-run.lock";

/// How long a lock held by this very process is waited for before a run is refused
/// ([`RunLock::acquire`]).
const SELF_HELD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The held lock of a run folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    // Held open for the lock's lifetime: closing the file releases the lock.
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Locks the run folder `dir` (which must exist) for this process, or refuses with a
    /// message naming the process that holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open the run's lock file", path.display()))?;
        let started = std::time::Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = read_holder(&mut file);
                    // A lock this process has just released can look held for an instant: a
                    // flock belongs to the open file description, and a child that another
                    // thread is starting (a test's `nade`, Python's subprocess) holds a copy of
                    // the descriptor from its fork until its exec closes it. So this process's
                    // own lock is waited for a moment before a run is refused.
                    let ours = holder.starts_with(&format!("process {} ", std::process::id()));
                    if ours && started.elapsed() < SELF_HELD_WAIT {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                        continue;
                    }
                    bail!(
                    "{}: a run is going on in this folder, by {holder}; wait for it to end (or stop it), or give this run another --out",
                    dir.display()
                    );
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e)
                        .with_context(|| format!("{}: cannot lock the run folder", path.display()))
                }
            }
        }
        // Who holds it, for the message a second run prints. Not needed for correctness.
        let me = holder_text();
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)).map(|_| ()))
            .and_then(|()| file.write_all(me.as_bytes()))
            .and_then(|()| file.flush());
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Who holds the lock, as the holder wrote it. A holder writes just after it locks: a run
/// that found the lock taken in between waits a moment for the words.
fn read_holder(file: &mut File) -> String {
    for _ in 0..100 {
        let mut holder = String::new();
        let read = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.read_to_string(&mut holder));
        if read.is_ok() && !holder.trim().is_empty() {
            return holder.trim().to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    "another process".to_string()
}

/// "process 4242 (nade train c.toml --out runs/a)".
fn holder_text() -> String {
    let args: Vec<String> = std::env::args()
        .enumerate()
        .map(|(i, a)| match i {
            // The program's name, not the path it was started by.
            0 => Path::new(&a)
                .file_name()
                .map_or(a.clone(), |f| f.to_string_lossy().into_owned()),
            _ => a,
        })
        .collect();
    format!("process {} ({})", std::process::id(), args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_folder_is_refused_naming_the_holder_and_granted_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let e = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("process {}", std::process::id())),
            "{e}"
        );
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        drop(first);
        let again = RunLock::acquire(dir.path()).unwrap();
        assert_eq!(again.path(), dir.path().join(LOCK_FILE));
    }
}
