//! The CUDA backend end to end, where a device exists (elsewhere each test prints "skipped: no
//! CUDA device" and passes): the MNIST MLP and CNN train on `cuda:0` as on the CPU, step by step,
//! and errors name the device.
#![cfg(feature = "cuda")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln::nn::optim::{Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, zoo, Module};
use kiln::{DType, Device, Result, Tensor};

fn cuda() -> Option<Device> {
    match kiln::device("cuda:0") {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// The losses of `steps` Adam steps of a zoo model on fixed random batches.
fn train(dev: &Device, cnn: bool, steps: usize) -> Result<Vec<f32>> {
    kiln::nn::manual_seed(7);
    let model: Box<dyn Module> = if cnn { Box::new(zoo::mnist_cnn(dev)?) } else { Box::new(zoo::mnist_mlp(dev)?) };
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    let mut losses = Vec::new();
    for step in 0..steps as u64 {
        let x = Tensor::rand_uniform(0.0, 1.0, [32, 1, 28, 28], DType::F32, 1000 + step, dev)?;
        let labels = x.reshape([32, 784])?.narrow(1, 0, 10)?.argmax(-1, false)?;
        let loss = loss::cross_entropy(&model.forward(&x)?, &labels)?;
        opt.step(&loss.backward()?)?;
        losses.push(loss.to_scalar::<f32>()?);
    }
    Ok(losses)
}

fn compare(cnn: bool, steps: usize) -> Result<()> {
    let Some(gpu) = cuda() else { return Ok(()) };
    let on_cpu = train(&kiln::device("cpu")?, cnn, steps)?;
    let on_gpu = train(&gpu, cnn, steps)?;
    let worst = on_cpu.iter().zip(&on_gpu).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("{}: largest loss difference cpu/cuda over {steps} steps: {worst:e}", if cnn { "cnn" } else { "mlp" });
    assert!(worst <= 1e-3, "losses differ by up to {worst}:\ncpu  {on_cpu:?}\ncuda {on_gpu:?}");
    Ok(())
}

#[test]
fn mlp_trains_on_cuda_as_on_the_cpu() -> Result<()> {
    compare(false, 40)
}

#[test]
fn cnn_trains_on_cuda_as_on_the_cpu() -> Result<()> {
    compare(true, 10)
}

#[test]
fn mixing_devices_is_an_error_that_names_both() -> Result<()> {
    let Some(gpu) = cuda() else { return Ok(()) };
    let a = Tensor::ones([2, 3], DType::F32, &gpu)?;
    let b = Tensor::ones([2, 3], DType::F32, &kiln::device("cpu")?)?;
    let err = a.add(&b).unwrap_err().to_string();
    assert!(err.contains("cuda:0") && err.contains("cpu"), "{err}");
    Ok(())
}

#[test]
fn a_tensor_dropped_on_another_thread_leaves_the_device_usable() -> Result<()> {
    let Some(gpu) = cuda() else { return Ok(()) };
    let t = Tensor::ones([1000], DType::F32, &gpu)?;
    std::thread::spawn(move || drop(t)).join().expect("the dropping thread panicked");
    let sum = Tensor::ones([1000], DType::F32, &gpu)?.sum_all()?.to_scalar::<f32>()?;
    assert_eq!(sum, 1000.0);
    Ok(())
}

#[test]
fn uniform_draws_match_the_host_stream_bit_for_bit() -> Result<()> {
    let Some(gpu) = cuda() else { return Ok(()) };
    let cpu = kiln::device("cpu")?;
    for dtype in [DType::F32, DType::F64, DType::F16, DType::BF16] {
        let on_gpu = Tensor::rand_uniform(-0.5, 0.25, [100_003], dtype, 42, &gpu)?.to_dtype(DType::F64)?;
        let on_cpu = Tensor::rand_uniform(-0.5, 0.25, [100_003], dtype, 42, &cpu)?.to_dtype(DType::F64)?;
        assert_eq!(on_gpu.to_vec::<f64>()?, on_cpu.to_vec::<f64>()?, "{dtype}");
    }
    Ok(())
}
