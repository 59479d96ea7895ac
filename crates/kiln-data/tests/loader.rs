//! The DataLoader: every epoch is a permutation, deterministic per seed and epoch, different
//! across epochs; batches carry the right examples; drop_last.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_data::{DataLoader, Dataset, InMemory};
use std::sync::Arc;

fn data(n: usize) -> Arc<dyn Dataset> {
    Arc::new(InMemory::new((0..n * 2).map(|x| x as f32).collect(), (0..n as i64).collect(), vec![2]).expect("valid"))
}

#[test]
fn shuffling_is_a_deterministic_permutation() {
    let dev = kiln_cpu::cpu();
    let loader = DataLoader::new(data(1000), 64, &dev).expect("loader").shuffle(42);
    let a = loader.order(0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    assert_eq!(a, DataLoader::new(data(1000), 8, &dev).expect("loader").shuffle(42).order(0), "same seed, same order");
    assert_ne!(a, loader.order(1), "each epoch is reshuffled");
    assert_ne!(a, DataLoader::new(data(1000), 64, &dev).expect("loader").shuffle(43).order(0));
    assert_ne!(a, (0..1000).collect::<Vec<_>>());
}

#[test]
fn batches_follow_the_order_and_hold_the_right_examples() -> kiln_tensor::Result<()> {
    let dev = kiln_cpu::cpu();
    let loader = DataLoader::new(data(10), 4, &dev)?.shuffle(1);
    let order = loader.order(3);
    let mut seen = Vec::new();
    for batch in loader.epoch(3) {
        let batch = batch?;
        let labels = batch.labels.to_vec::<i64>()?;
        let inputs = batch.inputs.to_vec::<f32>()?;
        assert_eq!(batch.inputs.dims()[1..], [2]);
        for (k, &l) in labels.iter().enumerate() {
            assert_eq!(inputs[2 * k..2 * k + 2], [2.0 * l as f32, 2.0 * l as f32 + 1.0]);
        }
        seen.extend(labels.iter().map(|&l| l as usize));
    }
    assert_eq!(seen, order);
    let dropped = DataLoader::new(data(10), 4, &dev)?.drop_last(true);
    assert_eq!(dropped.num_batches(), 2);
    assert_eq!(dropped.epoch(0).count(), 2);
    // Stopping early does not hang: the worker stops when the iterator is dropped.
    let mut it = DataLoader::new(data(10_000), 1, &dev)?.prefetch(2).epoch(0);
    assert!(it.next().is_some());
    drop(it);
    Ok(())
}
