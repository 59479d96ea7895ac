//! The CPU's fused softmax repeats the composed form's arithmetic step for step (see
//! `src/softmax.rs`), so on this backend the two give the same bits, not merely close values.

use kiln_tensor::{DType, Result, Tensor};

#[test]
fn fused_softmax_and_log_softmax_are_bit_identical_to_the_composed_ops() -> Result<()> {
    let dev = kiln_cpu::cpu();
    for dtype in [DType::F32, DType::F64] {
        // Rows shorter and longer than the reduction lanes, with a remainder.
        for cols in [10usize, 37, 1000] {
            let x = Tensor::randn(0.0, 3.0, [33, cols], dtype, 5, &dev)?;
            let m = x.max(-1, true)?;
            let e = x.sub(&m)?.exp()?;
            let s = e.sum(-1, true)?;
            let composed = e.div(&s)?;
            let composed_log = x.sub(&s.log()?.add(&m)?)?;
            // Widening to f64 is exact, so equal f64 values mean equal bits (no NaN here).
            let wide = |t: Tensor| t.to_dtype(DType::F64)?.to_vec::<f64>();
            assert_eq!(wide(x.softmax(-1)?)?, wide(composed)?, "softmax {dtype} x{cols}");
            assert_eq!(wide(x.log_softmax(-1)?)?, wide(composed_log)?, "log_softmax {dtype} x{cols}");
        }
    }
    Ok(())
}

/// The fused cross-entropy (forward and gradient) likewise gives the composed form's bits: the
/// loss is log-softmax at the class, negated; the gradient is `(softmax - onehot) * g`.
#[test]
fn fused_cross_entropy_is_bit_identical_to_the_composed_ops() -> Result<()> {
    let dev = kiln_cpu::cpu();
    for dtype in [DType::F32, DType::F64] {
        for (rows, cols) in [(32usize, 10usize), (33, 37), (5, 1000)] {
            let x = Tensor::randn(0.0, 3.0, [rows, cols], dtype, 7, &dev)?;
            let classes: Vec<i64> = (0..rows as i64).map(|r| (r * 7) % cols as i64).collect();
            let t = Tensor::from_vec(classes.clone(), [rows], &dev)?;
            let g = Tensor::randn(0.0, 1.0, [rows], dtype, 8, &dev)?;
            let composed = x.log_softmax(-1)?.gather(1, &t.unsqueeze(1)?)?.squeeze(1)?.neg()?;
            let hot = Tensor::arange(0.0, cols as f64, DType::I64, &dev)?.unsqueeze(0)?.eq(&t.unsqueeze(1)?)?;
            let composed_grad = x.softmax(-1)?.sub(&hot.to_dtype(dtype)?)?.mul(&g.unsqueeze(1)?)?;
            let xv = kiln_tensor::Var::new(x.clone());
            let loss = xv.as_tensor().cross_entropy_rows(&t)?;
            let grads = loss.mul(&g)?.sum((), false)?.backward()?;
            let wide = |t: Tensor| t.to_dtype(DType::F64)?.to_vec::<f64>();
            assert_eq!(wide(loss)?, wide(composed)?, "cross-entropy {dtype} {rows}x{cols}");
            let got = grads.get(&xv).expect("a gradient for the logits");
            assert_eq!(wide(got.clone())?, wide(composed_grad)?, "cross-entropy gradient {dtype} {rows}x{cols}");
        }
    }
    Ok(())
}
