//! `DataLoader`: seeded shuffling, batching, and assembly of batches into tensors on a
//! background thread, a few batches ahead of the training loop.

use crate::dataset::Dataset;
use kiln_tensor::random::philox4x32;
use kiln_tensor::{Device, Error, Result, Tensor};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One batch: inputs `[B, ...input_shape]` (f32) and labels `[B]` (i64).
#[derive(Clone, Debug)]
pub struct Batch {
    /// The inputs.
    pub inputs: Tensor,
    /// The labels.
    pub labels: Tensor,
}

/// Batches of a [`Dataset`], in a shuffled order that depends only on the seed and the epoch.
#[derive(Clone)]
pub struct DataLoader {
    dataset: Arc<dyn Dataset>,
    batch_size: usize,
    shuffle: Option<u64>,
    drop_last: bool,
    prefetch: usize,
    device: Device,
}

impl DataLoader {
    /// Batches of `batch_size` in dataset order, built on `device`, 4 batches prefetched.
    pub fn new(dataset: Arc<dyn Dataset>, batch_size: usize, device: &Device) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("DataLoader", "batch_size must be at least 1"));
        }
        Ok(DataLoader { dataset, batch_size, shuffle: None, drop_last: false, prefetch: 4, device: device.clone() })
    }
    /// Shuffles every epoch with a permutation drawn from `seed` and the epoch number.
    pub fn shuffle(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }
    /// Drops the last batch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop: bool) -> Self {
        self.drop_last = drop;
        self
    }
    /// How many batches the background thread may prepare ahead (at least 1).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }
    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }
    /// Batches per epoch.
    pub fn num_batches(&self) -> usize {
        let n = self.dataset.len();
        if self.drop_last {
            n / self.batch_size
        } else {
            n.div_ceil(self.batch_size)
        }
    }

    /// The example order of `epoch`: a Fisher-Yates shuffle driven by Philox, so it is the same
    /// on every platform and run.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        let n = self.dataset.len();
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = self.shuffle {
            let key = [seed as u32 ^ epoch as u32, (seed >> 32) as u32 ^ (epoch >> 32) as u32 ^ 0x5eed];
            for i in (1..n).rev() {
                let w = philox4x32([i as u32, (i as u64 >> 32) as u32, epoch as u32, 0], key);
                let r = ((w[0] as u64) << 32 | w[1] as u64) % (i as u64 + 1);
                order.swap(i, r as usize);
            }
        }
        order
    }

    /// The batches of `epoch`, assembled on a background thread.
    pub fn epoch(&self, epoch: u64) -> Batches {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` after its first `skip` (none are built for those): where a run
    /// resumed from a checkpoint taken mid-epoch continues.
    pub fn epoch_from(&self, epoch: u64, skip: usize) -> Batches {
        let mut order = self.order(epoch);
        order.drain(..(skip.saturating_mul(self.batch_size)).min(order.len()));
        let (tx, rx) = sync_channel(self.prefetch);
        let (dataset, device, size, drop_last) =
            (self.dataset.clone(), self.device.clone(), self.batch_size, self.drop_last);
        let shape = dataset.input_shape();
        let worker = std::thread::spawn(move || {
            for chunk in order.chunks(size) {
                if drop_last && chunk.len() < size {
                    break;
                }
                let batch = (|| -> Result<Batch> {
                    let mut inputs = Vec::with_capacity(chunk.len() * shape.iter().product::<usize>());
                    let mut labels = Vec::with_capacity(chunk.len());
                    dataset.fill(chunk, &mut inputs, &mut labels)?;
                    let mut dims = vec![chunk.len()];
                    dims.extend(&shape);
                    Ok(Batch {
                        inputs: Tensor::from_vec(inputs, dims, &device)?,
                        labels: Tensor::from_vec(labels, [chunk.len()], &device)?,
                    })
                })();
                // The receiver is gone when the loop stopped early: stop too.
                if tx.send(batch).is_err() {
                    break;
                }
            }
        });
        Batches { rx, worker: Some(worker) }
    }
}

/// An iterator over one epoch's batches.
pub struct Batches {
    rx: Receiver<Result<Batch>>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        match self.rx.recv() {
            Ok(b) => Some(b),
            Err(_) => {
                // The worker finished (or panicked): report a panic as an error once.
                if let Some(w) = self.worker.take() {
                    if w.join().is_err() {
                        return Some(Err(Error::Msg("the DataLoader worker thread panicked".into())));
                    }
                }
                None
            }
        }
    }
}
