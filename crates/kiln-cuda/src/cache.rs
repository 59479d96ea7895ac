//! The on-disk cache of compiled kernels: a CUBIN per (source, NVRTC version, architecture,
//! options), so that only the first run on a machine pays NVRTC's compile time.
//!
//! A GPU host without NVRTC can load prebuilt CUBINs instead: `cargo xtask kernels` writes the
//! sm_90 ones to `target/kernels/prebuilt/`, named by [`prebuilt_name`]; point
//! `$KILN_CUDA_KERNEL_DIR` at such a folder (the GPU bundle does). They are used only when NVRTC
//! is missing, and only for the exact source and architecture they were built from.
//!
//! The directory is `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`, with
//! the files under `kernels/`. A cache that cannot be read or written is skipped, never an
//! error: it only saves time. Entries are written to a temporary name and renamed, so a run
//! killed mid-write leaves no torn file behind.

use crate::nvrtc::{self, Compiled};
use kiln_tensor::Result;
use std::path::PathBuf;

/// The directory holding cached kernels, if one can be named.
pub fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("KILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/kiln")))?;
    Some(base.join("kernels"))
}

/// FNV-1a, 64 bits: stable across Rust versions and machines (`DefaultHasher` is neither).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so that ("ab", "c") and ("a", "bc") differ.
        h = (h ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The cache file for `source` compiled for `arch` with the NVRTC found.
fn entry(source: &str, file: &str, arch: &str) -> Option<PathBuf> {
    let nv = nvrtc::load().ok()?;
    let version = format!("{}.{}", nv.version.0, nv.version.1);
    let key = fnv1a(&[source.as_bytes(), version.as_bytes(), arch.as_bytes(), nvrtc::OPTIONS_KEY.as_bytes()]);
    let stem = file.trim_end_matches(".cu");
    Some(dir()?.join(format!("{stem}-{arch}-{key:016x}.cubin")))
}

/// The file name of a prebuilt CUBIN of `file` for `arch` (`sm_90`), keyed by the source and
/// options but not the NVRTC version (the host that loads it has none).
pub fn prebuilt_name(source: &str, file: &str, arch: &str) -> String {
    let key = fnv1a(&[source.as_bytes(), arch.as_bytes(), nvrtc::OPTIONS_KEY.as_bytes()]);
    format!("{}-{arch}-{key:016x}.cubin", file.trim_end_matches(".cu"))
}

/// The CUBIN of `file` for `arch`: from the cache when present, else from `compile`, which is
/// then stored. Without NVRTC, from `$KILN_CUDA_KERNEL_DIR`'s prebuilt CUBINs.
pub fn cubin(source: &str, file: &str, arch: &str, compile: impl FnOnce() -> Result<Compiled>) -> Result<Vec<u8>> {
    if let Err(no_nvrtc) = nvrtc::load() {
        let Some(dir) = std::env::var_os("KILN_CUDA_KERNEL_DIR").map(PathBuf::from) else { return Err(no_nvrtc) };
        let path = dir.join(prebuilt_name(source, file, arch));
        let why = match no_nvrtc {
            kiln_tensor::Error::Backend { msg, .. } => msg,
            other => other.to_string(),
        };
        return std::fs::read(&path).map_err(|e| {
            crate::backend::cuda_error(format!(
                "{why}; and no prebuilt kernels for {arch} either ({}: {e})",
                path.display()
            ))
        });
    }
    let path = entry(source, file, arch);
    if let Some(bytes) = path.as_ref().and_then(|p| std::fs::read(p).ok()).filter(|b| !b.is_empty()) {
        return Ok(bytes);
    }
    let code = compile()?.code;
    if let Some(path) = path {
        let _ = store(&path, &code);
    }
    Ok(code)
}

fn store(path: &std::path::Path, code: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().ok_or_else(|| std::io::Error::other("no parent"))?;
    std::fs::create_dir_all(dir)?;
    // Unique per process and call: two devices may compile the same file at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, code)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_separate_their_parts() {
        assert_eq!(fnv1a(&[b"kiln"]), fnv1a(&[b"kiln"]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        // Pinned, so that a change of hash (which would orphan every cache entry) is deliberate.
        assert_eq!(fnv1a(&[b""]), 0xaf64_724c_8602_eb6e);
    }

    /// What `cubin` stores lands whole under its final name, with no temporary left beside it.
    #[test]
    fn a_stored_entry_is_whole_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("kiln-cache-test-{}", std::process::id()));
        let path = dir.join("x.cubin");
        store(&path, b"cubin").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"cubin");
        // No temporary file is left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
