//! Adadelta (`torch.optim.Adadelta`): the optimizer of PyTorch's MNIST CNN example.

use super::{buffer, store, Rule, State};
use kiln_tensor::{Result, Tensor};

/// Hyper-parameters of [`super::Adadelta`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdadeltaConfig {
    /// Learning rate (default 1.0).
    pub lr: f64,
    /// Decay of the running averages (default 0.9).
    pub rho: f64,
    /// Numerical floor (default 1e-6).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
}

impl Default for AdadeltaConfig {
    fn default() -> Self {
        AdadeltaConfig { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay: 0.0 }
    }
}

impl Rule for AdadeltaConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn update(&self, state: &mut State, _t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor> {
        let g = if self.weight_decay != 0.0 { g.add(&p.mul_scalar(self.weight_decay)?)? } else { g.clone() };
        let v =
            buffer(state, name, "square_avg", p)?.mul_scalar(self.rho)?.add(&g.sqr()?.mul_scalar(1.0 - self.rho)?)?;
        let u = buffer(state, name, "acc_delta", p)?;
        let delta = u.add_scalar(self.eps)?.sqrt()?.div(&v.add_scalar(self.eps)?.sqrt()?)?.mul(&g)?;
        let u = u.mul_scalar(self.rho)?.add(&delta.sqr()?.mul_scalar(1.0 - self.rho)?)?;
        store(state, name, "square_avg", v);
        store(state, name, "acc_delta", u);
        p.sub(&delta.mul_scalar(self.lr)?)
    }
}
