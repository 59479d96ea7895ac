//! Indexing and joining: gather, index_select, scatter_add, index_add, one_hot, cat, stack,
//! split, chunk.

use crate::autograd::Op;
use crate::shape::resolve_dim;
use crate::{DType, Error, Layout, Result, Shape, Tensor};

fn check_index_dtype(op: &'static str, index: &Tensor) -> Result<()> {
    if !matches!(index.dtype(), DType::I64 | DType::U32) {
        return Err(Error::UnsupportedDType { op, dtype: index.dtype(), supported: "i64, u32 (indices)" });
    }
    Ok(())
}

impl Tensor {
    /// `out[i][j] = self[i][index[i][j]]` for `dim = 1` (PyTorch's `gather`). `index` has the
    /// rank of `self` and sizes no larger than `self`'s outside `dim`; the output has its shape.
    pub fn gather(&self, dim: isize, index: &Tensor) -> Result<Tensor> {
        const OP: &str = "gather";
        let d = resolve_dim(OP, dim, self.shape())?;
        self.same_device(OP, index)?;
        check_index_dtype(OP, index)?;
        let ok = index.rank() == self.rank()
            && index.dims().iter().zip(self.dims()).enumerate().all(|(i, (&a, &b))| i == d || a <= b);
        if !ok {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: index.shape().clone(),
                hint: format!(
                    "; the index must have rank {} and sizes no larger than the source outside dim {d}",
                    self.rank()
                ),
            });
        }
        let s = self.backend().gather(self.storage(), self.layout(), index.storage(), index.layout(), d)?;
        Ok(self.result(s, index.shape().clone(), self.dtype(), Some(Op::Gather(self.clone(), index.clone(), d))))
    }

    /// The slices `ids[k]` of `dim` (a 1-D `i64`/`u32` tensor of indices).
    pub fn index_select(&self, dim: isize, ids: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_select";
        let d = resolve_dim(OP, dim, self.shape())?;
        self.same_device(OP, ids)?;
        check_index_dtype(OP, ids)?;
        if ids.rank() != 1 {
            return Err(Error::invalid(OP, format!("the indices must be 1-D, got shape {}", ids.shape())));
        }
        let s = self.backend().index_select(self.storage(), self.layout(), ids.storage(), ids.layout(), d)?;
        let mut shape = self.dims().to_vec();
        shape[d] = ids.elem_count();
        Ok(self.result(s, Shape::new(shape), self.dtype(), Some(Op::IndexSelect(self.clone(), ids.clone(), d))))
    }

    /// A copy of `self` with `src[i][j]` added at `[index[i][j]][j]` for `dim = 0` (PyTorch's
    /// `scatter_add`). `index` and `src` have equal shapes, no larger than `self` outside `dim`.
    pub fn scatter_add(&self, dim: isize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "scatter_add";
        let d = resolve_dim(OP, dim, self.shape())?;
        self.same_device(OP, index)?;
        self.same_device(OP, src)?;
        self.same_dtype(OP, src)?;
        check_index_dtype(OP, index)?;
        let fits = index.rank() == self.rank()
            && index.dims().iter().zip(self.dims()).enumerate().all(|(i, (&a, &b))| i == d || a <= b);
        if index.shape() != src.shape() || !fits {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: index.shape().clone(),
                rhs: src.shape().clone(),
                hint: format!(
                    "; index and src must have equal shapes of rank {}, no larger than the destination {} outside dim {d}",
                    self.rank(),
                    self.shape()
                ),
            });
        }
        let mut dst = self.backend().fill(self.elem_count(), self.dtype(), 0.0)?;
        let dl = Layout::contiguous(self.shape().clone());
        self.backend().copy_strided(self.storage(), self.layout(), &mut dst, &dl)?;
        self.backend().scatter_add(&mut dst, &dl, index.storage(), index.layout(), src.storage(), src.layout(), d)?;
        let rec = Op::ScatterAdd(self.clone(), index.clone(), src.clone(), d);
        Ok(self.result(dst, self.shape().clone(), self.dtype(), Some(rec)))
    }

    /// `zeros_like(self).scatter_add(dim, index, src)` for the backward of `gather` (max
    /// pooling's, for one): [`crate::Backend::scatter_add_into_zeros`], one buffer that the
    /// backend zeros and scatters into (the CPU row by row, so it is written once), where the
    /// public op would fill a buffer, then copy a second one of zeros into it (two passes over
    /// a CNN layer's 9 MB of activations for nothing). Not recorded: backward rules run
    /// untracked.
    pub(crate) fn scatter_into_zeros(&self, dim: usize, index: &Tensor, src: &Tensor) -> Result<Tensor> {
        let dl = Layout::contiguous(self.shape().clone());
        let (i, s) = ((index.storage(), index.layout()), (src.storage(), src.layout()));
        let dst = self.backend().scatter_add_into_zeros(&dl, self.dtype(), i.0, i.1, s.0, s.1, dim)?;
        Ok(self.result(dst, self.shape().clone(), self.dtype(), None))
    }

    /// A copy of `self` with slice `k` of `src` along `dim` added to slice `ids[k]`
    /// (PyTorch's `index_add`).
    pub fn index_add(&self, dim: isize, ids: &Tensor, src: &Tensor) -> Result<Tensor> {
        const OP: &str = "index_add";
        let d = resolve_dim(OP, dim, self.shape())?;
        if ids.rank() != 1 || src.rank() != self.rank() || src.dims()[d] != ids.elem_count() {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: src.shape().clone(),
                rhs: ids.shape().clone(),
                hint: format!("; src needs rank {} and size {} in dim {d}", self.rank(), ids.elem_count()),
            });
        }
        let mut view = vec![1; self.rank()];
        view[d] = ids.elem_count();
        let index = ids.reshape(view)?.broadcast_to(src.shape().clone())?.contiguous()?;
        self.scatter_add(dim, &index, src)
    }

    /// One-hot rows: an index tensor of shape `s` becomes `s + [num_classes]` of `dtype`.
    /// Errors when an index is negative or not below `num_classes`.
    pub fn one_hot(&self, num_classes: usize, dtype: DType) -> Result<Tensor> {
        const OP: &str = "one_hot";
        check_index_dtype(OP, self)?;
        if self.elem_count() > 0 {
            let v = self.to_dtype(DType::I64)?.to_vec::<i64>()?;
            if let Some((pos, &bad)) = v.iter().enumerate().find(|(_, &x)| x < 0 || x as usize >= num_classes) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "class index {bad} at position {pos} is out of range for {num_classes} classes (index shape {})",
                        self.shape()
                    ),
                ));
            }
        }
        let classes = Tensor::arange(0.0, num_classes as f64, self.dtype(), self.device())?;
        let onehot = self.unsqueeze(-1)?.eq(&classes)?;
        onehot.to_dtype(dtype)
    }

    /// Joins tensors of equal shapes (except along `dim`) along `dim`.
    pub fn cat(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        const OP: &str = "cat";
        let first = tensors.first().ok_or_else(|| Error::invalid(OP, "needs at least one tensor"))?;
        let d = resolve_dim(OP, dim, first.shape())?;
        let mut total = 0;
        for t in tensors {
            first.same_device(OP, t)?;
            first.same_dtype(OP, t)?;
            let same_rest = t.rank() == first.rank()
                && t.dims().iter().zip(first.dims()).enumerate().all(|(i, (a, b))| i == d || a == b);
            if !same_rest {
                return Err(Error::ShapeMismatch {
                    op: OP,
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                    hint: format!("; shapes must match except in dim {d}"),
                });
            }
            total += t.dims()[d];
        }
        let mut shape = first.dims().to_vec();
        shape[d] = total;
        let shape = Shape::new(shape);
        let backend = first.backend();
        let mut dst = backend.fill(shape.elem_count(), first.dtype(), 0.0)?;
        let full = Layout::contiguous(shape.clone());
        let mut at = 0;
        for t in tensors {
            let part = full.narrow(OP, d, at, t.dims()[d], 1)?;
            backend.copy_strided(t.storage(), t.layout(), &mut dst, &part)?;
            at += t.dims()[d];
        }
        let rec = Op::Cat(tensors.iter().map(|t| (*t).clone()).collect(), d);
        Ok(first.result(dst, shape, first.dtype(), Some(rec)))
    }

    /// Joins tensors of equal shapes along a new dim `dim`.
    pub fn stack(tensors: &[&Tensor], dim: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("stack", "needs at least one tensor"))?;
        for t in tensors {
            if t.shape() != first.shape() {
                return Err(Error::ShapeMismatch {
                    op: "stack",
                    lhs: first.shape().clone(),
                    rhs: t.shape().clone(),
                    hint: "; stack needs equal shapes".into(),
                });
            }
        }
        let parts = tensors.iter().map(|t| t.unsqueeze(dim)).collect::<Result<Vec<_>>>()?;
        Tensor::cat(&parts.iter().collect::<Vec<_>>(), dim)
    }

    /// Views of consecutive pieces of `size` along `dim` (the last may be smaller).
    pub fn split(&self, size: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = resolve_dim("split", dim, self.shape())?;
        if size == 0 {
            return Err(Error::invalid("split", "size must be at least 1"));
        }
        let n = self.dims()[d];
        (0..n).step_by(size).map(|start| self.narrow(d as isize, start, size.min(n - start))).collect()
    }

    /// `chunks` views of nearly equal size along `dim` (PyTorch's rule: size `ceil(n / chunks)`).
    pub fn chunk(&self, chunks: usize, dim: isize) -> Result<Vec<Tensor>> {
        let d = resolve_dim("chunk", dim, self.shape())?;
        if chunks == 0 {
            return Err(Error::invalid("chunk", "chunks must be at least 1"));
        }
        let n = self.dims()[d];
        self.split(n.div_ceil(chunks).max(1), d as isize)
    }
}
