//! A whole convolution per image (`Backend::conv2d` and `conv2d_backward`), for contiguous f32/f64.
//!
//! im2col + one batched GEMM writes the columns of the whole batch (42 MB for the MNIST CNN's
//! second layer at batch 64) and reads them back from memory. Here one task takes an image: its
//! columns (663 KB there) go into a scratch buffer that stays in the core's L2 while the GEMM on
//! the same thread packs them. The backward pass rebuilds each image's columns instead of keeping
//! the batch's; for the input gradient, each image's column gradient is summed into its planes
//! right away.
//!
//! The epilogue (bias, ReLU) runs on each image's output right after its GEMM, and the backward
//! pass masks each image's gradient and sums it for the bias in the same place: on the MNIST
//! CNN these were five more passes over activations too large for the caches.
//!
//! 3x3 convolutions at stride 1 with enough channels run all three products by Winograd
//! ([`crate::winograd`]) inside the same per-image tasks; the rest use im2col.
//!
//! Determinism: the weight and bias gradients are sums over images. The images are cut into a fixed
//! number of groups ([`GROUPS`], whatever the thread count); each group sums its images in order
//! and the groups' sums are added in order.

use crate::buffer::Buffer;
use crate::conv::{col2im_plane, dims4, im2col_image, Geometry};
use crate::epilogue::{slice, Bias};
use crate::gemm::{gemm_same, Elem, View};
use crate::parallel::{for_each_piece, run_tasks, Pieces};
use crate::storage::CpuStorage;
use crate::strided::{alloc, alloc_for_overwrite};
use crate::winograd::{self, Real};
use kiln_tensor::backend::{ConvGradRequest, ConvGrads, Epilogue};
use kiln_tensor::{Layout, Result, Window2d};
use smallvec::SmallVec;
use std::sync::Mutex;

/// Image groups of the weight gradient's sum (fixed, so results do not depend on threads).
const GROUPS: usize = 8;

/// Checked operands: the geometry, the output channels and the contiguous slices' ranges.
struct Operands {
    g: Geometry,
    o: usize,
    ck: usize,
}

/// A storage with the layout of the tensor it holds.
type Operand<'a> = (&'a CpuStorage, &'a Layout);

fn operands(x: &Layout, w: &Layout, win: &Window2d) -> Option<Operands> {
    let g = Geometry::new(dims4(x)?, win)?;
    let (o, ck) = match w.dims() {
        &[o, ck] => (o, ck),
        _ => return None,
    };
    if ck != g.c * win.kernel.0 * win.kernel.1 || g.n == 0 || o == 0 || g.oh * g.ow == 0 || ck == 0 {
        return None;
    }
    Some(Operands { g, o, ck })
}

pub(crate) fn conv2d(
    x: Operand<'_>,
    w: Operand<'_>,
    epilogue: Epilogue<'_, CpuStorage>,
    win: &Window2d,
) -> Result<Option<CpuStorage>> {
    let Some(op) = operands(x.1, w.1, win) else { return Ok(None) };
    Ok(match (x.0, w.0) {
        (CpuStorage::F32(_), CpuStorage::F32(_)) => forward::<f32>(x, w, epilogue, &op)?.map(CpuStorage::F32),
        (CpuStorage::F64(_), CpuStorage::F64(_)) => forward::<f64>(x, w, epilogue, &op)?.map(CpuStorage::F64),
        _ => None,
    })
}

