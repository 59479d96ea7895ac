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
        assert_eq!(half(&x), 0.0);
        kiln_cpu::set_flush_denormal(false);
        assert!(half(&x) > 0.0);
    } else {
        println!("skipped: this CPU has no flush-to-zero mode");
    }
}
