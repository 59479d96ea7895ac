//! Reductions over any set of dims, and the composites built from them: mean, var,
//! logsumexp, softmax, log_softmax.

use crate::autograd::Op;
use crate::shape::resolve_dim;
use crate::{DType, DimVec, Error, ReduceOp, Result, Shape, Tensor};
use smallvec::{smallvec, SmallVec};

/// A set of dims to reduce over: `1`, `-1`, `[0, 2]`, `&[-1]`, or `()` for all dims.
pub trait Dims {
    /// Resolves to sorted distinct dims of `shape`.
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec>;
}

impl Dims for isize {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        Ok(smallvec![resolve_dim(op, *self, shape)?])
    }
}
impl Dims for i32 {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        Ok(smallvec![resolve_dim(op, *self as isize, shape)?])
    }
}
impl Dims for () {
    fn resolve(&self, _: &'static str, shape: &Shape) -> Result<DimVec> {
        Ok((0..shape.rank()).collect())
    }
}
impl Dims for [isize] {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        let mut dims = self.iter().map(|&d| resolve_dim(op, d, shape)).collect::<Result<DimVec>>()?;
        dims.sort_unstable();
        if dims.windows(2).any(|w| w[0] == w[1]) {
            return Err(Error::invalid(op, format!("dims {self:?} name the same dim twice (shape {shape})")));
        }
        Ok(dims)
    }
}
impl<const N: usize> Dims for [isize; N] {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        self.as_slice().resolve(op, shape)
    }
}
impl<const N: usize> Dims for [i32; N] {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        self.iter().map(|&d| d as isize).collect::<SmallVec<[isize; N]>>().as_slice().resolve(op, shape)
    }
}
impl<T: Dims + ?Sized> Dims for &T {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        (**self).resolve(op, shape)
    }
}
impl Dims for Vec<isize> {
    fn resolve(&self, op: &'static str, shape: &Shape) -> Result<DimVec> {
        self.as_slice().resolve(op, shape)
    }
}

fn reduced_shape(shape: &Shape, dims: &[usize], keepdim: bool) -> Shape {
    let out = shape.dims().iter().enumerate().filter_map(|(i, &d)| match (dims.contains(&i), keepdim) {
        (false, _) => Some(d),
        (true, true) => Some(1),
        (true, false) => None,
    });
    Shape::new(out.collect::<DimVec>())
}

