//! `Tensor`: a cheap-to-clone handle to storage on a device, a layout over it, and (when
//! gradients are tracked) the op that produced it.

use crate::autograd::{self, Op};
use crate::device::AnyStorage;
use crate::handles;
use crate::{DType, Device, Error, Layout, Result, Shape};
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A unique id per tensor value; gradients are keyed by it. Views get new ids; a [`crate::Var`]
/// keeps its id when updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(u64);

impl TensorId {
    pub(crate) fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        TensorId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

pub(crate) struct TensorInner {
    pub(crate) id: TensorId,
    pub(crate) storage: AnyStorage,
    pub(crate) layout: Layout,
    pub(crate) dtype: DType,
    pub(crate) device: Device,
    /// The op that produced this tensor, recorded only when an input tracks gradients.
    pub(crate) op: Option<Op>,
    /// A leaf whose gradient `backward` reports (a `Var`).
    pub(crate) is_var: bool,
}

/// An n-dimensional array on a [`Device`], with reverse-mode autograd.
///
/// Cloning is cheap (a reference count). Views (`reshape`, `transpose`, `narrow`, ...) share
/// storage and never copy; tensors are never mutated in place, so a view never changes under you.
///
/// ```
/// use kiln_tensor::{Tensor, DType, Var};
/// # fn main() -> kiln_tensor::Result<()> {
/// # let dev = kiln_cpu::cpu();
/// let x = Var::new(Tensor::from_vec(vec![1f32, 2., 3.], [3], &dev)?);
/// let y = x.as_tensor().sqr()?.sum_all()?;       // y = sum(x^2)
/// let grads = y.backward()?;
/// assert_eq!(grads.get(&x).unwrap().to_vec::<f32>()?, vec![2., 4., 6.]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Tensor(pub(crate) ManuallyDrop<Arc<TensorInner>>);

impl Drop for Tensor {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: this is the drop of `self`, the field's only owner; it is not touched again.
        let arc = unsafe { ManuallyDrop::take(&mut self.0) };
        handles::release(arc);
    }
}

impl Tensor {
    pub(crate) fn from_arc(arc: Arc<TensorInner>) -> Tensor {
        Tensor(ManuallyDrop::new(arc))
    }

    /// Wraps freshly computed storage. Records `op` for autograd when gradients are enabled and
    /// one of its inputs tracks them.
    pub(crate) fn from_storage(
        storage: AnyStorage,
        layout: Layout,
        dtype: DType,
        device: Device,
        op: Option<Op>,
    ) -> Tensor {
        let op = op.filter(|op| autograd::is_enabled() && op.inputs().iter().any(|t| t.tracks_grad()));
        handles::tensor(TensorInner { id: TensorId::new(), storage, layout, dtype, device, op, is_var: false })
    }

    /// A new tensor over the same storage with another layout (a view).
    pub(crate) fn view_of(&self, layout: Layout, op: Op) -> Tensor {
        let op = Some(op).filter(|_| autograd::is_enabled() && self.tracks_grad());
        handles::tensor(TensorInner {
            id: TensorId::new(),
            storage: self.0.storage.clone(),
            layout,
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            op,
            is_var: false,
        })
    }

    pub(crate) fn with_id(&self, id: TensorId, is_var: bool) -> Tensor {
        handles::tensor(TensorInner {
            id,
            storage: self.0.storage.clone(),
            layout: self.0.layout.clone(),
            dtype: self.0.dtype,
            device: self.0.device.clone(),
            op: None,
            is_var,
        })
    }

    /// The id that keys this tensor's gradient.
    pub fn id(&self) -> TensorId {
        self.0.id
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        self.0.layout.shape()
    }
    /// The dims of the shape.
    pub fn dims(&self) -> &[usize] {
        self.0.layout.dims()
    }
    /// Number of dims.
    pub fn rank(&self) -> usize {
        self.0.layout.shape().rank()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        self.0.layout.elem_count()
    }
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.dtype
    }
    /// The device holding the storage.
    pub fn device(&self) -> &Device {
        &self.0.device
    }
    /// The view of the storage: shape, strides, offset.
    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }
    /// True when the elements are row-major without gaps.
    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }
    /// True when `backward` will propagate through this tensor.
    pub fn tracks_grad(&self) -> bool {
        self.0.is_var || self.0.op.is_some()
    }
    /// True when both tensors share storage (one is a view of the other, or a clone).
    pub fn shares_storage_with(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// The size of dim `dim` (negative counts from the end).
    pub fn dim(&self, dim: isize) -> Result<usize> {
        Ok(self.dims()[self.shape().dim("dim", dim)?])
    }

    /// The same values, cut off from the autograd graph.
    pub fn detach(&self) -> Tensor {
        if !self.tracks_grad() {
            return self.clone();
        }
        self.with_id(TensorId::new(), false)
    }

    pub(crate) fn storage(&self) -> &AnyStorage {
        &self.0.storage
    }

    /// Errors unless `other` is on the same device.
    pub(crate) fn same_device(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.device() != other.device() {
            return Err(Error::DeviceMismatch {
                op,
                lhs: self.device().location(),
                rhs: other.device().location(),
                shapes: format!(" for shapes {} and {}", self.shape(), other.shape()),
            });
        }
        Ok(())
    }

    /// Errors unless `other` has the same dtype.
    pub(crate) fn same_dtype(&self, op: &'static str, other: &Tensor) -> Result<()> {
        if self.dtype() != other.dtype() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: self.dtype(),
                rhs: other.dtype(),
                shapes: format!(" for shapes {} and {}", self.shape(), other.shape()),
            });
        }
        Ok(())
    }

    /// Errors unless the dtype is a float.
    pub(crate) fn float_only(&self, op: &'static str) -> Result<()> {
        if !self.dtype().is_float() {
            return Err(Error::UnsupportedDType { op, dtype: self.dtype(), supported: "f32, f64, f16, bf16" });
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor[{}, {}, {}]", self.shape(), self.dtype(), self.device())
    }
}
