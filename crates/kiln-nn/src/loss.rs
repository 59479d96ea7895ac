//! Loss functions with PyTorch's definitions and defaults. All are numerically stable for
//! logits of magnitude 1e4 (they go through `log_softmax` and a stable softplus).

use kiln_tensor::{DType, Error, Result, Tensor};

/// How per-element losses are combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reduction {
    /// The mean (PyTorch's default).
    #[default]
    Mean,
    /// The sum.
    Sum,
    /// No reduction: one loss per element or sample.
    None,
}

fn reduce(loss: Tensor, r: Reduction) -> Result<Tensor> {
    match r {
        Reduction::Mean => loss.mean_all(),
        Reduction::Sum => loss.sum_all(),
        Reduction::None => Ok(loss),
    }
}

fn check_targets(op: &'static str, logits: &Tensor, targets: &Tensor) -> Result<()> {
    if logits.rank() != 2 || targets.rank() != 1 || targets.dims()[0] != logits.dims()[0] {
        return Err(Error::ShapeMismatch {
            op,
            lhs: logits.shape().clone(),
            rhs: targets.shape().clone(),
            hint: "; expects [N, C] scores and [N] class indices".into(),
        });
    }
    if !matches!(targets.dtype(), DType::I64 | DType::U32) {
        return Err(Error::UnsupportedDType { op, dtype: targets.dtype(), supported: "i64, u32 (class indices)" });
    }
    Ok(())
}

/// Options of [`cross_entropy_with`].
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct CrossEntropy {
    /// Label smoothing in `[0, 1]` (PyTorch's `label_smoothing`).
    pub label_smoothing: f64,
    /// Reduction over the batch.
    pub reduction: Reduction,
}

/// Cross-entropy from logits `[N, C]` and class indices `[N]`, averaged over the batch.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    cross_entropy_with(logits, targets, CrossEntropy::default())
}

/// Cross-entropy with label smoothing and a choice of reduction.
pub fn cross_entropy_with(logits: &Tensor, targets: &Tensor, opts: CrossEntropy) -> Result<Tensor> {
    const OP: &str = "cross_entropy";
    check_targets(OP, logits, targets)?;
    if !(0.0..=1.0).contains(&opts.label_smoothing) {
        return Err(Error::invalid(OP, format!("label_smoothing must be in [0, 1], got {}", opts.label_smoothing)));
    }
    // Half logits (from autocast) are widened: the loss is summed and exponentiated in f32.
    let logits = crate::autocast::widen(logits)?;
    let loss = if opts.label_smoothing > 0.0 {
        let eps = opts.label_smoothing;
        let logp = logits.log_softmax(-1)?;
        let nll = logp.gather(1, &targets.unsqueeze(1)?)?.squeeze(1)?.neg()?;
        let uniform = logp.mean(-1, false)?.neg()?;
        nll.mul_scalar(1.0 - eps)?.add(&uniform.mul_scalar(eps)?)?
    } else {
        // One fused pass forward and one backward where the backend has them.
        logits.cross_entropy_rows(targets)?
    };
    reduce(loss, opts.reduction)
}

/// Negative log-likelihood of log-probabilities `[N, C]` at class indices `[N]`.
pub fn nll(log_probs: &Tensor, targets: &Tensor, reduction: Reduction) -> Result<Tensor> {
    check_targets("nll", log_probs, targets)?;
    reduce(log_probs.gather(1, &targets.unsqueeze(1)?)?.squeeze(1)?.neg()?, reduction)
}

fn same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() != b.shape() {
        return Err(Error::shape_mismatch(op, a.shape(), b.shape()));
    }
    Ok(())
}

/// Mean squared error.
pub fn mse(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("mse", pred, target)?;
    reduce(pred.sub(target)?.sqr()?, reduction)
}

/// Mean absolute error.
pub fn l1(pred: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("l1", pred, target)?;
    reduce(pred.sub(target)?.abs()?, reduction)
}

/// Binary cross-entropy from logits: `max(x, 0) - x y + log(1 + exp(-|x|))`, stable for any `x`.
pub fn binary_cross_entropy_with_logits(logits: &Tensor, target: &Tensor, reduction: Reduction) -> Result<Tensor> {
    same_shape("binary_cross_entropy_with_logits", logits, target)?;
    let loss = logits.relu()?.sub(&logits.mul(target)?)?.add(&logits.abs()?.neg()?.softplus()?)?;
    reduce(loss, reduction)
}
