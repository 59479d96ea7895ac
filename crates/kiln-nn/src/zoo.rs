//! Ready-made models: the two classic MNIST networks, with PyTorch's layer order and default
//! initialisation, so their checkpoints load into the same `nn.Sequential` in PyTorch.
//!
//! ```
//! # let dev = kiln_cpu::cpu();
//! let mlp = kiln_nn::zoo::mnist_mlp(&dev).unwrap();
//! let x = kiln_tensor::Tensor::zeros([2, 1, 28, 28], kiln_tensor::DType::F32, &dev).unwrap();
//! # use kiln_nn::Module;
//! assert_eq!(mlp.forward(&x).unwrap().dims(), &[2, 10]);
//! ```

use crate::{Activation, Conv2dConfig, Dropout, Flatten, LinearConfig, MaxPool2d, Sequential};
use kiln_tensor::{Device, Result};

/// 784-128-ReLU-10 over flattened 28x28 images.
pub fn mnist_mlp(device: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(Flatten::default())
        .add(LinearConfig::new(784, 128).init(device)?)
        .add(Activation::ReLU)
        .add(LinearConfig::new(128, 10).init(device)?))
}

/// PyTorch's MNIST example: conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max-pool 2, dropout
/// 0.25, 9216->128, ReLU, dropout 0.5, 128->10.
pub fn mnist_cnn(device: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
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
        .add(LinearConfig::new(128, 10).init(device)?))
}
