//! The `Module` trait: forward, named parameters and buffers with PyTorch `state_dict` names,
//! train/eval mode.

use kiln_tensor::{DType, Device, Result, Tensor, Var};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// A named parameter or buffer, as visited by [`Module::visit`].
pub enum Entry<'a> {
    /// A trainable parameter.
    Param(&'a Var),
    /// A non-trainable state tensor (BatchNorm's running statistics).
    Buffer(&'a Buffer),
    /// A layer's random-number state (dropout's seed and masks drawn). Not a tensor and not in
    /// PyTorch checkpoints, but part of what a training checkpoint saves, so that a resumed run
    /// draws the masks an uninterrupted one would have.
    Rng(&'a RngState),
}

/// The random-number state of a layer that draws numbers as it runs: a seed and how many draws
/// it has made (kiln's generator is counter-based, so these two are the whole state).
#[derive(Debug, Default)]
pub struct RngState {
    seed: AtomicU64,
    draws: AtomicU64,
}

impl RngState {
    /// A state at `seed` with no draws made.
    pub fn new(seed: u64) -> Self {
        RngState { seed: AtomicU64::new(seed), draws: AtomicU64::new(0) }
    }
    /// The seed for the next draw; counts it.
    pub fn next(&self) -> u64 {
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        self.seed.load(Ordering::Relaxed) ^ n.wrapping_mul(0xA24B_AED4_963E_E407)
    }
    /// `(seed, draws)`, for checkpoints.
    pub fn get(&self) -> (u64, u64) {
        (self.seed.load(Ordering::Relaxed), self.draws.load(Ordering::Relaxed))
    }
    /// Restores what [`RngState::get`] returned.
    pub fn set(&self, (seed, draws): (u64, u64)) {
        self.seed.store(seed, Ordering::Relaxed);
        self.draws.store(draws, Ordering::Relaxed);
    }
}

/// A network layer or a container of layers.
///
/// Names follow PyTorch's `state_dict`: a `Linear` at index 0 of a `Sequential` has
/// `0.weight` (shape `[out, in]`) and `0.bias`.
pub trait Module: Send + Sync {
    /// Applies the module.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;

    /// `relu(forward(x))`. A layer whose kernel can apply ReLU to its output while it is still
    /// in cache ([`crate::Conv2d`], [`crate::Linear`]) overrides this; [`crate::Sequential`]
    /// calls it for a layer followed by [`crate::Activation::ReLU`], which it then skips. The
    /// outputs are the same.
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward(x)?.relu()
    }

    /// True for [`crate::Activation::ReLU`], which a container may fuse into the layer before it
    /// (see [`Module::forward_relu`]).
    fn is_relu(&self) -> bool {
        false
    }

    /// Calls `f(name, entry)` for every parameter and buffer, children first-to-last, with names
    /// prefixed by `prefix` (empty at the top).
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>));

    /// Switches training behaviour (dropout, batch statistics) on or off, recursively.
    fn set_training(&self, _training: bool) {}

    /// A short name for summaries (`Linear(784 -> 128)`).
    fn describe(&self) -> String;

    /// The direct children, for summaries: `(name, child)`.
    fn children(&self) -> Vec<(String, &dyn Module)> {
        Vec::new()
    }

    /// Every trainable parameter with its full name, in a fixed order.
    fn parameters(&self) -> Vec<(String, Var)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, e| {
            if let Entry::Param(v) = e {
                out.push((name.to_string(), v.clone()));
            }
        });
        out
    }

    /// Every buffer with its full name.
    fn buffers(&self) -> Vec<(String, Buffer)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, e| {
            if let Entry::Buffer(b) = e {
                out.push((name.to_string(), b.clone()));
            }
        });
        out
    }

    /// The number of trainable scalars.
    fn num_parameters(&self) -> usize {
        self.parameters().iter().map(|(_, v)| v.as_tensor().elem_count()).sum()
    }

    /// Moves every parameter and buffer to `device` (PyTorch's `model.to(device)`).
    fn to_device(&self, device: &Device) -> Result<()> {
        convert(self, &|t| t.to_device(device))
    }

    /// Converts every float parameter and buffer to `dtype` (PyTorch's `model.double()`, ...).
    fn to_dtype(&self, dtype: DType) -> Result<()> {
        convert(self, &|t| if t.dtype().is_float() { t.to_dtype(dtype) } else { Ok(t.clone()) })
    }

    /// Evaluation mode (`set_training(false)`).
    fn eval(&self) {
        self.set_training(false);
    }
    /// Training mode (`set_training(true)`).
    fn train(&self) {
        self.set_training(true);
    }
}

fn convert<M: Module + ?Sized>(m: &M, f: &dyn Fn(&Tensor) -> Result<Tensor>) -> Result<()> {
    let mut result = Ok(());
    m.visit("", &mut |_, e| {
        if result.is_err() {
            return;
        }
        result = match e {
            Entry::Param(v) => f(&v.as_tensor()).and_then(|t| v.replace(&t)),
            Entry::Buffer(b) => f(&b.get()).map(|t| b.set(&t)),
            Entry::Rng(_) => Ok(()),
        };
    });
    result
}

/// Joins a name prefix and a local name with a dot.
pub fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A non-trainable tensor that a module updates (running statistics). Clones share the value.
#[derive(Clone)]
pub struct Buffer(Arc<RwLock<Tensor>>);

impl Buffer {
    /// Wraps a tensor.
    pub fn new(t: Tensor) -> Self {
        Buffer(Arc::new(RwLock::new(t.detach())))
    }
    /// The current value.
    pub fn get(&self) -> Tensor {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    /// Replaces the value (detached from any graph).
    pub fn set(&self, t: &Tensor) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = t.detach();
    }
}

/// A training-mode flag shared by a layer's clones.
#[derive(Clone)]
pub struct Mode(Arc<AtomicBool>);

impl Mode {
    /// Starts in training mode, as PyTorch modules do.
    pub fn new() -> Self {
        Mode(Arc::new(AtomicBool::new(true)))
    }
    /// True in training mode.
    pub fn training(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
    /// Sets the mode.
    pub fn set(&self, training: bool) {
        self.0.store(training, Ordering::Relaxed);
    }
}

impl Default for Mode {
    fn default() -> Self {
        Self::new()
    }
}
