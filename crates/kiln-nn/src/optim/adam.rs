//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`), with PyTorch's exact arithmetic:
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, through the fused
//! [`Tensor::adam_step`] (one pass where the backend offers it, bit-identical either way).

use super::{buffer, store, Rule, State};
use kiln_tensor::{AdamStep, Result, Tensor};

/// Hyper-parameters of [`super::Adam`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate (default 1e-3).
    pub lr: f64,
    /// `(beta1, beta2)` (default (0.9, 0.999)).
    pub betas: (f64, f64),
    /// Added to the denominator (default 1e-8).
    pub eps: f64,
    /// Weight decay: an L2 term added to the gradient (default 0).
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

/// Hyper-parameters of [`super::AdamW`]: Adam's, with `weight_decay` decoupled from the
/// gradient (PyTorch's default 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig(pub AdamConfig);

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig(AdamConfig { weight_decay: 0.01, ..AdamConfig::default() })
    }
}

fn adam(
    c: &AdamConfig,
    decoupled: bool,
    state: &mut State,
    t: u64,
    name: &str,
    p: &Tensor,
    g: &Tensor,
) -> Result<Tensor> {
    let step = AdamStep {
        lr: c.lr,
        beta1: c.betas.0,
        beta2: c.betas.1,
        eps: c.eps,
        weight_decay: c.weight_decay,
        decoupled,
        t,
    };
    let m = buffer(state, name, "exp_avg", p)?;
    let v = buffer(state, name, "exp_avg_sq", p)?;
    let (next, m, v) = p.adam_step(g, &m, &v, &step)?;
    store(state, name, "exp_avg", m);
    store(state, name, "exp_avg_sq", v);
    Ok(next)
}

impl Rule for AdamConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn update(&self, state: &mut State, t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor> {
        adam(self, false, state, t, name, p, g)
    }
}

impl Rule for AdamWConfig {
    fn lr(&self) -> f64 {
        self.0.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.lr = lr;
    }
    fn update(&self, state: &mut State, t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor> {
        adam(&self.0, true, state, t, name, p, g)
    }
}
