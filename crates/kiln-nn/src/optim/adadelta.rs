//! Adadelta (`torch.optim.Adadelta`): the optimizer of PyTorch's MNIST CNN example.

use super::{buffer, for_each, step_tensor, store, Optimizer, State};
use kiln_tensor::{Gradients, Result, Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters of [`Adadelta`] (PyTorch's defaults).
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

/// `torch.optim.Adadelta`.
pub struct Adadelta {
    params: Vec<(String, Var)>,
    config: AdadeltaConfig,
    state: State,
}

impl Adadelta {
    /// Adadelta over `params`.
    pub fn new(params: Vec<(String, Var)>, config: AdadeltaConfig) -> Self {
        Adadelta { params, config, state: State::default() }
    }
}

impl Optimizer for Adadelta {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let c = self.config;
        let state = &mut self.state;
        for_each(&self.params, grads, |name, p, g| {
            let g = if c.weight_decay != 0.0 { g.add(&p.mul_scalar(c.weight_decay)?)? } else { g.clone() };
            let v = buffer(state, name, "square_avg", p)?.mul_scalar(c.rho)?.add(&g.sqr()?.mul_scalar(1.0 - c.rho)?)?;
            let u = buffer(state, name, "acc_delta", p)?;
            let delta = u.add_scalar(c.eps)?.sqrt()?.div(&v.add_scalar(c.eps)?.sqrt()?)?.mul(&g)?;
            let u = u.mul_scalar(c.rho)?.add(&delta.sqr()?.mul_scalar(1.0 - c.rho)?)?;
            store(state, name, "square_avg", v);
            store(state, name, "acc_delta", u);
            p.sub(&delta.mul_scalar(c.lr)?)
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
