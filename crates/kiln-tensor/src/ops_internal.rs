//! Helpers shared by ops and their backward rules.

use crate::{Error, Layout, Result, Shape, Tensor};

pub(crate) use crate::ops::unary_derivative;

/// Zeros shaped like `input` with `grad` written into the strided slice that a narrow of
/// `input` (dim, start, step) selected.
pub(crate) fn scatter_into_view(
    input: &Tensor,
    grad: &Tensor,
    dim: usize,
    start: usize,
    step: usize,
) -> Result<Tensor> {
    let backend = grad.backend();
    let mut dst = backend.fill(input.elem_count(), grad.dtype(), 0.0)?;
    let full = Layout::contiguous(input.shape().clone());
    let part = full.narrow("narrow backward", dim, start, grad.dims()[dim], step)?;
    backend.copy_strided(grad.storage(), grad.layout(), &mut dst, &part)?;
    Ok(grad.result(dst, input.shape().clone(), grad.dtype(), None))
}

/// ReLU's backward, `where(x > 0, g, 0)` (PyTorch's threshold_backward): `x` is ReLU's input or
/// its output, which are positive at the same places. Shared by the ReLU rule and the fused ops
/// that end in ReLU, so they all give the same numbers.
pub(crate) fn relu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    if x.shape() == g.shape() && x.dtype() == g.dtype() && x.device() == g.device() {
        let fused = x.backend().relu_backward((x.storage(), x.layout()), (g.storage(), g.layout()))?;
        if let Some(s) = fused {
            return Ok(g.result(s, g.shape().clone(), g.dtype(), None));
        }
    }
    x.gt_scalar(0.0)?.where_cond(g, &Tensor::zeros((), g.dtype(), g.device())?)
}

/// Sums `g` over the dims that broadcasting stretched, giving `shape`.
pub(crate) fn sum_to_shape(g: &Tensor, shape: &Shape) -> Result<Tensor> {
    let (gd, sd) = (g.dims(), shape.dims());
    if sd.len() > gd.len() {
        return Err(Error::shape_mismatch("broadcast backward", g.shape(), shape));
    }
    let lead = gd.len() - sd.len();
    let dims: smallvec::SmallVec<[isize; 4]> =
        (0..gd.len()).filter(|&i| i < lead || (sd[i - lead] == 1 && gd[i] != 1)).map(|i| i as isize).collect();
    let summed = if dims.is_empty() { g.clone() } else { g.sum(&dims[..], true)? };
    summed.reshape(shape.clone())
}
