//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed, fully validated.
//!
//! Header: two zero bytes, a type byte (0x08 = u8), the number of dims, then each dim as a
//! big-endian u32; then the data, row-major.

use kiln_tensor::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The dims and bytes of one IDX file.
#[derive(Clone, Debug, PartialEq)]
pub struct Idx {
    /// The dims from the header (`[n]` for labels, `[n, rows, cols]` for images).
    pub dims: Vec<usize>,
    /// The data, `product(dims)` bytes.
    pub data: Vec<u8>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::invalid("read_idx", format!("{}: {msg}", path.display()))
}

/// The most a gzip file may decompress to (MNIST's largest file is 47 MB): a few kilobytes of
/// crafted gzip can expand to gigabytes, and that must be an error, not an out-of-memory abort.
pub const MAX_DECOMPRESSED: u64 = 256 << 20;

/// `bytes` decompressed when they are gzip (detected by the magic number, not a file name);
/// `what` names the source in errors.
pub fn gunzip_if_needed(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::invalid("read_idx", format!("{what}: corrupt gzip data ({e})")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(Error::invalid(
            "read_idx",
            format!("{what}: decompresses to more than {} MiB, which no IDX dataset needs", MAX_DECOMPRESSED >> 20),
        ));
    }
    Ok(out)
}

/// Reads a file, decompressing it when it is gzip.
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| bad(path, e))?;
    gunzip_if_needed(raw, &path.display().to_string())
}

/// Parses IDX bytes (already decompressed); `path` names the file in errors.
pub fn parse(bytes: &[u8], path: &Path) -> Result<Idx> {
    if bytes.len() < 4 {
        return Err(bad(path, format!("{} bytes is too short for an IDX header", bytes.len())));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            path,
            format!(
                "bad magic number {:02x}{:02x}{:02x}{:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(
            path,
            format!("element type 0x{:02x} is not supported (MNIST files are 0x08, unsigned bytes)", bytes[2]),
        ));
    }
    let rank = bytes[3] as usize;
    if rank == 0 || rank > 4 {
        return Err(bad(path, format!("{rank} dims in the header; expected 1 (labels) or 3 (images)")));
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(bad(path, format!("truncated header: {} bytes, the header needs {header}", bytes.len())));
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(path, format!("dims {dims:?} overflow")))?;
    let expected = header + count;
    if bytes.len() != expected {
        return Err(bad(path, format!("the header {dims:?} says {expected} bytes, the file has {}", bytes.len())));
    }
    Ok(Idx { dims, data: bytes[header..].to_vec() })
}

/// Reads and validates an IDX file (raw or gzip).
pub fn read(path: &Path) -> Result<Idx> {
    parse(&read_maybe_gzip(path)?, path)
}

/// Encodes u8 data as IDX bytes (for tests and tools).
pub fn encode(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
