//! `Sequential`: layers applied in order, named `0`, `1`, ... as in PyTorch.

use crate::module::{join, Entry, Module};
use kiln_tensor::{Result, Tensor};

/// Applies its layers in order. Parameter names are prefixed with the layer's index.
#[derive(Default)]
pub struct Sequential {
    layers: Vec<Box<dyn Module>>,
}

impl Sequential {
    /// An empty sequence.
    pub fn new() -> Self {
        Sequential::default()
    }
    /// Appends a layer (builder style, candle's and burn's name for it).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, layer: impl Module + 'static) -> Self {
        self.layers.push(Box::new(layer));
        self
    }
    /// Appends a boxed layer.
    pub fn push(&mut self, layer: Box<dyn Module>) {
        self.layers.push(layer);
    }
    /// The number of layers.
    pub fn len(&self) -> usize {
        self.layers.len()
    }
    /// True when there are no layers.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut x = x.clone();
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            // A layer followed by ReLU runs both at once where it can (Conv2d, Linear).
            x = match layers.next_if(|next| next.is_relu()) {
                Some(_) => layer.forward_relu(&x)?,
                None => layer.forward(&x)?,
            };
        }
        Ok(x)
    }
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, Entry<'_>)) {
        for (i, layer) in self.layers.iter().enumerate() {
            layer.visit(&join(prefix, &i.to_string()), f);
        }
    }
    fn set_training(&self, training: bool) {
        for layer in &self.layers {
            layer.set_training(training);
        }
    }
    fn describe(&self) -> String {
        "Sequential".into()
    }
    fn children(&self) -> Vec<(String, &dyn Module)> {
        self.layers.iter().enumerate().map(|(i, l)| (i.to_string(), l.as_ref() as &dyn Module)).collect()
    }
}
