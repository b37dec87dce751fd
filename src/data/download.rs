//! Downloading an `.amat` file, verified against its content checksum before it is kept.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::amat::parse_amat_bytes;
use super::BinaryDataset;

/// Fail fast when the host is unreachable (the usual offline case)...
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// ...but give a slow link time for the 78 MB training file.
const GLOBAL_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// Downloads `url` to `dest`; see [`download_amat`].
pub fn download(url: &str, dest: &Path, expected_content_sha256: Option<&str>) -> Result<()> {
    download_amat(url, dest, expected_content_sha256).map(drop)
}

/// Downloads the `.amat` file at `url` to `dest` and returns its parsed content.
///
/// The bytes go to `dest` + `.part` in the same folder, which is renamed to `dest` only once
/// the text parses and, if given, the SHA-256 of its 0/1 values (the content checksum of the
/// data READMEs, independent of whitespace) matches. On any failure the partial file is
/// removed, so `dest` is never a truncated or wrong file that later runs would trust; so are
/// the folders created for `dest`, so a failed download leaves nothing behind.
/// Progress in bytes goes to stderr when it is a terminal.
pub fn download_amat(
    url: &str,
    dest: &Path,
    expected_content_sha256: Option<&str>,
) -> Result<BinaryDataset> {
    let folders = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(folder) => CreatedFolders::create(folder)?,
        None => CreatedFolders::none(),
    };
    // Declared after `folders`, so dropped first: the file goes before its folder.
    let part = PartFile::new(dest)?;

    fetch(url, part.path())?;
    let bytes = fs::read(part.path()).map_err(|e| {
        anyhow!(
            "{}: cannot read back the download: {e}",
            part.path().display()
        )
    })?;
    let data = parse_amat_bytes(&bytes, url)?;

    if let Some(expected) = expected_content_sha256 {
        let found = data.sha256_hex();
        if !found.eq_ignore_ascii_case(expected) {
            bail!("{url}: content SHA-256 is {found}, expected {expected}; not the published file, discarded it");
        }
    }

    fs::rename(part.path(), dest).map_err(|e| {
        anyhow!(
            "{}: cannot rename to {}: {e}",
            part.path().display(),
            dest.display()
        )
    })?;
    part.keep();
    folders.keep();
    Ok(data)
}

/// Streams the body of `url` into a new file at `to`.
fn fetch(url: &str, to: &Path) -> Result<()> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(GLOBAL_TIMEOUT))
        .build()
        .into();
    // ureq reports HTTP error statuses (404 ...) as errors by default.
    let response = agent.get(url).call().map_err(|e| anyhow!("{url}: {e}"))?;
    let body = response.into_body();

    let progress = progress_bar(body.content_length(), url);
    let mut reader = progress.wrap_read(body.into_reader());
    let file = File::create(to).map_err(|e| anyhow!("{}: cannot create: {e}", to.display()))?;
    let mut writer = BufWriter::new(file);
    let copied = io::copy(&mut reader, &mut writer)
        .and_then(|_| writer.flush())
        // Durable before the rename, or a crash could leave a short file under the final name.
        .and_then(|_| writer.get_ref().sync_all());
    progress.finish_and_clear();
    copied.map_err(|e| anyhow!("{url}: download to {} failed: {e}", to.display()))
}

fn progress_bar(total: Option<u64>, url: &str) -> ProgressBar {
    let name = url.rsplit('/').next().unwrap_or(url).to_owned();
    let (bar, template) = match total {
        Some(len) => (
            ProgressBar::new(len),
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (ProgressBar::no_length(), "{msg} {bytes} {bytes_per_sec}"),
    };
    // The templates are constants; the fallback only guards against an indicatif change.
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.with_style(style.progress_chars("=> "))
        .with_message(name)
}

/// The temporary download file; removed on drop unless [`PartFile::keep`] was called.
struct PartFile {
    path: PathBuf,
    keep: bool,
}

impl PartFile {
    fn new(dest: &Path) -> Result<Self> {
        let mut name: OsString = dest
            .file_name()
            .with_context(|| format!("{}: download destination has no file name", dest.display()))?
            .to_owned();
        name.push(".part");
        Ok(Self {
            path: dest.with_file_name(name),
            keep: false,
        })
    }

    fn path(&self) -> &Path {
        &self.path
    }

    /// The file was renamed away: nothing left to clean up.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.keep {
            // Best effort: the file may never have been created.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The folders created for a download's destination, deepest first; removed on drop unless
/// [`CreatedFolders::keep`] was called.
struct CreatedFolders {
    folders: Vec<PathBuf>,
    keep: bool,
}

impl CreatedFolders {
    /// Creates `folder` and its missing parents.
    fn create(folder: &Path) -> Result<Self> {
        let missing = folder
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .map(Path::to_path_buf)
            .collect();
        fs::create_dir_all(folder)
            .map_err(|e| anyhow!("{}: cannot create folder: {e}", folder.display()))?;
        Ok(Self {
            folders: missing,
            keep: false,
        })
    }

    fn none() -> Self {
        Self {
            folders: Vec::new(),
            keep: false,
        }
    }

    /// The download succeeded: the folders hold its file.
    fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for CreatedFolders {
    fn drop(&mut self) {
        if !self.keep {
            for folder in &self.folders {
                // remove_dir removes only an empty folder: never anything another process
                // put there meanwhile.
                let _ = fs::remove_dir(folder);
            }
        }
    }
}
