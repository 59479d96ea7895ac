//! The CUDA backend on `cuda:0` (build with `--features cuda`): cuBLAS matmul, a bandwidth-bound
//! element-wise op, softmax, and whole MLP and CNN training steps. Each iteration ends with a
//! device synchronization, so the times are the device's, not the launch queue's. Without a
//! device it prints "skipped: no CUDA device" and measures nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benches: a failed unwrap is a failed bench, with its message.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::nn::optim::{Adadelta, AdadeltaConfig, Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, Module};
use kiln::{DType, Device, Tensor};
use std::hint::black_box;

fn cuda() -> Option<Device> {
    match kiln::device("cuda:0") {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn ops(c: &mut Criterion) {
    let Some(dev) = cuda() else { return };
    let mut g = c.benchmark_group("cuda");
    for (n, dtype) in [(1024usize, DType::F32), (4096, DType::F32), (4096, DType::BF16), (4096, DType::F16)] {
        let a = Tensor::randn(0.0, 1.0, [n, n], DType::F32, 1, &dev).unwrap().to_dtype(dtype).unwrap();
        let b = Tensor::randn(0.0, 1.0, [n, n], DType::F32, 2, &dev).unwrap().to_dtype(dtype).unwrap();
        g.throughput(Throughput::Elements(2 * (n * n * n) as u64));
        g.bench_function(format!("matmul/{dtype}/{n}"), |bench| {
            bench.iter(|| {
                black_box(a.matmul(&b).unwrap());
                dev.synchronize().unwrap();
            })
        });
    }
    let n = 1 << 24;
    let x = Tensor::randn(0.0, 1.0, [n], DType::F32, 3, &dev).unwrap();
    let y = Tensor::randn(0.0, 1.0, [n], DType::F32, 4, &dev).unwrap();
    // Bytes moved: two reads and a write.
    g.throughput(Throughput::Bytes(3 * 4 * n as u64));
    g.bench_function("add/f32/16M", |bench| {
        bench.iter(|| {
            black_box(x.add(&y).unwrap());
            dev.synchronize().unwrap();
        })
    });
    let rows = Tensor::randn(0.0, 1.0, [4096, 4096], DType::F32, 5, &dev).unwrap();
    g.throughput(Throughput::Bytes(2 * 4 * 4096 * 4096));
    g.bench_function("softmax/f32/4096x4096", |bench| {
        bench.iter(|| {
            black_box(rows.softmax(-1).unwrap());
            dev.synchronize().unwrap();
        })
    });
    g.finish();
}

fn labels(n: usize, dev: &Device) -> Tensor {
    Tensor::from_vec((0..n as i64).map(|i| i % 10).collect::<Vec<i64>>(), [n], dev).unwrap()
}

fn train(c: &mut Criterion) {
    let Some(dev) = cuda() else { return };
    let mut g = c.benchmark_group("cuda-train");
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
                dev.synchronize().unwrap();
                black_box(loss)
            })
        });
    }
    let model = kiln::nn::zoo::mnist_cnn(&dev).unwrap();
    let mut opt = Adadelta::new(model.parameters(), AdadeltaConfig::default());
    let x = Tensor::randn(0.0, 1.0, [64, 1, 28, 28], DType::F32, 8, &dev).unwrap();
    let y = labels(64, &dev);
    g.throughput(Throughput::Elements(64));
    g.bench_function("cnn_step_adadelta/f32/b64", |b| {
        b.iter(|| {
            let loss = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            opt.step(&loss.backward().unwrap()).unwrap();
            dev.synchronize().unwrap();
            black_box(loss)
        })
    });
    g.finish();
}

criterion_group!(benches, ops, train);
criterion_main!(benches);
