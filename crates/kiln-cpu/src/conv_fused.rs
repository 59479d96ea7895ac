//! A whole convolution per image (`Backend::conv2d` and `conv2d_backward`), for contiguous f32/f64.
//!
//! im2col + one batched GEMM writes the columns of the whole batch (42 MB for the MNIST CNN's
//! second layer at batch 64) and reads them back from memory. Here one task takes an image: its
//! columns (663 KB there) go into a scratch buffer that stays in the core's L2 while the GEMM on
//! the same thread packs them. The backward pass rebuilds each image's columns instead of keeping
//! the batch's; for the input gradient, each image's column gradient is summed into its planes
//! right away.
//!
//! Determinism: the weight gradient is a sum over images. The images are cut into a fixed
//! number of groups ([`GROUPS`], whatever the thread count); each group sums its images in order
//! and the groups' sums are added in order.

use crate::conv::{col2im_plane, dims4, im2col_image, Geometry};
use crate::gemm::{gemm_same, Elem, View};
use crate::parallel::run_tasks;
use crate::storage::CpuStorage;
use crate::strided::{alloc, alloc_for_overwrite};
use kiln_tensor::{Layout, Result, Window2d};
use std::sync::Mutex;

/// Image groups of the weight gradient's sum (fixed, so results do not depend on threads).
const GROUPS: usize = 8;

/// Checked operands: the geometry, the output channels and the contiguous slices' ranges.
struct Operands {
    g: Geometry,
    o: usize,
    x: (usize, usize),
    w: (usize, usize),
}

fn operands(x: &Layout, w: &Layout, win: &Window2d) -> Option<Operands> {
    let g = Geometry::new(dims4(x)?, win)?;
    let (o, ck) = match w.dims() {
        &[o, ck] => (o, ck),
        _ => return None,
    };
    if ck != g.c * win.kernel.0 * win.kernel.1 || g.n == 0 || o == 0 || g.oh * g.ow == 0 || ck == 0 {
        return None;
    }
    Some(Operands { g, o, x: x.contiguous_range()?, w: w.contiguous_range()? })
}

pub(crate) fn conv2d(
    (x, xl): (&CpuStorage, &Layout),
    (w, wl): (&CpuStorage, &Layout),
    win: &Window2d,
) -> Result<Option<CpuStorage>> {
    let Some(op) = operands(xl, wl, win) else { return Ok(None) };
    let ((x0, x1), (w0, w1)) = (op.x, op.w);
    Ok(match (x, w) {
        (CpuStorage::F32(x), CpuStorage::F32(w)) => Some(CpuStorage::F32(forward(&x[x0..x1], &w[w0..w1], &op)?)),
        (CpuStorage::F64(x), CpuStorage::F64(w)) => Some(CpuStorage::F64(forward(&x[x0..x1], &w[w0..w1], &op)?)),
        _ => None,
    })
}

/// `y[i] = w @ im2col(x[i])`, one task per image.
fn forward<T: Elem>(x: &[T], w: &[T], op: &Operands) -> Result<Vec<T>> {
    let (g, o) = (&op.g, op.o);
    let (ck, l, plane) = (w.len() / o, g.oh * g.ow, g.c * g.h * g.w);
    let mut y = alloc_for_overwrite(g.n * o * l, T::default())?;
    let images: Vec<Mutex<&mut [T]>> = y.chunks_mut(o * l).map(Mutex::new).collect();
    run_tasks(g.n, rayon::current_num_threads(), |i| {
        let mut y_i = images[i].lock().unwrap_or_else(|e| e.into_inner());
        let mut cols = alloc_for_overwrite(ck * l, T::default())?;
        im2col_image(&x[i * plane..(i + 1) * plane], &mut cols, g);
        let (wv, cv) = (View { offset: 0, rs: ck, cs: 1 }, View { offset: 0, rs: l, cs: 1 });
        let done = gemm_same((w, wv), (&cols[..], cv), &[(0, 0)], &mut y_i, (o, ck, l), false);
        T::pool().give(cols);
        done
    })?;
    Ok(y)
}

