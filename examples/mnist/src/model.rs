//! The two architectures, with PyTorch's layer order (so checkpoint names match the same
//! `nn.Sequential` in PyTorch).

use crate::ModelKind;
use kiln::nn::{Activation, Conv2dConfig, Dropout, Flatten, LinearConfig, MaxPool2d, Sequential};
use kiln::{Device, Result};

/// Builds `kind` on `device` with PyTorch's default initialisation.
pub fn build(kind: ModelKind, device: &Device) -> Result<Sequential> {
    Ok(match kind {
        ModelKind::Mlp => Sequential::new()
            .add(Flatten::default())
            .add(LinearConfig::new(784, 128).init(device)?)
            .add(Activation::ReLU)
            .add(LinearConfig::new(128, 10).init(device)?),
        ModelKind::Cnn => Sequential::new()
            .add(Conv2dConfig::new(1, 32, 3).init(device)?)
            .add(Activation::ReLU)
            .add(Conv2dConfig::new(32, 64, 3).init(device)?)
            .add(Activation::ReLU)
            .add(MaxPool2d::new(2))
            .add(Dropout::new(0.25)?)
            .add(Flatten::default())
            .add(LinearConfig::new(9216, 128).init(device)?)
            .add(Activation::ReLU)
            .add(Dropout::new(0.5)?)
            .add(LinearConfig::new(128, 10).init(device)?),
    })
}
