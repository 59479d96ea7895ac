//! Views: new layouts over the same storage, never copying (except `reshape` of a layout whose
//! strides cannot express the new shape, which copies, as PyTorch's `reshape` does; `view`
//! errors instead). Also `contiguous`, which copies on purpose.

use crate::autograd::Op;
use crate::shape::resolve_dim;
use crate::{DimVec, Error, Layout, Result, Shape, Tensor};

impl Tensor {
    /// The same elements with another shape. A view when the strides allow it, otherwise a
    /// contiguous copy (PyTorch's `reshape`). For a `-1` dim use [`Tensor::reshape_infer`].
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        self.check_count("reshape", &shape)?;
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.view_of(l, Op::Reshape(self.clone()))),
            None => self.contiguous()?.reshape(shape),
        }
    }

    /// Reshape where one dim may be `-1` (inferred), as in PyTorch's `x.reshape(-1, 784)`.
    pub fn reshape_infer(&self, dims: &[isize]) -> Result<Tensor> {
        let known = Shape::new(dims.iter().filter(|&&d| d >= 0).map(|&d| d as usize).collect::<Vec<_>>()).elem_count();
        let inferred = dims.iter().filter(|&&d| d < 0).count();
        if inferred > 1 || dims.iter().any(|&d| d < -1) {
            return Err(Error::invalid("reshape", format!("{dims:?}: at most one dim may be -1 and no dim below -1")));
        }
        let fill = if inferred == 1 {
            if known == 0 || !self.elem_count().is_multiple_of(known) {
                return Err(Error::invalid(
                    "reshape",
                    format!(
                        "cannot infer the -1 dim of {dims:?} for {} elements (shape {})",
                        self.elem_count(),
                        self.shape()
                    ),
                ));
            }
            self.elem_count() / known
        } else {
            0
        };
        let shape: Vec<usize> = dims.iter().map(|&d| if d < 0 { fill } else { d as usize }).collect();
        self.reshape(shape)
    }

    /// Like [`Tensor::reshape`] but never copies: errors when the strides do not allow a view.
    pub fn view(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        self.check_count("view", &shape)?;
        match self.layout().reshape(&shape) {
            Some(l) => Ok(self.view_of(l, Op::Reshape(self.clone()))),
            None => Err(Error::invalid(
                "view",
                format!(
                    "a tensor of shape {} with strides {:?} cannot be viewed as {shape}; call .contiguous() first or use reshape",
                    self.shape(),
                    self.layout().strides()
                ),
            )),
        }
    }

    fn check_count(&self, op: &'static str, shape: &Shape) -> Result<()> {
        if shape.elem_count() != self.elem_count() || shape.elem_count() == usize::MAX {
            return Err(Error::ElementCount {
                op,
                shape: shape.clone(),
                expected: shape.elem_count(),
                got: self.elem_count(),
            });
        }
        Ok(())
    }

    /// Reorders the dims: `perm[i]` is the old dim that becomes dim `i`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let l = self.layout().permute("permute", perm)?;
        Ok(self.view_of(l, Op::Permute(self.clone(), DimVec::from_slice(perm))))
    }

    /// Swaps two dims.
    pub fn transpose(&self, d0: isize, d1: isize) -> Result<Tensor> {
        let a = resolve_dim("transpose", d0, self.shape())?;
        let b = resolve_dim("transpose", d1, self.shape())?;
        let mut perm: DimVec = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Swaps the last two dims (a matrix transpose).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::invalid("t", format!("needs at least 2 dims, got shape {}", self.shape())));
        }
        self.transpose(-2, -1)
    }

    /// `len` elements of `dim` starting at `start`.
    pub fn narrow(&self, dim: isize, start: usize, len: usize) -> Result<Tensor> {
        self.slice_step("narrow", dim, start, len, 1)
    }

    /// Elements `start..end` of `dim`, every `step`-th (Python's `x[start:end:step]`).
    pub fn slice(&self, dim: isize, start: usize, end: usize, step: usize) -> Result<Tensor> {
        if end < start {
            return Err(Error::invalid("slice", format!("end {end} is before start {start}")));
        }
        if step == 0 {
            return Err(Error::invalid("slice", "step must be at least 1"));
        }
        self.slice_step("slice", dim, start, (end - start).div_ceil(step), step)
    }

    fn slice_step(&self, op: &'static str, dim: isize, start: usize, len: usize, step: usize) -> Result<Tensor> {
        let d = resolve_dim(op, dim, self.shape())?;
        let l = self.layout().narrow(op, d, start, len, step)?;
        Ok(self.view_of(l, Op::Narrow { input: self.clone(), dim: d, start, step }))
    }

    /// Expands to `shape` (NumPy broadcasting: size-1 dims stretch, new dims are added on the
    /// left) without copying.
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if &shape == self.shape() {
            return Ok(self.clone());
        }
        shape.checked_elem_count("broadcast_to")?;
        let l = self.layout().broadcast_to("broadcast_to", &shape)?;
        Ok(self.view_of(l, Op::Broadcast(self.clone())))
    }

    /// Same as [`Tensor::broadcast_to`] (PyTorch's name).
    pub fn expand(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        self.broadcast_to(shape)
    }

    /// Inserts a dim of size 1 at `dim` (`-1` appends).
    pub fn unsqueeze(&self, dim: isize) -> Result<Tensor> {
        let rank = self.rank() as isize;
        let d = if dim < 0 { dim + rank + 1 } else { dim };
        if d < 0 || d > rank {
            return Err(Error::DimOutOfRange {
                op: "unsqueeze",
                dim,
                shape: self.shape().clone(),
                rank: self.rank() + 1,
            });
        }
        let l = self.layout().unsqueeze(d as usize);
        Ok(self.view_of(l, Op::Reshape(self.clone())))
    }

    /// Removes `dim` if its size is 1 (otherwise returns the tensor unchanged, like PyTorch).
    pub fn squeeze(&self, dim: isize) -> Result<Tensor> {
        let d = resolve_dim("squeeze", dim, self.shape())?;
        if self.dims()[d] != 1 {
            return Ok(self.clone());
        }
        let l = self.layout().squeeze(d);
        Ok(self.view_of(l, Op::Reshape(self.clone())))
    }

    /// Merges dims `start..=end` into one.
    pub fn flatten(&self, start: isize, end: isize) -> Result<Tensor> {
        if self.rank() == 0 {
            return self.reshape([1]);
        }
        let s = resolve_dim("flatten", start, self.shape())?;
        let e = resolve_dim("flatten", end, self.shape())?;
        if s > e {
            return Err(Error::invalid(
                "flatten",
                format!("start dim {s} is after end dim {e} (shape {})", self.shape()),
            ));
        }
        let d = self.dims();
        let mut shape = DimVec::from_slice(&d[..s]);
        shape.push(d[s..=e].iter().product());
        shape.extend_from_slice(&d[e + 1..]);
        self.reshape(shape)
    }

    /// All elements in one dim.
    pub fn flatten_all(&self) -> Result<Tensor> {
        self.reshape([self.elem_count()])
    }

    /// A row-major copy, or the tensor itself when it already is.
    pub fn contiguous(&self) -> Result<Tensor> {
        if self.is_contiguous() {
            return Ok(self.clone());
        }
        self.copy()
    }

    /// A fresh contiguous copy of the elements.
    pub fn copy(&self) -> Result<Tensor> {
        let dst = match self.backend().contiguous(self.storage(), self.layout())? {
            Some(dst) => dst,
            None => {
                let mut dst = self.backend().fill(self.elem_count(), self.dtype(), 0.0)?;
                let dl = Layout::contiguous(self.shape().clone());
                self.backend().copy_strided(self.storage(), self.layout(), &mut dst, &dl)?;
                dst
            }
        };
        Ok(self.result(dst, self.shape().clone(), self.dtype(), Some(Op::Copy(self.clone()))))
    }
}
