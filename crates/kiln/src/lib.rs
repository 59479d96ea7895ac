//! # kiln
//!
//! A deep-learning framework in Rust: tensors with reverse-mode autograd, written once against
//! a [`Backend`] trait and run on any [`Device`] — the CPU backend here, CUDA and third-party
//! backends through the same API.
//!
//! ```
//! use kiln::prelude::*;
//! # fn main() -> kiln::Result<()> {
//! let dev = kiln::device("cpu")?;
//! let w = Var::new(Tensor::randn(0.0, 0.1, [4, 3], DType::F32, 0, &dev)?);
//! let x = Tensor::rand_uniform(-1.0, 1.0, [8, 4], DType::F32, 1, &dev)?;
//! let loss = x.matmul(&w.as_tensor())?.sqr()?.mean_all()?;
//! let grads = loss.backward()?;
//! let step = no_grad(|| w.as_tensor().sub(&grads.get(&w).unwrap().mul_scalar(0.1)?))?;
//! w.set(&step)?;
//! # Ok(()) }
//! ```

#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
mod readme {}

pub use kiln_tensor::*;

#[cfg(feature = "cpu")]
pub use kiln_cpu;

pub mod profile;

/// Layers, losses, optimizers, schedules and checkpoints (the `kiln-nn` crate).
pub use kiln_nn as nn;

/// The names most programs need: `use kiln::prelude::*;`.
pub mod prelude {
    pub use kiln_nn::optim::Optimizer;
    pub use kiln_nn::Module;
    pub use kiln_tensor::{no_grad, DType, Device, Gradients, Result, Shape, Tensor, Var};
}

/// The device named by `spec`: `"cpu"`, or `"cuda"` / `"cuda:N"`.
///
/// ```
/// assert_eq!(kiln::device("cpu").unwrap().location(), "cpu");
/// let err = kiln::device("tpu").unwrap_err();
/// assert!(err.to_string().contains("unknown device"));
/// ```
pub fn device(spec: &str) -> Result<Device> {
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
    match (kind.to_ascii_lowercase().as_str(), ordinal) {
        ("cpu", None | Some(0)) => cpu_device(spec),
        ("cuda", _) => Err(Error::Msg(format!(
            "device '{spec}': this build of kiln has no CUDA backend yet (it arrives with the kiln-cuda crate \
             and the `cuda` feature); use \"cpu\""
        ))),
        _ => Err(Error::Msg(format!("unknown device '{spec}' (expected \"cpu\", \"cuda\" or \"cuda:N\")"))),
    }
}

#[cfg(feature = "cpu")]
fn cpu_device(_: &str) -> Result<Device> {
    Ok(kiln_cpu::cpu())
}

#[cfg(not(feature = "cpu"))]
fn cpu_device(spec: &str) -> Result<Device> {
    Err(Error::Msg(format!("device '{spec}': kiln was built without the `cpu` feature")))
}
