//! gather, index_select and scatter_add. A kernel cannot return an error, so each launch gets a
//! one-word flag that an out-of-range index sets (to the first offending position + 1); the host
//! reads it after the launch and reports kiln's `IndexOutOfRange` with the offending value, as
//! the CPU backend does. That read waits for the stream: the price of never faulting.
#![allow(unsafe_code)]

use crate::backend::CudaBackend;
use crate::kernels::indexing_kernel;
use crate::storage::{check_fits, CudaStorage, Strided};
use cudarc::driver::CudaSlice;
use kiln_tensor::backend::unsupported;
use kiln_tensor::{Backend, DType, Error, Layout, Result};

fn index_dtype(op: &'static str, index: &CudaStorage) -> Result<()> {
    match index.dtype {
        DType::I64 | DType::U32 => Ok(()),
        other => Err(unsupported(op, other, "i64, u32 (indices)")),
    }
}

/// `index` may be used along `dim` of `indexed`: equal ranks, and no other dim larger.
fn index_fits(op: &'static str, indexed: &Layout, index: &Layout, dim: usize) -> Result<()> {
    let (a, b) = (indexed.dims(), index.dims());
    if dim >= a.len() || a.len() != b.len() || a.iter().zip(b).enumerate().any(|(d, (x, y))| d != dim && y > x) {
        return Err(Error::shape_mismatch(op, indexed.shape(), index.shape()));
    }
    Ok(())
}

impl CudaBackend {
    pub(crate) fn bad_flag(&self, op: &'static str) -> Result<CudaSlice<u64>> {
        self.stream.clone_htod(&[u64::MAX]).map_err(|e| self.driver_error(op, e))
    }

    /// The first offending position the kernel flagged, if any.
    pub(crate) fn flagged(&self, op: &'static str, bad: &CudaSlice<u64>) -> Result<Option<usize>> {
        let v = self.stream.clone_dtoh(bad).map_err(|e| self.driver_error(op, e))?;
        self.sync(op)?;
        Ok(v.first().copied().filter(|&b| b != u64::MAX).map(|b| b as usize - 1))
    }

    /// The error for index element `pos` of `index` (viewed through `il`).
    pub(crate) fn out_of_range(
        &self,
        op: &'static str,
        index: &CudaStorage,
        il: &Layout,
        pos: usize,
        of: &Layout,
        dim: usize,
    ) -> Error {
        let value = match self.download(index, il) {
            Ok(ids) => ids.to_f64_vec().get(pos).copied().unwrap_or(f64::NAN) as i64,
            Err(e) => return e,
        };
        Error::IndexOutOfRange { op, index: value, size: of.dims()[dim], dim, shape: of.shape().clone() }
    }
}

pub(crate) fn gather(
    dev: &CudaBackend,
    (s, sl): (&CudaStorage, &Layout),
    (index, il): (&CudaStorage, &Layout),
    dim: usize,
) -> Result<CudaStorage> {
    const OP: &str = "gather";
    index_fits(OP, sl, il, dim)?;
    index_dtype(OP, index)?;
    check_fits(OP, s, sl)?;
    check_fits(OP, index, il)?;
    let n = il.elem_count();
    let mut out = dev.alloc(OP, s.dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let bad = dev.bad_flag(OP)?;
    let (vs, vi, d, n64) = (Strided::exact(OP, sl)?, Strided::exact(OP, il)?, dim as u32, n as u64);
    // Every index is range-checked in the kernel before it is used.
    let mut launch = dev.launch(OP, &indexing_kernel(OP, s.dtype, index.dtype))?;
    launch.buf(&s.buf).value(&vs).buf(&index.buf).value(&vi).value(&d);
    launch.buf_mut(&mut out.buf).value(&n64).buf(&bad).run(dev.grid(n))?;
    match dev.flagged(OP, &bad)? {
        Some(pos) => Err(dev.out_of_range(OP, index, il, pos, sl, dim)),
        None => Ok(out),
    }
}

pub(crate) fn index_select(
    dev: &CudaBackend,
    (s, sl): (&CudaStorage, &Layout),
    (ids, il): (&CudaStorage, &Layout),
    dim: usize,
) -> Result<CudaStorage> {
    const OP: &str = "index_select";
    if dim >= sl.dims().len() || il.dims().len() != 1 {
        return Err(Error::shape_mismatch(OP, sl.shape(), il.shape()));
    }
    index_dtype(OP, ids)?;
    check_fits(OP, s, sl)?;
    check_fits(OP, ids, il)?;
    let mut dims = sl.dims().to_vec();
    dims[dim] = il.dims()[0];
    let lo = Layout::contiguous(dims.as_slice());
    let n = lo.elem_count();
    let mut out = dev.alloc(OP, s.dtype, n)?;
    if n == 0 {
        return Ok(out);
    }
    let bad = dev.bad_flag(OP)?;
    let (vs, vi, vo) = (Strided::exact(OP, sl)?, Strided::exact(OP, il)?, Strided::exact(OP, &lo)?);
    let (d, n64) = (dim as u32, n as u64);
    let mut launch = dev.launch(OP, &indexing_kernel(OP, s.dtype, ids.dtype))?;
    launch.buf(&s.buf).value(&vs).buf(&ids.buf).value(&vi).value(&vo).value(&d);
    launch.buf_mut(&mut out.buf).value(&n64).buf(&bad).run(dev.grid(n))?;
    match dev.flagged(OP, &bad)? {
        Some(pos) => {
            // Output element `pos` read id number (pos / inner) % ids.len().
            let inner: usize = dims[dim + 1..].iter().product();
            Err(dev.out_of_range(OP, ids, il, (pos / inner.max(1)) % dims[dim], sl, dim))
        }
        None => Ok(out),
    }
}

pub(crate) fn scatter_add(
    dev: &CudaBackend,
    (dst, dl): (&mut CudaStorage, &Layout),
    (index, il): (&CudaStorage, &Layout),
    (src, sl): (&CudaStorage, &Layout),
    dim: usize,
) -> Result<()> {
    const OP: &str = "scatter_add";
    index_fits(OP, dl, il, dim)?;
    if il.dims() != sl.dims() {
        return Err(Error::shape_mismatch(OP, il.shape(), sl.shape()));
    }
    if src.dtype != dst.dtype {
        return Err(Error::DTypeMismatch { op: OP, lhs: dst.dtype, rhs: src.dtype, shapes: String::new() });
    }
    if dst.dtype == DType::U8 {
        // CUDA has no atomic add on bytes.
        return Err(unsupported(OP, DType::U8, "f32, f64, f16, bf16, i64, u32"));
    }
    index_dtype(OP, index)?;
    check_fits(OP, dst, dl)?;
    check_fits(OP, index, il)?;
    check_fits(OP, src, sl)?;
    let n = il.elem_count();
    if n == 0 {
        return Ok(());
    }
    let bad = dev.bad_flag(OP)?;
    let (vd, vi, vs) = (Strided::exact(OP, dl)?, Strided::exact(OP, il)?, Strided::exact(OP, sl)?);
    let (d, n64) = (dim as u32, n as u64);
    let mut launch = dev.launch(OP, &indexing_kernel(OP, dst.dtype, index.dtype))?;
    launch.buf_mut(&mut dst.buf).value(&vd).buf(&index.buf).value(&vi).buf(&src.buf).value(&vs);
    launch.value(&d).value(&n64).buf(&bad).run(dev.grid(n))?;
    match dev.flagged(OP, &bad)? {
        Some(pos) => Err(dev.out_of_range(OP, index, il, pos, dl, dim)),
        None => Ok(()),
    }
}
