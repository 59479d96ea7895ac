//! Shared pieces of kiln's criterion benches: the shapes every bench and peer runs, and the
//! criterion settings that keep a full `cargo xtask bench` run to a few minutes on 2 cores.
//!
//! Bench ids are the join key between kiln, the `gemm` crate and PyTorch
//! (`benches/peers/torch_bench.py`): `<group>/<case>`, for example `matmul/f32/1024x1024x1024`.

use criterion::Criterion;
use std::time::Duration;

/// Criterion with short warm-up and measurement times: medians over 20 samples are stable to a
/// few percent here, and the whole suite stays within minutes.
pub fn criterion() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(400))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
        .without_plots()
        .configure_from_args()
}

/// `(m, k, n)` of the matmul benches: squares, the MLP's forward and backward products, and the
/// CNN's im2col products (batch 64, 28x28 input, two 3x3 convolutions).
pub const MATMUL_SHAPES: &[(usize, usize, usize)] = &[
    (64, 64, 64),
    (128, 128, 128),
    (256, 256, 256),
    (512, 512, 512),
    (1024, 1024, 1024),
    (2048, 2048, 2048),
    // MLP 784-128-10 at batch 32: forward, then the weight gradients dy^T @ x, then dx.
    (32, 784, 128),
    (32, 128, 10),
    (10, 32, 128),
    (128, 32, 784),
    (32, 10, 128),
    // CNN conv1 (1->32, 26x26 outputs) and conv2 (32->64, 24x24 outputs) as im2col GEMMs.
    (43264, 9, 32),
    (36864, 288, 64),
];

/// Formats a matmul case id.
pub fn mnk(&(m, k, n): &(usize, usize, usize)) -> String {
    format!("{m}x{k}x{n}")
}

/// Element counts of the element-wise benches, with their labels.
pub const ELEMENTWISE_SIZES: &[(usize, &str)] = &[(1 << 10, "1K"), (1 << 16, "64K"), (1 << 20, "1M"), (1 << 24, "16M")];

/// Whether `cargo xtask bench --compare` asked for the peers (the `gemm` crate) too.
pub fn peers() -> bool {
    std::env::var_os("KILN_BENCH_PEERS").is_some()
}
