//! Softmax and log-softmax over the last dim of contiguous rows (`Backend::softmax_last`): each
//! row is read while it is in cache, instead of five whole-tensor passes (max, subtract, exp,
//! sum, divide) with a buffer each.
//!
//! The arithmetic is the composed form's, step for step: the row maximum with the NaN rule of
//! `max` (a non-finite one counts as 0), `exp(x - m)`, the lane-parallel row sum of `sum`,
//! rounded to the element type, then `e / s` or `x - (ln s + m)`. So on the CPU the fused and
//! composed results are the same bits for rows up to the reduction block size.

use crate::math::exp_f32;
use crate::parallel::for_each_chunk_mut;
use crate::pool::Pooled;
use crate::reduce::{best_lanes, sum_lanes, Acc};
use crate::simd::vectorized;
use crate::storage::CpuStorage;
use crate::strided::{alloc_for_overwrite, CHUNK};
use kiln_tensor::{Layout, ReduceOp, Result};
use std::ops::{Add, Div, Sub};

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
) -> Result<Vec<T>>
where
    T: Acc<Sum = f64> + Pooled + Send + Sync + Sub<Output = T> + Div<Output = T> + Add<Output = T>,
{
    let mut out = alloc_for_overwrite(x.len(), T::default())?;
    let rows_per_task = (CHUNK / n).max(1);
    for_each_chunk_mut(&mut out, rows_per_task * n, |t, chunk| {
        let x = &x[t * rows_per_task * n..];
        vectorized(
            #[inline(always)]
            || rows_of(x, chunk, n, log, exp, ln),
        )
    });
    Ok(out)
}

/// The rows of one task; inlined, with what it calls, into `vectorized`'s wide-register function.
#[inline(always)]
fn rows_of<T>(x: &[T], out: &mut [T], n: usize, log: bool, exp: impl Fn(T) -> T + Copy, ln: impl Fn(T) -> T + Copy)
where
    T: Acc<Sum = f64> + Sub<Output = T> + Div<Output = T> + Add<Output = T>,
{
    for (x, y) in x.chunks(n).zip(out.chunks_mut(n)) {
        row(x, y, log, exp, ln);
    }
}

#[inline(always)]
fn row<T>(x: &[T], y: &mut [T], log: bool, exp: impl Fn(T) -> T, ln: impl Fn(T) -> T)
where
    T: Acc<Sum = f64> + Sub<Output = T> + Div<Output = T> + Add<Output = T>,
{
    let m = best_lanes(ReduceOp::Max, x);
    let m = if m.to_f64().is_finite() { m } else { T::from_f64(0.0) };
    for (e, &v) in y.iter_mut().zip(x) {
        *e = exp(v - m);
    }
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
