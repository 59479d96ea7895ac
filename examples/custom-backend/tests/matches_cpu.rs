//! The `vec` backend trains the MNIST MLP as the CPU backend does: the same model code, the same
//! seed, and losses equal to 1e-4 step by step. The profiling layer over the CPU backend changes
//! nothing at all. (The real MNIST run is in the closing note of issue 8; this test needs no data.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln::nn::optim::{Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, zoo, Module};
use kiln::profile::Profiled;
use kiln::{DType, Device, Result, Tensor};

/// The losses of `steps` Adam steps of the 784-128-10 MLP on fixed random batches.
fn train(dev: &Device, steps: usize) -> Result<Vec<f32>> {
    kiln::nn::manual_seed(7);
    let model = zoo::mnist_mlp(dev)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    let mut losses = Vec::new();
    for step in 0..steps as u64 {
        let x = Tensor::rand_uniform(0.0, 1.0, [32, 1, 28, 28], DType::F32, 1000 + step, dev)?;
        // Labels that depend on the input, so that there is something to learn.
        let labels = x.reshape([32, 784])?.narrow(1, 0, 10)?.argmax(-1, false)?;
        let loss = loss::cross_entropy(&model.forward(&x)?, &labels)?;
        opt.step(&loss.backward()?)?;
        losses.push(loss.to_scalar::<f32>()?);
    }
    Ok(losses)
}

#[test]
fn vec_backend_trains_like_the_cpu_backend() -> Result<()> {
    let cpu = train(&kiln::device("cpu")?, 60)?;
    let vec = train(&custom_backend::vec_device(), 60)?;
    let worst = cpu.iter().zip(&vec).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("largest loss difference over {} steps: {worst:e}", cpu.len());
    assert!(worst <= 1e-4, "losses differ by up to {worst}: cpu {cpu:?}\nvec {vec:?}");
    assert!(cpu.last() < cpu.first(), "the loss did not fall: {cpu:?}");
    Ok(())
}

#[test]
fn profiling_layer_changes_no_result() -> Result<()> {
    let profiled = Profiled::new(kiln::kiln_cpu::CpuBackend);
    let stats = profiled.stats();
    let with_layer = train(&Device::new(profiled), 20)?;
    assert_eq!(with_layer, train(&kiln::device("cpu")?, 20)?);
    assert!(stats.table().contains("matmul"));
    Ok(())
}

#[test]
fn registered_by_name() -> Result<()> {
    custom_backend::register()?;
    assert_eq!(kiln::device("vec")?.location(), "vec");
    assert_eq!(kiln::profiled_device("vec")?.0.location(), "vec+profile");
    let err = kiln::device("vec:1").unwrap_err().to_string();
    assert!(err.contains("one vec device"), "{err}");
    Ok(())
}
