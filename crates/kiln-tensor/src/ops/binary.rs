//! Element-wise functions of two tensors (NumPy broadcasting) or a tensor and a scalar,
//! comparisons, `where_cond` and `clamp`.

use crate::autograd::Op;
use crate::{BinaryOp, DType, Error, Result, Tensor};

macro_rules! binary_methods {
    ($($name:ident, $scalar:ident => $op:ident, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = concat!($doc, " element-wise, broadcasting NumPy-style.")]
                pub fn $name(&self, rhs: &Tensor) -> Result<Tensor> {
                    self.binary(BinaryOp::$op, rhs)
                }
                #[doc = concat!($doc, " with a scalar on the right, element-wise.")]
                pub fn $scalar(&self, rhs: f64) -> Result<Tensor> {
                    self.binary_scalar(BinaryOp::$op, rhs)
                }
            )*
        }
    };
}

binary_methods! {
    add, add_scalar => Add, "`self + rhs`";
    sub, sub_scalar => Sub, "`self - rhs`";
    mul, mul_scalar => Mul, "`self * rhs`";
    div, div_scalar => Div, "`self / rhs`";
    pow, pow_scalar => Pow, "`self ^ rhs` (floats)";
    maximum, maximum_scalar => Maximum, "The larger of `self` and `rhs` (NaN wins)";
    minimum, minimum_scalar => Minimum, "The smaller of `self` and `rhs` (NaN wins)";
    eq, eq_scalar => Eq, "The `u8` mask `self == rhs`";
    ne, ne_scalar => Ne, "The `u8` mask `self != rhs`";
    lt, lt_scalar => Lt, "The `u8` mask `self < rhs`";
    le, le_scalar => Le, "The `u8` mask `self <= rhs`";
    gt, gt_scalar => Gt, "The `u8` mask `self > rhs`";
    ge, ge_scalar => Ge, "The `u8` mask `self >= rhs`";
}

impl Tensor {
    /// Applies a [`BinaryOp`] after broadcasting both operands to a common shape.
    pub fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        let name = op.name();
        self.same_device(name, rhs)?;
        self.same_dtype(name, rhs)?;
        check_dtype(op, self.dtype())?;
        let shape = self.shape().broadcast_with(name, rhs.shape())?;
        let lhs = self.broadcast_to(&shape)?;
        let rhs = rhs.broadcast_to(&shape)?;
        let s = self.backend().binary(op, lhs.storage(), lhs.layout(), rhs.storage(), rhs.layout())?;
        let dtype = if op.is_comparison() { DType::U8 } else { self.dtype() };
        let rec = (!op.is_comparison()).then(|| Op::Binary(lhs, rhs, op));
        Ok(self.result(s, shape, dtype, rec))
    }

    /// Applies a [`BinaryOp`] with `scalar` (rounded to this tensor's dtype) on the right.
    pub fn binary_scalar(&self, op: BinaryOp, scalar: f64) -> Result<Tensor> {
        check_dtype(op, self.dtype())?;
        let dtype = self.dtype();
        if dtype.is_int() && dtype.round_f64(scalar) != scalar {
            // `x < 0.5` on integers, or `x > -1` on u8: compare exactly, in f64.
            if op.is_comparison() {
                return self.to_dtype(DType::F64)?.binary_scalar(op, scalar);
            }
            return Err(Error::invalid(
                op.name(),
                format!("the scalar {scalar} is not representable in {dtype} (tensor of shape {}); convert with to_dtype first", self.shape()),
            ));
        }
        let s = self.backend().binary_scalar(op, self.storage(), self.layout(), self.dtype(), scalar)?;
        let dtype = if op.is_comparison() { DType::U8 } else { self.dtype() };
        let rec = (!op.is_comparison()).then(|| Op::BinaryScalar(self.clone(), op, scalar));
        Ok(self.result(s, self.shape().clone(), dtype, rec))
    }

    /// `self * mul + add` element-wise.
    pub fn affine(&self, mul: f64, add: f64) -> Result<Tensor> {
        self.mul_scalar(mul)?.add_scalar(add)
    }

    /// Limits every element to `[min, max]`.
    pub fn clamp(&self, min: f64, max: f64) -> Result<Tensor> {
        if min > max {
            return Err(Error::invalid("clamp", format!("min {min} is greater than max {max}")));
        }
        self.maximum_scalar(min)?.minimum_scalar(max)
    }

    /// Element-wise `self ? on_true : on_false`, where `self` is a `u8` mask (as returned by the
    /// comparisons). The three shapes broadcast together.
    pub fn where_cond(&self, on_true: &Tensor, on_false: &Tensor) -> Result<Tensor> {
        const OP: &str = "where_cond";
        if self.dtype() != DType::U8 {
            return Err(Error::invalid(
                OP,
                format!("the condition must be a u8 mask, got {} (make one with e.g. .ne_scalar(0.0))", self.dtype()),
            ));
        }
        self.same_device(OP, on_true)?;
        self.same_device(OP, on_false)?;
        on_true.same_dtype(OP, on_false)?;
        let shape = self.shape().broadcast_with(OP, on_true.shape())?.broadcast_with(OP, on_false.shape())?;
        let (c, t, f) = (self.broadcast_to(&shape)?, on_true.broadcast_to(&shape)?, on_false.broadcast_to(&shape)?);
        let s = self.backend().where_cond(c.storage(), c.layout(), t.storage(), t.layout(), f.storage(), f.layout())?;
        Ok(self.result(s, shape, on_true.dtype(), Some(Op::Where(c, t, f))))
    }
}

fn check_dtype(op: BinaryOp, dtype: DType) -> Result<()> {
    if !op.supports_int() && !dtype.is_float() {
        return Err(Error::UnsupportedDType { op: op.name(), dtype, supported: "f32, f64, f16, bf16" });
    }
    Ok(())
}
