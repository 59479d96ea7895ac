//! `CpuStorage`: one `Vec` per dtype, and the macros that do the dtype match once per op.

use crate::buffer::Buffer;
use half::{bf16, f16};
use kiln_tensor::{DType, Error, HostData, Layout, Result};

/// Host memory holding the elements of one tensor storage (see [`Buffer`] for where it lies).
#[derive(Clone, Debug)]
#[allow(missing_docs)]
pub enum CpuStorage {
    F32(Buffer<f32>),
    F64(Buffer<f64>),
    F16(Buffer<f16>),
    BF16(Buffer<bf16>),
    I64(Buffer<i64>),
    U32(Buffer<u32>),
    U8(Buffer<u8>),
}

/// `match` over every dtype, binding the vector to `$v` and wrapping `$body` (a `Vec` of the
/// same element type) back into a `CpuStorage`.
macro_rules! map_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => CpuStorage::F32($body),
            CpuStorage::F64($v) => CpuStorage::F64($body),
            CpuStorage::F16($v) => CpuStorage::F16($body),
            CpuStorage::BF16($v) => CpuStorage::BF16($body),
            CpuStorage::I64($v) => CpuStorage::I64($body),
            CpuStorage::U32($v) => CpuStorage::U32($body),
            CpuStorage::U8($v) => CpuStorage::U8($body),
        }
    };
}
pub(crate) use map_storage;

/// `match` over every dtype, binding the vector to `$v`, returning `$body` as is.
macro_rules! with_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            CpuStorage::F32($v) => $body,
            CpuStorage::F64($v) => $body,
            CpuStorage::F16($v) => $body,
            CpuStorage::BF16($v) => $body,
            CpuStorage::I64($v) => $body,
            CpuStorage::U32($v) => $body,
            CpuStorage::U8($v) => $body,
        }
    };
}
pub(crate) use with_storage;

/// A new storage of `dtype` from `$body`, in which `$t` names the element type: the one match
/// from a run-time dtype to a Rust type.
macro_rules! storage_of {
    ($dtype:expr, $t:ident => $body:expr) => {
        match $dtype {
            kiln_tensor::DType::F32 => {
                type $t = f32;
                CpuStorage::F32($body)
            }
            kiln_tensor::DType::F64 => {
                type $t = f64;
                CpuStorage::F64($body)
            }
            kiln_tensor::DType::F16 => {
                type $t = half::f16;
                CpuStorage::F16($body)
            }
            kiln_tensor::DType::BF16 => {
                type $t = half::bf16;
                CpuStorage::BF16($body)
            }
            kiln_tensor::DType::I64 => {
                type $t = i64;
                CpuStorage::I64($body)
            }
            kiln_tensor::DType::U32 => {
                type $t = u32;
                CpuStorage::U32($body)
            }
            kiln_tensor::DType::U8 => {
                type $t = u8;
                CpuStorage::U8($body)
            }
        }
    };
}
pub(crate) use storage_of;

impl CpuStorage {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            CpuStorage::F32(_) => DType::F32,
            CpuStorage::F64(_) => DType::F64,
            CpuStorage::F16(_) => DType::F16,
            CpuStorage::BF16(_) => DType::BF16,
            CpuStorage::I64(_) => DType::I64,
            CpuStorage::U32(_) => DType::U32,
            CpuStorage::U8(_) => DType::U8,
        }
    }

    /// Number of elements held.
    pub fn len(&self) -> usize {
        with_storage!(self, v => v.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Errors unless every element `layout` addresses is inside this storage: kernels index
    /// without further checks, so a bad layout must never reach them.
    pub(crate) fn check(&self, op: &'static str, layout: &Layout) -> Result<()> {
        if layout.storage_extent() > self.len() {
            return Err(Error::Backend {
                backend: "cpu".into(),
                msg: format!(
                    "{op}: layout {:?} (strides {:?}, offset {}) reaches past the {} elements of its storage",
                    layout.dims(),
                    layout.strides(),
                    layout.offset(),
                    self.len()
                ),
            });
        }
        Ok(())
    }

    /// A copy of host data, in a pooled buffer when one of that length is free (a data loader
    /// uploads same-sized batches every step).
    pub(crate) fn from_host(data: &HostData) -> Result<CpuStorage> {
        fn copy<T: crate::pool::Pooled + Default>(v: &[T]) -> Result<Buffer<T>> {
            let mut out = crate::strided::alloc_for_overwrite(v.len(), T::default())?;
            out.copy_from_slice(v);
            Ok(out)
        }
        Ok(match data {
            HostData::F32(v) => CpuStorage::F32(copy(v)?),
            HostData::F64(v) => CpuStorage::F64(copy(v)?),
            HostData::F16(v) => CpuStorage::F16(copy(v)?),
            HostData::BF16(v) => CpuStorage::BF16(copy(v)?),
            HostData::I64(v) => CpuStorage::I64(copy(v)?),
            HostData::U32(v) => CpuStorage::U32(copy(v)?),
            HostData::U8(v) => CpuStorage::U8(copy(v)?),
        })
    }

    /// The elements as a `Vec`: a copy for a buffer kiln allocated, which then goes back to the
    /// pool.
    pub(crate) fn into_host(self) -> HostData {
        match self {
            CpuStorage::F32(v) => HostData::F32(v.into_vec()),
            CpuStorage::F64(v) => HostData::F64(v.into_vec()),
            CpuStorage::F16(v) => HostData::F16(v.into_vec()),
            CpuStorage::BF16(v) => HostData::BF16(v.into_vec()),
            CpuStorage::I64(v) => HostData::I64(v.into_vec()),
            CpuStorage::U32(v) => HostData::U32(v.into_vec()),
            CpuStorage::U8(v) => HostData::U8(v.into_vec()),
        }
    }
}
