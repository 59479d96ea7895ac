//! Fused optimizer updates: one pass over a parameter, its gradient and its state, instead of a
//! dozen element-wise ops that each read and write whole tensors.
//!
//! The arithmetic is defined once, in [`AdamStep::apply`], as the exact sequence of roundings the
//! composed form performs (each op rounds to the storage dtype), so a backend's fused kernel
//! gives bit-identical results to the composed ops it replaces. Backends opt in through
//! [`crate::Backend::adam_step`]; when one declines (returns `None`), [`Tensor::adam_step`]
//! composes the same update from primitive ops.

use crate::op::Float;
use crate::{no_grad, Error, Result, Tensor};

/// One Adam or AdamW update (`torch.optim.Adam`/`AdamW` arithmetic) at step `t`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the denominator.
    pub eps: f64,
    /// Weight decay: an L2 term on the gradient, or decoupled (AdamW) when `decoupled`.
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay instead of Adam's L2 term.
    pub decoupled: bool,
    /// The step number, 1 for the first update (for the bias corrections).
    pub t: u64,
}

impl AdamStep {
    /// The bias corrections `(1 - beta1^t, 1 - beta2^t)`.
    fn bias_corrections(&self) -> (f64, f64) {
        let t = self.t.min(i32::MAX as u64) as i32;
        (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t))
    }

    /// The constants for [`AdamStep::apply`], each rounded to `T` as a scalar operand of the
    /// composed form is: `(k, eps)`.
    pub fn prepare<T: Float>(&self) -> ([T; 8], T) {
        let (bc1, bc2) = self.bias_corrections();
        let k = [
            T::c(1.0 - self.lr * self.weight_decay),
            T::c(self.weight_decay),
            T::c(self.beta1),
            T::c(1.0 - self.beta1),
            T::c(self.beta2),
            T::c(1.0 - self.beta2),
            T::c(bc2.sqrt()),
            T::c(self.lr / bc1),
        ];
        (k, T::c(self.eps))
    }

    /// The update of one element: `(p, g, m, v) -> (p', m', v')`, rounding after every operation
    /// in the order the composed form does. Every backend's kernel calls this (or mirrors it
    /// exactly).
    #[inline(always)]
    pub fn apply<T: Float>(&self, k: &[T; 8], eps: T, p: T, g: T, m: T, v: T) -> (T, T, T) {
        let [decay, wd, b1, one_b1, b2, one_b2, sqrt_bc2, step] = *k;
        let p = if self.decoupled && self.weight_decay != 0.0 { p * decay } else { p };
        let g = if !self.decoupled && self.weight_decay != 0.0 { g + p * wd } else { g };
        let m = m * b1 + g * one_b1;
        let v = v * b2 + (g * g) * one_b2;
        let denom = v.sqrt() / sqrt_bc2 + eps;
        (p - (m / denom) * step, m, v)
    }
}

impl Tensor {
    /// One Adam/AdamW update of parameter `self` with gradient `grad` and moments `m`, `v`:
    /// returns the new `(param, m, v)`. Fused into one pass where the backend offers it, with
    /// the same results as the composed ops either way. Runs without gradient tracking.
    pub fn adam_step(
        &self,
        grad: &Tensor,
        m: &Tensor,
        v: &Tensor,
        step: &AdamStep,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        self.check_optimizer_state("adam_step", &[grad, m, v], "its gradient and its two moments")?;
        // Gradients often arrive as transposed views (that of `x @ w.t()`); one copy makes every
        // operand a flat slice for the kernel.
        let [p, g, mc, vc] = [self, grad, m, v].map(|t| t.detach().contiguous());
        let (p, g, mc, vc) = (p?, g?, mc?, vc?);
        let fused = self.backend().adam_step(
            step,
            [
                (p.storage(), p.layout()),
                (g.storage(), g.layout()),
                (mc.storage(), mc.layout()),
                (vc.storage(), vc.layout()),
            ],
        )?;
        match fused {
            Some([p, m, v]) => {
                let wrap = |s| self.result(s, self.shape().clone(), self.dtype(), None);
                Ok((wrap(p), wrap(m), wrap(v)))
            }
            None => no_grad(|| composed(step, self, grad, m, v)),
        }
    }
}

