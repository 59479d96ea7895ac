//! Devices by name: `kiln::device("cpu")`, and the registry through which a backend crate of
//! anyone's makes its devices reachable by name too (so that `mnist --device mydev` needs no
//! change to kiln or to the example).
//!
//! ```
//! use kiln::{Backend, Device};
//! # use kiln::kiln_cpu::CpuBackend;
//! // A third-party crate registers its backend type once, at start-up...
//! kiln::register_backend("mycpu", |ordinal| match ordinal {
//!     None | Some(0) => Ok(CpuBackend),
//!     Some(n) => Err(kiln::Error::Msg(format!("mycpu:{n}: there is only one such device"))),
//! })
//! .unwrap();
//! // ...and from then on it is a device like the built-in ones, profiling layer included.
//! assert_eq!(kiln::device("mycpu").unwrap().location(), "cpu");
//! let (dev, stats) = kiln::profiled_device("mycpu:0").unwrap();
//! kiln::Tensor::ones([2, 2], kiln::DType::F32, &dev).unwrap();
//! assert!(stats.table().contains("fill"));
//! ```

use crate::profile::{Profiled, Stats};
use kiln_tensor::{Backend, Device, Error, Result};
use std::sync::{Arc, RwLock};

/// Opens a registered backend: `(ordinal, profiled)` to the device and, when profiled, its counters.
type Opener = Arc<dyn Fn(Option<usize>, bool) -> Result<(Device, Option<Stats>)> + Send + Sync>;

static REGISTRY: RwLock<Vec<(String, Opener)>> = RwLock::new(Vec::new());

/// The names kiln itself resolves; a registration cannot shadow them.
const BUILT_IN: [&str; 2] = ["cpu", "cuda"];

/// Makes the backend that `open` builds reachable as `kind` (or `kind:N`, the ordinal passed to
/// `open`) from [`device`] and [`profiled_device`]. Registering a name again replaces the earlier
/// entry. The built-in names (`cpu`, `cuda`) and names that are not a lowercase identifier
/// (letters, digits, `_`, `-`) are refused.
pub fn register_backend<B: Backend>(
    kind: &str,
    open: impl Fn(Option<usize>) -> Result<B> + Send + Sync + 'static,
) -> Result<()> {
    let valid =
        !kind.is_empty() && kind.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if !valid || BUILT_IN.contains(&kind) {
        return Err(Error::Msg(format!(
            "register_backend: cannot register '{kind}' (names are lowercase letters, digits, '_' and '-', \
             and not one of the built-in {BUILT_IN:?})"
        )));
    }
    let opener: Opener = Arc::new(move |ordinal, profiled| Ok(wrap(open(ordinal)?, profiled)));
    let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
    registry.retain(|(name, _)| name != kind);
    registry.push((kind.to_string(), opener));
    Ok(())
}

/// The names registered with [`register_backend`], in registration order.
pub fn registered_backends() -> Vec<String> {
    REGISTRY.read().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, _)| n.clone()).collect()
}

/// The device named by `spec`: `"cpu"`, `"cuda"` / `"cuda:N"`, or a registered `"kind[:N]"`.
///
/// ```
/// assert_eq!(kiln::device("cpu").unwrap().location(), "cpu");
/// let err = kiln::device("tpu").unwrap_err();
/// assert!(err.to_string().contains("unknown device"));
/// ```
pub fn device(spec: &str) -> Result<Device> {
    open(spec, false).map(|(d, _)| d)
}

/// The device named by `spec` (as in [`device`]) wrapped in a [`Profiled`] layer, and the
/// counters that layer fills: what `mnist --profile` prints.
pub fn profiled_device(spec: &str) -> Result<(Device, Stats)> {
    let (dev, stats) = open(spec, true)?;
    let stats = stats.ok_or_else(|| Error::Msg(format!("device '{spec}': no profiling layer over this device")))?;
    Ok((dev, stats))
}

/// `backend` as a device, inside a [`Profiled`] layer when `profiled` (with its counters).
fn wrap<B: Backend>(backend: B, profiled: bool) -> (Device, Option<Stats>) {
    if !profiled {
        return (Device::new(backend), None);
    }
    let p = Profiled::new(backend);
    let stats = p.stats();
    (Device::new(p), Some(stats))
}