/// `y[i] = relu?(w @ im2col(x[i]) + bias)`, one task per image; `None` when an operand is not
/// a contiguous `T` slice of the right length.
fn forward<T: Real>(
    x: Operand<'_>,
    w: Operand<'_>,
    epilogue: Epilogue<'_, CpuStorage>,
    op: &Operands,
) -> Result<Option<Buffer<T>>> {
    let (g, o, ck) = (&op.g, op.o, op.ck);
    let (l, plane) = (g.oh * g.ow, g.c * g.h * g.w);
    let (Some(x), Some(w)) = (slice::<T>(x, g.n * plane), slice::<T>(w, o * ck)) else { return Ok(None) };
    let Some(bias) = crate::epilogue::bias(epilogue.bias, o, Bias::PerRow) else { return Ok(None) };
    let mut y = alloc_for_overwrite(g.n * o * l, T::default())?;
    if let Some(plan) = winograd::Plan::forward(g.c, o, (g.h, g.w), &g.win) {
        let kernels = winograd::Kernels::new(plan, |oc, ic| taps(w, (oc * ck + ic * 9, false)))?;
        kernels.reserve_scratch(rayon::current_num_threads().min(g.n))?;
        let done = for_each_piece(&mut y[..], o * l, |i, y_i| {
            let mut scratch = kernels.scratch()?;
            let done = kernels.image(&x[i * plane..(i + 1) * plane], y_i, (bias, epilogue.relu), &mut scratch);
            scratch.give();
            done
        });
        kernels.give();
        done?;
        return Ok(Some(y));
    }
    crate::strided::reserve::<T>(ck * l, rayon::current_num_threads().min(g.n))?;
    for_each_piece(&mut y[..], o * l, |i, y_i| {
        let mut cols = alloc_for_overwrite(ck * l, T::default())?;
        im2col_image(&x[i * plane..(i + 1) * plane], &mut cols, g);
        let (wv, cv) = (View { offset: 0, rs: ck, cs: 1 }, View { offset: 0, rs: l, cs: 1 });
        let done = gemm_same((w, wv), (&cols[..], cv), &[(0, 0)], y_i, (o, ck, l), false);
        T::pool().give(cols);
        done?;
        crate::epilogue::apply(y_i, bias, epilogue.relu, l);
        Ok(())
    })?;
    Ok(Some(y))
}

/// The 3x3 kernel starting at `w[at]`, in row-major order or (`flip`) rotated by 180 degrees.
fn taps<T: Real>(w: &[T], (at, flip): (usize, bool)) -> [T; 9] {
    std::array::from_fn(|k| w[at + if flip { 8 - k } else { k }])
}

/// `out = where(y > 0, g, 0)` (ReLU's backward), then each of its rows of `l` summed into
/// `row_sums` when asked (the bias gradient), in wide registers.
fn mask_and_sum<T: Elem + PartialOrd>(g: &[T], y: Option<&[T]>, out: &mut [T], row_sums: Option<&mut [T]>, l: usize) {
    crate::simd::vectorized(
        #[inline(always)]
        || {
            if let Some(y) = y {
                for ((o, &g), &y) in out.iter_mut().zip(g).zip(y) {
                    *o = if y > T::default() { g } else { T::default() };
                }
            }
            let rows = if y.is_some() { &*out } else { g };
            if let Some(sums) = row_sums {
                for (s, row) in sums.iter_mut().zip(rows.chunks(l)) {
                    *s = *s + sum(row);
                }
            }
        },
    )
}

/// The sum of `row` in 16 lanes (which vectorize, where one running sum would not).
#[inline(always)]
fn sum<T: Elem>(row: &[T]) -> T {
    let mut lanes = [T::default(); 16];
    let chunks = row.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(T::default(), |s, &v| s + v);
    for c in chunks {
        for (a, &v) in lanes.iter_mut().zip(c) {
            *a = *a + v;
        }
    }
    lanes.iter().fold(rest, |s, &v| s + v)
}

pub(crate) fn conv2d_backward(
    x: Operand<'_>,
    w: Operand<'_>,
    g: Operand<'_>,
    win: &Window2d,
    request: ConvGradRequest<'_, CpuStorage>,
) -> Result<Option<ConvGrads<CpuStorage>>> {
    let Some(op) = operands(x.1, w.1, win) else { return Ok(None) };
    let args = (x, w, g);
    Ok(match (x.0, w.0, g.0) {
        (CpuStorage::F32(_), CpuStorage::F32(_), CpuStorage::F32(_)) => {
            backward::<f32>(args, &op, request)?.map(|c| c.map(CpuStorage::F32))
        }
        (CpuStorage::F64(_), CpuStorage::F64(_), CpuStorage::F64(_)) => {
            backward::<f64>(args, &op, request)?.map(|c| c.map(CpuStorage::F64))
        }
        _ => None,
    })
}

/// The gradients as plain buffers, before they are wrapped as storage.
struct Grads<T> {
    dx: Option<Buffer<T>>,
    dw: Buffer<T>,
    db: Option<Buffer<T>>,
}

