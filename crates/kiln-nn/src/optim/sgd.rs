//! Stochastic gradient descent with momentum, dampening, Nesterov and weight decay
//! (`torch.optim.SGD`).

use super::{buffer, for_each, step_tensor, store, Optimizer, State};
use kiln_tensor::{Gradients, Result, Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters of [`Sgd`] (PyTorch's defaults except `lr`, which has none there).
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

/// `torch.optim.SGD`.
pub struct Sgd {
    params: Vec<(String, Var)>,
    config: SgdConfig,
    state: State,
}

impl Sgd {
    /// An optimizer over `params` (as returned by `Module::parameters`).
    pub fn new(params: Vec<(String, Var)>, config: SgdConfig) -> Self {
        Sgd { params, config, state: State::default() }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let c = self.config;
        let first = self.state.step == 0;
        let state = &mut self.state;
        for_each(&self.params, grads, |name, p, g| {
            let mut g = if c.weight_decay != 0.0 { g.add(&p.mul_scalar(c.weight_decay)?)? } else { g.clone() };
            if c.momentum != 0.0 {
                let buf = if first || !state.buffers.contains_key(&format!("{name}.momentum_buffer")) {
                    g.clone()
                } else {
                    buffer(state, name, "momentum_buffer", p)?
                        .mul_scalar(c.momentum)?
                        .add(&g.mul_scalar(1.0 - c.dampening)?)?
                };
                store(state, name, "momentum_buffer", buf.clone());
                g = if c.nesterov { g.add(&buf.mul_scalar(c.momentum)?)? } else { buf };
            }
            p.sub(&g.mul_scalar(c.lr)?)
        })?;
        self.state.step += 1;
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.config.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }
    fn state(&self) -> Vec<(String, Tensor)> {
        let mut s = self.state.named();
        s.extend(step_tensor(&self.params, self.state.step));
        s
    }
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        self.state.restore(state, state.get("step"))
    }
}
