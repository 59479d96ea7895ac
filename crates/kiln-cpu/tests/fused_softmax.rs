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
