//! Device storage and what a launch passes to a kernel.
//!
//! Storage is one byte buffer plus its dtype: the kernel's name carries the element type, so the
//! Rust side never matches on dtypes to launch (each op's dtype dispatch is the `format!` of a
//! kernel name). Layouts travel by value as [`Strided`], the struct `kernels/common.cuh`
//! declares, so a launch needs no host-to-device copy of dims and strides.
#![allow(unsafe_code)]

use cudarc::driver::{CudaSlice, DeviceRepr};
use kiln_tensor::{DType, Error, HostData, Layout, Result};

/// The most dims a kernel's [`Strided`] holds (`KILN_MAX_RANK` in `common.cuh`).
pub const MAX_RANK: usize = 8;

/// A flat buffer of `len` elements of `dtype` on one CUDA device.
#[derive(Debug)]
pub struct CudaStorage {
    pub(crate) buf: CudaSlice<u8>,
    pub(crate) dtype: DType,
    pub(crate) len: usize,
}

impl Drop for CudaStorage {
    fn drop(&mut self) {
        // cudarc frees on the buffer's stream through the calling thread's current context: a
        // tensor dropped on a thread that never ran an op (a channel, a loader worker) must make
        // the device's context current first, or the free fails and poisons the next call.
        let _ = self.buf.context().bind_to_thread();
    }
}

impl CudaStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `struct Strided` of `common.cuh`: a tensor view as a kernel argument. Its field order and
/// padding match the C struct's (`repr(C)`: u32, 4 bytes of padding, then u64s).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Strided {
    rank: u32,
    offset: u64,
    dims: [u64; MAX_RANK],
    strides: [u64; MAX_RANK],
}

// SAFETY: plain old data with the layout of the C struct the kernels declare.
unsafe impl DeviceRepr for Strided {}

impl Strided {
    /// The view `layout` with its dims intact (for kernels that index one dim: gather,
    /// index_select, scatter_add).
    pub(crate) fn exact(op: &'static str, layout: &Layout) -> Result<Strided> {
        Self::from_parts(op, layout.dims(), layout.strides(), layout.offset())
    }

    /// The view `layout` with size-1 dims dropped and mergeable neighbours merged: the same
    /// element order in fewer dims, so element-wise kernels do less index arithmetic and any
    /// rank that collapses to eight dims or fewer works.
    pub(crate) fn collapsed(op: &'static str, layout: &Layout) -> Result<Strided> {
        let mut dims: Vec<usize> = Vec::new();
        let mut strides: Vec<usize> = Vec::new();
        for (&d, &s) in layout.dims().iter().zip(layout.strides()) {
            if d == 1 {
                continue;
            }
            match (dims.last_mut(), strides.last_mut()) {
                (Some(pd), Some(ps)) if *ps == s * d => {
                    *pd *= d;
                    *ps = s;
                }
                _ => {
                    dims.push(d);
                    strides.push(s);
                }
            }
        }
        Self::from_parts(op, &dims, &strides, layout.offset())
    }

    fn from_parts(op: &'static str, dims: &[usize], strides: &[usize], offset: usize) -> Result<Strided> {
        if dims.len() > MAX_RANK {
            return Err(Error::invalid(
                op,
                format!("the CUDA kernels take views of at most {MAX_RANK} dims; this one has dims {dims:?}"),
            ));
        }
        let mut s = Strided { rank: dims.len() as u32, offset: offset as u64, ..Strided::default() };
        for (i, (&d, &st)) in dims.iter().zip(strides).enumerate() {
            s.dims[i] = d as u64;
            s.strides[i] = st as u64;
        }
        Ok(s)
    }
}

/// One scalar kernel argument of any dtype: its little-endian bytes, zero-padded to 8. The driver
/// copies as many bytes as the kernel's parameter has, so one type serves every element type.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scalar([u8; 8]);