pub(crate) fn conv2d_backward(
    (x, xl): (&CpuStorage, &Layout),
    (w, wl): (&CpuStorage, &Layout),
    (g, gl): (&CpuStorage, &Layout),
    win: &Window2d,
    need_dx: bool,
) -> Result<Option<kiln_tensor::backend::ConvGrads<CpuStorage>>> {
    let Some(op) = operands(xl, wl, win) else { return Ok(None) };
    let Some((g0, g1)) = gl.contiguous_range() else { return Ok(None) };
    if g1 - g0 != op.g.n * op.o * op.g.oh * op.g.ow {
        return Ok(None);
    }
    let ((x0, x1), (w0, w1)) = (op.x, op.w);
    Ok(match (x, w, g) {
        (CpuStorage::F32(x), CpuStorage::F32(w), CpuStorage::F32(g)) => {
            let (dx, dw) = backward(&x[x0..x1], &w[w0..w1], &g[g0..g1], &op, need_dx)?;
            Some((dx.map(CpuStorage::F32), CpuStorage::F32(dw)))
        }
        (CpuStorage::F64(x), CpuStorage::F64(w), CpuStorage::F64(g)) => {
            let (dx, dw) = backward(&x[x0..x1], &w[w0..w1], &g[g0..g1], &op, need_dx)?;
            Some((dx.map(CpuStorage::F64), CpuStorage::F64(dw)))
        }
        _ => None,
    })
}

/// `dw = sum_i grad[i] @ im2col(x[i])^T` and, if asked, `dx[i] = col2im(w^T @ grad[i])`.
fn backward<T: Elem>(x: &[T], w: &[T], grad: &[T], op: &Operands, need_dx: bool) -> Result<(Option<Vec<T>>, Vec<T>)> {
    let (g, o) = (&op.g, op.o);
    let (ck, l, plane) = (w.len() / o, g.oh * g.ow, g.c * g.h * g.w);
    let groups = GROUPS.min(g.n);
    // Group k takes images bounds[k]..bounds[k + 1].
    let bounds: Vec<usize> = (0..=groups).map(|k| k * g.n / groups).collect();
    let mut partial = alloc_for_overwrite(groups * o * ck, T::default())?;
    let partials: Vec<Mutex<&mut [T]>> = partial.chunks_mut(o * ck).map(Mutex::new).collect();
    let mut dx = if need_dx { Some(alloc(g.n * plane, T::default())?) } else { None };
    let dx_groups: Vec<Mutex<&mut [T]>> = match dx.as_mut() {
        Some(dx) => {
            let mut rest: &mut [T] = dx;
            let mut pieces = Vec::with_capacity(groups);
            for k in 0..groups {
                let (piece, tail) = rest.split_at_mut((bounds[k + 1] - bounds[k]) * plane);
                pieces.push(Mutex::new(piece));
                rest = tail;
            }
            pieces
        }
        None => Vec::new(),
    };
    // grad[i] is `o x l` row-major; im2col(x[i])^T reads the columns transposed; w^T likewise.
    let gv = View { offset: 0, rs: l, cs: 1 };
    let (cols_t, w_t) = (View { offset: 0, rs: 1, cs: l }, View { offset: 0, rs: 1, cs: ck });
    run_tasks(groups, rayon::current_num_threads(), |k| {
        let mut sum = partials[k].lock().unwrap_or_else(|e| e.into_inner());
        let mut dx_k = dx_groups.get(k).map(|m| m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut cols = alloc_for_overwrite(ck * l, T::default())?;
        let mut dw_i = alloc_for_overwrite(o * ck, T::default())?;
        let mut result = Ok(());
        for (n, i) in (bounds[k]..bounds[k + 1]).enumerate() {
            let g_i = &grad[i * o * l..(i + 1) * o * l];
            im2col_image(&x[i * plane..(i + 1) * plane], &mut cols, g);
            let dst: &mut [T] = if n == 0 { &mut sum } else { &mut dw_i };
            result = gemm_same((g_i, gv), (&cols[..], cols_t), &[(0, 0)], dst, (o, l, ck), false);
            if result.is_err() {
                break;
            }
            if n > 0 {
                for (s, d) in sum.iter_mut().zip(&dw_i) {
                    *s = *s + *d;
                }
            }
            if let Some(dx_k) = dx_k.as_mut() {
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
        result
    })?;
    drop((partials, dx_groups));
    // The groups' sums, added in group order.
    let mut dw = alloc_for_overwrite(o * ck, T::default())?;
    dw.copy_from_slice(&partial[..o * ck]);
    for part in partial.chunks(o * ck).skip(1) {
        for (d, p) in dw.iter_mut().zip(part) {
            *d = *d + *p;
        }
    }
    Ok((dx, dw))
}
