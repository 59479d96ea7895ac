//! Tensor operations, one module per family. Each public op checks its arguments (shapes,
//! dtypes, devices, dims), calls the backend once, and records itself for autograd.

mod binary;
pub(crate) mod conv;
mod convert;
mod creation;
mod indexing;
mod matmul;
mod reduce;
mod unary;
mod views;

pub use conv::Window2d;
pub use reduce::Dims;
pub(crate) use unary::unary_derivative;

use crate::autograd::Op;
use crate::device::{AnyStorage, DynBackend};
use crate::{DType, Layout, Shape, Tensor};

impl Tensor {
    pub(crate) fn backend(&self) -> &dyn DynBackend {
        self.device().dyn_backend()
    }

    /// Wraps backend output: contiguous `shape`, on this tensor's device.
    pub(crate) fn result(&self, storage: AnyStorage, shape: Shape, dtype: DType, op: Option<Op>) -> Tensor {
        Tensor::from_storage(storage, Layout::contiguous(shape), dtype, self.device().clone(), op)
    }
}
