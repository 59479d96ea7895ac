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

mod devices;
pub mod profile;

pub use devices::{device, profiled_device, register_backend, registered_backends};

/// Layers, losses, optimizers, schedules and checkpoints (the `kiln-nn` crate).
pub use kiln_nn as nn;

/// The names most programs need: `use kiln::prelude::*;`.
pub mod prelude {
    pub use kiln_nn::optim::Optimizer;
    pub use kiln_nn::Module;
    pub use kiln_tensor::{no_grad, DType, Device, Gradients, Result, Shape, Tensor, Var};
}
