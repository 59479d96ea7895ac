//! Element-wise loops over strided layouts, split across rayon threads above a size threshold.
//! Work is split into fixed-size chunks, so results never depend on the thread count.

use kiln_tensor::{Error, Layout, Result};
use rayon::prelude::*;

/// Below this many elements a loop runs on the calling thread (thread hand-off costs more).
pub(crate) const PAR_THRESHOLD: usize = 1 << 15;
/// Elements per parallel work item.
pub(crate) const CHUNK: usize = 1 << 13;

/// A vector of `n` copies of `v`, or an error instead of aborting when memory runs out.
pub(crate) fn alloc<U: Copy>(n: usize, v: U) -> Result<Vec<U>> {
    let mut out = Vec::new();
    out.try_reserve_exact(n).map_err(|_| Error::Backend {
        backend: "cpu".into(),
        msg: format!("out of memory allocating {n} elements of {} bytes", std::mem::size_of::<U>()),
    })?;
    out.resize(n, v);
    Ok(out)
}

/// Runs `f(first_logical_index, chunk)` over `out`, in parallel chunks when it is large.
fn fill<U: Send, F>(out: &mut [U], f: F)
where
    F: Fn(usize, &mut [U]) + Sync + Send,
{
    if out.len() >= PAR_THRESHOLD {
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| f(c * CHUNK, chunk));
    } else {
        f(0, out);
    }
}

/// `f` applied to every element of `src` seen through `l`, in logical order.
pub(crate) fn map1<T, U, F>(src: &[T], l: &Layout, f: F) -> Result<Vec<U>>
where
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync,
    F: Fn(T) -> U + Send + Sync,
{
    let mut out = alloc(l.elem_count(), U::default())?;
    match l.contiguous_range() {
        Some((s, e)) => {
            let src = &src[s..e];
            fill(&mut out, |start, chunk| {
                for (o, &x) in chunk.iter_mut().zip(&src[start..]) {
                    *o = f(x);
                }
            });
        }
        None => fill(&mut out, |start, chunk| {
            for (o, off) in chunk.iter_mut().zip(l.offsets_from(start)) {
                *o = f(src[off]);
            }
        }),
    }
    Ok(out)
}

/// `f` applied pairwise to `a` through `la` and `b` through `lb` (equal shapes).
pub(crate) fn map2<T, U, F>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Result<Vec<U>>
where
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync,
    F: Fn(T, T) -> U + Send + Sync,
{
    let mut out = alloc(la.elem_count(), U::default())?;
    match (la.contiguous_range(), lb.contiguous_range()) {
        (Some((sa, ea)), Some((sb, eb))) => {
            let (a, b) = (&a[sa..ea], &b[sb..eb]);
            fill(&mut out, |start, chunk| {
                for ((o, &x), &y) in chunk.iter_mut().zip(&a[start..]).zip(&b[start..]) {
                    *o = f(x, y);
                }
            });
        }
        _ => fill(&mut out, |start, chunk| {
            for ((o, oa), ob) in chunk.iter_mut().zip(la.offsets_from(start)).zip(lb.offsets_from(start)) {
                *o = f(a[oa], b[ob]);
            }
        }),
    }
    Ok(out)
}

/// `f` applied to three operands (used by `where_cond`).
pub(crate) fn map3<A, T, U, F>(a: &[A], la: &Layout, b: &[T], lb: &Layout, c: &[T], lc: &Layout, f: F) -> Result<Vec<U>>
where
    A: Copy + Send + Sync,
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync,
    F: Fn(A, T, T) -> U + Send + Sync,
{
    let mut out = alloc(la.elem_count(), U::default())?;
    fill(&mut out, |start, chunk| {
        let offs = la.offsets_from(start).zip(lb.offsets_from(start)).zip(lc.offsets_from(start));
        for (o, ((oa, ob), oc)) in chunk.iter_mut().zip(offs) {
            *o = f(a[oa], b[ob], c[oc]);
        }
    });
    Ok(out)
}
