//! Adadelta (`torch.optim.Adadelta`): the optimizer of PyTorch's MNIST CNN example, through the
//! fused [`Tensor::adadelta_step`] (one pass where the backend offers it, bit-identical either
//! way).

use super::{buffer, store, Rule, State};
use kiln_tensor::{AdadeltaStep, Result, Tensor};

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
        let step = AdadeltaStep { lr: self.lr, rho: self.rho, eps: self.eps, weight_decay: self.weight_decay };
        let v = buffer(state, name, "square_avg", p)?;
        let u = buffer(state, name, "acc_delta", p)?;
        let (next, v, u) = p.adadelta_step(g, &v, &u, &step)?;
        store(state, name, "square_avg", v);
        store(state, name, "acc_delta", u);
        Ok(next)
    }
}
