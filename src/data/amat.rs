//! The `.amat` text format of binarized MNIST and the UCI binary sets: one vector per line,
//! values 0 or 1 separated by whitespace.
//!
//! The parser works on bytes and writes straight into the output buffer (no allocation per
//! line or token), because the 78 MB training file is read at the start of every run.

use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use super::BinaryDataset;

/// The first two bytes of every gzip stream (RFC 1952); never the start of `.amat` text.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Reads and parses an `.amat` file; errors name the file and line.
pub fn read_amat(path: &Path) -> Result<BinaryDataset> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_amat_bytes(&bytes, &path.display().to_string())
}

/// Parses `.amat` text; `origin` (a file name or URL) starts every error message.
pub fn parse_amat(text: &str, origin: &str) -> Result<BinaryDataset> {
    parse_amat_bytes(text.as_bytes(), origin)
}

/// Like [`parse_amat`] on raw bytes, so a file need not be valid UTF-8 to get a precise
/// error message: a stray non-ASCII byte is reported as a bad value on its line.
///
/// Rules: the first line sets the width and every other line must match it; each value is
/// `0` or `1`, or a float spelling of exactly 0 or 1 (`0.0`, `1.000`, `1e0`) since some
/// writers emit those; a file without vectors is an error; blank lines may end the file but
/// not interrupt the data (a lost row would shift everything after it unnoticed); gzip bytes
/// are an error that says so.
pub fn parse_amat_bytes(bytes: &[u8], origin: &str) -> Result<BinaryDataset> {
    // A downloaded `.amat.gz` left compressed would otherwise be reported as a bad value made
    // of raw binary bytes on line 1, which tells nobody what to do.
    if bytes.starts_with(&GZIP_MAGIC) {
        bail!(
            "{origin}: looks gzip-compressed (it starts with the gzip magic bytes 1f 8b), \
             not .amat text: decompress it first (gunzip)"
        );
    }
    // Each value takes at least two bytes (digit and separator), so this never reallocates
    // for a well-formed file and over-reserves by at most one value.
    let mut values = Vec::with_capacity(bytes.len() / 2 + 1);
    let mut width = None;
    let mut first_blank_line = None;

    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let start = values.len();
        if let Err(bad) = parse_line(line, &mut values) {
            bail!(
                "{origin}:{line_no}: value {} (column {}) is not 0 or 1",
                printable(bad.token),
                bad.column
            );
        }
        let found = values.len() - start;

        if found == 0 {
            first_blank_line.get_or_insert(line_no);
            continue;
        }
        if let Some(blank) = first_blank_line {
            bail!("{origin}:{blank}: blank line inside the data (more vectors follow on line {line_no})");
        }
        match width {
            None => width = Some(found),
            Some(expected) if expected != found => {
                bail!("{origin}:{line_no}: expected {expected} values, found {found}")
            }
            Some(_) => {}
        }
    }

    let Some(width) = width else {
        bail!("{origin}: empty file: no vectors found");
    };
    BinaryDataset::new(width, values).map_err(|e| anyhow!("{origin}: {e}"))
}

/// A token that is not a spelling of 0 or 1, with its 1-based position in the line.
struct BadToken<'a> {
    column: usize,
    token: &'a [u8],
}

/// Appends the values of one line to `out`; a blank line appends nothing.
fn parse_line<'a>(line: &'a [u8], out: &mut Vec<u8>) -> Result<(), BadToken<'a>> {
    let tokens = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|token| !token.is_empty());
    for (index, token) in tokens.enumerate() {
        let value = match token {
            b"0" => 0,
            b"1" => 1,
            _ => float_spelling(token).ok_or(BadToken {
                column: index + 1,
                token,
            })?,
        };
        out.push(value);
    }
    Ok(())
}

/// 0 or 1 for tokens like `0.0`, `1.`, `1e0`; None for anything else (including `0.5`).
fn float_spelling(token: &[u8]) -> Option<u8> {
    let x: f64 = std::str::from_utf8(token).ok()?.parse().ok()?;
    if x == 0.0 {
        Some(0)
    } else if x == 1.0 {
        Some(1)
    } else {
        None
    }
}

/// The token as it should appear in a one-line message: lossy UTF-8, control characters
/// escaped, and cut short if it is long (a binary file can have megabytes without spaces).
fn printable(token: &[u8]) -> String {
    const MAX_CHARS: usize = 32;
    let text = String::from_utf8_lossy(token);
    let mut shown: String = text
        .chars()
        .take(MAX_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > MAX_CHARS {
        shown.push_str("...");
    }
    shown
}

/// `.amat` text: one vector per line, values 0 or 1 separated by single spaces.
pub fn amat_text(data: &BinaryDataset) -> String {
    let mut text = String::with_capacity(data.pixels().len() * 2);
    for row in data.rows() {
        for (j, v) in row.iter().enumerate() {
            if j > 0 {
                text.push(' ');
            }
            text.push(if *v != 0 { '1' } else { '0' });
        }
        text.push('\n');
    }
    text
}

/// Writes `data` as `.amat` text to `path` atomically.
pub fn write_amat(path: &Path, data: &BinaryDataset) -> Result<()> {
    crate::io::write_atomically(path, amat_text(data).as_bytes())
}
