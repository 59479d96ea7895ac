//! Optimizers with PyTorch's update rules and defaults, gradient clipping.
//!
//! There is no `zero_grad`: gradients come fresh from each `backward()` and are passed to
//! [`Optimizer::step`]. Updates run under `no_grad` and install new values with `Var::set`.

mod adadelta;
mod adam;
mod rmsprop;
mod sgd;

pub use adadelta::AdadeltaConfig;
pub use adam::{AdamConfig, AdamWConfig};
pub use rmsprop::RmsPropConfig;
pub use sgd::SgdConfig;

/// `torch.optim.SGD`.
pub type Sgd = Optim<SgdConfig>;
/// `torch.optim.Adam` (without amsgrad).
pub type Adam = Optim<AdamConfig>;
/// `torch.optim.AdamW`: Adam with decoupled weight decay.
pub type AdamW = Optim<AdamWConfig>;
/// `torch.optim.Adadelta`.
pub type Adadelta = Optim<AdadeltaConfig>;
/// `torch.optim.RMSprop`.
pub type RmsProp = Optim<RmsPropConfig>;

use kiln_tensor::{no_grad, Error, Gradients, Result, Tensor, Var};
use std::collections::HashMap;

/// What every optimizer offers.
pub trait Optimizer {
    /// Applies one update with these gradients. Parameters without a gradient are skipped.
    fn step(&mut self, grads: &Gradients) -> Result<()>;
    /// The current learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (schedulers call this).
    fn set_lr(&mut self, lr: f64);
    /// The optimizer's state as named tensors (per-parameter buffers as `<param>.<buffer>`, the
    /// step count as `step`), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;
    /// Restores a state saved by [`Optimizer::state`].
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()>;
}

/// An update rule: the hyper-parameters of one optimizer and how they turn a gradient into a
/// new parameter value. [`Optim`] does the rest (parameters, state, checkpoints).
pub trait Rule {
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate.
    fn set_lr(&mut self, lr: f64);
    /// The new value of parameter `name` (`p`, gradient `g`) at step `t` (1 for the first),
    /// reading and writing its buffers in `state`.
    fn update(&self, state: &mut State, t: u64, name: &str, p: &Tensor, g: &Tensor) -> Result<Tensor>;
}

/// An optimizer: parameters, an update [`Rule`] and its state.
pub struct Optim<R: Rule> {
    params: Vec<(String, Var)>,
    rule: R,
    state: State,
}

impl<R: Rule> Optim<R> {
    /// An optimizer over `params` (as returned by `Module::parameters`).
    pub fn new(params: Vec<(String, Var)>, rule: R) -> Self {
        Optim { params, rule, state: State::default() }
    }
    /// The hyper-parameters.
    pub fn rule(&self) -> &R {
        &self.rule
    }
}

