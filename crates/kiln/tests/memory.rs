//! 10,000 forward + backward + update steps of a small two-layer network keep the resident
//! memory flat: the graph and intermediate gradients are released every step.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln::prelude::*;

fn resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn training_loop_memory_is_flat() -> kiln::Result<()> {
    let dev = kiln::device("cpu")?;
    let w1 = Var::new(Tensor::randn(0.0, 0.3, [16, 32], DType::F32, 1, &dev)?);
    let w2 = Var::new(Tensor::randn(0.0, 0.3, [32, 4], DType::F32, 2, &dev)?);
    let x = Tensor::rand_uniform(-1.0, 1.0, [8, 16], DType::F32, 3, &dev)?;
    let y = Tensor::rand_uniform(-1.0, 1.0, [8, 4], DType::F32, 4, &dev)?;
    let step = || -> kiln::Result<f32> {
        let h = x.matmul(&w1.as_tensor())?.relu()?;
        let loss = h.matmul(&w2.as_tensor())?.sub(&y)?.sqr()?.mean_all()?;
        let grads = loss.backward()?;
        no_grad(|| -> kiln::Result<()> {
            for w in [&w1, &w2] {
                let g = grads.get(w).expect("gradient");
                w.set(&w.as_tensor().sub(&g.mul_scalar(0.05)?)?)?;
            }
            Ok(())
        })?;
        loss.to_scalar::<f32>()
    };
    let first = step()?;
    for _ in 0..1000 {
        step()?;
    }
    let Some(before) = resident_kib() else {
        println!("skipped: /proc/self/status is not readable on this platform");
        return Ok(());
    };
    for _ in 0..9000 {
        step()?;
    }
    let after = resident_kib().unwrap_or(before);
    let last = step()?;
    println!("RSS after 1,000 steps: {before} KiB; after 10,000 steps: {after} KiB; loss {first} -> {last}");
    assert!(last < first, "the loop should train: loss {first} -> {last}");
    // Leaking one step's graph would add several KiB per step: 9,000 steps would be tens of MiB.
    assert!(after <= before + 4096, "resident memory grew from {before} KiB to {after} KiB");
    Ok(())
}
