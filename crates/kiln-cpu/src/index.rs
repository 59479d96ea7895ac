//! gather, scatter_add and index_select.

use crate::elementwise::copy_strided;
use crate::storage::{storage_of, CpuStorage};
use crate::strided::alloc_for_overwrite;
use kiln_tensor::backend::unsupported;
use kiln_tensor::{DType, Error, Layout, Result, Shape};

/// Reads an index tensor (i64 or u32) as i64 values in logical order.
fn indices(op: &'static str, s: &CpuStorage, l: &Layout) -> Result<Vec<i64>> {
    s.check(op, l)?;
    match s {
        CpuStorage::I64(v) => Ok(l.offsets().map(|o| v[o]).collect()),
        CpuStorage::U32(v) => Ok(l.offsets().map(|o| v[o] as i64).collect()),
        other => Err(unsupported(op, other.dtype(), "i64, u32 (indices)")),
    }
}

fn check_range(op: &'static str, ix: i64, size: usize, dim: usize, shape: &[usize]) -> Result<usize> {
    if ix < 0 || ix as usize >= size {
        return Err(Error::IndexOutOfRange { op, index: ix, size, dim, shape: Shape::new(shape) });
    }
    Ok(ix as usize)
}

/// The offsets in `target` (viewed through `tl`) of the index tensor's positions with the index
/// itself left out: `base + index * stride_along_dim` is the element an index selects.
fn base_offsets(tl: &Layout, index_shape: &Shape, dim: usize) -> (Layout, usize) {
    let mut strides = tl.strides().to_vec();
    let along = std::mem::replace(&mut strides[dim], 0);
    (Layout::new(index_shape.clone(), strides, tl.offset()), along)
}

/// Checks every index against `size` before any element is touched.
fn check_all(op: &'static str, ids: &[i64], size: usize, dim: usize, shape: &[usize]) -> Result<()> {
    match ids.iter().find(|&&ix| ix < 0 || ix as usize >= size) {
        Some(&bad) => check_range(op, bad, size, dim, shape).map(|_| ()),
        None => Ok(()),
    }
}

pub(crate) fn gather(src: &CpuStorage, sl: &Layout, index: &CpuStorage, il: &Layout, dim: usize) -> Result<CpuStorage> {
    src.check("gather", sl)?;
    if let Some(out) = gather_rows(src, sl, index, il, dim)? {
        return Ok(out);
    }
    let ids = indices("gather", index, il)?;
    check_all("gather", &ids, sl.dims()[dim], dim, sl.dims())?;
    let (base, along) = base_offsets(sl, il.shape(), dim);
    Ok(
        crate::storage::map_storage!(src, v => crate::strided::collect(ids.len(), ids.iter().zip(base.offsets()).map(|(&ix, b)| v[b + ix as usize * along]))?),
    )
}

/// For `gather` / `scatter_add` along the last dim, with contiguous i64 indices whose leading
/// dims match `target`'s: the checked indices, and the lengths of a target row and of an index
/// row. `None` for every other case (the general offset path handles it).
fn last_dim_rows<'a>(
    op: &'static str,
    target: &Layout,
    index: &'a CpuStorage,
    il: &Layout,
    dim: usize,
) -> Result<Option<(&'a [i64], usize, usize)>> {
    let (Some((i0, i1)), CpuStorage::I64(iv)) = (il.contiguous_range(), index) else { return Ok(None) };
    let td = target.dims();
    if dim + 1 != td.len() || td[..dim] != il.dims()[..dim] || il.elem_count() == 0 {
        return Ok(None);
    }
    let ids = &iv[i0..i1];
    check_all(op, ids, td[dim], dim, td)?;
    Ok(Some((ids, td[dim], il.dims()[dim])))
}

/// `gather` along the last dim of contiguous tensors with i64 indices (max pooling, the
/// cross-entropy pick): row slices, no offset arithmetic. `None` for any other case.
fn gather_rows(
    src: &CpuStorage,
    sl: &Layout,
    index: &CpuStorage,
    il: &Layout,
    dim: usize,
) -> Result<Option<CpuStorage>> {
    let (Some((s0, s1)), Some((ids, ns, ni))) = (sl.contiguous_range(), last_dim_rows("gather", sl, index, il, dim)?)
    else {
        return Ok(None);
    };
    macro_rules! rows {
        ($v:expr) => {{
            let v = &$v[s0..s1];
            // Pooled: a fresh large buffer would page-fault every 4 KiB.
            let mut out = crate::strided::alloc_for_overwrite(ids.len(), Default::default())?;
            for (r, (row_ids, out_row)) in ids.chunks(ni).zip(out.chunks_mut(ni)).enumerate() {
                let row = &v[r * ns..(r + 1) * ns];
                for (o, &ix) in out_row.iter_mut().zip(row_ids) {
                    *o = row[ix as usize];
                }
            }
            out
        }};
    }
    Ok(Some(crate::storage::map_storage!(src, v => rows!(v))))
}

pub(crate) fn scatter_add(
    dst: &mut CpuStorage,
    dl: &Layout,
    index: &CpuStorage,
    il: &Layout,
    src: &CpuStorage,
    sl: &Layout,
    dim: usize,
) -> Result<()> {
    dst.check("scatter_add", dl)?;
    src.check("scatter_add", sl)?;
    if scatter_add_rows(dst, dl, index, il, src, sl, dim, false)? {
        return Ok(());
    }
    let ids = indices("scatter_add", index, il)?;
    check_all("scatter_add", &ids, dl.dims()[dim], dim, dl.dims())?;
    let (base, along) = base_offsets(dl, il.shape(), dim);
    let pairs = ids.iter().zip(base.offsets()).map(|(&ix, b)| b + ix as usize * along);
    macro_rules! add {
        ($($v:ident),*) => {
            match (dst, src) {
                $((CpuStorage::$v(d), CpuStorage::$v(s)) => {
                    for (o, so) in pairs.zip(sl.offsets()) {
                        d[o] = add_elem(d[o], s[so]);
                    }
                })*
                (d, s) => return Err(Error::DTypeMismatch { op: "scatter_add", lhs: d.dtype(), rhs: s.dtype(), shapes: String::new() }),
            }
        };
    }
    add!(F32, F64, F16, BF16, I64, U32, U8);
    Ok(())
}

