//! Matrix products.

use crate::autograd::Op;
use crate::backend::Epilogue;
use crate::{DimVec, Error, Result, Shape, Tensor};

impl Tensor {
    /// Matrix product with PyTorch's `matmul` rules: `[..., m, k] @ [..., k, n] -> [..., m, n]`,
    /// batch dims broadcast, a 1-D operand is treated as a row (left) or column (right) vector
    /// and its dim removed from the result. Operands may be any strided view (e.g. `.t()`).
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        const OP: &str = "matmul";
        self.same_device(OP, rhs)?;
        self.same_dtype(OP, rhs)?;
        self.float_only(OP)?;
        if self.rank() == 0 || rhs.rank() == 0 {
            return Err(Error::invalid(
                OP,
                format!("both operands need at least 1 dim, got shapes {} and {}", self.shape(), rhs.shape()),
            ));
        }
        let lhs = if self.rank() == 1 { self.unsqueeze(0)? } else { self.clone() };
        let r = if rhs.rank() == 1 { rhs.unsqueeze(1)? } else { rhs.clone() };
        let (ld, rd) = (lhs.dims(), r.dims());
        let (m, k) = (ld[ld.len() - 2], ld[ld.len() - 1]);
        let (k2, n) = (rd[rd.len() - 2], rd[rd.len() - 1]);
        if k != k2 {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: rhs.shape().clone(),
                hint: format!("; the inner dims differ ({k} vs {k2})"),
            });
        }
        if self.rank() == 2 && rhs.rank() == 2 {
            // Two matrices: nothing to broadcast or reshape, and for an MLP-sized product the
            // views and shapes the general path builds are a tenth of its time.
            let s = self.backend().matmul(lhs.storage(), lhs.layout(), r.storage(), r.layout())?;
            return Ok(self.result(s, Shape::new([m, n]), self.dtype(), Some(Op::Matmul(lhs, r))));
        }
        let lb = Shape::new(&ld[..ld.len() - 2]);
        let rb = Shape::new(&rd[..rd.len() - 2]);
        let batch = lb.broadcast_with(OP, &rb).map_err(|_| Error::ShapeMismatch {
            op: OP,
            lhs: self.shape().clone(),
            rhs: rhs.shape().clone(),
            hint: format!("; the batch dims {lb} and {rb} do not broadcast"),
        })?;
        let mut ls = DimVec::from_slice(batch.dims());
        ls.extend([m, k]);
        let mut rs = DimVec::from_slice(batch.dims());
        rs.extend([k, n]);
        let lhs = lhs.broadcast_to(ls)?;
        let r = r.broadcast_to(rs)?;
        let s = self.backend().matmul(lhs.storage(), lhs.layout(), r.storage(), r.layout())?;
        let mut out = DimVec::from_slice(batch.dims());
        out.extend([m, n]);
        let result = self.result(s, Shape::new(out), self.dtype(), Some(Op::Matmul(lhs, r)));
        // A vector operand's dim is dropped from the result, as in PyTorch (1-D @ 1-D is a 0-d dot).
        let mut dims = DimVec::from_slice(batch.dims());
        if self.rank() > 1 {
            dims.push(m);
        }
        if rhs.rank() > 1 {
            dims.push(n);
        }
        if dims.len() == result.rank() {
            Ok(result)
        } else {
            result.reshape(dims)
        }
    }

    /// A Linear layer's `x @ w.t() + bias` (PyTorch's `F.linear`): `x` `[..., K]`, `w` `[N, K]`,
    /// `bias` `[N]`; returns `[..., N]`. A backend may compute it in one pass
    /// ([`crate::Backend::linear`]); the values are those of the separate ops.
    pub fn linear(&self, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_then(w, bias, false)
    }

    /// `linear(...).relu()` with the bias and ReLU applied while the product is still in cache,
    /// and fewer ops recorded: for a small layer the op overheads are most of its time.
    ///
    /// ```
    /// # use kiln_tensor::*;
    /// # let dev = kiln_cpu::cpu();
    /// let x = Tensor::randn(0.0, 1.0, [4, 3], DType::F32, 1, &dev)?;
    /// let w = Tensor::randn(0.0, 1.0, [2, 3], DType::F32, 2, &dev)?;
    /// let b = Tensor::randn(0.0, 1.0, [2], DType::F32, 3, &dev)?;
    /// let apart = x.matmul(&w.t()?)?.add(&b)?.relu()?;
    /// assert_eq!(x.linear_relu(&w, Some(&b))?.to_vec::<f32>()?, apart.to_vec::<f32>()?);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn linear_relu(&self, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        self.linear_then(w, bias, true)
    }

    fn linear_then(&self, w: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Tensor> {
        const OP: &str = "linear";
        let k = self.dims().last().copied().unwrap_or(0);
        if self.rank() == 0 || w.rank() != 2 || w.dims()[1] != k {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: w.shape().clone(),
                hint: "; linear needs x [..., K] and a weight [N, K]".into(),
            });
        }
        let n = w.dims()[0];
        if let Some(b) = bias {
            if b.dims() != [n] {
                return Err(Error::shape_mismatch(OP, w.shape(), b.shape()));
            }
        }
        let fused = match self.rank() {
            2 => self.linear_fused(w, bias, relu)?,
            _ => None,
        };
        if let Some(y) = fused {
            return Ok(y);
        }
        let y = self.matmul(&w.t()?)?;
        let y = match bias {
            Some(b) => y.add(b)?,
            None => y,
        };
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// The backend's one-pass `linear`, if it has one.
    fn linear_fused(&self, w: &Tensor, bias: Option<&Tensor>, relu: bool) -> Result<Option<Tensor>> {
        const OP: &str = "linear";
        for t in std::iter::once(w).chain(bias) {
            self.same_device(OP, t)?;
            self.same_dtype(OP, t)?;
        }
        self.float_only(OP)?;
        let bc = crate::no_grad(|| bias.map(Tensor::contiguous).transpose())?;
        let epilogue = Epilogue { bias: bc.as_ref().map(|b| (b.storage(), b.layout())), relu };
        let Some(s) = self.backend().linear((self.storage(), self.layout()), (w.storage(), w.layout()), epilogue)?
        else {
            return Ok(None);
        };
        let shape = Shape::new([self.dims()[0], w.dims()[0]]);
        let op = Op::Linear { x: self.clone(), w: w.clone(), bias: bias.cloned(), relu };
        Ok(Some(self.result(s, shape, self.dtype(), Some(op))))
    }
}
