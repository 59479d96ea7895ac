//! Whole training steps (forward, loss, backward, optimizer) and batched inference.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benches: a failed unwrap is a failed bench, with its message.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::nn::optim::{Adadelta, AdadeltaConfig, Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, Module};
use kiln::{no_grad, DType, Tensor};
use kiln_data::mnist::{load_split, Kind, Scaling};
use std::hint::black_box;

fn labels(n: usize, dev: &kiln::Device) -> Tensor {
    Tensor::from_vec((0..n as i64).map(|i| i % 10).collect::<Vec<i64>>(), [n], dev).unwrap()
}

fn mlp_step(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("train");
    for batch in [32usize, 128] {
        let model = kiln::nn::zoo::mnist_mlp(&dev).unwrap();
        let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
        let x = Tensor::randn(0.0, 1.0, [batch, 784], DType::F32, 7, &dev).unwrap();
        let y = labels(batch, &dev);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("mlp_step_adam/f32/b{batch}"), |b| {
            b.iter(|| {
                let loss = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
                opt.step(&loss.backward().unwrap()).unwrap();
                black_box(loss)
            })
        });
    }
    let model = kiln::nn::zoo::mnist_cnn(&dev).unwrap();
    let mut opt = Adadelta::new(model.parameters(), AdadeltaConfig::default());
    let x = Tensor::randn(0.0, 1.0, [64, 1, 28, 28], DType::F32, 8, &dev).unwrap();
    let y = labels(64, &dev);
    g.throughput(Throughput::Elements(64));
    g.sample_size(10);
    g.bench_function("cnn_step_adadelta/f32/b64", |b| {
        b.iter(|| {
            let loss = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            black_box(loss)
        })
    });
    g.finish();
}

/// The MNIST test images, scaled to [0, 1] as the MLP example reads them, or why not.
fn mnist_test_images(dev: &kiln::Device) -> Result<Tensor, String> {
    let dir = kiln_data::fetch::fetch(&Kind::Mnist.spec()).map_err(|e| e.to_string())?;
    let test = load_split(&dir, "t10k", Kind::Mnist, Scaling::UnitRange).map_err(|e| e.to_string())?;
    Tensor::from_vec(test.inputs().to_vec(), [test.labels().len(), 784], dev).map_err(|e| e.to_string())
}

/// 10,000 images in batches of 1,000: random inputs (every entry nonzero), and MNIST's test
/// images (81 % of their pixels are 0, which the CPU backend's matmul skips).
fn mlp_inference(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let model = kiln::nn::zoo::mnist_mlp(&dev).unwrap();
    let random = Tensor::randn(0.0, 1.0, [10_000, 784], DType::F32, 9, &dev).unwrap();
    let mut inputs = vec![("mlp/f32/10000_in_batches_of_1000", random)];
    match mnist_test_images(&dev) {
        Ok(images) => inputs.push(("mlp/f32/mnist_test_images_in_batches_of_1000", images)),
        Err(e) => println!("skipped infer/mlp/f32/mnist_test_images_in_batches_of_1000: {e}"),
    }
    let mut g = c.benchmark_group("infer");
    g.throughput(Throughput::Elements(10_000));
    for (id, x) in &inputs {
        g.bench_function(*id, |b| {
            b.iter(|| {
                no_grad(|| {
                    for i in 0..10 {
                        black_box(model.forward(&x.narrow(0, i * 1000, 1000)?)?.argmax(-1, false)?);
                    }
                    kiln::Result::Ok(())
                })
                .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! { name = benches; config = kiln_benches::criterion(); targets = mlp_step, mlp_inference }
criterion_main!(benches);
