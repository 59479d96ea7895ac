//! # kiln-tensor
//!
//! Tensors, reverse-mode autograd and the [`Backend`] trait of the kiln deep-learning framework.
//! This crate holds no backend code: devices come from backend crates (`kiln-cpu`, `kiln-cuda`,
//! or your own, see [`backend`]) wrapped in a run-time [`Device`].
//!
//! ```
//! use kiln_tensor::{DType, Tensor, Var};
//! # fn main() -> kiln_tensor::Result<()> {
//! let dev = kiln_cpu::cpu();
//! let w = Var::new(Tensor::randn(0.0, 1.0, [3, 2], DType::F32, 42, &dev)?);
//! let x = Tensor::from_vec(vec![1f32, 2., 3., 4., 5., 6.], [2, 3], &dev)?;
//! let loss = x.matmul(&w.as_tensor())?.relu()?.sum_all()?;
//! let grads = loss.backward()?;
//! assert_eq!(grads.get(&w).unwrap().dims(), &[3, 2]);
//! println!("{}", x.t()?);   // tensor([[1., 4.], [2., 5.], [3., 6.]]), a view
//! # Ok(()) }
//! ```
//!
//! Every op returns [`Result`]: bad shapes, dtypes, devices or indices are an [`Error`] whose
//! message names the op and what was passed, never a panic.

pub mod autograd;
pub mod backend;
mod device;
mod display;
mod dtype;
mod error;
mod fused;
mod handles;
mod layout;
mod op;
mod ops;
mod ops_internal;
pub mod random;
mod shape;
mod tensor;

pub use autograd::{no_grad, GradKey, Gradients, NoGradGuard, Var};
pub use backend::{Backend, Distribution};
pub use device::Device;
pub use dtype::{DType, HostData, WithDType};
pub use error::{Error, Result};
pub use fused::{AdadeltaStep, AdamStep, SgdStep};
pub use layout::{Layout, StridedOffsets};
pub use op::{BinaryOp, Float, MapFn, ReduceOp, UnaryOp, ZipFn};
pub use ops::{Dims, Window2d};
pub use shape::{DimVec, Shape};
pub use tensor::{Tensor, TensorId};

/// Half-precision types, re-exported from the `half` crate.
pub use half::{bf16, f16};
