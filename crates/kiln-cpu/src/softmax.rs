//! Softmax and log-softmax over the last dim of contiguous rows (`Backend::softmax_last`), and
//! cross-entropy against class indices with its gradient (`Backend::cross_entropy_rows` and its
//! backward): each row is read while it is in cache, instead of five whole-tensor passes (max,
//! subtract, exp, sum, divide) with a buffer each.
//!
//! The arithmetic is the composed form's, step for step: the row maximum with the NaN rule of
//! `max` (a non-finite one counts as 0), `exp(x - m)`, the lane-parallel row sum of `sum`,
//! rounded to the element type, then `e / s` or `x - (ln s + m)`. So on the CPU the fused and
//! composed results are the same bits for rows up to the reduction block size.

use crate::buffer::Buffer;
use crate::math::exp_f32;
use crate::parallel::{for_each_piece, Rows};
use crate::pool::Pooled;
use crate::reduce::{sum_lanes, Acc};
use crate::simd::vectorized;
use crate::storage::CpuStorage;
use crate::strided::{alloc_for_overwrite, map1, CHUNK};
use kiln_tensor::{Error, Layout, ReduceOp, Result, Shape};
use std::ops::{Add, Div, Mul, Sub};

pub(crate) fn softmax_last(x: &CpuStorage, l: &Layout, log: bool) -> Result<Option<CpuStorage>> {
    let (Some((s, e)), Some(&n)) = (l.contiguous_range(), l.dims().last()) else { return Ok(None) };
    // Rows longer than a reduction block sum in blocks in the composed form: leave them to it.
    if n == 0 || n > CHUNK {
        return Ok(None);
    }
    Ok(match x {
        CpuStorage::F32(v) => Some(CpuStorage::F32(rows(&v[s..e], n, log, exp_f32, f32::ln)?)),
        CpuStorage::F64(v) => Some(CpuStorage::F64(rows(&v[s..e], n, log, f64::exp, f64::ln)?)),
        _ => None,
    })
}

fn rows<T>(
    x: &[T],
    n: usize,
    log: bool,
    exp: impl Fn(T) -> T + Copy + Sync,
    ln: impl Fn(T) -> T + Copy + Sync,
) -> Result<Buffer<T>>
where
    T: Acc<Sum = f64> + Pooled + Send + Sync + Sub<Output = T> + Div<Output = T> + Add<Output = T>,
{
    let (mut out, mut m) =
        (alloc_for_overwrite(x.len(), T::default())?, alloc_for_overwrite(x.len() / n, T::default())?);
    row_blocks(&mut out, &mut m, n, |first, out, m| {
        let x = &x[first * n..][..out.len()];
        vectorized(
            #[inline(always)]
            || {
                shifted_exp(x, n, out, m, exp);
                for ((x, y), &m) in x.chunks(n).zip(out.chunks_mut(n)).zip(m.iter()) {
                    let s = T::finish(sum_lanes(y));
                    if log {
                        let lse = ln(s) + m;
                        for (o, &v) in y.iter_mut().zip(x) {
                            *o = v - lse;
                        }
                    } else {
                        for e in y.iter_mut() {
                            *e = *e / s;
                        }
                    }
                }
            },
        )
    })?;
    T::pool().give(m);
    Ok(out)
}

/// Runs `f(first_row, e, m)` over blocks of whole rows of `n`, in parallel: `e` holds the
/// block's rows, `m` one value per row. Blocks are one reduction block of elements or a row.
fn row_blocks<T: Send>(e: &mut [T], m: &mut [T], n: usize, f: impl Fn(usize, &mut [T], &mut [T]) + Sync) -> Result<()> {
    let per = (CHUNK / n).max(1);
    for_each_piece(Rows { a: e, b: m, widths: (n, 1) }, per, |k, Rows { a: e, b: m, .. }| {
        f(k * per, e, m);
        Ok(())
    })
}

/// `[N]` losses `lse(x_r) - x_r[t_r]` of contiguous `[N, C]` logits against contiguous class
/// indices; `None` for other layouts or dtypes (kiln then composes the loss).
pub(crate) fn cross_entropy_rows(x: (&CpuStorage, &Layout), t: (&CpuStorage, &Layout)) -> Result<Option<CpuStorage>> {
    let Some((range, n, targets)) = checked(x, t)? else { return Ok(None) };
    let out = match x.0 {
        CpuStorage::F32(v) => Some(CpuStorage::F32(losses(&v[range], n, &targets, exp_f32, f32::ln)?)),
        CpuStorage::F64(v) => Some(CpuStorage::F64(losses(&v[range], n, &targets, f64::exp, f64::ln)?)),
        _ => None,
    };
    u32::pool().give(targets);
    Ok(out)
}

/// `[N, C]` gradients `(softmax(x_r) - onehot(t_r)) * g_r` of [`cross_entropy_rows`] for a
/// contiguous `[N]` gradient `g`; `None` where that declines, or for another layout of `g`.
pub(crate) fn cross_entropy_rows_backward(
    x: (&CpuStorage, &Layout),
    t: (&CpuStorage, &Layout),
    g: (&CpuStorage, &Layout),
) -> Result<Option<CpuStorage>> {
    g.0.check("cross_entropy", g.1)?;
    let Some((range, n, targets)) = checked(x, t)? else { return Ok(None) };
    if g.1.dims() != [targets.len()] {
        u32::pool().give(targets);
        return Ok(None);
    }
    // The gradient of a mean is one value broadcast to every row: read through its layout.
    let out = match (x.0, g.0) {
        (CpuStorage::F32(v), CpuStorage::F32(g_all)) => {
            let g = map1(g_all, g.1, |x| x)?;
            let out = gradients(&v[range], n, &targets, &g, exp_f32);
            f32::pool().give(g);
            Some(CpuStorage::F32(out?))
        }
        (CpuStorage::F64(v), CpuStorage::F64(g_all)) => {
            let g = map1(g_all, g.1, |x| x)?;
            let out = gradients(&v[range], n, &targets, &g, f64::exp);
            f64::pool().give(g);
            Some(CpuStorage::F64(out?))
        }
        _ => None,
    };
    u32::pool().give(targets);
    Ok(out)
}