impl<R: Rule> Optimizer for Optim<R> {
    fn step(&mut self, grads: &Gradients) -> Result<()> {
        let t = self.state.step + 1;
        let (rule, state) = (&self.rule, &mut self.state);
        for_each(&self.params, grads, |name, p, g| rule.update(state, t, name, p, g))?;
        self.state.step = t;
        Ok(())
    }
    fn lr(&self) -> f64 {
        self.rule.lr()
    }
    fn set_lr(&mut self, lr: f64) {
        self.rule.set_lr(lr);
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

/// Per-parameter state buffers, keyed `<param>.<buffer>`, plus the step counter.
#[derive(Default)]
pub struct State {
    step: u64,
    /// Buffers by parameter name, then buffer name: looking one up builds no key string, so a
    /// steady-state step makes no allocation here.
    buffers: HashMap<String, HashMap<String, Tensor>>,
}

impl State {
    pub(crate) fn named(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> = self
            .buffers
            .iter()
            .flat_map(|(name, bufs)| bufs.iter().map(move |(suffix, t)| (key(name, suffix), t.clone())))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub(crate) fn restore(&mut self, state: &HashMap<String, Tensor>, step_tensor: Option<&Tensor>) -> Result<()> {
        self.buffers.clear();
        for (key, t) in state.iter().filter(|(k, _)| k.as_str() != "step") {
            // Buffer names have no dot; parameter names may (`0.weight`). A key without a dot
            // (not written by `named`) keeps its name under the empty parameter name.
            let (name, suffix) = key.rsplit_once('.').unwrap_or(("", key.as_str()));
            self.buffers.entry(name.to_string()).or_default().insert(suffix.to_string(), t.clone());
        }
        if let Some(t) = step_tensor {
            self.step = t.to_dtype(kiln_tensor::DType::F64)?.to_scalar::<f64>()? as u64;
        }
        Ok(())
    }
}

/// The state-dict key of buffer `suffix` of parameter `name`, as `restore` splits it.
fn key(name: &str, suffix: &str) -> String {
    if name.is_empty() {
        suffix.to_string()
    } else {
        format!("{name}.{suffix}")
    }
}

/// The step count as a 0-d tensor on the device of the first parameter.
pub(crate) fn step_tensor(params: &[(String, Var)], step: u64) -> Vec<(String, Tensor)> {
    params
        .first()
        .and_then(|(_, v)| Tensor::full(step as f64, (), kiln_tensor::DType::F64, v.as_tensor().device()).ok())
        .map(|t| vec![("step".to_string(), t)])
        .unwrap_or_default()
}

/// Runs `update(name, param, grad)` for every parameter that has a gradient, without recording.
pub(crate) fn for_each(
    params: &[(String, Var)],
    grads: &Gradients,
    mut update: impl FnMut(&str, &Tensor, &Tensor) -> Result<Tensor>,
) -> Result<()> {
    no_grad(|| {
        for (name, var) in params {
            let Some(g) = grads.get(var) else { continue };
            let p = var.as_tensor();
            let g = if g.dtype() != p.dtype() { g.to_dtype(p.dtype())? } else { g.clone() };
            var.set(&update(name, &p, &g)?)?;
        }
        Ok(())
    })
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`; returns the norm
/// before clipping (PyTorch's `clip_grad_norm_`).
pub fn clip_grad_norm(grads: &mut Gradients, params: &[(String, Var)], max_norm: f64) -> Result<f64> {
    if max_norm.is_nan() || max_norm <= 0.0 {
        return Err(Error::invalid("clip_grad_norm", format!("max_norm must be positive, got {max_norm}")));
    }
    no_grad(|| {
        let mut total = 0.0;
        for (_, v) in params {
            if let Some(g) = grads.get(v) {
                total += g.to_dtype(kiln_tensor::DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
            }
        }
        let norm = total.sqrt();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            for (_, v) in params {
                if let Some(g) = grads.get(v) {
                    let scaled = g.mul_scalar(coef)?;
                    grads.insert(v, scaled);
                }
            }
        }
        Ok(norm)
    })
}

/// Clamps every gradient element to `[-clip, clip]` (PyTorch's `clip_grad_value_`).
pub fn clip_grad_value(grads: &mut Gradients, params: &[(String, Var)], clip: f64) -> Result<()> {
    no_grad(|| {
        for (_, v) in params {
            if let Some(g) = grads.get(v) {
                let c = g.clamp(-clip, clip)?;
                grads.insert(v, c);
            }
        }
        Ok(())
    })
}

/// The buffer `name.suffix`, zeros like `p` on first use.
pub(crate) fn buffer(state: &mut State, name: &str, suffix: &str, p: &Tensor) -> Result<Tensor> {
    if let Some(b) = state.buffers.get(name).and_then(|bufs| bufs.get(suffix)) {
        return Ok(b.clone());
    }
    let z = p.zeros_like()?;
    store(state, name, suffix, z.clone());
    Ok(z)
}

pub(crate) fn store(state: &mut State, name: &str, suffix: &str, t: Tensor) {
    let bufs = match state.buffers.get_mut(name) {
        Some(bufs) => bufs,
        None => state.buffers.entry(name.to_string()).or_default(),
    };
    match bufs.get_mut(suffix) {
        Some(slot) => *slot = t,
        None => {
            bufs.insert(suffix.to_string(), t);
        }
    }
}