/// [`scatter_add`] into a new zero storage of `dl`'s shape. Along the last dim (max pooling's
/// backward) each task zeros a destination row right before adding into it, so the result is
/// written once, not filled first and read back (9.4 MB for the MNIST CNN's pooling).
pub(crate) fn scatter_add_into_zeros(
    dl: &Layout,
    dtype: DType,
    index: &CpuStorage,
    il: &Layout,
    src: &CpuStorage,
    sl: &Layout,
    dim: usize,
) -> Result<CpuStorage> {
    src.check("scatter_add", sl)?;
    let mut dst = storage_of!(dtype, T => alloc_for_overwrite(dl.elem_count(), T::default())?);
    if scatter_add_rows(&mut dst, dl, index, il, src, sl, dim, true)? {
        return Ok(dst);
    }
    // Not the row case: every element zero first, then the general path.
    dst = crate::elementwise::fill(dl.elem_count(), dtype, 0.0)?;
    scatter_add(&mut dst, dl, index, il, src, sl, dim)?;
    Ok(dst)
}

/// `scatter_add` along the last dim of contiguous tensors with i64 indices (the backward of max
/// pooling's gather): row slices, rows in parallel (each destination row is summed by one task,
/// in index order), each row zeroed first when `zero_rows`. `false`, with nothing written, for
/// any other case.
#[allow(clippy::too_many_arguments)]
fn scatter_add_rows(
    dst: &mut CpuStorage,
    dl: &Layout,
    index: &CpuStorage,
    il: &Layout,
    src: &CpuStorage,
    sl: &Layout,
    dim: usize,
    zero_rows: bool,
) -> Result<bool> {
    let (Some((d0, d1)), Some((s0, s1)), true) = (dl.contiguous_range(), sl.contiguous_range(), il.dims() == sl.dims())
    else {
        return Ok(false);
    };
    let Some((ids, nd, ni)) = last_dim_rows("scatter_add", dl, index, il, dim)? else { return Ok(false) };
    // About 32K index entries per task.
    let rows_per_task = (1 << 15) / ni.max(1) + 1;
    macro_rules! rows {
        ($($v:ident),*) => {
            match (dst, src) {
                $((CpuStorage::$v(d), CpuStorage::$v(s)) => {
                    let s = &s[s0..s1];
                    crate::parallel::for_each_chunk_mut(&mut d[d0..d1], rows_per_task * nd, |t, rows| {
                        for (r, row) in rows.chunks_mut(nd).enumerate() {
                            if zero_rows {
                                row.fill(Default::default());
                            }
                            let at = (t * rows_per_task + r) * ni;
                            for (&ix, &x) in ids[at..at + ni].iter().zip(&s[at..at + ni]) {
                                row[ix as usize] = add_elem(row[ix as usize], x);
                            }
                        }
                    });
                })*
                (d, s) => return Err(Error::DTypeMismatch { op: "scatter_add", lhs: d.dtype(), rhs: s.dtype(), shapes: String::new() }),
            }
        };
    }
    rows!(F32, F64, F16, BF16, I64, U32, U8);
    Ok(true)
}

/// Addition as `scatter_add` does it: floats add (half types through f32), integers wrap.
trait AddWrap: Copy {
    fn add_wrap(self, o: Self) -> Self;
}
macro_rules! add_wrap {
    (float $($t:ty),*) => {$( impl AddWrap for $t { fn add_wrap(self, o: Self) -> Self { self + o } } )*};
    (half $($t:ty),*) => {$( impl AddWrap for $t { fn add_wrap(self, o: Self) -> Self { <$t>::from_f32(self.to_f32() + o.to_f32()) } } )*};
    (int $($t:ty),*) => {$( impl AddWrap for $t { fn add_wrap(self, o: Self) -> Self { self.wrapping_add(o) } } )*};
}
add_wrap!(float f32, f64);
add_wrap!(half half::f16, half::bf16);
add_wrap!(int i64, u32, u8);

fn add_elem<T: AddWrap>(a: T, b: T) -> T {
    a.add_wrap(b)
}

pub(crate) fn index_select(
    src: &CpuStorage,
    sl: &Layout,
    ids: &CpuStorage,
    il: &Layout,
    dim: usize,
) -> Result<CpuStorage> {
    src.check("index_select", sl)?;
    let ids = indices("index_select", ids, il)?;
    let size = sl.dims()[dim];
    let mut shape = sl.dims().to_vec();
    shape[dim] = ids.len();
    let out_l = Layout::contiguous(shape.clone());
    let mut out = crate::elementwise::fill(out_l.elem_count(), src.dtype(), 0.0)?;
    for (k, &ix) in ids.iter().enumerate() {
        let ix = check_range("index_select", ix, size, dim, sl.dims())?;
        let from = sl.narrow("index_select", dim, ix, 1, 1)?;
        let to = out_l.narrow("index_select", dim, k, 1, 1)?;
        copy_strided(src, &from, &mut out, &to)?;
    }
    Ok(out)
}