/// The update from primitive ops, for backends without a fused kernel.
fn composed(s: &AdamStep, p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
    let (bc1, bc2) = s.bias_corrections();
    let p = if s.decoupled && s.weight_decay != 0.0 { p.mul_scalar(1.0 - s.lr * s.weight_decay)? } else { p.detach() };
    let g = if !s.decoupled && s.weight_decay != 0.0 { g.add(&p.mul_scalar(s.weight_decay)?)? } else { g.detach() };
    let m = m.mul_scalar(s.beta1)?.add(&g.mul_scalar(1.0 - s.beta1)?)?;
    let v = v.mul_scalar(s.beta2)?.add(&g.sqr()?.mul_scalar(1.0 - s.beta2)?)?;
    let denom = v.sqrt()?.div_scalar(bc2.sqrt())?.add_scalar(s.eps)?;
    let next = p.sub(&m.div(&denom)?.mul_scalar(s.lr / bc1)?)?;
    Ok((next, m, v))
}

/// One SGD update (`torch.optim.SGD` arithmetic): weight decay, momentum with dampening,
/// Nesterov.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: no buffer).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// The first step: the momentum buffer starts at the gradient itself, as PyTorch's does.
    pub first: bool,
}

impl SgdStep {
    /// The constants for [`SgdStep::apply`], each rounded to `T` as a scalar operand of the
    /// composed form is: `[weight_decay, momentum, 1 - dampening, lr]`.
    pub fn prepare<T: Float>(&self) -> [T; 4] {
        [T::c(self.weight_decay), T::c(self.momentum), T::c(1.0 - self.dampening), T::c(self.lr)]
    }

    /// The update of one element: `(p, g, buf) -> (p', buf')`, rounding after every operation
    /// in the composed form's order. Without momentum `buf'` is the (decayed) gradient.
    #[inline(always)]
    pub fn apply<T: Float>(&self, k: &[T; 4], p: T, g: T, buf: T) -> (T, T) {
        let [wd, momentum, undamped, lr] = *k;
        let g = if self.weight_decay != 0.0 { g + p * wd } else { g };
        let (g, buf) = if self.momentum != 0.0 {
            let buf = if self.first { g } else { buf * momentum + g * undamped };
            (if self.nesterov { g + buf * momentum } else { buf }, buf)
        } else {
            (g, g)
        };
        (p - g * lr, buf)
    }
}

impl Tensor {
    /// One SGD update of parameter `self` with gradient `grad` and momentum buffer `buf` (any
    /// tensor of the parameter's shape on the first step or without momentum): returns the new
    /// `(param, buf)`. Fused into one pass where the backend offers it, with the same results as
    /// the composed ops either way. Runs without gradient tracking.
    pub fn sgd_step(&self, grad: &Tensor, buf: &Tensor, step: &SgdStep) -> Result<(Tensor, Tensor)> {
        self.check_optimizer_state("sgd_step", &[grad, buf], "its gradient and its momentum buffer")?;
        // The views go to the backend as they are: one that declines (the CPU's) then composes
        // from them without a copy, and a fused kernel makes its own operands contiguous.
        let operands = [self, grad, buf].map(|t| (t.storage(), t.layout()));
        let fused = self.backend().sgd_step(step, operands)?;
        match fused {
            Some([p, b]) => {
                let wrap = |s| self.result(s, self.shape().clone(), self.dtype(), None);
                Ok((wrap(p), wrap(b)))
            }
            None => no_grad(|| composed_sgd(step, self, grad, buf)),
        }
    }
}

/// The SGD update from primitive ops, for backends without a fused kernel.
fn composed_sgd(s: &SgdStep, p: &Tensor, g: &Tensor, buf: &Tensor) -> Result<(Tensor, Tensor)> {
    let g = if s.weight_decay != 0.0 { g.add(&p.mul_scalar(s.weight_decay)?)? } else { g.detach() };
    let (g, buf) = if s.momentum != 0.0 {
        let buf =
            if s.first { g.clone() } else { buf.mul_scalar(s.momentum)?.add(&g.mul_scalar(1.0 - s.dampening)?)? };
        (if s.nesterov { g.add(&buf.mul_scalar(s.momentum)?)? } else { buf.clone() }, buf)
    } else {
        (g.clone(), g)
    };
    Ok((p.sub(&g.mul_scalar(s.lr)?)?, buf))
}

