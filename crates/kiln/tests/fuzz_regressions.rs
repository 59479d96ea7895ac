//! What the fuzzers found (fuzz/README.md), kept as plain tests so that `cargo test` guards it
//! without a nightly toolchain. The inputs that found them are in `fuzz/regressions/`; the
//! IDX parser's finding is tested in `kiln-data/tests/idx.rs`.

use kiln::{DType, Device, Tensor};
use kiln_conformance::reference::reference_device;

fn devices() -> [Device; 2] {
    [kiln::device("cpu").unwrap_or_else(|e| panic!("{e}")), reference_device()]
}

/// tensor_ops: an out-of-range id is an error even when the result would be empty. The
/// reference oracle used to return an empty tensor, disagreeing with the CPU backend (and
/// PyTorch, which raises).
#[test]
fn index_select_checks_ids_when_the_source_is_empty() -> kiln::Result<()> {
    for dev in devices() {
        let x = Tensor::zeros([0, 0, 0], DType::F32, &dev)?;
        let ids = Tensor::from_vec(vec![0i64], [1], &dev)?;
        let err = x.index_select(2, &ids).unwrap_err().to_string();
        assert!(err.contains("out of range"), "{}: {err}", dev.location());
    }
    Ok(())
}

/// tensor_ops: an empty sum is +0.0 on every device. The oracle summed with Rust's float `Sum`,
/// which starts from -0.0, so `1 / sum([])` was -inf there and +inf on the CPU.
#[test]
fn an_empty_sum_is_positive_zero() -> kiln::Result<()> {
    for dev in devices() {
        let s = Tensor::zeros([0], DType::F32, &dev)?.sum(-1, false)?;
        assert_eq!(s.to_scalar::<f32>()?.to_bits(), 0f32.to_bits(), "{}", dev.location());
    }
    Ok(())
}
