//! The CPU's ReLU backward (`Backend::relu_backward`) gives the composed form's bits,
//! `where(x > 0, g, 0)`, on contiguous and strided inputs, at zeros and NaN too.

use kiln_tensor::{DType, Result, Tensor, Var};

#[test]
fn fused_relu_backward_matches_the_composed_ops() -> Result<()> {
    let dev = kiln_cpu::cpu();
    for dtype in [DType::F32, DType::F64] {
        // Exact zeros (either sign) and NaN among random values: none of them passes `x > 0`.
        let mut values: Vec<f64> = Tensor::randn(0.0, 1.0, [33 * 70], DType::F64, 3, &dev)?.to_vec()?;
        for (i, v) in values.iter_mut().enumerate().step_by(7) {
            *v = [0.0, -0.0, f64::NAN][i % 3];
        }
        let x = Tensor::from_vec(values, [33, 70], &dev)?.to_dtype(dtype)?;
        let w = Tensor::randn(0.0, 1.0, [33, 70], dtype, 4, &dev)?;
        let zero = Tensor::zeros((), dtype, &dev)?;
        let wide = |t: &Tensor| t.to_dtype(DType::F64)?.to_vec::<f64>();
        // Contiguous, then through a transposed view (the strided path).
        for transposed in [false, true] {
            let xv = Var::new(if transposed { x.t()?.contiguous()? } else { x.clone() });
            let input = if transposed { xv.as_tensor().t()? } else { xv.as_tensor().clone() };
            let grads = input.relu()?.mul(&w)?.sum((), false)?.backward()?;
            let got = grads.get(&xv).expect("a gradient for x");
            let got = if transposed { got.t()? } else { got.clone() };
            let want = x.gt_scalar(0.0)?.where_cond(&w, &zero)?;
            let (got, want) = (wide(&got)?, wide(&want)?);
            let same = got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "relu backward {dtype}, transposed {transposed}");
        }
    }
    Ok(())
}
