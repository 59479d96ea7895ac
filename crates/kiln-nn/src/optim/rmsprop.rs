//! RMSprop (`torch.optim.RMSprop`), optionally centered and with momentum.

use super::{buffer, for_each, step_tensor, store, Optimizer, State};
use kiln_tensor::{Gradients, Result, Tensor, Var};
use std::collections::HashMap;

/// Hyper-parameters of [`RmsProp`] (PyTorch's defaults).
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

/// `torch.optim.RMSprop`.
pub struct RmsProp {
    params: Vec<(String, Var)>,
    config: RmsPropConfig,
    state: State,
}

impl RmsProp {
    /// RMSprop over `params`.
    pub fn new(params: Vec<(String, Var)>, config: RmsPropConfig) -> Self {
        RmsProp { params, config, state: State::default() }
    }
}

impl Optimizer for RmsProp {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let c = self.config;
        let state = &mut self.state;
        for_each(&self.params, grads, |name, p, g| {
            let g = if c.weight_decay != 0.0 { g.add(&p.mul_scalar(c.weight_decay)?)? } else { g.clone() };
            let v =
                buffer(state, name, "square_avg", p)?.mul_scalar(c.alpha)?.add(&g.sqr()?.mul_scalar(1.0 - c.alpha)?)?;
            let avg = if c.centered {
                let ga = buffer(state, name, "grad_avg", p)?.mul_scalar(c.alpha)?.add(&g.mul_scalar(1.0 - c.alpha)?)?;
                let a = v.sub(&ga.sqr()?)?.sqrt()?.add_scalar(c.eps)?;
                store(state, name, "grad_avg", ga);
                a
            } else {
                v.sqrt()?.add_scalar(c.eps)?
            };
            store(state, name, "square_avg", v);
            if c.momentum > 0.0 {
                let buf = buffer(state, name, "momentum_buffer", p)?.mul_scalar(c.momentum)?.add(&g.div(&avg)?)?;
                store(state, name, "momentum_buffer", buf.clone());
                p.sub(&buf.mul_scalar(c.lr)?)
            } else {
                p.sub(&g.div(&avg)?.mul_scalar(c.lr)?)
            }
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
