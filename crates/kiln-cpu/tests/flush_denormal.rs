//! `set_flush_denormal` changes what the kernels compute, and only while it is on. In a test
//! binary of its own, and in one test: the mode is process-wide (every compute thread takes it),
//! so a second test running beside this one would see it switch under its feet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_tensor::Tensor;

/// A 1-element op (the calling thread) and a product large enough to be split over every helper
/// thread are both flushed while the mode is on: kiln-cpu's own helpers, which rayon's broadcast
/// does not reach, apply it before their next job. Results are compared by their bits: under
/// DAZ this thread itself would call 5e-39 equal to 0.0.
#[test]
fn flush_denormal_zeroes_tiny_results_on_every_thread_while_on() {
    let dev = kiln_cpu::cpu();
    let one = Tensor::from_vec(vec![1e-38f32], [1], &dev).unwrap();
    let x = Tensor::from_vec(vec![1e-38f32; 1 << 22], [1 << 22], &dev).unwrap();
    let half = Tensor::from_vec(vec![0.5f32; 1 << 22], [1 << 22], &dev).unwrap();
    let small = || one.mul_scalar(0.5).unwrap().to_vec::<f32>().unwrap()[0].to_bits();
    let nonzero = || x.mul(&half).unwrap().to_vec::<f32>().unwrap().iter().filter(|v| v.to_bits() != 0).count();
    assert_ne!(small(), 0, "IEEE by default: 5e-39 is a denormal, not zero");
    assert_eq!(nonzero(), 1 << 22, "IEEE by default");
    if !kiln_cpu::set_flush_denormal(true) {
        println!("skipped: this CPU has no flush-to-zero mode");
        return;
    }
    assert_eq!(small(), 0);
    for _ in 0..20 {
        assert_eq!(nonzero(), 0, "some chunks ran without flush-to-zero");
    }
    kiln_cpu::set_flush_denormal(false);
    assert_ne!(small(), 0);
    assert_eq!(nonzero(), 1 << 22);
}
