//! Weight initialisation with PyTorch's default distributions, drawn from kiln's seeded
//! counter-based generator.
//!
//! Seeds: [`manual_seed`] sets a per-thread seed (like `torch.manual_seed`); every tensor
//! initialised afterwards takes the next stream of it, so a model built twice after the same
//! `manual_seed` has the same weights on every platform and device.

use kiln_tensor::{DType, Device, Result, Shape, Tensor};
use std::cell::Cell;

thread_local! {
    static SEED: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Sets the seed for the parameters initialised next on this thread.
pub fn manual_seed(seed: u64) {
    SEED.with(|s| s.set((seed, 0)));
}

/// The next seed of this thread's stream.
pub fn next_seed() -> u64 {
    SEED.with(|s| {
        let (seed, n) = s.get();
        s.set((seed, n + 1));
        // SplitMix64 of (seed, n): well-spread, distinct streams for consecutive tensors.
        let mut z = seed ^ (n.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// `(fan_in, fan_out)` as PyTorch computes them: dims 1 and 0 times the receptive field.
pub fn fans(shape: &Shape) -> (usize, usize) {
    let d = shape.dims();
    match d.len() {
        0 => (1, 1),
        1 => (d[0], d[0]),
        _ => {
            let field: usize = d[2..].iter().product();
            (d[1] * field, d[0] * field)
        }
    }
}

/// How to fill a parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All zeros.
    Zeros,
    /// All ones.
    Ones,
    /// A constant.
    Const(f64),
    /// Uniform in `[low, high)`.
    Uniform(f64, f64),
    /// Normal with mean and std.
    Normal(f64, f64),
    /// Kaiming/He uniform with negative slope `a` (PyTorch's Linear/Conv default uses `a = sqrt(5)`).
    KaimingUniform {
        /// Negative slope of the rectifier after this layer.
        a: f64,
    },
    /// Kaiming/He normal with negative slope `a`.
    KaimingNormal {
        /// Negative slope of the rectifier after this layer.
        a: f64,
    },
    /// Xavier/Glorot uniform with gain.
    XavierUniform {
        /// Gain.
        gain: f64,
    },
    /// Xavier/Glorot normal with gain.
    XavierNormal {
        /// Gain.
        gain: f64,
    },
}

impl Init {
    /// A tensor of `shape` drawn from this distribution with the next seed of the thread's stream.
    pub fn tensor(self, shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let (fan_in, fan_out) = fans(&shape);
        let kaiming_std = |a: f64| (2.0 / (1.0 + a * a)).sqrt() / (fan_in.max(1) as f64).sqrt();
        match self {
            Init::Zeros => Tensor::zeros(shape, dtype, device),
            Init::Ones => Tensor::ones(shape, dtype, device),
            Init::Const(v) => Tensor::full(v, shape, dtype, device),
            Init::Uniform(lo, hi) => Tensor::rand_uniform(lo, hi, shape, dtype, next_seed(), device),
            Init::Normal(mean, std) => Tensor::randn(mean, std, shape, dtype, next_seed(), device),
            Init::KaimingUniform { a } => {
                let bound = 3f64.sqrt() * kaiming_std(a);
                Tensor::rand_uniform(-bound, bound, shape, dtype, next_seed(), device)
            }
            Init::KaimingNormal { a } => Tensor::randn(0.0, kaiming_std(a), shape, dtype, next_seed(), device),
            Init::XavierUniform { gain } => {
                let bound = gain * (6.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                Tensor::rand_uniform(-bound, bound, shape, dtype, next_seed(), device)
            }
            Init::XavierNormal { gain } => {
                let std = gain * (2.0 / (fan_in + fan_out).max(1) as f64).sqrt();
                Tensor::randn(0.0, std, shape, dtype, next_seed(), device)
            }
        }
    }
}

/// PyTorch's default bias init for a layer with `fan_in` inputs: uniform in ±1/sqrt(fan_in).
pub fn default_bias(fan_in: usize) -> Init {
    let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    if bound > 0.0 {
        Init::Uniform(-bound, bound)
    } else {
        Init::Zeros
    }
}