impl Scalar {
    /// `value` rounded (or, for integers, truncated and saturated) to `dtype`, as `fill` does.
    pub(crate) fn new(dtype: DType, value: f64) -> Scalar {
        let host = HostData::from_f64_slice(dtype, &[value]);
        let mut bytes = [0u8; 8];
        bytes[..dtype.size_in_bytes()].copy_from_slice(host.as_bytes());
        Scalar(bytes)
    }
}

/// Host elements of `dtype` from their raw bytes (as downloaded).
pub(crate) fn host_from_bytes(dtype: DType, bytes: &[u8]) -> HostData {
    fn v<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
        let mut out = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
        bytemuck::cast_slice_mut::<T, u8>(&mut out).copy_from_slice(bytes);
        out
    }
    match dtype {
        DType::F32 => HostData::F32(v(bytes)),
        DType::F64 => HostData::F64(v(bytes)),
        DType::F16 => HostData::F16(v(bytes)),
        DType::BF16 => HostData::BF16(v(bytes)),
        DType::I64 => HostData::I64(v(bytes)),
        DType::U32 => HostData::U32(v(bytes)),
        DType::U8 => HostData::U8(v(bytes)),
    }
}

/// Checks that a view stays inside its storage (kiln never builds one that does not; a backend
/// that trusted it blindly would read out of bounds on the device).
pub(crate) fn check_fits(op: &'static str, s: &CudaStorage, layout: &Layout) -> Result<()> {
    if layout.elem_count() > 0 && layout.storage_extent() > s.len {
        return Err(Error::invalid(
            op,
            format!("view {layout:?} reaches past a {} storage of {} elements", s.dtype, s.len),
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn strided_matches_the_c_struct() {
        // rank (4) + padding (4) + offset (8) + 8 dims + 8 strides.
        assert_eq!(std::mem::size_of::<Strided>(), 144);
        assert_eq!(std::mem::align_of::<Strided>(), 8);
    }

    #[test]
    fn collapsing_keeps_the_element_order() {
        // A contiguous [2, 3, 4] is one run of 24.
        let s = Strided::collapsed("t", &Layout::contiguous([2, 3, 4])).unwrap();
        assert_eq!((s.rank, s.dims[0], s.strides[0]), (1, 24, 1));
        // Its transpose of the last two dims keeps three dims; a broadcast dim stays.
        let t = Layout::contiguous([2, 3, 4]).permute("t", &[0, 2, 1]).unwrap();
        let s = Strided::collapsed("t", &t).unwrap();
        assert_eq!(&s.dims[..3], &[2, 4, 3]);
        assert_eq!(&s.strides[..3], &[12, 1, 4]);
        let b = Layout::new([5, 1, 3].into(), vec![0, 7, 1], 2);
        let s = Strided::collapsed("t", &b).unwrap();
        assert_eq!((s.rank, s.offset), (2, 2));
        assert_eq!(&s.dims[..2], &[5, 3]);
        assert_eq!(&s.strides[..2], &[0, 1]);
        // Nine dims that merge are fine; nine that do not are an error, not a fault.
        let nine = Layout::contiguous([2; 9]);
        assert_eq!(Strided::collapsed("t", &nine).unwrap().rank, 1);
        let strides: Vec<usize> = (0..9).map(|i| 1 << (2 * (8 - i))).collect();
        let bad = Layout::new([2; 9].into(), strides, 0);
        assert!(Strided::collapsed("t", &bad).unwrap_err().to_string().contains("at most 8 dims"));
    }

    #[test]
    fn scalars_carry_the_dtype_bytes() {
        assert_eq!(Scalar::new(DType::F32, 1.0).0, [0, 0, 0x80, 0x3f, 0, 0, 0, 0]);
        assert_eq!(Scalar::new(DType::U8, 300.0).0[0], 255);
        assert_eq!(Scalar::new(DType::BF16, 1.0).0[..2], [0x80, 0x3f]);
    }
}
