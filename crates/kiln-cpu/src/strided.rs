//! Element-wise loops over strided layouts, split across rayon threads above a size threshold.
//! Work is split into fixed-size chunks, so results never depend on the thread count.

use crate::buffer::Buffer;
use crate::pool::Pooled;
use kiln_tensor::{DimVec, Error, Layout, Result};

/// Below this many elements a loop runs on the calling thread. An add of 64K f32 elements takes
/// 7.8-11.6 µs on one thread and 5.0-5.1 µs on two; in another host state, 7.8-8.2 against
/// 8.2-8.5 (BENCHMARKS.md, session 17, alternated). With rayon's sleeping workers two threads
/// took 16-22 µs there, and this was 128K.
pub(crate) const PAR_THRESHOLD: usize = 1 << 16;
/// Elements per parallel work item (128 KiB of f32: smaller pieces cost more in hand-offs).
pub(crate) const CHUNK: usize = 1 << 15;

/// A vector of `n` copies of `v` (reusing a pooled buffer when one fits), or an error instead of
/// aborting when memory runs out.
pub(crate) fn alloc<U: Pooled>(n: usize, v: U) -> Result<Buffer<U>> {
    let out = match U::pool().take(n) {
        Some(mut out) => {
            out.fill(v);
            out
        }
        None => Buffer::filled(n, v).ok_or_else(|| out_of_memory::<U>(n))?,
    };
    // Back to the pool when dropped, whether a tensor holds it or it is a kernel's temporary.
    Ok(out.returning_to(|b| U::pool().give(b)))
}

/// Like [`alloc`] for a buffer the caller overwrites entirely: a pooled buffer is handed out as it
/// is (no fill pass), a fresh one is filled with `v`.
pub(crate) fn alloc_for_overwrite<U: Pooled>(n: usize, v: U) -> Result<Buffer<U>> {
    match U::pool().take(n) {
        Some(out) => Ok(out.returning_to(|b| U::pool().give(b))),
        None => alloc(n, v),
    }
}

/// Makes sure the pool holds `count` free buffers of `n` elements (one per thread), before a
/// parallel region whose tasks each take one as a temporary. Without it the pool holds as many
/// as happened to run at once in the warm-up steps: when a helper thread joined late there (a
/// busy machine), a later step that ran both threads asked the system for the second one.
pub(crate) fn reserve<U: Pooled + Default>(n: usize, count: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    for _ in U::pool().free_count(n)..count {
        // A new buffer, not `alloc`'s: that would take the free one and give it back.
        let fresh = Buffer::filled(n, U::default()).ok_or_else(|| out_of_memory::<U>(n))?;
        U::pool().give(fresh);
    }
    Ok(())
}

fn out_of_memory<U>(n: usize) -> Error {
    Error::Backend {
        backend: "cpu".into(),
        msg: format!("out of memory allocating {n} elements of {} bytes", std::mem::size_of::<U>()),
    }
}

/// The `n` values of `values` in a pooled buffer (elements `values` does not reach keep
/// `U::default()`).
pub(crate) fn collect<U: Pooled + Default>(n: usize, values: impl Iterator<Item = U>) -> Result<Buffer<U>> {
    let mut out = alloc_for_overwrite(n, U::default())?;
    out.iter_mut().zip(values).for_each(|(o, v)| *o = v);
    Ok(out)
}

/// Runs `f(first_logical_index, chunk)` over `out`, in parallel chunks when it is large. An
/// output past [`crate::stream::STREAM_BYTES`] is computed a block at a time into a buffer that
/// stays in L1 and streamed out from there, so its lines are never read from memory.
fn fill<U: Copy + Default + Send, F>(out: &mut [U], f: F)
where
    F: Fn(usize, &mut [U]) + Sync + Send,
{
    use crate::simd::vectorized;
    #[inline(always)]
    fn run<U: Copy + Default, F: Fn(usize, &mut [U])>(f: &F, streamed: bool, start: usize, chunk: &mut [U]) {
        const BLOCK: usize = 1024;
        if !streamed {
            return f(start, chunk);
        }
        let mut scratch = [U::default(); BLOCK];
        for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
            let staged = &mut scratch[..block.len()];
            f(start + b * BLOCK, staged);
            crate::stream::copy(block, staged);
        }
        crate::stream::fence();
    }
    let streamed = std::mem::size_of_val(out) >= crate::stream::STREAM_BYTES;
    if crate::parallel::worth_splitting(out.len(), PAR_THRESHOLD) {
        crate::parallel::for_each_chunk_mut(out, CHUNK, |c, chunk| {
            vectorized(
                #[inline(always)]
                || run(&f, streamed, c * CHUNK, chunk),
            )
        });
    } else {
        vectorized(
            #[inline(always)]
            || run(&f, streamed, 0, out),
        );
    }
}

