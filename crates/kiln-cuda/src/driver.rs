//! Finding the CUDA driver and a device, as typed errors rather than cudarc's panics: a missing
//! `libcuda.so.1`, a driver with no device, and an ordinal out of range each say what was
//! searched or asked for.
#![allow(unsafe_code)]

use kiln_tensor::{Error, Result};
use std::path::PathBuf;
use std::sync::OnceLock;

fn cuda_error(msg: impl Into<String>) -> Error {
    Error::Backend { backend: "cuda".into(), msg: msg.into() }
}

/// A CUDA device that the driver reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Its ordinal (`cuda:N`).
    pub ordinal: usize,
    /// Its name, as the driver gives it (`NVIDIA H200`).
    pub name: String,
    /// How many devices the driver reports.
    pub count: usize,
}

/// Loads the driver library once: from `$KILN_CUDA_LIB_DIR` and the system library directories
/// (WSL's too), else by name through the system loader.
fn load_driver() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
            // The driver comes with the NVIDIA driver package, not with a toolkit or a wheel.
            let mut dirs: Vec<PathBuf> = std::env::var_os("KILN_CUDA_LIB_DIR").map(PathBuf::from).into_iter().collect();
            dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/wsl/lib"].map(PathBuf::from));
            let candidates = dirs.iter().map(|d| d.join("libcuda.so.1")).filter(|p| p.is_file());
            for path in candidates.map(Some).chain([None]) {
                let target = path.unwrap_or_else(|| PathBuf::from("libcuda.so.1"));
                // SAFETY: loading the NVIDIA driver library runs no initialiser with
                // preconditions; it stays loaded (leaked) for cudarc, which opens it by name.
                if let Ok(lib) = unsafe { Library::open(Some(&target), RTLD_NOW | RTLD_GLOBAL) } {
                    std::mem::forget(lib);
                    return Ok(());
                }
            }
            let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            Err(format!(
                "no CUDA driver: libcuda.so.1 is not in {} nor on the system loader's path (is the NVIDIA driver \
                 installed? KILN_CUDA_LIB_DIR names another directory)",
                searched.join(", ")
            ))
        })
        .clone()
}

/// The device `cuda:ordinal`, or an error that says why there is none.
pub fn probe(ordinal: usize) -> Result<DeviceInfo> {
    load_driver().map_err(cuda_error)?;
    let count = cudarc::driver::CudaContext::device_count()
        .map_err(|e| cuda_error(format!("the CUDA driver does not start ({e:?})")))?;
    let count = count.max(0) as usize;
    if count == 0 {
        return Err(cuda_error("the CUDA driver is installed but reports no CUDA device"));
    }
    if ordinal >= count {
        return Err(cuda_error(format!(
            "cuda:{ordinal} does not exist: the driver reports {count} device(s), cuda:0 to cuda:{}",
            count - 1
        )));
    }
    let dev = cudarc::driver::result::device::get(ordinal as i32)
        .map_err(|e| cuda_error(format!("cuda:{ordinal}: {e:?}")))?;
    let name = cudarc::driver::result::device::get_name(dev).unwrap_or_else(|_| "unknown device".into());
    Ok(DeviceInfo { ordinal, name, count })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    /// Here (no GPU) the probe must fail with a message, never panic; on a GPU host it finds
    /// cuda:0 and refuses an ordinal past the last device.
    #[test]
    fn probe_reports_instead_of_panicking() {
        match super::probe(0) {
            Ok(info) => {
                println!("found cuda:0: {} ({} devices)", info.name, info.count);
                let err = super::probe(info.count).unwrap_err().to_string();
                assert!(err.contains("does not exist"), "{err}");
            }
            Err(e) => {
                let msg = e.to_string();
                println!("skipped: no CUDA device ({msg})");
                assert!(msg.contains("CUDA"), "{msg}");
            }
        }
    }
}
