//! Losses: PyTorch's definitions, and stability at logits of magnitude 1e4.

use kiln_nn::loss::*;
use kiln_tensor::{DType, Result, Tensor, Var};

#[test]
fn cross_entropy_is_stable_and_its_gradient_is_softmax_minus_onehot() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let logits = Var::new(Tensor::from_vec(vec![1e4f32, -1e4, 0.0, -1e4, 1e4, 1e4, 3.0, 1.0, -2.0], [3, 3], &dev)?);
    let targets = Tensor::from_vec(vec![1i64, 0, 2], [3], &dev)?;
    let loss = cross_entropy(&logits.as_tensor(), &targets)?;
    let value = loss.to_scalar::<f32>()?;
    assert!(value.is_finite(), "{value}");
    // Row 0: -log_softmax at class 1 = 2e4; row 1: 2e4 + log 2; row 2: -(-2 - lse(3, 1, -2)).
    let lse = (3f64.exp() + 1f64.exp() + (-2f64).exp()).ln();
    let expected = (2e4 + (2e4 + 2f64.ln()) + (2.0 + lse)) / 3.0;
    assert!((value as f64 - expected).abs() < 1e-2, "{value} vs {expected}");
    let grads = loss.backward()?;
    let g = grads.get(&logits).map(|g| g.to_vec::<f32>()).transpose()?.unwrap_or_default();
    assert!(g.iter().all(|v| v.is_finite()));
    let e = [3f64.exp(), 1f64.exp(), (-2f64).exp()];
    let sm: Vec<f64> = e.iter().map(|x| x / e.iter().sum::<f64>()).collect();
    let expected = [1.0, -1.0, 0.0, -1.0, 0.5, 0.5, sm[0], sm[1], sm[2] - 1.0].map(|x: f64| x / 3.0);
    for (a, b) in g.iter().zip(expected) {
        assert!((*a as f64 - b).abs() < 1e-5, "{g:?} vs {expected:?}");
    }
    Ok(())
}

#[test]
fn label_smoothing_reductions_and_the_other_losses() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let logits = Tensor::from_vec(vec![2.0f64, 0.5, -1.0, 0.1, 0.2, 0.3], [2, 3], &dev)?;
    let targets = Tensor::from_vec(vec![0i64, 2], [2], &dev)?;
    let logp = logits.log_softmax(-1)?.to_vec::<f64>()?;
    let eps = 0.1;
    let per =
        |r: usize, t: usize| -(1.0 - eps) * logp[r * 3 + t] - eps * (0..3).map(|c| logp[r * 3 + c]).sum::<f64>() / 3.0;
    let opts = CrossEntropy { label_smoothing: eps, reduction: Reduction::None };
    let got = cross_entropy_with(&logits, &targets, opts)?.to_vec::<f64>()?;
    assert!((got[0] - per(0, 0)).abs() < 1e-12 && (got[1] - per(1, 2)).abs() < 1e-12);
    let sum = cross_entropy_with(&logits, &targets, CrossEntropy { label_smoothing: 0.0, reduction: Reduction::Sum })?;
    let nll_sum = nll(&logits.log_softmax(-1)?, &targets, Reduction::Sum)?;
    assert_eq!(sum.to_scalar::<f64>()?, nll_sum.to_scalar::<f64>()?);

    let p = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3], &dev)?;
    let t = Tensor::from_vec(vec![1.5f32, 2.0, 1.0], [3], &dev)?;
    assert_eq!(mse(&p, &t, Reduction::Mean)?.to_scalar::<f32>()?, (0.25 + 4.0) / 3.0);
    assert_eq!(l1(&p, &t, Reduction::Sum)?.to_scalar::<f32>()?, 2.5);
    let x = Tensor::from_vec(vec![1e4f32, -1e4, 0.0], [3], &dev)?;
    let y = Tensor::from_vec(vec![0.0f32, 1.0, 1.0], [3], &dev)?;
    let bce = binary_cross_entropy_with_logits(&x, &y, Reduction::None)?.to_vec::<f32>()?;
    assert_eq!(bce[0], 1e4);
    assert_eq!(bce[1], 1e4);
    assert!((bce[2] - 2f32.ln()).abs() < 1e-6);
    let bad = cross_entropy(&logits, &Tensor::zeros([3], DType::I64, &dev)?);
    assert!(bad.is_err());
    Ok(())
}
