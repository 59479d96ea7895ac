//! `set_flush_denormal` changes what the kernels compute, and only while it is on. In a test
//! binary of its own: the mode is per thread, and other tests must not run under it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_tensor::Tensor;

#[test]
fn flush_denormal_zeroes_tiny_results_while_on() {
    let dev = kiln_cpu::cpu();
    let x = Tensor::from_vec(vec![1e-38f32], [1], &dev).unwrap();
    let half = |x: &Tensor| x.mul_scalar(0.5).unwrap().to_vec::<f32>().unwrap()[0];
    assert!(half(&x) > 0.0, "IEEE by default: 5e-39 is a denormal, not zero");
    if kiln_cpu::set_flush_denormal(true) {
        // Compared by bits: under DAZ this thread would also call 5e-39 equal to 0.0.
        assert_eq!(half(&x).to_bits(), 0);
        kiln_cpu::set_flush_denormal(false);
        assert!(half(&x) > 0.0);
    } else {
        println!("skipped: this CPU has no flush-to-zero mode");
    }
}

/// A product large enough to be split over every helper thread is flushed everywhere: kiln-cpu's
/// own helpers, which rayon's broadcast does not reach, apply the mode before their next job.
/// Results are counted by their bits: under DAZ, `5e-39 != 0.0` is false on this thread too.
#[test]
fn flush_denormal_reaches_every_helper_thread() {
    let dev = kiln_cpu::cpu();
    let x = Tensor::from_vec(vec![1e-38f32; 1 << 22], [1 << 22], &dev).unwrap();
    let half = Tensor::from_vec(vec![0.5f32; 1 << 22], [1 << 22], &dev).unwrap();
    let nonzero =
        |x: &Tensor| x.mul(&half).unwrap().to_vec::<f32>().unwrap().iter().filter(|v| v.to_bits() != 0).count();
    assert_eq!(nonzero(&x), 1 << 22, "IEEE by default");
    if kiln_cpu::set_flush_denormal(true) {
        for _ in 0..20 {
            assert_eq!(nonzero(&x), 0, "some chunks ran without flush-to-zero");
        }
        kiln_cpu::set_flush_denormal(false);
        assert_eq!(nonzero(&x), 1 << 22);
    }
}
