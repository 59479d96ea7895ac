//! `Conv2d` and the pooling layers.

use crate::init::{default_bias, Init};
use crate::module::{join, Entry, Module};
use kiln_tensor::{DType, Device, Error, Result, Tensor, Var, Window2d};

/// Configuration of a [`Conv2d`] layer (PyTorch's argument names and defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Conv2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Kernel size `(KH, KW)`.
    pub kernel_size: (usize, usize),
    /// Stride (default 1).
    pub stride: (usize, usize),
    /// Zero padding on each side (default 0).
    pub padding: (usize, usize),
    /// Dilation (default 1).
    pub dilation: (usize, usize),
    /// Channel groups (default 1).
    pub groups: usize,
    /// Whether to add a bias (default true).
    pub bias: bool,
    /// Parameter dtype (default f32).
    pub dtype: DType,
}

impl Conv2dConfig {
    /// A square `kernel x kernel` convolution with PyTorch's defaults.
    pub fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        Conv2dConfig {
            in_channels,
            out_channels,
            kernel_size: (kernel, kernel),
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
            bias: true,
            dtype: DType::F32,
        }
    }
    /// Sets the stride.
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = (s, s);
        self
    }
    /// Sets the padding.
    pub fn padding(mut self, p: usize) -> Self {
        self.padding = (p, p);
        self
    }
    /// Sets the dilation.
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    /// Sets the groups.
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    /// Without a bias.
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    /// Builds the layer with PyTorch's default initialisation.
    pub fn init(&self, device: &Device) -> Result<Conv2d> {
        let g = self.groups;
        if g == 0 || !self.in_channels.is_multiple_of(g) || !self.out_channels.is_multiple_of(g) {
            return Err(Error::invalid(
                "Conv2d",
                format!(
                    "groups {g} must divide in_channels {} and out_channels {}",
                    self.in_channels, self.out_channels
                ),
            ));
        }
        let shape = [self.out_channels, self.in_channels / g, self.kernel_size.0, self.kernel_size.1];
        let weight = Var::new(Init::KaimingUniform { a: 5f64.sqrt() }.tensor(shape, self.dtype, device)?);
        let fan_in = shape[1] * shape[2] * shape[3];
        let bias = if self.bias {
            Some(Var::new(default_bias(fan_in).tensor([self.out_channels], self.dtype, device)?))
        } else {
            None
        };
        Ok(Conv2d { weight, bias, config: *self })
    }
}

/// A 2-D convolution over `[N, C, H, W]`. `weight` is `[O, C / groups, KH, KW]`.
pub struct Conv2d {
    /// `[out_channels, in_channels / groups, KH, KW]`.
    pub weight: Var,
    /// `[out_channels]`.
    pub bias: Option<Var>,
    config: Conv2dConfig,
}

impl Conv2d {
    fn apply(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let c = &self.config;
        let win = Window2d { kernel: c.kernel_size, stride: c.stride, padding: c.padding, dilation: c.dilation };
        use crate::autocast::for_compute;
        let bias = self.bias.as_ref().map(|b| for_compute(&b.as_tensor())).transpose()?;
        let (x, w) = (for_compute(x)?, for_compute(&self.weight.as_tensor())?);
        match relu {
            true => x.conv2d_relu(&w, bias.as_ref(), win, c.groups),
            false => x.conv2d(&w, bias.as_ref(), win, c.groups),
        }
    }
}

impl Module for Conv2d {
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
        let c = &self.config;
        format!(
            "Conv2d({} -> {}, kernel {:?}, stride {:?}, padding {:?})",
            c.in_channels, c.out_channels, c.kernel_size, c.stride, c.padding
        )
    }
}

macro_rules! pool {
    ($name:ident, $method:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name(pub Window2d);

        impl $name {
            /// A `kernel x kernel` window with stride `kernel` (PyTorch's default) and no padding.
            pub fn new(kernel: usize) -> Self {
                $name(Window2d {
                    kernel: (kernel, kernel),
                    stride: (kernel, kernel),
                    padding: (0, 0),
                    dilation: (1, 1),
                })
            }
            /// Sets the stride.
            pub fn stride(mut self, s: usize) -> Self {
                self.0.stride = (s, s);
                self
            }
            /// Sets the padding.
            pub fn padding(mut self, p: usize) -> Self {
                self.0.padding = (p, p);
                self
            }
        }

        impl Module for $name {
            fn forward(&self, x: &Tensor) -> Result<Tensor> {
                x.$method(self.0)
            }
            fn visit(&self, _: &str, _: &mut dyn FnMut(&str, Entry<'_>)) {}
            fn describe(&self) -> String {
                format!("{}(kernel {:?}, stride {:?})", stringify!($name), self.0.kernel, self.0.stride)
            }
        }
    };
}
pool!(MaxPool2d, max_pool2d, "2-D max pooling.");
pool!(AvgPool2d, avg_pool2d, "2-D average pooling (padding counted as zeros).");

/// Average pooling to a fixed output size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveAvgPool2d(pub (usize, usize));

impl Module for AdaptiveAvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.adaptive_avg_pool2d(self.0)
    }
    fn visit(&self, _: &str, _: &mut dyn FnMut(&str, Entry<'_>)) {}
    fn describe(&self) -> String {
        format!("AdaptiveAvgPool2d({:?})", self.0)
    }
}
