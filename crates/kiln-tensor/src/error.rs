//! The one error type of kiln. Every message names the operation and the shapes, dtypes or
//! devices involved, so the user can act on it without a debugger.

use crate::{DType, Shape};

/// Everything that can go wrong in a kiln call.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two shapes that must agree (or broadcast) do not.
    #[error("{op}: shape mismatch between {lhs} and {rhs}{hint}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The first shape.
        lhs: Shape,
        /// The second shape.
        rhs: Shape,
        /// Extra explanation, starting with "; " when present.
        hint: String,
    },
    /// Two operands have different dtypes.
    #[error("{op}: dtype mismatch, {lhs} vs {rhs}{shapes} (cast one side explicitly with to_dtype)")]
    DTypeMismatch {
        /// The operation.
        op: &'static str,
        /// The first dtype.
        lhs: DType,
        /// The second dtype.
        rhs: DType,
        /// The operands' shapes, as `" for shapes [2, 3] and [3]"` (empty when unknown).
        shapes: String,
    },
    /// The operation does not support this dtype.
    #[error("{op}: unsupported dtype {dtype} (supported: {supported})")]
    UnsupportedDType {
        /// The operation.
        op: &'static str,
        /// The dtype given.
        dtype: DType,
        /// What the op accepts.
        supported: &'static str,
    },
    /// Operands live on different devices.
    #[error("{op}: device mismatch, {lhs} vs {rhs}{shapes} (move one side with .to_device())")]
    DeviceMismatch {
        /// The operation.
        op: &'static str,
        /// The first device.
        lhs: String,
        /// The second device.
        rhs: String,
        /// The operands' shapes, as `" for shapes [2, 3] and [3]"`.
        shapes: String,
    },
    /// A dimension index is out of range for the tensor's rank.
    #[error(
        "{op}: dim {dim} out of range for a tensor of shape {shape} (rank {rank}, valid dims are -{rank}..{rank})"
    )]
    DimOutOfRange {
        /// The operation.
        op: &'static str,
        /// The dim given (possibly negative).
        dim: isize,
        /// The shape of the tensor.
        shape: Shape,
        /// Its rank.
        rank: usize,
    },
    /// An index or a range is out of bounds.
    #[error("{op}: index {index} out of range for size {size} (dim {dim} of shape {shape})")]
    IndexOutOfRange {
        /// The operation.
        op: &'static str,
        /// The offending index.
        index: i64,
        /// The size of the dim indexed.
        size: usize,
        /// The dim indexed.
        dim: usize,
        /// The shape of the tensor indexed.
        shape: Shape,
    },
    /// The number of elements does not match a shape.
    #[error("{op}: {got} elements cannot have shape {shape} ({expected} elements)")]
    ElementCount {
        /// The operation.
        op: &'static str,
        /// The shape asked for.
        shape: Shape,
        /// Its element count.
        expected: usize,
        /// The element count given.
        got: usize,
    },
    /// The arguments are invalid for another reason, explained in the message.
    #[error("{op}: {msg}")]
    Invalid {
        /// The operation.
        op: &'static str,
        /// What is wrong and what to do.
        msg: String,
    },
    /// A backend reported a failure (device out of memory, driver error, ...).
    #[error("backend {backend}: {msg}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// Its message.
        msg: String,
    },
    /// A free-form error.
    #[error("{0}")]
    Msg(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }

    /// Shorthand for a [`Error::ShapeMismatch`] without hint.
    pub fn shape_mismatch(op: &'static str, lhs: &Shape, rhs: &Shape) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.clone(), rhs: rhs.clone(), hint: String::new() }
    }
}