impl<T> Grads<T> {
    fn map(self, f: impl Fn(Buffer<T>) -> CpuStorage) -> ConvGrads<CpuStorage> {
        ConvGrads { dx: self.dx.map(&f), dw: f(self.dw), db: self.db.map(&f) }
    }
}

/// `g' = where(y > 0, g, 0)` when fused with ReLU (else `g`), `db = sum g'`,
/// `dw = sum_i g'[i] @ im2col(x[i])^T` and, if asked, `dx[i] = col2im(w^T @ g'[i])`; `dw` and
/// `dx` by Winograd where it applies.
fn backward<T: Real>(
    (x, w, grad): (Operand<'_>, Operand<'_>, Operand<'_>),
    op: &Operands,
    request: ConvGradRequest<'_, CpuStorage>,
) -> Result<Option<Grads<T>>> {
    let (g, o) = (&op.g, op.o);
    let (ck, l, plane) = (op.ck, g.oh * g.ow, g.c * g.h * g.w);
    let (Some(x), Some(w), Some(grad)) =
        (slice::<T>(x, g.n * plane), slice::<T>(w, o * ck), slice::<T>(grad, g.n * o * l))
    else {
        return Ok(None);
    };
    let relu_output = match request.relu_output {
        Some(y) => match slice::<T>(y, g.n * o * l) {
            Some(y) => Some(y),
            None => return Ok(None),
        },
        None => None,
    };
    let (need_dx, need_db) = (request.dx, request.db);
    let groups = GROUPS.min(g.n);
    // Group k takes images bounds[k]..bounds[k + 1].
    let bounds: SmallVec<[usize; GROUPS + 1]> = (0..=groups).map(|k| k * g.n / groups).collect();
    // Each group's partial sums: its weight gradient, then its bias gradient.
    let part = o * ck + o;
    let mut partial = alloc_for_overwrite(groups * part, T::default())?;
    let partials: Pieces<&mut [T]> = partial.chunks_mut(part).map(Mutex::new).collect();
    // The input gradient by Winograd where it applies (every element written), else by a GEMM
    // and col2im (which sums into zeros).
    let dx_kernels = match need_dx.then(|| winograd::Plan::input_gradient(g.c, o, (g.h, g.w), &g.win)).flatten() {
        Some(plan) => Some(winograd::Kernels::new(plan, |ic, oc| taps(w, (oc * ck + ic * 9, true)))?),
        None => None,
    };
    // The weight gradient likewise, in the transformed domain of the forward pass.
    let dw_plan = winograd::Plan::forward(g.c, o, (g.h, g.w), &g.win);
    let mut dx = match (need_dx, &dx_kernels) {
        (false, _) => None,
        (true, Some(_)) => Some(alloc_for_overwrite(g.n * plane, T::default())?),
        (true, None) => Some(alloc(g.n * plane, T::default())?),
    };
    let dx_groups: Pieces<&mut [T]> = match dx.as_mut() {
        Some(dx) => {
            let mut rest: &mut [T] = dx;
            let mut pieces = Pieces::new();
            for k in 0..groups {
                let (piece, tail) = rest.split_at_mut((bounds[k + 1] - bounds[k]) * plane);
                pieces.push(Mutex::new(piece));
                rest = tail;
            }
            pieces
        }
        None => Pieces::new(),
    };
    // grad[i] is `o x l` row-major; im2col(x[i])^T reads the columns transposed; w^T likewise.
    let gv = View { offset: 0, rs: l, cs: 1 };
    let (cols_t, w_t) = (View { offset: 0, rs: 1, cs: l }, View { offset: 0, rs: 1, cs: ck });
    // Each task's temporaries, one set per thread in the pool (see `strided::reserve`).
    let cols_len = if dw_plan.is_some() && (dx_kernels.is_some() || !need_dx) { 0 } else { ck * l };
    let dw_i_len = if dw_plan.is_some() { 0 } else { o * ck };
    let masked_len = if relu_output.is_some() { o * l } else { 0 };
    let threads = rayon::current_num_threads().min(groups);
    for len in [cols_len, dw_i_len, masked_len] {
        crate::strided::reserve::<T>(len, threads)?;
    }
    if let Some(k) = &dx_kernels {
        k.reserve_scratch(threads)?;
    }
    if let Some(plan) = &dw_plan {
        winograd::WeightGrad::<T>::reserve(plan, threads)?;
    }
    run_tasks(groups, rayon::current_num_threads(), |k| {
        let mut sums = partials[k].lock().unwrap_or_else(|e| e.into_inner());
        let (sum, db_sum) = sums.split_at_mut(o * ck);
        db_sum.fill(T::default());
        let mut dx_k = dx_groups.get(k).map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut dw_wino = dw_plan.map(winograd::WeightGrad::new).transpose()?;
        let mut scratch = dx_kernels.as_ref().map(|k| k.scratch()).transpose()?;
        // im2col's columns and one image's weight gradient, unless Winograd takes their place.
        let mut cols = alloc_for_overwrite(cols_len, T::default())?;
        let mut dw_i = alloc_for_overwrite(dw_i_len, T::default())?;
        let mut masked = alloc_for_overwrite(masked_len, T::default())?;
        let mut result = Ok(());
        for (n, i) in (bounds[k]..bounds[k + 1]).enumerate() {
            let image = i * o * l..(i + 1) * o * l;
            let y_i = relu_output.map(|y| &y[image.clone()]);
            mask_and_sum(&grad[image.clone()], y_i, &mut masked, need_db.then_some(&mut *db_sum), l);
            let g_i = if y_i.is_some() { &masked[..] } else { &grad[image] };
            let x_i = &x[i * plane..(i + 1) * plane];
            if let Some(dw_wino) = &mut dw_wino {
                result = dw_wino.add_image(x_i, g_i);
                if result.is_err() {
                    break;
                }
            } else {
                im2col_image(x_i, &mut cols, g);
                let dst: &mut [T] = if n == 0 { &mut *sum } else { &mut dw_i };
                result = gemm_same((g_i, gv), (&cols[..], cols_t), &[(0, 0)], dst, (o, l, ck), false);
                if result.is_err() {
                    break;
                }
                if n > 0 {
                    for (s, d) in sum.iter_mut().zip(&dw_i) {
                        *s = *s + *d;
                    }
                }
            }
            if let (Some(dx_k), Some(kernels), Some(scratch)) = (dx_k.as_mut(), &dx_kernels, &mut scratch) {
                let dx_i = &mut dx_k[n * plane..(n + 1) * plane];
                result = kernels.image(g_i, dx_i, (Bias::None, false), scratch);
                if result.is_err() {
                    break;
                }
            } else if let Some(dx_k) = dx_k.as_mut() {
                // The column gradient reuses `cols`: this image's columns are no longer needed.
                result = gemm_same((w, w_t), (g_i, gv), &[(0, 0)], &mut cols, (ck, o, l), false);
                if result.is_err() {
                    break;
                }
                let dx_i = &mut dx_k[n * plane..(n + 1) * plane];
                let kk = g.win.kernel.0 * g.win.kernel.1;
                for (c, dst) in dx_i.chunks_mut(g.h * g.w).enumerate() {
                    col2im_plane(&cols[c * kk * l..(c + 1) * kk * l], dst, g);
                }
            }
        }
        T::pool().give(cols);
        T::pool().give(dw_i);
        T::pool().give(masked);
        if let Some(scratch) = scratch {
            scratch.give();
        }
        match dw_wino {
            Some(dw_wino) if result.is_ok() => dw_wino.finish(sum),
            Some(dw_wino) => dw_wino.give(),
            None => {}
        }
        result
    })?;
    drop((partials, dx_groups));
    if let Some(kernels) = dx_kernels {
        kernels.give();
    }
    // The groups' sums, added in group order.
    let mut dw = alloc_for_overwrite(o * ck, T::default())?;
    let mut db = if need_db { Some(alloc_for_overwrite(o, T::default())?) } else { None };
    for (n, p) in partial.chunks(part).enumerate() {
        let (p_dw, p_db) = p.split_at(o * ck);
        for (sum, p) in std::iter::once((&mut dw[..], p_dw)).chain(db.as_deref_mut().map(|db| (db, p_db))) {
            match n {
                0 => sum.copy_from_slice(p),
                _ => sum.iter_mut().zip(p).for_each(|(d, p)| *d = *d + *p),
            }
        }
    }
    T::pool().give(partial);
    Ok(Some(Grads { dx, dw, db }))
}
