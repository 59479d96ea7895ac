//! Matrix products.

use crate::autograd::Op;
use crate::{Error, Result, Shape, Tensor};

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
        let lb = Shape::new(&ld[..ld.len() - 2]);
        let rb = Shape::new(&rd[..rd.len() - 2]);
        let batch = lb.broadcast_with(OP, &rb).map_err(|_| Error::ShapeMismatch {
            op: OP,
            lhs: self.shape().clone(),
            rhs: rhs.shape().clone(),
            hint: format!("; the batch dims {lb} and {rb} do not broadcast"),
        })?;
        let mut ls = batch.dims().to_vec();
        ls.extend([m, k]);
        let mut rs = batch.dims().to_vec();
        rs.extend([k, n]);
        let lhs = lhs.broadcast_to(ls)?;
        let r = r.broadcast_to(rs)?;
        let s = self.backend().matmul(lhs.storage(), lhs.layout(), r.storage(), r.layout())?;
        let mut out = batch.dims().to_vec();
        out.extend([m, n]);
        let result = self.result(s, Shape::new(out), self.dtype(), Some(Op::Matmul(lhs, r)));
        // A vector operand's dim is dropped from the result, as in PyTorch (1-D @ 1-D is a 0-d dot).
        let mut dims = batch.dims().to_vec();
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
}