/// One Adadelta update (`torch.optim.Adadelta` arithmetic), the optimizer of PyTorch's MNIST
/// CNN example.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdadeltaStep {
    /// Learning rate (scales the computed step; PyTorch's default 1.0).
    pub lr: f64,
    /// Decay of both running averages.
    pub rho: f64,
    /// Added inside both square roots.
    pub eps: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
}

impl AdadeltaStep {
    /// The constants for [`AdadeltaStep::apply`], each rounded to `T` as a scalar operand of
    /// the composed form is: `[weight_decay, rho, 1 - rho, eps, lr]`.
    pub fn prepare<T: Float>(&self) -> [T; 5] {
        [T::c(self.weight_decay), T::c(self.rho), T::c(1.0 - self.rho), T::c(self.eps), T::c(self.lr)]
    }

    /// The update of one element: `(p, g, square_avg, acc_delta) -> (p', square_avg',
    /// acc_delta')`, rounding after every operation in the composed form's order.
    #[inline(always)]
    pub fn apply<T: Float>(&self, k: &[T; 5], p: T, g: T, v: T, u: T) -> (T, T, T) {
        let [wd, rho, one_rho, eps, lr] = *k;
        let g = if self.weight_decay != 0.0 { g + p * wd } else { g };
        let v = v * rho + (g * g) * one_rho;
        let delta = ((u + eps).sqrt() / (v + eps).sqrt()) * g;
        let u = u * rho + (delta * delta) * one_rho;
        (p - delta * lr, v, u)
    }
}

impl Tensor {
    /// One Adadelta update of parameter `self` with gradient `grad`, running average of squared
    /// gradients `square_avg` and of squared updates `acc_delta`: returns the new `(param,
    /// square_avg, acc_delta)`. Fused into one pass where the backend offers it, with the same
    /// results as the composed ops either way. Runs without gradient tracking.
    pub fn adadelta_step(
        &self,
        grad: &Tensor,
        square_avg: &Tensor,
        acc_delta: &Tensor,
        step: &AdadeltaStep,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (v, u) = (square_avg, acc_delta);
        self.check_optimizer_state("adadelta_step", &[grad, v, u], "its gradient and its two running averages")?;
        // As for Adam: one copy of a transposed gradient gives the kernel flat slices.
        let [pc, gc, vc, uc] = [self, grad, v, u].map(|t| t.detach().contiguous());
        let (pc, gc, vc, uc) = (pc?, gc?, vc?, uc?);
        let operands = [&pc, &gc, &vc, &uc].map(|t| (t.storage(), t.layout()));
        match self.backend().adadelta_step(step, operands)? {
            Some([p, v, u]) => {
                let wrap = |s| self.result(s, self.shape().clone(), self.dtype(), None);
                Ok((wrap(p), wrap(v), wrap(u)))
            }
            None => no_grad(|| composed_adadelta(step, self, grad, v, u)),
        }
    }
}

/// The Adadelta update from primitive ops, for backends without a fused kernel.
fn composed_adadelta(
    s: &AdadeltaStep,
    p: &Tensor,
    g: &Tensor,
    v: &Tensor,
    u: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = if s.weight_decay != 0.0 { g.add(&p.mul_scalar(s.weight_decay)?)? } else { g.detach() };
    let v = v.mul_scalar(s.rho)?.add(&g.sqr()?.mul_scalar(1.0 - s.rho)?)?;
    let delta = u.add_scalar(s.eps)?.sqrt()?.div(&v.add_scalar(s.eps)?.sqrt()?)?.mul(&g)?;
    let u = u.mul_scalar(s.rho)?.add(&delta.sqr()?.mul_scalar(1.0 - s.rho)?)?;
    Ok((p.sub(&delta.mul_scalar(s.lr)?)?, v, u))
}

impl Tensor {
    /// An optimizer update's operands: a float parameter (`self`) and `others` (`what` names
    /// them in the error) of its shape, dtype and device.
    fn check_optimizer_state(&self, op: &'static str, others: &[&Tensor], what: &str) -> Result<()> {
        self.float_only(op)?;
        for t in others {
            if t.dims() != self.dims() {
                return Err(Error::ShapeMismatch {
                    op,
                    lhs: self.shape().clone(),
                    rhs: t.shape().clone(),
                    hint: format!("; the parameter, {what} must have equal shapes"),
                });
            }
            self.same_dtype(op, t)?;
            self.same_device(op, t)?;
        }
        Ok(())
    }
}
