//! im2col, its adjoint col2im, and the argmax of max pooling, for contiguous f32/f64 `[N, C, H, W]`
//! tensors. Other dtypes decline (`None`) and kiln composes them from views.
//!
//! Work is split by image (col2im, so that each input element is summed by one thread in a fixed
//! order) or by column row (im2col, pooling), through `parallel::for_each_piece`.

use crate::buffer::Buffer;
use crate::parallel::{for_each_piece, Rows};
use crate::pool::Pooled;
use crate::storage::CpuStorage;
use crate::strided::{alloc, alloc_for_overwrite};
use kiln_tensor::{Layout, Result, Shape, Window2d};
use std::sync::atomic::{AtomicBool, Ordering};

/// The geometry shared by the kernels.
#[derive(Clone, Copy)]
pub(crate) struct Geometry {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) win: Window2d,
}

impl Geometry {
    /// `None` when the window does not fit (kiln-tensor has already reported that as an error).
    pub(crate) fn new(dims: [usize; 4], win: &Window2d) -> Option<Geometry> {
        let [n, c, h, w] = dims;
        let (oh, ow) = win.output_size("conv", &Shape::new(dims)).ok()?;
        Some(Geometry { n, c, h, w, oh, ow, win: *win })
    }

    /// The input row read by output row `o` at kernel row `i`, if inside the input.
    #[inline(always)]
    fn in_row(&self, o: usize, i: usize) -> Option<usize> {
        (o * self.win.stride.0 + i * self.win.dilation.0).checked_sub(self.win.padding.0).filter(|&r| r < self.h)
    }

    /// The output columns `lo..hi` whose kernel column `j` falls inside the input (for them the
    /// input column is `o * sw + j * dw - pw`).
    #[inline(always)]
    fn valid_cols(&self, j: usize) -> (usize, usize) {
        valid_range(self.ow, self.w, self.win.stride.1, j * self.win.dilation.1, self.win.padding.1)
    }
}

/// Outputs `o` in `0..out` with `0 <= o * stride + shift - pad < size`, as a range `lo..hi`.
fn valid_range(out: usize, size: usize, stride: usize, shift: usize, pad: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let lo = pad.saturating_sub(shift).div_ceil(stride).min(out);
    let hi = (size + pad).checked_sub(shift).map_or(0, |room| room.div_ceil(stride)).clamp(lo, out);
    (lo, hi)
}

pub(crate) fn dims4(layout: &Layout) -> Option<[usize; 4]> {
    <[usize; 4]>::try_from(layout.dims()).ok()
}

pub(crate) fn im2col(x: &CpuStorage, layout: &Layout, win: &Window2d) -> Result<Option<CpuStorage>> {
    let (Some((start, end)), Some(dims)) = (layout.contiguous_range(), dims4(layout)) else { return Ok(None) };
    let Some(g) = Geometry::new(dims, win) else { return Ok(None) };
    Ok(match x {
        CpuStorage::F32(v) => Some(CpuStorage::F32(im2col_t(&v[start..end], g)?)),
        CpuStorage::F64(v) => Some(CpuStorage::F64(im2col_t(&v[start..end], g)?)),
        _ => None,
    })
}

fn im2col_t<T: Copy + Default + Send + Sync + Pooled>(x: &[T], g: Geometry) -> Result<Buffer<T>> {
    let (kh, kw) = g.win.kernel;
    let l = g.oh * g.ow;
    let rows = g.n * g.c * kh * kw;
    // Every element is written (zeros where the window is outside the input).
    let mut out = alloc_for_overwrite(rows * l, T::default())?;
    // One column row per (image, channel, kernel row, kernel column); tasks take blocks of them.
    let per_task = (1 << 15) / l.max(1) + 1;
    for_each_piece(&mut out[..], per_task * l.max(1), |t, piece| {
        for (r, dst) in piece.chunks_mut(l.max(1)).enumerate() {
            im2col_row(x, t * per_task + r, dst, &g);
        }
        Ok(())
    })?;
    Ok(out)
}