/// Merges adjacent dims that are contiguous with each other in every layout (same shapes
/// assumed), so inner loops run as long as possible. Returns (dims, strides per layout).
fn coalesce<const N: usize>(layouts: [&Layout; N]) -> (DimVec, [DimVec; N]) {
    let dims = layouts[0].dims();
    let mut out_dims = DimVec::new();
    let mut out_strides: [DimVec; N] = std::array::from_fn(|_| DimVec::new());
    for (d, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty()
            && layouts.iter().zip(&out_strides).all(|(l, s)| s.last().copied() == Some(l.strides()[d] * size));
        if mergeable {
            if let Some(last) = out_dims.last_mut() {
                *last *= size;
            }
            for (s, l) in out_strides.iter_mut().zip(&layouts) {
                if let Some(x) = s.last_mut() {
                    *x = l.strides()[d];
                }
            }
        } else {
            out_dims.push(size);
            for (s, l) in out_strides.iter_mut().zip(&layouts) {
                s.push(l.strides()[d]);
            }
        }
    }
    (out_dims, out_strides)
}

/// Calls `f(offsets, strides, count)` for runs along the innermost (coalesced) dim that cover
/// logical elements `start..start + len` of `N` layouts of equal shape, in order.
pub(crate) fn runs<const N: usize>(
    layouts: [&Layout; N],
    start: usize,
    len: usize,
    mut f: impl FnMut([usize; N], [usize; N], usize),
) {
    if len == 0 {
        return;
    }
    let (dims, strides) = coalesce(layouts);
    let base: [usize; N] = std::array::from_fn(|i| layouts[i].offset());
    let Some((&inner, outer_dims)) = dims.split_last() else {
        f(base, [0; N], len.min(1));
        return;
    };
    let inner_strides: [usize; N] = std::array::from_fn(|i| strides[i].last().copied().unwrap_or(0));
    let outer: [Layout; N] = std::array::from_fn(|i| {
        let s = &strides[i];
        Layout::new(kiln_tensor::Shape::new(outer_dims), &s[..s.len() - 1], base[i])
    });
    let (row, mut col) = (start / inner, start % inner);
    let mut rows: [kiln_tensor::StridedOffsets<'_>; N] = std::array::from_fn(|i| outer[i].offsets_from(row));
    let mut left = len;
    while left > 0 {
        let starts: [usize; N] = std::array::from_fn(|i| rows[i].next().unwrap_or(0) + col * inner_strides[i]);
        let count = (inner - col).min(left);
        f(starts, inner_strides, count);
        left -= count;
        col = 0;
    }
}

/// `f` applied to every element of `src` seen through `l`, in logical order.
pub(crate) fn map1<T, U, F>(src: &[T], l: &Layout, f: F) -> Result<Buffer<U>>
where
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync + Pooled,
    F: Fn(T) -> U + Send + Sync,
{
    let mut out = alloc_for_overwrite(l.elem_count(), U::default())?;
    map1_into(src, l, &mut out, f);
    Ok(out)
}

/// [`map1`] into `out` (`l.elem_count()` elements, row-major), which it overwrites.
pub(crate) fn map1_into<T, U, F>(src: &[T], l: &Layout, out: &mut [U], f: F)
where
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync,
    F: Fn(T) -> U + Send + Sync,
{
    debug_assert_eq!(out.len(), l.elem_count());
    match l.contiguous_range() {
        Some((s, e)) => {
            let src = &src[s..e];
            fill(out, |start, chunk| {
                for (o, &x) in chunk.iter_mut().zip(&src[start..]) {
                    *o = f(x);
                }
            });
        }
        None => fill(out, |start, chunk| {
            let mut k = 0;
            runs([l], start, chunk.len(), |[o], [s], n| {
                let dst = &mut chunk[k..k + n];
                if s == 1 {
                    for (d, &x) in dst.iter_mut().zip(&src[o..o + n]) {
                        *d = f(x);
                    }
                } else if s == 0 {
                    // A broadcast (a scalar loss's gradient spread over an activation): one value.
                    dst.fill(f(src[o]));
                } else {
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = f(src[o + t * s]);
                    }
                }
                k += n;
            });
        }),
    }
}

