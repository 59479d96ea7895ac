//! The layers, one module per family.

mod basic;
mod conv;
mod linear;
mod norm;
mod sequential;

pub use basic::{Activation, Dropout, Embedding, Flatten};
pub use conv::{AdaptiveAvgPool2d, AvgPool2d, Conv2d, Conv2dConfig, MaxPool2d};
pub use linear::{Linear, LinearConfig};
pub use norm::{BatchNorm, LayerNorm};
pub use sequential::Sequential;