/// The im2col columns of one image (`x` holds its `C` planes) into `out` (`C * KH * KW` rows of
/// `OH * OW`).
pub(crate) fn im2col_image<T: Copy + Default>(x: &[T], out: &mut [T], g: &Geometry) {
    for (row, dst) in out.chunks_mut((g.oh * g.ow).max(1)).enumerate() {
        im2col_row(x, row, dst, g);
    }
}

/// Column row `row` = (plane, kernel row, kernel column) of the planes in `x`, into `dst`.
fn im2col_row<T: Copy + Default>(x: &[T], row: usize, dst: &mut [T], g: &Geometry) {
    let (kh, kw) = g.win.kernel;
    let (j, i, plane) = (row % kw, (row / kw) % kh, row / (kw * kh));
    let src = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
    let (lo, hi) = g.valid_cols(j);
    let (s, shift) = (g.win.stride.1, j * g.win.dilation.1);
    for (oy, line) in dst.chunks_mut(g.ow).enumerate() {
        let Some(iy) = g.in_row(oy, i) else {
            line.fill(T::default());
            continue;
        };
        let src_row = &src[iy * g.w..(iy + 1) * g.w];
        line[..lo].fill(T::default());
        line[hi..].fill(T::default());
        if lo < hi {
            // Input columns lo * s + shift - pad, stepping by s: inside by `valid_cols`.
            let first = lo * s + shift - g.win.padding.1;
            if s == 1 {
                copy_short(&mut line[lo..hi], &src_row[first..first + hi - lo]);
            } else {
                for (d, x) in line[lo..hi].iter_mut().zip(src_row[first..].iter().step_by(s)) {
                    *d = *x;
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short rows of im2col (24 elements in the MNIST CNN) in
/// fixed-size moves: a `memcpy` call per row was 5 % of a CNN training step.
#[inline(always)]
pub(crate) fn copy_short<T: Copy>(dst: &mut [T], src: &[T]) {
    const K: usize = 8;
    let n = dst.len().min(src.len());
    if n < K {
        dst[..n].copy_from_slice(&src[..n]);
        return;
    }
    let copy = |d: &mut [T], s: &[T]| {
        if let (Ok(d), Ok(s)) = (<&mut [T; K]>::try_from(d), <&[T; K]>::try_from(s)) {
            *d = *s;
        }
    };
    for at in (0..n - K).step_by(K) {
        copy(&mut dst[at..at + K], &src[at..at + K]);
    }
    // The last K, overlapping the previous chunk when n is not a multiple of K.
    copy(&mut dst[n - K..n], &src[n - K..n]);
}

pub(crate) fn col2im(
    cols: &CpuStorage,
    layout: &Layout,
    dims: [usize; 4],
    win: &Window2d,
) -> Result<Option<CpuStorage>> {
    let Some((start, end)) = layout.contiguous_range() else { return Ok(None) };
    let Some(g) = Geometry::new(dims, win) else { return Ok(None) };
    if end - start != g.n * g.c * win.kernel.0 * win.kernel.1 * g.oh * g.ow {
        return Ok(None);
    }
    Ok(match cols {
        CpuStorage::F32(v) => Some(CpuStorage::F32(col2im_t(&v[start..end], g)?)),
        CpuStorage::F64(v) => Some(CpuStorage::F64(col2im_t(&v[start..end], g)?)),
        _ => None,
    })
}

fn col2im_t<T: Copy + Default + Send + Sync + Pooled + std::ops::Add<Output = T>>(
    cols: &[T],
    g: Geometry,
) -> Result<Buffer<T>> {
    let (kh, kw) = g.win.kernel;
    let (l, plane) = (g.oh * g.ow, g.h * g.w);
    let mut out = alloc(g.n * g.c * plane, T::default())?;
    // One task per (image, channel) plane: its sums run in a fixed order on one thread.
    for_each_piece(&mut out[..], plane.max(1), |p, dst| {
        col2im_plane(&cols[p * kh * kw * l..(p + 1) * kh * kw * l], dst, &g);
        Ok(())
    })?;
    Ok(out)
}

/// Sums one plane's `KH * KW` column rows into `dst` (which the caller has initialised), in
/// wide registers: in SSE2 these row-by-row adds were 7 % of conv2's forward and backward.
pub(crate) fn col2im_plane<T: Copy + std::ops::Add<Output = T>>(cols: &[T], dst: &mut [T], g: &Geometry) {
    crate::simd::vectorized(
        #[inline(always)]
        || col2im_plane_rows(cols, dst, g),
    )
}

#[inline(always)]
fn col2im_plane_rows<T: Copy + std::ops::Add<Output = T>>(cols: &[T], dst: &mut [T], g: &Geometry) {
    let (kh, kw) = g.win.kernel;
    let l = g.oh * g.ow;
    for i in 0..kh {
        for j in 0..kw {
            let row = &cols[(i * kw + j) * l..(i * kw + j + 1) * l];
            let (lo, hi) = g.valid_cols(j);
            let (s, shift) = (g.win.stride.1, j * g.win.dilation.1);
            if lo >= hi {
                continue;
            }
            let first = lo * s + shift - g.win.padding.1;
            for oy in 0..g.oh {
                let Some(iy) = g.in_row(oy, i) else { continue };
                let src = &row[oy * g.ow + lo..oy * g.ow + hi];
                let dst_row = &mut dst[iy * g.w + first..];
                if s == 1 {
                    for (d, x) in dst_row.iter_mut().zip(src) {
                        *d = *d + *x;
                    }
                } else {
                    for (d, x) in dst_row.iter_mut().step_by(s).zip(src) {
                        *d = *d + *x;
                    }
                }
            }
        }
    }
}

/// Max pooling's maxima and their indices in one pass (`Backend::max_pool2d`), so the forward
/// needs no gather after the argmax. The CPU does not override `max_pool2d_indices`: kiln asks
/// for it only when this declines, and it would decline the same inputs.
pub(crate) fn max_pool2d(x: &CpuStorage, layout: &Layout, win: &Window2d) -> Result<Option<[CpuStorage; 2]>> {
    let (Some((start, end)), Some(dims)) = (layout.contiguous_range(), dims4(layout)) else { return Ok(None) };
    let Some(g) = Geometry::new(dims, win) else { return Ok(None) };
    Ok(match x {
        CpuStorage::F32(v) => argmax_t(&v[start..end], g)?.map(|(v, i)| [CpuStorage::F32(v), CpuStorage::I64(i)]),
        CpuStorage::F64(v) => argmax_t(&v[start..end], g)?.map(|(v, i)| [CpuStorage::F64(v), CpuStorage::I64(i)]),
        _ => None,
    })
}

/// Whether `(v, k)` comes before `(best, at)` in max pooling's order: larger first, a NaN before
/// any number, and on ties the smaller flat index (row-major window order), so the first maximum
/// and the first NaN win whatever order the candidates are visited in.
#[inline(always)]
#[allow(clippy::eq_op)]
fn beats<T: PartialOrd>(v: T, k: u32, best: T, at: u32) -> bool {
    let (v_nan, b_nan) = (v != v, best != best);
    let earlier = k < at;
    (b_nan & v_nan & earlier) | (!b_nan & (v_nan | (v > best) | ((v == best) & earlier)))
}

/// The argmax of every window of one plane when no window reaches into padding, in two
/// branch-free passes per output row: down the kernel rows over whole input rows (contiguous, so
/// the compare-and-selects vectorize), then across each window's columns. On real activations
/// which element is larger is a coin flip, so a branch per comparison mispredicts half the time.
/// Returns `false` (and writes nothing) when the plane is too large for `u32` indices.
fn argmax_unpadded<T: Copy + PartialOrd>(src: &[T], dst: &mut [i64], g: &Geometry) -> bool {
    const MAX_W: usize = 256;
    let ((kh, kw), (sy, sx), (dy, dx)) = (g.win.kernel, g.win.stride, g.win.dilation);
    if g.w > MAX_W || u32::try_from(g.h * g.w).is_err() {
        return false;
    }
    let mut col_best = [src[0]; MAX_W];
    let mut col_at = [0u32; MAX_W];
    let (col_best, col_at) = (&mut col_best[..g.w], &mut col_at[..g.w]);
    for (oy, out_row) in dst.chunks_mut(g.ow).enumerate() {
        let top = oy * sy * g.w;
        col_best.copy_from_slice(&src[top..top + g.w]);
        for (x, a) in col_at.iter_mut().enumerate() {
            *a = (top + x) as u32;
        }
        for i in 1..kh {
            let start = top + i * dy * g.w;
            let row = &src[start..start + g.w];
            // Later rows have larger indices, so only a strictly larger value or a first NaN wins.
            for (x, ((b, a), &v)) in col_best.iter_mut().zip(col_at.iter_mut()).zip(row).enumerate() {
                #[allow(clippy::eq_op)]
                let take = (*b == *b) & ((v != v) | (v > *b));
                *b = std::hint::select_unpredictable(take, v, *b);
                *a = std::hint::select_unpredictable(take, (start + x) as u32, *a);
            }
        }
        for (ox, o) in out_row.iter_mut().enumerate() {
            let x0 = ox * sx;
            let (mut best, mut at) = (col_best[x0], col_at[x0]);
            for j in 1..kw {
                let (v, k) = (col_best[x0 + j * dx], col_at[x0 + j * dx]);
                let take = beats(v, k, best, at);
                best = std::hint::select_unpredictable(take, v, best);
                at = std::hint::select_unpredictable(take, k, at);
            }
            *o = i64::from(at);
        }
    }
    true
}

/// The maximum of every window and its index in the plane; `None` when some window lies
/// entirely in the padding (its maximum is -inf, which a gather cannot produce; kiln then
/// composes the op).
fn argmax_t<T: Copy + PartialOrd + Send + Sync + Default + crate::pool::Pooled>(
    x: &[T],
    g: Geometry,
) -> Result<Option<(Buffer<T>, Buffer<i64>)>> {
    let (l, plane) = (g.oh * g.ow, g.h * g.w);
    // Every output is written, unless a window is all padding, and then the result is dropped.
    let mut out = alloc_for_overwrite(g.n * g.c * l, 0i64)?;
    let mut values = alloc_for_overwrite(g.n * g.c * l, T::default())?;
    let empty = AtomicBool::new(false);
    let pairs = g.win == Window2d { stride: (2, 2), ..Window2d::square(2) };
    // Tasks of several planes (about 32K inputs): a task per small plane costs more than its work.
    let planes_per_task = (1 << 15) / plane.max(1) + 1;
    let per_task = l.max(1) * planes_per_task;
    let rows = Rows { a: &mut out[..], b: &mut values[..], widths: (1, 1) };
    for_each_piece(rows, per_task, |t, Rows { a: task_out, b: task_values, .. }| {
        let mut split = pairs.then(|| Split2x2 { quad: [[T::default(); BLOCK]; 4], at: [0; BLOCK] });
        for (q, (dst, vals)) in task_out.chunks_mut(l.max(1)).zip(task_values.chunks_mut(l.max(1))).enumerate() {
            let p = t * planes_per_task + q;
            let src = &x[p * plane..(p + 1) * plane];
            if split.as_mut().is_some_and(|split| argmax_2x2(src, dst, vals, &g, split)) {
                continue;
            }
            argmax_plane(src, dst, &g, &empty);
            // The plane is still in L1: reading the maxima back costs less than a gather.
            for (v, &i) in vals.iter_mut().zip(dst.iter()) {
                *v = src.get(i as usize).copied().unwrap_or_default();
            }
        }
        Ok(())
    })?;
    Ok((!empty.into_inner()).then_some((values, out)))
}

/// Output windows per block of [`argmax_2x2`].
const BLOCK: usize = 1024;

/// [`argmax_2x2`]'s candidates for a block of windows, split by position in the window, and
/// their indices; made once per task: clearing it for every plane made the CNN's pooling
/// 1.14 ms instead of 0.76.
struct Split2x2<T> {
    quad: [[T; BLOCK]; 4],
    at: [u32; BLOCK],
}

/// Every window's maximum and its index for 2x2 windows at stride 2 without padding (PyTorch's
/// `max_pool2d(x, 2)`, the pooling of most CNNs), branch-free and in wide registers: the
/// candidates are first split into four contiguous arrays (top-left, top-right, bottom-left,
/// bottom-right) for a block of rows, so the compare-and-selects run 16 windows at a time. The
/// general path ran at about 1 ns per input, and a per-window loop does not vectorize. The
/// picks are the same: candidates in row-major order, a later one wins only when larger or
/// the first NaN. Returns `false` (and writes nothing) for output rows wider than a block.
fn argmax_2x2<T: Copy + PartialOrd>(
    src: &[T],
    dst: &mut [i64],
    vals: &mut [T],
    g: &Geometry,
    scratch: &mut Split2x2<T>,
) -> bool {
    if g.ow > BLOCK || g.ow == 0 || u32::try_from(g.h * g.w).is_err() {
        return false;
    }
    crate::simd::vectorized(
        #[inline(always)]
        || {
            let (w, rows) = (g.w, BLOCK / g.ow);
            let Split2x2 { quad, at } = scratch;
            for (block, (dst, vals)) in dst.chunks_mut(rows * g.ow).zip(vals.chunks_mut(rows * g.ow)).enumerate() {
                let n = dst.len();
                for (r, k0) in (0..n).step_by(g.ow).enumerate() {
                    let top = 2 * (block * rows + r) * w;
                    let (r0, r1) = (&src[top..top + 2 * g.ow], &src[top + w..top + w + 2 * g.ow]);
                    for ox in 0..g.ow {
                        let k = k0 + ox;
                        (quad[0][k], quad[1][k]) = (r0[2 * ox], r0[2 * ox + 1]);
                        (quad[2][k], quad[3][k]) = (r1[2 * ox], r1[2 * ox + 1]);
                        at[k] = (top + 2 * ox) as u32;
                    }
                }
                let [a, b, c, d] = quad.each_ref().map(|q| &q[..n]);
                let w32 = w as u32;
                let candidates = a.iter().zip(b).zip(c).zip(d);
                for ((v, p), (((&a, &b), &c), &d)) in vals.iter_mut().zip(&mut at[..n]).zip(candidates) {
                    let (mut best, mut off) = (a, 0);
                    for (v, o) in [(b, 1), (c, w32), (d, w32 + 1)] {
                        #[allow(clippy::eq_op)]
                        let take = (best == best) & ((v != v) | (v > best));
                        best = if take { v } else { best };
                        off = if take { o } else { off };
                    }
                    *v = best;
                    *p += off;
                }
                for (o, &p) in dst.iter_mut().zip(&at[..n]) {
                    *o = i64::from(p);
                }
            }
        },
    );
    true
}

/// The argmax of every window of one plane (`dst` holds its outputs); sets `empty` when a
/// window lies entirely in the padding.
fn argmax_plane<T: Copy + PartialOrd>(src: &[T], dst: &mut [i64], g: &Geometry, empty: &AtomicBool) {
    let ((kh, kw), s, d, p) = (g.win.kernel, g.win.stride, g.win.dilation, g.win.padding);
    if p == (0, 0) && argmax_unpadded(src, dst, g) {
        return;
    }
    // The kernel rows valid for each output row, and columns for each output column.
    let kernel_range = |o: usize, size: usize, k: usize, s: usize, d: usize, p: usize| {
        let start = o * s;
        let lo = p.saturating_sub(start).div_ceil(d.max(1)).min(k);
        let hi = (size + p).saturating_sub(start).div_ceil(d.max(1)).clamp(lo, k);
        (lo, hi)
    };
    for oy in 0..g.oh {
        let (i_lo, i_hi) = kernel_range(oy, g.h, kh, s.0, d.0, p.0);
        for ox in 0..g.ow {
            let (j_lo, j_hi) = kernel_range(ox, g.w, kw, s.1, d.1, p.1);
            if i_lo >= i_hi || j_lo >= j_hi {
                empty.store(true, Ordering::Relaxed);
                continue;
            }
            let at = |i: usize, j: usize| (oy * s.0 + i * d.0 - p.0) * g.w + ox * s.1 + j * d.1 - p.1;
            let (mut best_at, mut best) = (at(i_lo, j_lo), src[at(i_lo, j_lo)]);
            for i in i_lo..i_hi {
                for j in j_lo..j_hi {
                    let k = at(i, j);
                    let v = src[k];
                    // The first maximum wins; a NaN wins over numbers, and the first NaN stays.
                    #[allow(clippy::eq_op)]
                    if best == best && (v != v || v > best) {
                        (best_at, best) = (k, v);
                    }
                }
            }
            dst[oy * g.ow + ox] = best_at as i64;
        }
    }
}
