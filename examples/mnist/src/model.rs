//! The two architectures: kiln-nn's `zoo` (PyTorch's layer order, so checkpoint names match the
//! same `nn.Sequential` in PyTorch).

use crate::ModelKind;
use kiln::nn::{zoo, Sequential};
use kiln::{Device, Result};

/// Builds `kind` on `device` with PyTorch's default initialisation.
pub fn build(kind: ModelKind, device: &Device) -> Result<Sequential> {
    match kind {
        ModelKind::Mlp => zoo::mnist_mlp(device),
        ModelKind::Cnn => zoo::mnist_cnn(device),
    }
}
