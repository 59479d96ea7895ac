//! Adam and AdamW (`torch.optim.Adam`, `torch.optim.AdamW`), with PyTorch's exact arithmetic:
//! `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.

use super::{buffer, store, Rule, State};
use kiln_tensor::{Result, Tensor};

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
    let (b1, b2) = c.betas;
    let bc1 = 1.0 - b1.powi(t as i32);
    let bc2 = 1.0 - b2.powi(t as i32);
    let p = if decoupled && c.weight_decay != 0.0 { p.mul_scalar(1.0 - c.lr * c.weight_decay)? } else { p.clone() };
    let g = if !decoupled && c.weight_decay != 0.0 { g.add(&p.mul_scalar(c.weight_decay)?)? } else { g.clone() };
    let m = buffer(state, name, "exp_avg", &p)?.mul_scalar(b1)?.add(&g.mul_scalar(1.0 - b1)?)?;
    let v = buffer(state, name, "exp_avg_sq", &p)?.mul_scalar(b2)?.add(&g.sqr()?.mul_scalar(1.0 - b2)?)?;
    let denom = v.sqrt()?.div_scalar(bc2.sqrt())?.add_scalar(c.eps)?;
    let next = p.sub(&m.div(&denom)?.mul_scalar(c.lr / bc1)?)?;
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