fn open(spec: &str, profiled: bool) -> Result<(Device, Option<Stats>)> {
    let spec = spec.trim();
    let (kind, ordinal) = match spec.split_once(':') {
        Some((k, n)) => {
            let n: usize = n.parse().map_err(|_| {
                Error::Msg(format!("device '{spec}': the ordinal after ':' must be a number, as in \"cuda:0\""))
            })?;
            (k, Some(n))
        }
        None => (spec, None),
    };
    let kind = kind.to_ascii_lowercase();
    match (kind.as_str(), ordinal) {
        ("cpu", None | Some(0)) => return cpu_device(spec, profiled),
        ("cpu", Some(n)) => {
            return Err(Error::Msg(format!("device '{spec}': there is one CPU device, \"cpu\" (not cpu:{n})")))
        }
        ("cuda", n) => return cuda_device(spec, n.unwrap_or(0), profiled),
        _ => {}
    }
    let opener =
        REGISTRY.read().unwrap_or_else(|e| e.into_inner()).iter().find(|(n, _)| *n == kind).map(|(_, o)| o.clone());
    match opener {
        Some(open) => open(ordinal, profiled),
        None => {
            let mut known: Vec<String> = vec!["\"cpu\"".into(), "\"cuda[:N]\"".into()];
            known.extend(registered_backends().iter().map(|n| format!("\"{n}[:N]\"")));
            Err(Error::Msg(format!(
                "unknown device '{spec}' (expected one of {}, or a name given to kiln::register_backend)",
                known.join(", ")
            )))
        }
    }
}

/// Why `cuda:N` cannot be opened: no driver, no such device, or (with a device) the backend's
/// ops, which are not written yet.
#[cfg(feature = "cuda")]
fn cuda_device(spec: &str, ordinal: usize, profiled: bool) -> Result<(Device, Option<Stats>)> {
    let opened = if profiled {
        kiln_cuda::CudaBackend::new(ordinal).map(|b| wrap(b, true))
    } else {
        kiln_cuda::device(ordinal).map(|d| (d, None))
    };
    match opened {
        Ok(opened) => Ok(opened),
        Err(Error::Backend { msg, .. }) => Err(Error::Msg(format!("device '{spec}': {msg}"))),
        Err(e) => Err(Error::Msg(format!("device '{spec}': {e}"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(spec: &str, _: usize, _: bool) -> Result<(Device, Option<Stats>)> {
    Err(Error::Msg(format!(
        "device '{spec}': this build of kiln has no CUDA backend; build with `--features cuda` (for the example: \
         `cargo run --release -p mnist --features cuda -- --device cuda`)"
    )))
}

#[cfg(feature = "cpu")]
fn cpu_device(_: &str, profiled: bool) -> Result<(Device, Option<Stats>)> {
    // Unprofiled, the one shared CPU device.
    Ok(if profiled { wrap(kiln_cpu::CpuBackend, true) } else { (kiln_cpu::cpu(), None) })
}

#[cfg(not(feature = "cpu"))]
fn cpu_device(spec: &str, _: bool) -> Result<(Device, Option<Stats>)> {
    Err(Error::Msg(format!("device '{spec}': kiln was built without the `cpu` feature")))
}

#[cfg(all(test, feature = "cpu"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn built_in_and_malformed_names_are_refused() {
        let cpu = |_: Option<usize>| -> Result<kiln_cpu::CpuBackend> { Ok(kiln_cpu::CpuBackend) };
        for bad in ["cpu", "cuda", "", "My Dev", "a:b"] {
            let err = register_backend(bad, cpu).unwrap_err().to_string();
            assert!(err.contains("register_backend"), "{err}");
        }
    }

    #[test]
    fn unknown_devices_list_the_registered_ones() {
        register_backend("listed-dev", |_| Ok(kiln_cpu::CpuBackend)).unwrap();
        let err = device("nodev:1").unwrap_err().to_string();
        assert!(err.contains("unknown device 'nodev:1'") && err.contains("\"listed-dev[:N]\""), "{err}");
        assert!(device("cpu:1").unwrap_err().to_string().contains("one CPU device"));
        assert!(device("cuda:x").unwrap_err().to_string().contains("must be a number"));
    }
}