/// `f` applied pairwise to `a` through `la` and `b` through `lb` (equal shapes).
pub(crate) fn map2<T, U, F>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: F) -> Result<Buffer<U>>
where
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync + Pooled,
    F: Fn(T, T) -> U + Send + Sync,
{
    let mut out = alloc_for_overwrite(la.elem_count(), U::default())?;
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
            let mut k = 0;
            runs([la, lb], start, chunk.len(), |[oa, ob], [sa, sb], n| {
                let dst = &mut chunk[k..k + n];
                // Slices for unit and zero strides (a row against a broadcast row or scalar), so
                // the common broadcasts vectorize; index arithmetic for the rest.
                match (sa, sb) {
                    (1, 1) => {
                        for ((d, &x), &y) in dst.iter_mut().zip(&a[oa..oa + n]).zip(&b[ob..ob + n]) {
                            *d = f(x, y);
                        }
                    }
                    (1, 0) => {
                        let y = b[ob];
                        for (d, &x) in dst.iter_mut().zip(&a[oa..oa + n]) {
                            *d = f(x, y);
                        }
                    }
                    (0, 1) => {
                        let x = a[oa];
                        for (d, &y) in dst.iter_mut().zip(&b[ob..ob + n]) {
                            *d = f(x, y);
                        }
                    }
                    _ => {
                        for (t, d) in dst.iter_mut().enumerate() {
                            *d = f(a[oa + t * sa], b[ob + t * sb]);
                        }
                    }
                }
                k += n;
            });
        }),
    }
    Ok(out)
}

/// `f` applied to three operands (used by `where_cond`).
pub(crate) fn map3<A, T, U, F>(
    a: &[A],
    la: &Layout,
    b: &[T],
    lb: &Layout,
    c: &[T],
    lc: &Layout,
    f: F,
) -> Result<Buffer<U>>
where
    A: Copy + Send + Sync,
    T: Copy + Send + Sync,
    U: Copy + Default + Send + Sync + Pooled,
    F: Fn(A, T, T) -> U + Send + Sync,
{
    let mut out = alloc_for_overwrite(la.elem_count(), U::default())?;
    fill(&mut out, |start, chunk| {
        let mut k = 0;
        runs([la, lb, lc], start, chunk.len(), |[oa, ob, oc], [sa, sb, sc], n| {
            let dst = &mut chunk[k..k + n];
            // Slices where the mask and one operand run along the output and the other is a
            // scalar (ReLU's backward, `where(x > 0, g, 0)`), so that they vectorize: with
            // index arithmetic it took 1.2 ms over a CNN layer's 2.4M activations.
            match (sa, sb, sc) {
                (1, 1, 1) => {
                    let it = a[oa..oa + n].iter().zip(&b[ob..ob + n]).zip(&c[oc..oc + n]);
                    for (d, ((&m, &x), &y)) in dst.iter_mut().zip(it) {
                        *d = f(m, x, y);
                    }
                }
                (1, 1, 0) => {
                    let y = c[oc];
                    for (d, (&m, &x)) in dst.iter_mut().zip(a[oa..oa + n].iter().zip(&b[ob..ob + n])) {
                        *d = f(m, x, y);
                    }
                }
                (1, 0, 1) => {
                    let x = b[ob];
                    for (d, (&m, &y)) in dst.iter_mut().zip(a[oa..oa + n].iter().zip(&c[oc..oc + n])) {
                        *d = f(m, x, y);
                    }
                }
                _ => {
                    for (t, d) in dst.iter_mut().enumerate() {
                        *d = f(a[oa + t * sa], b[ob + t * sb], c[oc + t * sc]);
                    }
                }
            }
            k += n;
        });
    });
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use kiln_tensor::Layout;

    /// An output past `STREAM_BYTES`, contiguous and broadcast, with a length that leaves a
    /// partial block and chunk: every element written, and written once.
    #[test]
    fn streamed_outputs_match_ordinary_ones() {
        let n = crate::stream::STREAM_BYTES / 4 + 1000 + 7;
        let a: Vec<f32> = (0..n).map(|i| (i % 1013) as f32).collect();
        let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.5).collect();
        let l = Layout::contiguous([n]);
        let sum = super::map2(&a, &l, &b, &l, |x, y| x + y).unwrap();
        assert!(sum.iter().enumerate().all(|(i, &v)| v == a[i] + b[i]));
        let row = Layout::new(kiln_tensor::Shape::new([n]), [0usize], 3);
        let spread = super::map1(&a, &row, |x| x * 2.0).unwrap();
        assert!(spread.iter().all(|&v| v == a[3] * 2.0));
    }
}
