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
            DType::F16 => f16_from_f64(v).to_f64(),
            DType::BF16 => bf16_from_f64(v).to_f64(),
            DType::I64 => v as i64 as f64,
            DType::U32 => v as u32 as f64,
            DType::U8 => v as u8 as f64,
        }
    }
}

/// `v` rounded to f32 with round-to-odd: exact values stay, others become whichever of their two
/// f32 neighbours has an odd last bit. Rounding that to a format at least two bits narrower (f16,
/// bf16) gives the correctly rounded result of `v` itself — what a GPU's `__double2half` and
/// `__double2bfloat16` compute. (`half`'s own `from_f64` rounds twice or truncates first, so it
/// is off by one unit in about one case in several thousand.)
fn f32_round_to_odd(v: f64) -> f32 {
    let f = v as f32;
    if !f.is_finite() || f as f64 == v || f.to_bits() & 1 == 1 {
        return f;
    }
    if f == 0.0 {
        // The smallest subnormal with `v`'s sign.
        return f32::from_bits(if v < 0.0 { 0x8000_0001 } else { 1 });
    }
    // `f` is the even neighbour; the odd one is the next f32 toward `v`.
    let magnitude_grows = ((f as f64) < v) == (f > 0.0);
    f32::from_bits(if magnitude_grows { f.to_bits() + 1 } else { f.to_bits() - 1 })
}

/// `v` correctly rounded (to nearest, ties to even) to f16.
pub fn f16_from_f64(v: f64) -> f16 {
    f16::from_f32(f32_round_to_odd(v))
}

/// `v` correctly rounded (to nearest, ties to even) to bf16.
pub fn bf16_from_f64(v: f64) -> bf16 {
    bf16::from_f32(f32_round_to_odd(v))
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
with_dtype!(f16, F16, f16_from_f64, |x: f16| x.to_f64());
with_dtype!(bf16, BF16, bf16_from_f64, |x: bf16| x.to_f64());
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

#[cfg(test)]
mod rounding_tests {
    use super::*;

    /// The nearest of the dtype's values around `v` (ties to the even bit pattern), found by
    /// comparing distances in f64 (exact here: the candidates are within a few units of `v`).
    fn nearest<T: Copy>(v: f64, guess: T, bits: fn(T) -> u16, from: fn(u16) -> T, to: fn(T) -> f64) -> T {
        let b = bits(guess);
        let candidates = [from(b.wrapping_sub(1)), guess, from(b.wrapping_add(1))];
        let mut best = guess;
        for c in candidates {
            let (dc, db) = ((to(c) - v).abs(), (to(best) - v).abs());
            if dc < db || (dc == db && bits(c) & 1 == 0 && bits(best) & 1 == 1) {
                best = c;
            }
        }
        best
    }

    #[test]
    fn half_conversions_from_f64_round_once_to_nearest_even() {
        // Just above a bf16 halfway point only in the low bits of an f32: half's bf16::from_f64
        // drops them and rounds down.
        assert_eq!(bf16_from_f64(f32::from_bits(0x3F80_8001) as f64).to_bits(), 0x3F81);
        // Exact ties go to even; just above a tie goes up, even when f32 would make it a tie.
        assert_eq!(bf16_from_f64(1.0 + 2f64.powi(-8)).to_bits(), 0x3F80);
        assert_eq!(bf16_from_f64(1.0 + 2f64.powi(-8) + 2f64.powi(-40)).to_bits(), 0x3F81);
        assert_eq!(f16_from_f64(1.0 + 2f64.powi(-11) + 2f64.powi(-40)).to_bits(), 0x3C01);
        assert_eq!(f16_from_f64(-(1.0 + 2f64.powi(-11) + 2f64.powi(-40))).to_bits(), 0xBC01);
        assert!(f16_from_f64(f64::NAN).is_nan() && bf16_from_f64(f64::NAN).is_nan());
        assert_eq!(f16_from_f64(1e10), f16::INFINITY);
        assert_eq!(bf16_from_f64(-1e300), bf16::NEG_INFINITY);
        assert_eq!(f16_from_f64(1e-300).to_bits(), 0);
        // A sweep of values with bits below f32's precision, against the nearest neighbour.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        // Fewer under Miri, which runs this about a thousand times slower.
        for _ in 0..if cfg!(miri) { 200 } else { 200_000 } {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits((x & 0x800f_ffff_ffff_ffff) | ((1010 + (x >> 52) % 25) << 52));
            let b = bf16_from_f64(v);
            assert_eq!(b, nearest(v, b, bf16::to_bits, bf16::from_bits, bf16::to_f64), "bf16 of {v:e}");
            let h = f16_from_f64(v);
            assert_eq!(h, nearest(v, h, f16::to_bits, f16::from_bits, f16::to_f64), "f16 of {v:e}");
        }
    }
}
