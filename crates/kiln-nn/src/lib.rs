//! # kiln-nn
//!
//! Modules, layers, losses, optimizers, learning-rate schedules and safetensors checkpoints,
//! with PyTorch's names, shapes, defaults and update rules.
//!
//! ```
//! use kiln_nn::{loss, optim::{Adam, AdamConfig, Optimizer}, Activation, LinearConfig, Module, Sequential};
//! use kiln_tensor::{DType, Tensor};
//! # fn main() -> kiln_tensor::Result<()> {
//! let dev = kiln_cpu::cpu();
//! kiln_nn::manual_seed(0);
//! let model = Sequential::new()
//!     .add(LinearConfig::new(4, 16).init(&dev)?)
//!     .add(Activation::ReLU)
//!     .add(LinearConfig::new(16, 3).init(&dev)?);
//! assert_eq!(model.parameters()[0].0, "0.weight");
//! let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-2));
//! let x = Tensor::rand_uniform(-1.0, 1.0, [8, 4], DType::F32, 1, &dev)?;
//! let y = Tensor::from_vec(vec![0i64, 1, 2, 0, 1, 2, 0, 1], [8], &dev)?;
//! for _ in 0..20 {
//!     let loss = loss::cross_entropy(&model.forward(&x)?, &y)?;
//!     opt.step(&loss.backward()?)?;
//! }
//! # Ok(()) }
//! ```

pub mod autocast;
pub mod checkpoint;
pub mod init;
mod layers;
pub mod loss;
mod module;
pub mod optim;
pub mod resume;
pub mod scheduler;
mod summary;
pub mod zoo;

pub use autocast::autocast;
pub use init::{manual_seed, Init};
pub use layers::*;
pub use module::{join, Buffer, Entry, Mode, Module, RngState};
pub use summary::summary;
