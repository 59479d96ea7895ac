//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`), with PyTorch's exact arithmetic:
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

use super::{buffer, for_each, step_tensor, store, Optimizer, State};
use kiln_tensor::{Gradients, Result, Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters of [`Adam`] and [`AdamW`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// `(beta1, beta2)` (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay: an L2 term in the gradient for Adam (default 0), decoupled for AdamW
    /// (default 0.01).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0 }
    }
}

impl AdamConfig {
    /// The defaults with learning rate `lr`.
    pub fn lr(lr: f64) -> Self {
        AdamConfig { lr, ..Self::default() }
    }
}

/// `torch.optim.Adam` (without amsgrad).
pub struct Adam {
    params: Vec<(String, Var)>,
    config: AdamConfig,
    decoupled: bool,
    state: State,
}

/// `torch.optim.AdamW`: Adam with decoupled weight decay.
pub struct AdamW;

impl AdamW {
    /// AdamW over `params`; `config.weight_decay` is the decoupled decay (PyTorch default 0.01,
    /// which `AdamW::default_config` gives).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(params: Vec<(String, Var)>, config: AdamConfig) -> Adam {
        Adam { params, config, decoupled: true, state: State::default() }
    }
    /// PyTorch's AdamW defaults (lr 1e-3, weight decay 0.01).
    pub fn default_config() -> AdamConfig {
        AdamConfig { weight_decay: 0.01, ..AdamConfig::default() }
    }
}

impl Adam {
    /// Adam over `params` (as returned by `Module::parameters`).
    pub fn new(params: Vec<(String, Var)>, config: AdamConfig) -> Adam {
        Adam { params, config, decoupled: false, state: State::default() }
    }
}

impl Optimizer for Adam {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let c = self.config;
        let t = self.state.step + 1;
        let (b1, b2) = c.betas;
        let bc1 = 1.0 - b1.powi(t as i32);
        let bc2 = 1.0 - b2.powi(t as i32);
        let decoupled = self.decoupled;
        let state = &mut self.state;
        for_each(&self.params, grads, |name, p, g| {
            let p =
                if decoupled && c.weight_decay != 0.0 { p.mul_scalar(1.0 - c.lr * c.weight_decay)? } else { p.clone() };
            let g =
                if !decoupled && c.weight_decay != 0.0 { g.add(&p.mul_scalar(c.weight_decay)?)? } else { g.clone() };
            let m = buffer(state, name, "exp_avg", &p)?.mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?;
            let v = buffer(state, name, "exp_avg_sq", &p)?.mul_scalar(b2)?.add(&g.sqr()?.mul_scalar(1.0 - b2)?)?;
            let denom = v.sqrt()?.div_scalar(bc2.sqrt())?.add_scalar(c.eps)?;
            let next = p.sub(&m.div(&denom)?.mul_scalar(c.lr / bc1)?)?;
            store(state, name, "exp_avg", m);
            store(state, name, "exp_avg_sq", v);
            Ok(next)
        })?;
        self.state.step = t;
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
