//! Mixed precision, as PyTorch's `torch.autocast`: inside [`autocast`], `Linear` and `Conv2d`
//! compute in a half dtype (bf16 or f16, on tensor cores where the device has them) while the
//! parameters, their gradients and the optimizer state stay f32. Casts are differentiable, so
//! the gradient reaching each f32 parameter is the half-precision one, widened.
//!
//! ```
//! use kiln_nn::{autocast, loss, LinearConfig, Module};
//! use kiln_tensor::{DType, Tensor};
//! # fn main() -> kiln_tensor::Result<()> {
//! let dev = kiln_cpu::cpu();
//! let layer = LinearConfig::new(4, 3).init(&dev)?;
//! let x = Tensor::ones([2, 4], DType::F32, &dev)?;
//! let logits = autocast::autocast(DType::BF16, || layer.forward(&x))?;
//! assert_eq!(logits.dtype(), DType::BF16);
//! // The loss widens half logits to f32 before its reductions.
//! let y = Tensor::from_vec(vec![0i64, 2], [2], &dev)?;
//! let l = loss::cross_entropy(&logits, &y)?;
//! assert_eq!(l.dtype(), DType::F32);
//! let grads = l.backward()?;
//! assert_eq!(grads.get(&layer.weight.as_tensor()).map(|g| g.dtype()), Some(DType::F32));
//! # Ok(()) }
//! ```

use kiln_tensor::{DType, Error, Result, Tensor};
use std::cell::Cell;

thread_local! {
    static COMPUTE: Cell<Option<DType>> = const { Cell::new(None) };
}

/// Runs `f` with matmul-heavy layers computing in `dtype` (`BF16` or `F16`); the previous
/// setting is restored afterwards, even if `f` panics. Other dtypes run `f` unchanged.
pub fn autocast<R>(dtype: DType, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<DType>);
    impl Drop for Restore {
        fn drop(&mut self) {
            COMPUTE.with(|c| c.set(self.0));
        }
    }
    let half = matches!(dtype, DType::BF16 | DType::F16).then_some(dtype);
    let _restore = Restore(COMPUTE.with(|c| c.replace(half)));
    f()
}

/// The half dtype layers compute in on this thread, if inside [`autocast`].
pub fn compute_dtype() -> Option<DType> {
    COMPUTE.with(Cell::get)
}

/// `t` cast to the compute dtype when inside [`autocast`] and `t` is a float tensor.
pub(crate) fn for_compute(t: &Tensor) -> Result<Tensor> {
    match compute_dtype() {
        Some(d) if t.dtype().is_float() => t.to_dtype(d),
        _ => Ok(t.clone()),
    }
}

/// Half-precision logits widened to f32, so that a loss sums and exponentiates in f32.
pub(crate) fn widen(t: &Tensor) -> Result<Tensor> {
    match t.dtype() {
        DType::BF16 | DType::F16 => t.to_dtype(DType::F32),
        DType::F32 | DType::F64 => Ok(t.clone()),
        other => Err(Error::UnsupportedDType { op: "loss", dtype: other, supported: "f32, f64, f16, bf16" }),
    }
}
