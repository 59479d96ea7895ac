//! RMSprop (`torch.optim.RMSprop`), optionally centered and with momentum.

use super::{buffer, store, Rule, State};
use kiln_tensor::{Result, Tensor};

/// Hyper-parameters of [`super::RmsProp`] (PyTorch's defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate (default 0.01).
    pub lr: f64,
    /// Smoothing constant (default 0.99).
    pub alpha: f64,
    /// Numerical floor (default 1e-8).
    pub eps: f64,
    /// L2 penalty (default 0).
    pub weight_decay: f64,
    /// Momentum (default 0).
    pub momentum: f64,
    /// Normalise by the variance estimate instead of the raw second moment (default false).
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        RmsPropConfig { lr: 0.01, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl Rule for RmsPropConfig {
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn update(&self, state: &mut State, _t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor> {
        let a = self.alpha;
        let g = if self.weight_decay != 0.0 { g.add(&p.mul_scalar(self.weight_decay)?)? } else { g.clone() };
        let v = buffer(state, name, "square_avg", p)?.mul_scalar(a)?.add(&g.sqr()?.mul_scalar(1.0 - a)?)?;
        let avg = if self.centered {
            let ga = buffer(state, name, "grad_avg", p)?.mul_scalar(a)?.add(&g.mul_scalar(1.0 - a)?)?;
            let avg = v.sub(&ga.sqr()?)?.sqrt()?.add_scalar(self.eps)?;
            store(state, name, "grad_avg", ga);
            avg
        } else {
            v.sqrt()?.add_scalar(self.eps)?
        };
        store(state, name, "square_avg", v);
        let step = if self.momentum > 0.0 {
            let buf = buffer(state, name, "momentum_buffer", p)?.mul_scalar(self.momentum)?.add(&g.div(&avg)?)?;
            store(state, name, "momentum_buffer", buf.clone());
            buf
        } else {
            g.div(&avg)?
        };
        p.sub(&step.mul_scalar(self.lr)?)
    }
}
