//! The backward rule of every recorded op: given the op, its output `node` and the gradient
//! flowing into it, the gradient of each input. Runs with recording disabled.

use super::Op;
use crate::ops_internal::{relu_backward, scatter_into_view, sum_to_shape};
use crate::{BinaryOp, DimVec, ReduceOp, Result, Tensor};
use smallvec::{smallvec, SmallVec};

/// Each input and its gradient; inline for the usual one to three inputs.
pub(super) type InputGrads = SmallVec<[(Tensor, Tensor); 3]>;

/// The gradient of each input that tracks gradients; inputs that do not (data, masks, indices)
/// get no gradient computed at all.
pub(super) fn backward(op: &Op, node: &Tensor, grad: &Tensor) -> Result<InputGrads> {
    let g = grad;
    let need = |t: &Tensor| t.tracks_grad();
    Ok(match op {
        Op::Unary(x, crate::UnaryOp::Relu) => {
            // `where(x > 0, g, 0)`, PyTorch's threshold_backward: two passes over the
            // activations where `g * float(x > 0)` took three (compare, cast, multiply), and
            // +0.0 where the product gave -0.0.
            smallvec![(x.clone(), relu_backward(&x.detach(), g)?)]
        }
        Op::Unary(x, u) => {
            let d = crate::ops_internal::unary_derivative(*u, &x.detach(), &node.detach())?;
            smallvec![(x.clone(), g.mul(&d)?)]
        }
        Op::Binary(a, b, op) => {
            let (ad, bd) = (a.detach(), b.detach());
            match op {
                BinaryOp::Add => smallvec![(a.clone(), g.clone()), (b.clone(), g.clone())],
                BinaryOp::Sub => smallvec![(a.clone(), g.clone()), (b.clone(), g.neg()?)],
                BinaryOp::Mul => {
                    let mut out = InputGrads::new();
                    if need(a) {
                        out.push((a.clone(), g.mul(&bd)?));
                    }
                    if need(b) {
                        out.push((b.clone(), g.mul(&ad)?));
                    }
                    out
                }
                BinaryOp::Div => {
                    let ga = g.div(&bd)?;
                    let mut out = InputGrads::new();
                    if need(b) {
                        out.push((b.clone(), ga.mul(&node.detach())?.neg()?));
                    }
                    if need(a) {
                        out.push((a.clone(), ga));
                    }
                    out
                }
                BinaryOp::Pow => {
                    // PyTorch's masks: d/da is 0 where b == 0 (not 0 * inf at a == 0), and d/db
                    // is 0 where a == 0 (not y * ln 0).
                    let zeros = g.zeros_like()?;
                    let ga = g.mul(&bd)?.mul(&ad.pow(&bd.add_scalar(-1.0)?)?)?;
                    let ga = bd.eq_scalar(0.0)?.where_cond(&zeros, &ga)?;
                    let gb = g.mul(&node.detach())?.mul(&ad.log()?)?;
                    let gb = ad.eq_scalar(0.0)?.where_cond(&zeros, &gb)?;
                    smallvec![(a.clone(), ga), (b.clone(), gb)]
                }
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    // Ties share the gradient equally, as in PyTorch.
                    let wins = if *op == BinaryOp::Maximum { ad.gt(&bd)? } else { ad.lt(&bd)? };
                    let share = wins.to_dtype(g.dtype())?.add(&ad.eq(&bd)?.to_dtype(g.dtype())?.mul_scalar(0.5)?)?;
                    let ga = g.mul(&share)?;
                    let gb = g.sub(&ga)?;
                    smallvec![(a.clone(), ga), (b.clone(), gb)]
                }
                _ => smallvec![],
            }
        }
        Op::BinaryScalar(x, op, s) => {
            let xd = x.detach();
            let gx = match op {
                BinaryOp::Add | BinaryOp::Sub => g.clone(),
                BinaryOp::Mul => g.mul_scalar(*s)?,
                BinaryOp::Div => g.div_scalar(*s)?,
                BinaryOp::Pow if *s == 0.0 => g.zeros_like()?,
                BinaryOp::Pow => g.mul(&xd.pow_scalar(s - 1.0)?)?.mul_scalar(*s)?,
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    let wins = if *op == BinaryOp::Maximum { xd.gt_scalar(*s)? } else { xd.lt_scalar(*s)? };
                    let tie = xd.eq_scalar(*s)?.to_dtype(g.dtype())?.mul_scalar(0.5)?;
                    g.mul(&wins.to_dtype(g.dtype())?.add(&tie)?)?
                }
                _ => return Ok(smallvec![]),
            };
            smallvec![(x.clone(), gx)]
        }
        Op::Reduce(x, op, dims) => {
            let shape = x.shape().clone();
            match op {
                ReduceOp::Sum => smallvec![(x.clone(), g.broadcast_to(shape)?)],
                ReduceOp::Max | ReduceOp::Min => {
                    // Ties share the gradient equally (PyTorch's amax/amin rule).
                    let mask = x.detach().eq(&node.detach())?.to_dtype(g.dtype())?;
                    let dims: SmallVec<[isize; 4]> = dims.iter().map(|&d| d as isize).collect();
                    let count = mask.sum(&dims[..], true)?;
                    smallvec![(x.clone(), mask.mul(&g.div(&count)?)?)]
                }
                ReduceOp::ArgMax | ReduceOp::ArgMin => smallvec![],
            }
        }
        Op::Matmul(a, b) => {
            // The data side of a layer (`x` in `x @ W`) usually needs no gradient: skip its GEMM.
            let mut out = InputGrads::new();
            if need(a) {
                out.push((a.clone(), g.matmul(&b.detach().t()?)?));
            }
            if need(b) {
                // `x @ w.t()` (a Linear layer): compute the weight's gradient as `(g.t() @ x).t()`,
                // the same sums, so that it reaches `w` through the transpose contiguous.
                let b_is_transposed = b.rank() == 2 && a.rank() == 2 && b.layout().strides()[0] == 1 && b.dims()[1] > 1;
                let gb = if b_is_transposed { g.t()?.matmul(&a.detach())?.t()? } else { a.detach().t()?.matmul(g)? };
                out.push((b.clone(), gb));
            }
            out
        }
        Op::Where(c, t, f) => {
            let zeros = g.zeros_like()?;
            let mut out = InputGrads::new();
            if need(t) {
                out.push((t.clone(), c.where_cond(g, &zeros)?));
            }
            if need(f) {
                out.push((f.clone(), c.where_cond(&zeros, g)?));
            }
            out
        }
        Op::Gather(x, index, dim) => smallvec![(x.clone(), x.scatter_into_zeros(*dim, index, g)?)],
        Op::IndexSelect(x, ids, dim) => smallvec![(x.clone(), x.zeros_like()?.index_add(*dim as isize, ids, g)?)],
        Op::ScatterAdd(base, index, src, dim) => {
            let mut out = smallvec![(base.clone(), g.clone())];
            if need(src) {
                out.push((src.clone(), g.gather(*dim as isize, index)?));
            }
            out
        }
        Op::Cast(x) => smallvec![(x.clone(), g.to_dtype(x.dtype())?)],
        Op::Copy(x) => smallvec![(x.clone(), g.clone())],
        Op::Reshape(x) => smallvec![(x.clone(), g.reshape(x.shape().clone())?)],
        Op::Permute(x, perm) => {
            let mut inverse = DimVec::from_elem(0, perm.len());
            for (i, &p) in perm.iter().enumerate() {
                inverse[p] = i;
            }
            smallvec![(x.clone(), g.permute(&inverse)?)]
        }
        Op::Narrow { input, dim, start, step } => {
            smallvec![(input.clone(), scatter_into_view(input, g, *dim, *start, *step)?)]
        }
        Op::Broadcast(x) => smallvec![(x.clone(), sum_to_shape(g, x.shape())?)],
        Op::Im2col(x, win) => smallvec![(x.clone(), g.col2im(x.shape(), *win)?)],
        Op::Softmax(x, log) => {
            let y = node.detach();
            let dx = if *log {
                // The probabilities from x, not exp(y): y = x - lse has lost the low bits of x
                // when |x| is large (at 1e4, exp(y) gave 0.49985 for an even split).
                let p = x.detach().softmax(-1)?;
                g.sub(&p.mul(&g.sum(-1, true)?)?)?
            } else {
                y.mul(&g.sub(&g.mul(&y)?.sum(-1, true)?)?)?
            };
            smallvec![(x.clone(), dx)]
        }
        Op::CrossEntropy(x, targets) => smallvec![(x.clone(), x.detach().cross_entropy_rows_grad(targets, g)?)],
        Op::Linear { x, w, bias, relu } => {
            // The rules of the ops it fuses (ReLU, the bias's broadcast add, `x @ w.t()`), in
            // their order, so the gradients are the same numbers.
            let g = match relu {
                true => relu_backward(&node.detach(), g)?,
                false => g.clone(),
            };
            let mut out = InputGrads::new();
            if need(x) {
                out.push((x.clone(), g.matmul(&w.detach())?));
            }
            if need(w) {
                out.push((w.clone(), g.t()?.matmul(&x.detach())?));
            }
            if let Some(b) = bias.as_ref().filter(|b| need(b)) {
                out.push((b.clone(), sum_to_shape(&g, b.shape())?));
            }
            out
        }
        Op::Conv2d { x, w, bias, relu, win } => {
            let y = relu.then(|| node.detach());
            let want = (need(x), bias.as_ref().is_some_and(need));
            let (dx, dw, db) = crate::ops::conv::conv2d_grads(&x.detach(), &w.detach(), g, y.as_ref(), *win, want)?;
            let mut out = smallvec![(w.clone(), dw)];
            if let Some(dx) = dx {
                out.push((x.clone(), dx));
            }
            if let (Some(b), Some(db)) = (bias, db) {
                out.push((b.clone(), db));
            }
            out
        }
        Op::Cat(xs, dim) => {
            let mut at = 0;
            let mut out = InputGrads::new();
            for x in xs {
                let n = x.dims()[*dim];
                if need(x) {
                    out.push((x.clone(), g.narrow(*dim as isize, at, n)?));
                }
                at += n;
            }
            out
        }
    })
}