impl Tensor {
    /// Reduces with `op` over resolved `dims`, keeping them as size 1.
    pub(crate) fn reduce_keepdim(&self, op: ReduceOp, dims: &[usize]) -> Result<Tensor> {
        if matches!(op, ReduceOp::Max | ReduceOp::Min | ReduceOp::ArgMax | ReduceOp::ArgMin)
            && dims.iter().any(|&d| self.dims()[d] == 0)
        {
            return Err(Error::invalid(
                op.name(),
                format!(
                    "cannot reduce over an empty dim (shape {}, dims {dims:?}): the result is undefined",
                    self.shape()
                ),
            ));
        }
        let s = self.backend().reduce(op, self.storage(), self.layout(), dims)?;
        let shape = reduced_shape(self.shape(), dims, true);
        let dtype = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
            // Integer sums widen to i64, as in PyTorch: counting a u8 mask must not wrap at 256.
            ReduceOp::Sum if self.dtype().is_int() => DType::I64,
            _ => self.dtype(),
        };
        let rec = (!op.is_arg()).then(|| Op::Reduce(self.clone(), op, DimVec::from_slice(dims)));
        Ok(self.result(s, shape, dtype, rec))
    }

    fn reduce(&self, op: ReduceOp, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        let dims = dims.resolve(op.name(), self.shape())?;
        let out = self.reduce_keepdim(op, &dims)?;
        if keepdim {
            Ok(out)
        } else {
            out.reshape(reduced_shape(self.shape(), &dims, false))
        }
    }

    /// Sum over `dims` (`()` for all).
    pub fn sum(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Sum, dims, keepdim)
    }
    /// Sum of all elements, as a 0-dim tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        self.sum((), false)
    }
    /// Maximum over `dims`.
    pub fn max(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, dims, keepdim)
    }
    /// Minimum over `dims`.
    pub fn min(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, dims, keepdim)
    }
    /// Index (i64) of the first maximum along `dim`.
    pub fn argmax(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::ArgMax, dim, keepdim)
    }
    /// Index (i64) of the first minimum along `dim`.
    pub fn argmin(&self, dim: isize, keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::ArgMin, dim, keepdim)
    }

    /// Mean over `dims` (floats).
    pub fn mean(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.float_only("mean")?;
        let dims = dims.resolve("mean", self.shape())?;
        let n: usize = dims.iter().map(|&d| self.dims()[d]).product();
        let dims: SmallVec<[isize; 4]> = dims.iter().map(|&d| d as isize).collect();
        if matches!(self.dtype(), DType::F16 | DType::BF16) {
            // A half-precision sum overflows long before the mean does: accumulate in f32.
            return self.to_dtype(DType::F32)?.sum(&dims[..], keepdim)?.div_scalar(n as f64)?.to_dtype(self.dtype());
        }
        self.sum(&dims[..], keepdim)?.div_scalar(n as f64)
    }
    /// Mean of all elements.
    pub fn mean_all(&self) -> Result<Tensor> {
        self.mean((), false)
    }

    /// Unbiased variance over `dims` (divides by n - 1, PyTorch's default).
    pub fn var(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.float_only("var")?;
        let dims: Vec<isize> = dims.resolve("var", self.shape())?.into_iter().map(|d| d as isize).collect();
        let n: usize = dims.iter().map(|&d| self.dims()[d as usize]).product();
        let centered = self.sub(&self.mean(dims.clone(), true)?)?;
        centered.sqr()?.sum(dims, keepdim)?.div_scalar(n as f64 - 1.0)
    }

    /// `log(sum(exp(x)))` over `dims`, computed stably.
    pub fn logsumexp(&self, dims: impl Dims, keepdim: bool) -> Result<Tensor> {
        self.float_only("logsumexp")?;
        let dims: Vec<isize> = dims.resolve("logsumexp", self.shape())?.into_iter().map(|d| d as isize).collect();
        // A constant shift (detached: it cancels in the gradient); rows of -inf stay finite.
        let m = self.max(dims.clone(), true)?.detach();
        let m = m.where_finite()?;
        let out = self.sub(&m)?.exp()?.sum(dims.clone(), true)?.log()?.add(&m)?;
        if keepdim {
            Ok(out)
        } else {
            out.squeeze_dims(&dims)
        }
    }

    /// Softmax along `dim`.
    pub fn softmax(&self, dim: isize) -> Result<Tensor> {
        self.float_only("softmax")?;
        let d = resolve_dim("softmax", dim, self.shape())?;
        if let Some(y) = self.softmax_fused(d, false)? {
            return Ok(y);
        }
        let m = self.max(dim, true)?.detach().where_finite()?;
        let e = self.sub(&m)?.exp()?;
        e.div(&e.sum(dim, true)?)
    }

    /// Log-softmax along `dim`.
    pub fn log_softmax(&self, dim: isize) -> Result<Tensor> {
        self.float_only("log_softmax")?;
        let d = resolve_dim("log_softmax", dim, self.shape())?;
        if let Some(y) = self.softmax_fused(d, true)? {
            return Ok(y);
        }
        self.sub(&self.logsumexp(dim, true)?)
    }

    /// Cross-entropy of each row of logits `[N, C]` against class indices `[N]` (`i64` or `u32`):
    /// `[N]` values `logsumexp(x_r) - x_r[t_r]`, differentiable in the logits. One fused pass
    /// where the backend has it, else log-softmax and gather.
    pub fn cross_entropy_rows(&self, targets: &Tensor) -> Result<Tensor> {
        const OP: &str = "cross_entropy";
        self.float_only(OP)?;
        self.same_device(OP, targets)?;
        if self.rank() != 2 || targets.rank() != 1 || targets.dims()[0] != self.dims()[0] {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: targets.shape().clone(),
                hint: "; expects [N, C] scores and [N] class indices".into(),
            });
        }
        if !matches!(targets.dtype(), DType::I64 | DType::U32) {
            return Err(Error::UnsupportedDType {
                op: OP,
                dtype: targets.dtype(),
                supported: "i64, u32 (class indices)",
            });
        }
        if self.elem_count() > 0 {
            // Views as they are: a backend that declines (the CPU's) then composes without a copy.
            let (x, t) = ((self.storage(), self.layout()), (targets.storage(), targets.layout()));
            let fused = self.backend().cross_entropy_rows(x, t)?;
            if let Some(s) = fused {
                let rec = Some(Op::CrossEntropy(self.clone(), targets.detach()));
                return Ok(self.result(s, Shape::new([self.dims()[0]]), self.dtype(), rec));
            }
        }
        self.log_softmax(-1)?.gather(1, &targets.unsqueeze(1)?)?.squeeze(1)?.neg()
    }

    /// The gradient of [`Tensor::cross_entropy_rows`] for the per-row gradient `grad`:
    /// `(softmax(x_r) - onehot(t_r)) * grad_r`.
    pub(crate) fn cross_entropy_rows_grad(&self, targets: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let fused = self.backend().cross_entropy_rows_backward(
            (self.storage(), self.layout()),
            (targets.storage(), targets.layout()),
            (grad.storage(), grad.layout()),
        )?;
        if let Some(s) = fused {
            return Ok(self.result(s, self.shape().clone(), self.dtype(), None));
        }
        let classes = Tensor::arange(0.0, self.dims()[1] as f64, targets.dtype(), self.device())?;
        let onehot = classes.unsqueeze(0)?.eq(&targets.unsqueeze(1)?)?.to_dtype(self.dtype())?;
        self.softmax(-1)?.sub(&onehot)?.mul(&grad.unsqueeze(1)?)
    }

    /// The backend's fused (log-)softmax over the last dim `dim`, if it has one.
    fn softmax_fused(&self, dim: usize, log: bool) -> Result<Option<Tensor>> {
        if dim + 1 != self.rank() || self.elem_count() == 0 {
            return Ok(None);
        }
        let x = crate::no_grad(|| self.contiguous())?;
        Ok(self
            .backend()
            .softmax_last(x.storage(), x.layout(), log)?
            .map(|s| self.result(s, self.shape().clone(), self.dtype(), Some(Op::Softmax(self.clone(), log)))))
    }

    /// Replaces non-finite elements by 0 (keeps stable shifts from producing inf - inf).
    fn where_finite(&self) -> Result<Tensor> {
        let finite = self.abs()?.lt_scalar(f64::INFINITY)?;
        finite.where_cond(self, &self.zeros_like()?)
    }

    fn squeeze_dims(&self, dims: &[isize]) -> Result<Tensor> {
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        self.reshape(reduced_shape(self.shape(), &dims, false))
    }
}