/// The logits' element range, their row length, and the class of every row (pooled).
type Checked = (std::ops::Range<usize>, usize, Buffer<u32>);

/// The logits' element range and row length, and the class of every row, checked against the
/// row length; `None` unless both operands are contiguous and the rows are short enough for
/// one reduction block (as for [`softmax_last`]).
fn checked((x, xl): (&CpuStorage, &Layout), (t, tl): (&CpuStorage, &Layout)) -> Result<Option<Checked>> {
    x.check("cross_entropy", xl)?;
    t.check("cross_entropy", tl)?;
    let (Some((x0, x1)), Some((t0, t1)), &[rows, n]) = (xl.contiguous_range(), tl.contiguous_range(), xl.dims()) else {
        return Ok(None);
    };
    if n == 0 || n > CHUNK || tl.dims() != [rows] {
        return Ok(None);
    }
    let mut classes = alloc_for_overwrite(rows, 0u32)?;
    let mut check = |at: usize, class: i64| -> Result<()> {
        if class < 0 || class as usize >= n {
            return Err(Error::IndexOutOfRange {
                op: "cross_entropy",
                index: class,
                size: n,
                dim: 1,
                shape: Shape::new([rows, n]),
            });
        }
        classes[at] = class as u32;
        Ok(())
    };
    let checked = match t {
        CpuStorage::I64(v) => v[t0..t1].iter().enumerate().try_for_each(|(i, &c)| check(i, c)),
        CpuStorage::U32(v) => v[t0..t1].iter().enumerate().try_for_each(|(i, &c)| check(i, c as i64)),
        _ => {
            u32::pool().give(classes);
            return Ok(None);
        }
    };
    if let Err(e) = checked {
        u32::pool().give(classes);
        return Err(e);
    }
    Ok(Some((x0..x1, n, classes)))
}

/// Row maxima into `m` (a non-finite maximum counts as 0, the NaN rule of `max`) and `e = exp(x - max)`
/// for the rows of `x`: the shifts row by row, then one exp pass over the whole block, so that
/// rows shorter than a vector (the 10 classes of MNIST) still run exp in full vectors; row by
/// row, `softmax [32, 10]` took 1.7 us.
#[inline(always)]
fn shifted_exp<T>(x: &[T], n: usize, e: &mut [T], m: &mut [T], exp: impl Fn(T) -> T)
where
    T: Acc<Sum = f64> + Sub<Output = T>,
{
    for ((x, e), m) in x.chunks(n).zip(e.chunks_mut(n)).zip(m.iter_mut()) {
        let best = T::best_row(ReduceOp::Max, x);
        *m = if best.to_f64().is_finite() { best } else { T::from_f64(0.0) };
        for (e, &v) in e.iter_mut().zip(x) {
            *e = v - *m;
        }
    }
    for e in e.iter_mut() {
        *e = exp(*e);
    }
}

fn losses<T>(
    x: &[T],
    n: usize,
    classes: &[u32],
    exp: impl Fn(T) -> T + Copy + Sync,
    ln: impl Fn(T) -> T + Copy + Sync,
) -> Result<Buffer<T>>
where
    T: Acc<Sum = f64> + Pooled + Send + Sync + Sub<Output = T> + Add<Output = T>,
{
    // Each row's maximum in `m` is replaced by its loss once used: `m` is the result.
    let (mut e, mut m) =
        (alloc_for_overwrite(x.len(), T::default())?, alloc_for_overwrite(classes.len(), T::default())?);
    row_blocks(&mut e, &mut m, n, |first, e, m| {
        let x = &x[first * n..][..e.len()];
        vectorized(
            #[inline(always)]
            || {
                shifted_exp(x, n, e, m, exp);
                for (r, m) in m.iter_mut().enumerate() {
                    // log_softmax's `x - (ln s + m)` at the class, negated: the same bits.
                    let lse = ln(T::finish(sum_lanes(&e[r * n..(r + 1) * n]))) + *m;
                    *m = lse - x[r * n + classes[first + r] as usize];
                }
            },
        )
    })?;
    T::pool().give(e);
    Ok(m)
}

fn gradients<T>(x: &[T], n: usize, classes: &[u32], g: &[T], exp: impl Fn(T) -> T + Copy + Sync) -> Result<Buffer<T>>
where
    T: Acc<Sum = f64> + Pooled + Send + Sync + Sub<Output = T> + Div<Output = T> + Mul<Output = T>,
{
    let (mut out, mut m) = (alloc_for_overwrite(x.len(), T::default())?, alloc_for_overwrite(g.len(), T::default())?);
    let one = T::from_f64(1.0);
    row_blocks(&mut out, &mut m, n, |first, out, m| {
        vectorized(
            #[inline(always)]
            || {
                shifted_exp(&x[first * n..][..out.len()], n, out, m, exp);
                for (r, row) in out.chunks_mut(n).enumerate() {
                    let (s, c, g) = (T::finish(sum_lanes(row)), classes[first + r] as usize, g[first + r]);
                    // softmax, minus the one-hot row, times the row's gradient, as composed.
                    for (j, p) in row.iter_mut().enumerate() {
                        let hot = if j == c { one } else { T::default() };
                        *p = (*p / s - hot) * g;
                    }
                }
            },
        )
    })?;
    T::pool().give(m);
    Ok(out)
}
