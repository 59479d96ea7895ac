//! Element-wise functions of one tensor.

use crate::autograd::Op;
use crate::{Result, Tensor, UnaryOp};

macro_rules! unary_methods {
    ($($name:ident => $op:ident, $doc:literal;)*) => {
        impl Tensor {
            $(
                #[doc = $doc]
                pub fn $name(&self) -> Result<Tensor> {
                    self.unary(UnaryOp::$op)
                }
            )*
        }
    };
}

unary_methods! {
    neg => Neg, "`-x` element-wise.";
    abs => Abs, "`|x|` element-wise.";
    exp => Exp, "`e^x` element-wise.";
    log => Log, "Natural logarithm element-wise.";
    sqrt => Sqrt, "Square root element-wise.";
    recip => Recip, "`1 / x` element-wise.";
    sin => Sin, "Sine element-wise.";
    cos => Cos, "Cosine element-wise.";
    tanh => Tanh, "Hyperbolic tangent element-wise.";
    sigmoid => Sigmoid, "Logistic sigmoid `1 / (1 + e^-x)` element-wise.";
    relu => Relu, "`max(x, 0)` element-wise.";
    gelu => Gelu, "GELU, exact form `x * Φ(x)` (PyTorch's `approximate='none'`).";
    gelu_tanh => GeluTanh, "GELU, tanh approximation (PyTorch's `approximate='tanh'`).";
    silu => Silu, "SiLU / swish `x * sigmoid(x)` element-wise.";
    softplus => Softplus, "`ln(1 + e^x)` element-wise (linear above 20, as in PyTorch).";
    sign => Sign, "-1, 0 or 1 by the sign of each element.";
    erf => Erf, "The error function element-wise.";
}

impl Tensor {
    /// Applies a [`UnaryOp`] (float dtypes).
    pub fn unary(&self, op: UnaryOp) -> Result<Tensor> {
        self.float_only(op.name())?;
        let s = self.backend().unary(op, self.storage(), self.layout())?;
        Ok(self.result(s, self.shape().clone(), self.dtype(), Some(Op::Unary(self.clone(), op))))
    }

    /// `x * x` element-wise.
    pub fn sqr(&self) -> Result<Tensor> {
        self.mul(self)
    }
}

/// `d op(x) / dx` as a tensor, given the input `x` and the output `y` (both detached).
pub(crate) fn unary_derivative(op: UnaryOp, x: &Tensor, y: &Tensor) -> Result<Tensor> {
    use std::f64::consts::{FRAC_2_SQRT_PI, SQRT_2};
    Ok(match op {
        UnaryOp::Neg => x.ones_like()?.neg()?,
        UnaryOp::Abs => x.sign()?,
        UnaryOp::Exp => y.clone(),
        UnaryOp::Log => x.recip()?,
        UnaryOp::Sqrt => y.recip()?.mul_scalar(0.5)?,
        UnaryOp::Recip => y.sqr()?.neg()?,
        UnaryOp::Sin => x.cos()?,
        UnaryOp::Cos => x.sin()?.neg()?,
        UnaryOp::Tanh => y.sqr()?.neg()?.add_scalar(1.0)?,
        UnaryOp::Sigmoid => y.mul(&y.neg()?.add_scalar(1.0)?)?,
        UnaryOp::Relu => x.gt_scalar(0.0)?.to_dtype(x.dtype())?,
        UnaryOp::Gelu => {
            // Φ(x) + x φ(x)
            let cdf = x.mul_scalar(1.0 / SQRT_2)?.erf()?.add_scalar(1.0)?.mul_scalar(0.5)?;
            let pdf = x.sqr()?.mul_scalar(-0.5)?.exp()?.mul_scalar(FRAC_2_SQRT_PI / (2.0 * SQRT_2))?;
            cdf.add(&x.mul(&pdf)?)?
        }
        UnaryOp::GeluTanh => {
            // 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2), t = tanh(c (x + k x^3))
            let (c, k) = (0.797_884_560_802_865_4, 0.044715);
            let x2 = x.sqr()?;
            let t = x2.mul_scalar(k)?.add_scalar(1.0)?.mul(x)?.mul_scalar(c)?.tanh()?;
            let left = t.add_scalar(1.0)?.mul_scalar(0.5)?;
            let dinner = x2.mul_scalar(3.0 * k)?.add_scalar(1.0)?.mul_scalar(c)?;
            let right = t.sqr()?.neg()?.add_scalar(1.0)?.mul(&dinner)?.mul(x)?.mul_scalar(0.5)?;
            left.add(&right)?
        }
        UnaryOp::Silu => {
            // s (1 + x (1 - s))
            let s = x.sigmoid()?;
            s.mul(&x.mul(&s.neg()?.add_scalar(1.0)?)?.add_scalar(1.0)?)?
        }
        UnaryOp::Softplus => {
            let s = x.sigmoid()?;
            // above PyTorch's threshold softplus is the identity
            let above = x.gt_scalar(20.0)?;
            above.where_cond(&x.ones_like()?, &s)?
        }
        UnaryOp::Sign => x.zeros_like()?,
        UnaryOp::Erf => x.sqr()?.neg()?.exp()?.mul_scalar(FRAC_2_SQRT_PI)?,
    })
}
