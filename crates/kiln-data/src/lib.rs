//! # kiln-data
//!
//! Datasets for kiln: the [`Dataset`] trait, a [`DataLoader`] that shuffles with a seed and
//! assembles batches on a background thread, IDX files (raw or gzip), and MNIST /
//! Fashion-MNIST that fetch themselves into a cache, verified by SHA-256.
//!
//! ```
//! use kiln_data::{DataLoader, InMemory};
//! use std::sync::Arc;
//! # fn main() -> kiln_tensor::Result<()> {
//! let data = InMemory::new((0..20).map(|x| x as f32).collect(), (0..10).collect(), vec![2])?;
//! let loader = DataLoader::new(Arc::new(data), 4, &kiln_cpu::cpu())?.shuffle(7);
//! let sizes: Vec<usize> = loader.epoch(0).map(|b| b.map(|b| b.labels.elem_count())).collect::<Result<_, _>>()?;
//! assert_eq!(sizes, [4, 4, 2]);
//! # Ok(()) }
//! ```

mod dataset;
pub mod fetch;
pub mod idx;
mod loader;
pub mod mnist;

pub use dataset::{Dataset, InMemory};
pub use loader::{Batch, Batches, DataLoader};
