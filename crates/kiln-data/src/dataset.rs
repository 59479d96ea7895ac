//! `Dataset`: indexed examples of fixed-shape f32 features and an integer label.

use kiln_tensor::{Error, Result};

/// A collection of examples, each a fixed-shape f32 feature vector and an i64 label.
pub trait Dataset: Send + Sync {
    /// Number of examples.
    fn len(&self) -> usize;
    /// True when empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The shape of one example's features (`[1, 28, 28]` for MNIST).
    fn input_shape(&self) -> Vec<usize>;
    /// Example `index`: features (row-major, `product(input_shape)` values) and label.
    fn get(&self, index: usize) -> Result<(Vec<f32>, i64)>;
    /// Appends the examples at `indices` to `inputs` and `labels`. The default calls `get`;
    /// in-memory datasets override it with a copy per row.
    fn fill(&self, indices: &[usize], inputs: &mut Vec<f32>, labels: &mut Vec<i64>) -> Result<()> {
        for &i in indices {
            let (x, y) = self.get(i)?;
            inputs.extend_from_slice(&x);
            labels.push(y);
        }
        Ok(())
    }
}

/// Examples held in memory, already converted to normalised f32 (the conversion happens once,
/// not per batch).
#[derive(Clone, Debug)]
pub struct InMemory {
    inputs: Vec<f32>,
    labels: Vec<i64>,
    shape: Vec<usize>,
}

impl InMemory {
    /// Builds a dataset from flat inputs (`len * product(shape)` values) and labels.
    pub fn new(inputs: Vec<f32>, labels: Vec<i64>, shape: Vec<usize>) -> Result<Self> {
        let per: usize = shape.iter().product();
        if inputs.len() != labels.len() * per {
            return Err(Error::invalid(
                "InMemory::new",
                format!(
                    "{} input values for {} labels of shape {shape:?} (expected {})",
                    inputs.len(),
                    labels.len(),
                    labels.len() * per
                ),
            ));
        }
        Ok(InMemory { inputs, labels, shape })
    }

    /// u8 images scaled to [0, 1] then standardised with `(x - mean) / std`.
    pub fn from_u8(images: &[u8], labels: Vec<i64>, shape: Vec<usize>, mean: f32, std: f32) -> Result<Self> {
        let inputs = images.iter().map(|&p| (p as f32 / 255.0 - mean) / std).collect();
        InMemory::new(inputs, labels, shape)
    }

    /// The inputs, all examples back to back (`len * product(shape)` values).
    pub fn inputs(&self) -> &[f32] {
        &self.inputs
    }

    /// The labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The first `n` examples (a quick subset for smoke runs).
    pub fn truncate(mut self, n: usize) -> Self {
        let per: usize = self.shape.iter().product();
        let n = n.min(self.labels.len());
        self.labels.truncate(n);
        self.inputs.truncate(n * per);
        self
    }
}

impl Dataset for InMemory {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn input_shape(&self) -> Vec<usize> {
        self.shape.clone()
    }
    fn get(&self, index: usize) -> Result<(Vec<f32>, i64)> {
        let per: usize = self.shape.iter().product();
        let label = *self.labels.get(index).ok_or_else(|| Error::IndexOutOfRange {
            op: "Dataset::get",
            index: index as i64,
            size: self.labels.len(),
            dim: 0,
            shape: self.labels.len().into(),
        })?;
        Ok((self.inputs[index * per..(index + 1) * per].to_vec(), label))
    }
    fn fill(&self, indices: &[usize], inputs: &mut Vec<f32>, labels: &mut Vec<i64>) -> Result<()> {
        let per: usize = self.shape.iter().product();
        for &i in indices {
            if i >= self.labels.len() {
                return Err(Error::IndexOutOfRange {
                    op: "Dataset::fill",
                    index: i as i64,
                    size: self.labels.len(),
                    dim: 0,
                    shape: self.labels.len().into(),
                });
            }
            inputs.extend_from_slice(&self.inputs[i * per..(i + 1) * per]);
            labels.push(self.labels[i]);
        }
        Ok(())
    }
}
