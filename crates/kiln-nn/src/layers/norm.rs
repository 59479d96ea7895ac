//! `BatchNorm` (1-D and 2-D) and `LayerNorm`, with PyTorch's defaults and update rules.

use crate::init::Init;
use crate::module::{join, Buffer, Entry, Mode, Module};
use kiln_tensor::{no_grad, DType, Device, Error, Result, Tensor, Var};

/// Batch normalisation over the channel dim 1 of `[N, C]`, `[N, C, L]` (`BatchNorm1d`) or
/// `[N, C, H, W]` (`BatchNorm2d`). Training normalises with the batch statistics and updates
/// the running ones (`momentum` 0.1, unbiased variance); evaluation uses the running ones.
pub struct BatchNorm {
    /// `[C]`, initialised to ones.
    pub weight: Var,
    /// `[C]`, initialised to zeros.
    pub bias: Var,
    /// `[C]`.
    pub running_mean: Buffer,
    /// `[C]`.
    pub running_var: Buffer,
    /// Batches seen in training (i64 scalar, PyTorch's `num_batches_tracked`).
    pub num_batches_tracked: Buffer,
    channels: usize,
    momentum: f64,
    eps: f64,
    mode: Mode,
    ranks: &'static [usize],
    name: &'static str,
}

impl BatchNorm {
    fn build(channels: usize, device: &Device, ranks: &'static [usize], name: &'static str) -> Result<Self> {
        Ok(BatchNorm {
            weight: Var::new(Init::Ones.tensor([channels], DType::F32, device)?),
            bias: Var::new(Init::Zeros.tensor([channels], DType::F32, device)?),
            running_mean: Buffer::new(Tensor::zeros([channels], DType::F32, device)?),
            running_var: Buffer::new(Tensor::ones([channels], DType::F32, device)?),
            num_batches_tracked: Buffer::new(Tensor::zeros((), DType::I64, device)?),
            channels,
            momentum: 0.1,
            eps: 1e-5,
            mode: Mode::new(),
            ranks,
            name,
        })
    }
    /// `BatchNorm1d(channels)` for `[N, C]` or `[N, C, L]` inputs.
    pub fn new_1d(channels: usize, device: &Device) -> Result<Self> {
        Self::build(channels, device, &[2, 3], "BatchNorm1d")
    }
    /// `BatchNorm2d(channels)` for `[N, C, H, W]` inputs.
    pub fn new_2d(channels: usize, device: &Device) -> Result<Self> {
        Self::build(channels, device, &[4], "BatchNorm2d")
    }
    /// Sets the momentum of the running statistics (PyTorch default 0.1).
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
}

impl Module for BatchNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.ranks.contains(&x.rank()) || x.dims()[1] != self.channels {
            return Err(Error::invalid(
                self.name,
                format!(
                    "expects {} channels in dim 1 of a rank-{:?} input, got shape {}",
                    self.channels,
                    self.ranks,
                    x.shape()
                ),
            ));
        }
        let dims: Vec<isize> = (0..x.rank() as isize).filter(|&d| d != 1).collect();
        let mut bshape = vec![1; x.rank()];
        bshape[1] = self.channels;
        let (mean, var) = if self.mode.training() {
            let n: usize = dims.iter().map(|&d| x.dims()[d as usize]).product();
            if n < 2 {
                return Err(Error::invalid(
                    self.name,
                    format!("needs more than one value per channel in training, got shape {}", x.shape()),
                ));
            }
            let mean = x.mean(dims.clone(), false)?;
            let var = x.sub(&mean.reshape(bshape.clone())?)?.sqr()?.mean(dims, false)?;
            no_grad(|| -> Result<()> {
                let m = self.momentum;
                let unbiased = var.mul_scalar(n as f64 / (n as f64 - 1.0))?;
                let (rm, rv) = (self.running_mean.get(), self.running_var.get());
                self.running_mean.set(&rm.mul_scalar(1.0 - m)?.add(&mean.mul_scalar(m)?.to_dtype(rm.dtype())?)?);
                self.running_var.set(&rv.mul_scalar(1.0 - m)?.add(&unbiased.mul_scalar(m)?.to_dtype(rv.dtype())?)?);
                self.num_batches_tracked.set(&self.num_batches_tracked.get().add_scalar(1.0)?);
                Ok(())
            })?;
            (mean, var)
        } else {
            (self.running_mean.get().to_dtype(x.dtype())?, self.running_var.get().to_dtype(x.dtype())?)
        };
        let scale = var.add_scalar(self.eps)?.sqrt()?.recip()?.mul(&self.weight.as_tensor())?;
        let shift = self.bias.as_tensor().sub(&mean.mul(&scale)?)?;
        x.mul(&scale.reshape(bshape.clone())?)?.add(&shift.reshape(bshape)?)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
        f(&join(prefix, "bias"), Entry::Param(&self.bias));
        f(&join(prefix, "running_mean"), Entry::Buffer(&self.running_mean));
        f(&join(prefix, "running_var"), Entry::Buffer(&self.running_var));
        f(&join(prefix, "num_batches_tracked"), Entry::Buffer(&self.num_batches_tracked));
    }
    fn set_training(&self, training: bool) {
        self.mode.set(training);
    }
    fn describe(&self) -> String {
        format!("{}({})", self.name, self.channels)
    }
}

/// Layer normalisation over the trailing dims given by `normalized_shape`, with an
/// element-wise affine transform (weight ones, bias zeros, eps 1e-5).
pub struct LayerNorm {
    /// `normalized_shape`, ones.
    pub weight: Var,
    /// `normalized_shape`, zeros.
    pub bias: Var,
    shape: Vec<usize>,
    eps: f64,
}

impl LayerNorm {
    /// `LayerNorm(normalized_shape)`.
    pub fn new(normalized_shape: &[usize], device: &Device) -> Result<Self> {
        Ok(LayerNorm {
            weight: Var::new(Tensor::ones(normalized_shape, DType::F32, device)?),
            bias: Var::new(Tensor::zeros(normalized_shape, DType::F32, device)?),
            shape: normalized_shape.to_vec(),
            eps: 1e-5,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.shape.len();
        if x.rank() < k || x.dims()[x.rank() - k..] != self.shape[..] {
            return Err(Error::invalid(
                "LayerNorm",
                format!("expects inputs ending in {:?}, got shape {}", self.shape, x.shape()),
            ));
        }
        let dims: Vec<isize> = (x.rank() - k..x.rank()).map(|d| d as isize).collect();
        let centered = x.sub(&x.mean(dims.clone(), true)?)?;
        let var = centered.sqr()?.mean(dims, true)?;
        let normed = centered.div(&var.add_scalar(self.eps)?.sqrt()?)?;
        normed.mul(&self.weight.as_tensor())?.add(&self.bias.as_tensor())
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        f(&join(prefix, "weight"), Entry::Param(&self.weight));
        f(&join(prefix, "bias"), Entry::Param(&self.bias));
    }
    fn describe(&self) -> String {
        format!("LayerNorm({:?})", self.shape)
    }
}
