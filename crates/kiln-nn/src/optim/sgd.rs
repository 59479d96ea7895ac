//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (`torch.optim.SGD`).

use super::{buffer, store, Rule, State};
use kiln_tensor::{Result, Tensor};

/// Hyper-parameters of [`super::Sgd`] (PyTorch's defaults except `lr`, which has none there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate.
    pub lr: f64,
    /// Momentum factor (0: plain SGD).
    pub momentum: f64,
    /// Dampening of the momentum.
    pub dampening: f64,
    /// L2 penalty added to the gradient.
    pub weight_decay: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
}

impl SgdConfig {
    /// Plain SGD with learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        SgdConfig { lr, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl Rule for SgdConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn update(&self, state: &mut State, t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor> {
        let mut g = if self.weight_decay != 0.0 { g.add(&p.mul_scalar(self.weight_decay)?)? } else { g.clone() };
        if self.momentum != 0.0 {
            // The first step starts the buffer at the gradient itself, as PyTorch does.
            let buf = if t == 1 {
                g.clone()
            } else {
                buffer(state, name, "momentum_buffer", p)?
                    .mul_scalar(self.momentum)?
                    .add(&g.mul_scalar(1.0 - self.dampening)?)?
            };
            store(state, name, "momentum_buffer", buf.clone());
            g = if self.nesterov { g.add(&buf.mul_scalar(self.momentum)?)? } else { buf };
        }
        p.sub(&g.mul_scalar(self.lr)?)
    }
}
