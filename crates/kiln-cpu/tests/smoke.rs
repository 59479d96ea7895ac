//! Smoke test: a forward and backward pass through the public API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.
use kiln_tensor::{DType, Tensor, Var};

#[test]
fn smoke() -> kiln_tensor::Result<()> {
    let dev = kiln_cpu::cpu();
    let x = Tensor::arange(0.0, 6.0, DType::F32, &dev)?.reshape([2, 3])?;
    println!("{x}\n{}", x.t()?);
    let w = Var::new(Tensor::randn(0.0, 1.0, [3, 2], DType::F32, 1, &dev)?);
    let y = x.matmul(&w.as_tensor())?.relu()?.softmax(-1)?.sum_all()?;
    let g = y.backward()?;
    println!("{y} {}", g.get(&w).unwrap());
    let big = Tensor::rand_uniform(-1.0, 1.0, [40, 40], DType::F64, 3, &dev)?;
    println!("{big}");
    Ok(())
}
