//! f32 matrix products through kiln and through the `gemm` crate (group `peer-gemm`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benches: a failed unwrap is a failed benche, with its message.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::{DType, Tensor};
use kiln_benches::{mnk, MATMUL_SHAPES};
use std::hint::black_box;

fn kiln_matmul(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("matmul");
    for s in MATMUL_SHAPES {
        let &(m, k, n) = s;
        let a = Tensor::randn(0.0, 1.0, [m, k], DType::F32, 1, &dev).unwrap();
        let b = Tensor::randn(0.0, 1.0, [k, n], DType::F32, 2, &dev).unwrap();
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("f32/{}", mnk(s)), |bench| bench.iter(|| black_box(a.matmul(&b).unwrap())));
    }
    g.finish();
}

/// The MLP's two large products as training makes them, with transposed views: the forward
/// `x @ w.t()` (w stored `[out, in]`, as Linear keeps it) and the weight gradient `dy.t() @ x`.
fn mlp_views(c: &mut Criterion) {
    let dev = kiln::kiln_cpu::cpu();
    let mut g = c.benchmark_group("matmul-views");
    let x = Tensor::randn(0.0, 1.0, [32, 784], DType::F32, 1, &dev).unwrap();
    let w = Tensor::randn(0.0, 1.0, [128, 784], DType::F32, 2, &dev).unwrap();
    let dy = Tensor::randn(0.0, 1.0, [32, 128], DType::F32, 3, &dev).unwrap();
    g.throughput(Throughput::Elements(2 * 32 * 784 * 128));
    g.bench_function("f32/x@w.t/32x784x128", |b| b.iter(|| black_box(x.matmul(&w.t().unwrap()).unwrap())));
    g.bench_function("f32/dy.t@x/128x32x784", |b| b.iter(|| black_box(dy.t().unwrap().matmul(&x).unwrap())));
    g.finish();
}

fn peer_gemm(c: &mut Criterion) {
    if !kiln_benches::peers() {
        return;
    }
    let mut g = c.benchmark_group("peer-gemm");
    for s in MATMUL_SHAPES {
        let &(m, k, n) = s;
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        g.throughput(Throughput::Elements((2 * m * k * n) as u64));
        g.bench_function(format!("matmul/f32/{}", mnk(s)), |bench| {
            bench.iter(|| {
                // Allocate the output each time, as kiln does, so both sides pay the same.
                let mut out = vec![0f32; m * n];
                gemm_into(&mut out, &a, &b, m, k, n);
                black_box(out)
            })
        });
    }
    g.finish();
}

fn gemm_into(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, k: usize, n: usize) {
    // SAFETY: the three slices hold m*n, m*k and k*n elements, row-major with the strides given.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        )
    }
}

criterion_group! { name = benches; config = kiln_benches::criterion(); targets = kiln_matmul, mlp_views, peer_gemm }
criterion_main!(benches);
