//! Element-wise ops, reductions, per-op overhead, conv2d and max_pool2d.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benches: a failed unwrap is a failed benche, with its message.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::{DType, Tensor, Window2d};
use kiln_benches::ELEMENTWISE_SIZES;
use std::hint::black_box;

fn elementwise(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("elementwise");
    for &(n, label) in ELEMENTWISE_SIZES {
        let a = Tensor::randn(0.0, 1.0, [n], DType::F32, 1, &dev).unwrap();
        let b = Tensor::randn(0.0, 1.0, [n], DType::F32, 2, &dev).unwrap();
        // Bytes moved: operands read plus the result written.
        g.throughput(Throughput::Bytes((12 * n) as u64));
        g.bench_function(format!("add/f32/{label}"), |x| x.iter(|| black_box(a.add(&b).unwrap())));
        g.bench_function(format!("mul/f32/{label}"), |x| x.iter(|| black_box(a.mul(&b).unwrap())));
        g.throughput(Throughput::Bytes((8 * n) as u64));
        g.bench_function(format!("relu/f32/{label}"), |x| x.iter(|| black_box(a.relu().unwrap())));
        g.bench_function(format!("exp/f32/{label}"), |x| x.iter(|| black_box(a.exp().unwrap())));
    }
    g.finish();
}

fn reductions(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("reduce");
    for (rows, cols) in [(1024usize, 1024usize), (4096, 1000), (32, 10)] {
        let x = Tensor::randn(0.0, 1.0, [rows, cols], DType::F32, 3, &dev).unwrap();
        g.throughput(Throughput::Bytes((4 * rows * cols) as u64));
        g.bench_function(format!("sum_rows/f32/{rows}x{cols}"), |b| b.iter(|| black_box(x.sum(-1, false).unwrap())));
        g.bench_function(format!("max_rows/f32/{rows}x{cols}"), |b| b.iter(|| black_box(x.max(-1, false).unwrap())));
        g.throughput(Throughput::Bytes((8 * rows * cols) as u64));
        g.bench_function(format!("softmax/f32/{rows}x{cols}"), |b| b.iter(|| black_box(x.softmax(-1).unwrap())));
    }
    // Every dim but the channels (a conv bias gradient, batch statistics): runs of 26 x 26.
    let maps = Tensor::randn(0.0, 1.0, [16, 32, 26, 26], DType::F32, 3, &dev).unwrap();
    g.throughput(Throughput::Bytes((4 * maps.elem_count()) as u64));
    g.bench_function("sum_channels/f32/16x32x26x26", |b| b.iter(|| black_box(maps.sum([0, 2, 3], false).unwrap())));
    g.bench_function("max_channels/f32/16x32x26x26", |b| b.iter(|| black_box(maps.max([0, 2, 3], false).unwrap())));
    g.finish();
}

fn overhead(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let a = Tensor::from_vec(vec![1f32], [1], &dev).unwrap();
    let b = Tensor::from_vec(vec![2f32], [1], &dev).unwrap();
    c.bench_function("overhead/add_1_element", |x| x.iter(|| black_box(a.add(&b).unwrap())));
}

fn conv(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("conv");
    // The CNN's two convolutions at batch 64: (in channels, out channels, input side).
    for (cin, cout, side) in [(1usize, 32usize, 28usize), (32, 64, 26)] {
        let x = Tensor::randn(0.0, 1.0, [64, cin, side, side], DType::F32, 4, &dev).unwrap();
        let w = Tensor::randn(0.0, 0.1, [cout, cin, 3, 3], DType::F32, 5, &dev).unwrap();
        let out = side - 2;
        let flops = 2 * 64 * cout * out * out * cin * 9;
        let id = format!("b64_{cin}to{cout}_{side}x{side}");
        g.throughput(Throughput::Elements(flops as u64));
        g.bench_function(format!("conv2d_fwd/f32/{id}"), |b| {
            b.iter(|| black_box(x.conv2d(&w, None, Window2d::square(3), 1).unwrap()))
        });
        // Forward plus both backward products: three times the forward's multiply-adds.
        let (xv, wv) = (kiln::Var::new(x.clone()), kiln::Var::new(w.clone()));
        g.throughput(Throughput::Elements(3 * flops as u64));
        g.bench_function(format!("conv2d_fwd_bwd/f32/{id}"), |b| {
            b.iter(|| {
                let y = xv.as_tensor().conv2d(&wv.as_tensor(), None, Window2d::square(3), 1).unwrap();
                black_box(y.sum((), false).unwrap().backward().unwrap())
            })
        });
    }
    let x = Tensor::randn(0.0, 1.0, [64, 64, 24, 24], DType::F32, 6, &dev).unwrap();
    g.throughput(Throughput::Bytes((4 * x.elem_count() * 5 / 4) as u64));
    // PyTorch's `F.max_pool2d(x, 2)`: stride equal to the window.
    let pool = Window2d { stride: (2, 2), ..Window2d::square(2) };
    g.bench_function("max_pool2d_fwd/f32/b64_64x24x24", |b| b.iter(|| black_box(x.max_pool2d(pool).unwrap())));
    g.finish();
}

/// One fused Adam step over the MLP's 101,770 parameters with ordinary values, with moments and
/// gradients in the denormal range, and the latter with FTZ/DAZ on (kiln's policy question).
fn denormals(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let n = 101_770;
    let step =
        kiln::AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false, t: 10 };
    let p = Tensor::randn(0.0, 0.1, [n], DType::F32, 1, &dev).unwrap();
    let mut g = c.benchmark_group("denormals");
    for (name, scale, ftz) in [("normal", 1e-3, false), ("denormal", 1e-20, false), ("denormal_ftz", 1e-20, true)] {
        // Gradients near 1e-20 square to ~1e-40: below f32's smallest normal (1.2e-38).
        let grad = Tensor::randn(0.0, scale, [n], DType::F32, 2, &dev).unwrap();
        let m = grad.mul_scalar(0.1).unwrap();
        let v = grad.sqr().unwrap();
        kiln::kiln_cpu::set_flush_denormal(ftz);
        g.bench_function(format!("adam_step/f32/{name}"), |b| {
            b.iter(|| black_box(p.adam_step(&grad, &m, &v, &step).unwrap()))
        });
        kiln::kiln_cpu::set_flush_denormal(false);
    }
    g.finish();
}

criterion_group! { name = benches; config = kiln_benches::criterion(); targets = elementwise, reductions, overhead, conv, denormals }
criterion_main!(benches);
