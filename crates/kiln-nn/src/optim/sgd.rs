//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (`torch.optim.SGD`).

use super::{buffer, store, Rule, State};
use kiln_tensor::{Result, SgdStep, Tensor};

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
        let step = SgdStep {
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
            // The first step starts the buffer at the gradient itself, as PyTorch does.
            first: t == 1,
        };
        // Without a buffer yet (or without momentum) the gradient stands in: it is not read.
        let buf = if self.momentum != 0.0 && t > 1 { buffer(state, name, "momentum_buffer", p)? } else { g.clone() };
        let (next, buf) = p.sgd_step(g, &buf, &step)?;
        if self.momentum != 0.0 {
            store(state, name, "momentum_buffer", buf);
        }
        Ok(next)
    }
}
