//! Element types and host-side buffers.

use half::{bf16, f16};
use std::fmt;

/// The element type of a tensor. Casting between types is always explicit ([`crate::Tensor::to_dtype`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    /// 32-bit IEEE float, the default.
    F32,
    /// 64-bit IEEE float, used for reference results and gradient checks.
    F64,
    /// 16-bit IEEE half precision.
    F16,
    /// 16-bit brain float.
    BF16,
    /// 64-bit signed integer (indices, labels).
    I64,
    /// 32-bit unsigned integer (indices).
    U32,
    /// 8-bit unsigned integer (raw images, boolean masks).
    U8,
}

impl DType {
    /// Every dtype, in a fixed order.
    pub const ALL: [DType; 7] = [DType::F32, DType::F64, DType::F16, DType::BF16, DType::I64, DType::U32, DType::U8];
    /// The floating-point dtypes.
    pub const FLOATS: [DType; 4] = [DType::F32, DType::F64, DType::F16, DType::BF16];

    /// Short lowercase name, as printed in errors and `Display` (`f32`, `bf16`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::U32 => "u32",
            DType::U8 => "u8",
        }
    }

    /// Size of one element in bytes.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for f32, f64, f16 and bf16.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// True for the integer dtypes (i64, u32, u8).
    pub fn is_int(self) -> bool {
        !self.is_float()
    }

    /// Rounds `v` to the nearest value representable in this dtype (saturating for integers),
    /// returned as f64. This is what storing `v` into a tensor of this dtype does.
    pub fn round_f64(self, v: f64) -> f64 {
        match self {
            DType::F64 => v,
            DType::F32 => v as f32 as f64,
            DType::F16 => f16::from_f64(v).to_f64(),
            DType::BF16 => bf16::from_f64(v).to_f64(),
            DType::I64 => v as i64 as f64,
            DType::U32 => v as u32 as f64,
            DType::U8 => v as u8 as f64,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        DType::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| {
            crate::Error::Msg(format!("unknown dtype '{s}' (expected one of f32, f64, f16, bf16, i64, u32, u8)"))
        })
    }
}

/// A Rust element type that maps to a [`DType`]. Implemented for `f32`, `f64`, `f16`, `bf16`,
/// `i64`, `u32` and `u8`; it is how typed data enters and leaves a tensor.
pub trait WithDType: Copy + Send + Sync + PartialEq + fmt::Debug + 'static + bytemuck::Pod {
    /// The dtype of this Rust type.
    const DTYPE: DType;
    /// Converts from f64 (rounding or saturating).
    fn from_f64(v: f64) -> Self;
    /// Converts to f64 (exact for every type but i64 beyond 2^53).
    fn to_f64(self) -> f64;
    /// Wraps a vector into a [`HostData`].
    fn into_host(v: Vec<Self>) -> HostData;
    /// Borrows the vector of this type out of a [`HostData`], if it holds this type.
    fn from_host(h: &HostData) -> Option<&[Self]>;
}

macro_rules! with_dtype {
    ($ty:ty, $variant:ident, $from:expr, $to:expr) => {
        impl WithDType for $ty {
            const DTYPE: DType = DType::$variant;
            fn from_f64(v: f64) -> Self {
                $from(v)
            }
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn into_host(v: Vec<Self>) -> HostData {
                HostData::$variant(v)
            }
            fn from_host(h: &HostData) -> Option<&[Self]> {
                match h {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
with_dtype!(f32, F32, |v| v as f32, |x: f32| x as f64);
with_dtype!(f64, F64, |v| v, |x| x);
with_dtype!(f16, F16, f16::from_f64, |x: f16| x.to_f64());
with_dtype!(bf16, BF16, bf16::from_f64, |x: bf16| x.to_f64());
with_dtype!(i64, I64, |v| v as i64, |x| x as f64);
with_dtype!(u32, U32, |v| v as u32, |x| x as f64);
with_dtype!(u8, U8, |v| v as u8, |x| x as f64);

/// Contiguous typed data on the host: what [`crate::Backend::upload`] takes and
/// [`crate::Backend::download`] returns.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum HostData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U8(Vec<u8>),
}

/// Runs `$body` with `$v` bound to the vector inside a [`HostData`], whatever its type.
#[macro_export]
macro_rules! map_host {
    ($h:expr, $v:ident => $body:expr) => {
        match $h {
            $crate::HostData::F32($v) => $body,
            $crate::HostData::F64($v) => $body,
            $crate::HostData::F16($v) => $body,
            $crate::HostData::BF16($v) => $body,
            $crate::HostData::I64($v) => $body,
            $crate::HostData::U32($v) => $body,
            $crate::HostData::U8($v) => $body,
        }
    };
}

impl HostData {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::F64(_) => DType::F64,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::I64(_) => DType::I64,
            HostData::U32(_) => DType::U32,
            HostData::U8(_) => DType::U8,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        map_host!(self, v => v.len())
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements converted to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        map_host!(self, v => v.iter().map(|x| x.to_f64()).collect())
    }

    /// Builds data of `dtype` from f64 values, rounding each to the dtype.
    pub fn from_f64_slice(dtype: DType, values: &[f64]) -> HostData {
        fn conv<T: WithDType>(values: &[f64]) -> HostData {
            T::into_host(values.iter().map(|&v| T::from_f64(v)).collect())
        }
        match dtype {
            DType::F32 => conv::<f32>(values),
            DType::F64 => conv::<f64>(values),
            DType::F16 => conv::<f16>(values),
            DType::BF16 => conv::<bf16>(values),
            DType::I64 => conv::<i64>(values),
            DType::U32 => conv::<u32>(values),
            DType::U8 => conv::<u8>(values),
        }
    }

    /// The raw little-endian bytes of the elements.
    pub fn as_bytes(&self) -> &[u8] {
        map_host!(self, v => bytemuck::cast_slice(v))
    }
}
