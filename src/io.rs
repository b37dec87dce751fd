//! Small file helpers every writer of the program shares.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};

/// Writes the bytes to a sibling temporary file, syncs it and renames it over `path`. The
/// folder must exist: a mistyped path never becomes a folder.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(no_folder(path, dir));
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{}: not a file path", path.display()))?;
    let tmp = dir.join(temporary_name(file_name, std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    Ok(())
}

/// Checks, before the work that produces it, that the file `flag` names can be written where
/// it says: its folder exists (nothing creates it).
pub fn check_folder_exists(flag: &str, path: &Path) -> Result<()> {
    let dir = folder_of(path);
    if !dir.is_dir() {
        return Err(no_folder(path, dir)).with_context(|| flag.to_string());
    }
    Ok(())
}

/// The folder a file path writes into ("." for a bare name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn no_folder(path: &Path, dir: &Path) -> anyhow::Error {
    anyhow!(
        "{}: cannot write, no such folder {} (create it first)",
        path.display(),
        dir.display()
    )
}

/// The hidden sibling a write of `file_name` by process `pid` goes through:
/// `.last.safetensors.27164.tmp`.
pub fn temporary_name(file_name: &OsStr, pid: u32) -> String {
    format!(".{}.{pid}.tmp", file_name.to_string_lossy())
}

/// The writer's pid if `name` is one of [`temporary_name`]'s names, else None.
pub fn temporary_pid(name: &str) -> Option<u32> {
    let inner = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (file_name, pid) = inner.rsplit_once('.')?;
    if file_name.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Where the writer's pid cannot be checked, a temporary this old is taken as abandoned (a
/// write takes seconds: the largest file, a NADE-500 last.safetensors, is 9.4 MB).
pub const STALE_AFTER: Duration = Duration::from_secs(10 * 60);

/// Removes from `dir` (not its subfolders) the temporaries that a write killed before its
/// rename left behind (`kill -9`, a power cut): files named as [`temporary_name`] names them
/// whose writer is no longer running (on Linux: no /proc/PID; elsewhere: older than
/// [`STALE_AFTER`]). Every other file is left alone. Returns the paths removed; a folder
/// that does not exist holds none.
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("{}: cannot list", dir.display())),
    };
    let mut removed = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("{}: cannot list", dir.display()))?;
        let Some(pid) = entry.file_name().to_str().and_then(temporary_pid) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() || !writer_is_gone(pid, meta.modified().ok()) {
            continue;
        }
        let path = entry.path();
        fs::remove_file(&path).with_context(|| {
            format!(
                "{}: cannot remove this stale temporary of an interrupted write",
                path.display()
            )
        })?;
        removed.push(path);
    }
    removed.sort();
    Ok(removed)
}

/// Whether the process that wrote a temporary has ended: by its pid where the system says
/// (Linux's /proc), else by the file's age.
fn writer_is_gone(pid: u32, modified: Option<SystemTime>) -> bool {
    if pid == std::process::id() {
        return false;
    }
    let proc = Path::new("/proc");
    if cfg!(target_os = "linux") && proc.join("self").exists() {
        return !proc.join(pid.to_string()).exists();
    }
    modified
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_parse_back_and_nothing_else_does() {
        let name = temporary_name(OsStr::new("last.safetensors"), 27164);
        assert_eq!(name, ".last.safetensors.27164.tmp");
        assert_eq!(temporary_pid(&name), Some(27164));
        for foreign in [
            "last.safetensors",
            ".last.safetensors.tmp",
            ".last.safetensors.27x64.tmp",
            "last.safetensors.27164.tmp",
            "..27164.tmp",
            ".last.safetensors.27164.tmp.bak",
            ".notes.tmp",
        ] {
            assert_eq!(temporary_pid(foreign), None, "{foreign}");
        }
    }
}
