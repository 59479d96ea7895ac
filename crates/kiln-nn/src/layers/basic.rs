//! Parameter-free layers (activations, `Flatten`, `Dropout`) and `Embedding`.

use crate::init::{next_seed, Init};
use crate::module::{join, Entry, Mode, Module, RngState};
use kiln_tensor::{DType, Device, Error, Result, Tensor, Var};

/// An element-wise activation or a (log-)softmax, as a layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// `max(x, 0)`.
    ReLU,
    /// Exact GELU.
    GELU,
    /// GELU, tanh approximation.
    GELUTanh,
    /// `x * sigmoid(x)`.
    SiLU,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Softmax along a dim.
    Softmax(isize),
    /// Log-softmax along a dim.
    LogSoftmax(isize),
}

impl Module for Activation {
    fn is_relu(&self) -> bool {
        *self == Activation::ReLU
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match *self {
            Activation::ReLU => x.relu(),
            Activation::GELU => x.gelu(),
            Activation::GELUTanh => x.gelu_tanh(),
            Activation::SiLU => x.silu(),
            Activation::Sigmoid => x.sigmoid(),
            Activation::Tanh => x.tanh(),
            Activation::Softmax(d) => x.softmax(d),
            Activation::LogSoftmax(d) => x.log_softmax(d),
        }
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, Entry<'_>)) {}
    fn describe(&self) -> String {
        format!("{self:?}")
    }
}

/// Merges dims `start..=end` (PyTorch's default: 1..=-1, keeping the batch dim).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatten {
    /// First dim merged.
    pub start: isize,
    /// Last dim merged.
    pub end: isize,
}

impl Default for Flatten {
    fn default() -> Self {
        Flatten { start: 1, end: -1 }
    }
}

impl Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten(self.start, self.end)
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, Entry<'_>)) {}
    fn describe(&self) -> String {
        "Flatten".into()
    }
}

/// Zeroes each element with probability `p` in training and scales the rest by `1 / (1 - p)`;
/// the identity in evaluation. Masks come from a seed taken at construction and a call counter,
/// so a run is reproducible.
pub struct Dropout {
    p: f64,
    rng: RngState,
    mode: Mode,
}

impl Dropout {
    /// Dropout with probability `p` in `[0, 1)`.
    pub fn new(p: f64) -> Result<Self> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid("Dropout", format!("p must be in [0, 1), got {p}")));
        }
        Ok(Dropout { p, rng: RngState::new(next_seed()), mode: Mode::new() })
    }
}

impl Module for Dropout {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.mode.training() || self.p == 0.0 {
            return Ok(x.clone());
        }
        let seed = self.rng.next();
        let keep =
            Tensor::rand_uniform(0.0, 1.0, x.shape().clone(), DType::F32, seed, x.device())?.ge_scalar(self.p)?;
        let scale = keep.to_dtype(x.dtype())?.mul_scalar(1.0 / (1.0 - self.p))?;
        x.mul(&scale)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        f(&join(prefix, "rng"), Entry::Rng(&self.rng));
    }
    fn set_training(&self, training: bool) {
        self.mode.set(training);
    }
    fn describe(&self) -> String {
        format!("Dropout(p = {})", self.p)
    }
}

/// A lookup table: integer ids `[...]` to rows `[..., dim]` (weights normal(0, 1), as PyTorch).
pub struct Embedding {
    /// `[num_embeddings, dim]`.
    pub weight: Var,
}

impl Embedding {
    /// `Embedding(num_embeddings, dim)`.
    pub fn new(num_embeddings: usize, dim: usize, device: &Device) -> Result<Self> {
        Ok(Embedding { weight: Var::new(Init::Normal(0.0, 1.0).tensor([num_embeddings, dim], DType::F32, device)?) })
    }
}

impl Module for Embedding {
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let w = self.weight.as_tensor();
        let rows = w.index_select(0, &ids.flatten_all()?)?;
        let mut shape = ids.dims().to_vec();
        shape.push(w.dims()[1]);
        rows.reshape(shape)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
    }
    fn describe(&self) -> String {
        let d = self.weight.shape();
        format!("Embedding({}, {})", d.dims()[0], d.dims()[1])
    }
}
