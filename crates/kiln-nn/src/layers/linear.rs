//! `Linear`: `y = x W^T + b`.

use crate::init::{default_bias, Init};
use crate::module::{join, Entry, Module};
use kiln_tensor::{DType, Device, Error, Result, Tensor, Var};

/// Configuration of a [`Linear`] layer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinearConfig {
    /// Input features.
    pub in_features: usize,
    /// Output features.
    pub out_features: usize,
    /// Whether to add a bias (default true).
    pub bias: bool,
    /// Parameter dtype (default f32).
    pub dtype: DType,
}

impl LinearConfig {
    /// `in_features -> out_features` with a bias, f32.
    pub fn new(in_features: usize, out_features: usize) -> Self {
        LinearConfig { in_features, out_features, bias: true, dtype: DType::F32 }
    }
    /// Without a bias.
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    /// With parameters of `dtype`.
    pub fn dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }
    /// Builds the layer with PyTorch's default initialisation (Kaiming-uniform, a = sqrt(5);
    /// bias uniform in ±1/sqrt(in_features)).
    pub fn init(&self, device: &Device) -> Result<Linear> {
        let weight = Init::KaimingUniform { a: 5f64.sqrt() }.tensor(
            [self.out_features, self.in_features],
            self.dtype,
            device,
        )?;
        let bias = if self.bias {
            Some(Var::new(default_bias(self.in_features).tensor([self.out_features], self.dtype, device)?))
        } else {
            None
        };
        Ok(Linear { weight: Var::new(weight), bias, config: *self })
    }
}

/// A fully connected layer. `weight` is `[out, in]` as in PyTorch.
pub struct Linear {
    /// `[out_features, in_features]`.
    pub weight: Var,
    /// `[out_features]`.
    pub bias: Option<Var>,
    config: LinearConfig,
}

impl Linear {
    /// `LinearConfig::new(in, out).init(device)`.
    pub fn new(in_features: usize, out_features: usize, device: &Device) -> Result<Linear> {
        LinearConfig::new(in_features, out_features).init(device)
    }
}

impl Linear {
    fn apply(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let last = x.dims().last().copied().unwrap_or(0);
        if x.rank() == 0 || last != self.config.in_features {
            return Err(Error::invalid(
                "Linear",
                format!("expects inputs [..., {}], got shape {}", self.config.in_features, x.shape()),
            ));
        }
        use crate::autocast::for_compute;
        let (x, w) = (for_compute(x)?, for_compute(&self.weight.as_tensor())?);
        let b = self.bias.as_ref().map(|b| for_compute(&b.as_tensor())).transpose()?;
        match relu {
            true => x.linear_relu(&w, b.as_ref()),
            false => x.linear(&w, b.as_ref()),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, false)
    }
    fn forward_relu(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, true)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
        if let Some(b) = &self.bias {
            f(&join(prefix, "bias"), Entry::Param(b));
        }
    }
    fn describe(&self) -> String {
        format!(
            "Linear({} -> {}{})",
            self.config.in_features,
            self.config.out_features,
            if self.config.bias { "" } else { ", no bias" }
        )
    }
}
