//! Unary and binary element-wise kernels, `where_cond`, casts, fills and strided copies.

use crate::buffer::Buffer;
use crate::storage::{map_storage, storage_of, with_storage, CpuStorage};
use crate::strided::{alloc, map1, map2, map3};
use half::{bf16, f16};
use kiln_tensor::backend::{unsupported, Distribution};
use kiln_tensor::{BinaryOp, DType, Error, Layout, MapFn, Result, UnaryOp, WithDType, ZipFn};

struct Unary<'a, S> {
    src: &'a [S],
    layout: &'a Layout,
}

impl MapFn<f32> for Unary<'_, f32> {
    type Out = Result<Buffer<f32>>;
    fn call<F: Fn(f32) -> f32 + Send + Sync + Copy>(self, f: F) -> Result<Buffer<f32>> {
        map1(self.src, self.layout, f)
    }
}
impl MapFn<f64> for Unary<'_, f64> {
    type Out = Result<Buffer<f64>>;
    fn call<F: Fn(f64) -> f64 + Send + Sync + Copy>(self, f: F) -> Result<Buffer<f64>> {
        map1(self.src, self.layout, f)
    }
}
impl MapFn<f32> for Unary<'_, f16> {
    type Out = Result<Buffer<f16>>;
    fn call<F: Fn(f32) -> f32 + Send + Sync + Copy>(self, f: F) -> Result<Buffer<f16>> {
        map1(self.src, self.layout, move |x: f16| f16::from_f32(f(x.to_f32())))
    }
}
impl MapFn<f32> for Unary<'_, bf16> {
    type Out = Result<Buffer<bf16>>;
    fn call<F: Fn(f32) -> f32 + Send + Sync + Copy>(self, f: F) -> Result<Buffer<bf16>> {
        map1(self.src, self.layout, move |x: bf16| bf16::from_f32(f(x.to_f32())))
    }
}

pub(crate) fn unary(op: UnaryOp, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    s.check(op.name(), l)?;
    Ok(match s {
        CpuStorage::F32(v) if op == UnaryOp::Exp => CpuStorage::F32(map1(v, l, crate::math::exp_f32)?),
        CpuStorage::F32(v) => CpuStorage::F32(op.map(Unary { src: v, layout: l })?),
        CpuStorage::F64(v) => CpuStorage::F64(op.map(Unary { src: v, layout: l })?),
        CpuStorage::F16(v) => CpuStorage::F16(op.map(Unary { src: v, layout: l })?),
        CpuStorage::BF16(v) => CpuStorage::BF16(op.map(Unary { src: v, layout: l })?),
        other => return Err(unsupported(op.name(), other.dtype(), "f32, f64, f16, bf16")),
    })
}

struct Zip<'a, S> {
    a: &'a [S],
    la: &'a Layout,
    b: &'a [S],
    lb: &'a Layout,
}

macro_rules! zip_impl {
    ($s:ty, $t:ty, $to:expr, $from:expr) => {
        impl ZipFn<$t, $t> for Zip<'_, $s> {
            type Out = Result<Buffer<$s>>;
            fn call<F: Fn($t, $t) -> $t + Send + Sync + Copy>(self, f: F) -> Result<Buffer<$s>> {
                map2(self.a, self.la, self.b, self.lb, move |x: $s, y: $s| $from(f($to(x), $to(y))))
            }
        }
    };
}
zip_impl!(f32, f32, |x| x, |x| x);
zip_impl!(f64, f64, |x| x, |x| x);
zip_impl!(f16, f32, f16::to_f32, f16::from_f32);
zip_impl!(bf16, f32, bf16::to_f32, bf16::from_f32);

impl<S: Copy + PartialOrd + Send + Sync> ZipFn<S, u8> for Zip<'_, S> {
    type Out = Result<Buffer<u8>>;
    fn call<F: Fn(S, S) -> u8 + Send + Sync + Copy>(self, f: F) -> Result<Buffer<u8>> {
        map2(self.a, self.la, self.b, self.lb, f)
    }
}

/// Integer arithmetic: wrapping, with division by zero an error.
trait Int: WithDType + Ord + Default + crate::pool::Pooled {
    fn wadd(self, o: Self) -> Self;
    fn wsub(self, o: Self) -> Self;
    fn wmul(self, o: Self) -> Self;
    fn wdiv(self, o: Self) -> Self;
    fn is_zero(self) -> bool;
}
macro_rules! int_impl {
    ($($t:ty),*) => {$(
        impl Int for $t {
            fn wadd(self, o: Self) -> Self { self.wrapping_add(o) }
            fn wsub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn wmul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn wdiv(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn is_zero(self) -> bool { self == 0 }
        }
    )*};
}
int_impl!(i64, u32, u8);

fn int_binary<T: Int>(op: BinaryOp, a: &[T], la: &Layout, b: &[T], lb: &Layout) -> Result<Buffer<T>> {
    if op == BinaryOp::Div && lb.offsets().any(|o| b[o].is_zero()) {
        return Err(Error::invalid("div", format!("integer division by zero ({} tensor)", T::DTYPE)));
    }
    match op {
        BinaryOp::Add => map2(a, la, b, lb, T::wadd),
        BinaryOp::Sub => map2(a, la, b, lb, T::wsub),
        BinaryOp::Mul => map2(a, la, b, lb, T::wmul),
        BinaryOp::Div => map2(a, la, b, lb, T::wdiv),
        BinaryOp::Maximum => map2(a, la, b, lb, |x: T, y: T| x.max(y)),
        BinaryOp::Minimum => map2(a, la, b, lb, |x: T, y: T| x.min(y)),
        _ => Err(unsupported(op.name(), T::DTYPE, "f32, f64, f16, bf16")),
    }
}

pub(crate) fn binary(op: BinaryOp, a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
    a.check(op.name(), la)?;
    b.check(op.name(), lb)?;
    if op.is_comparison() {
        let out = match (a, b) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::F64(a), CpuStorage::F64(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::F16(a), CpuStorage::F16(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::BF16(a), CpuStorage::BF16(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::I64(a), CpuStorage::I64(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::U32(a), CpuStorage::U32(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            (CpuStorage::U8(a), CpuStorage::U8(b)) => op.zip_cmp(Zip { a, la, b, lb }),
            _ => return Err(mismatch(op.name(), a, b)),
        };
        return Ok(CpuStorage::U8(out.ok_or_else(|| Error::invalid(op.name(), "not a comparison"))??));
    }
    fn float<V>(op: BinaryOp, o: Option<Result<V>>) -> Result<V> {
        o.ok_or_else(|| Error::invalid(op.name(), "not an arithmetic op"))?
    }
    Ok(match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(float(op, op.zip_float(Zip { a, la, b, lb }))?),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(float(op, op.zip_float(Zip { a, la, b, lb }))?),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => {
            CpuStorage::F16(float(op, op.zip_float::<f32, _>(Zip { a, la, b, lb }))?)
        }
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            CpuStorage::BF16(float(op, op.zip_float::<f32, _>(Zip { a, la, b, lb }))?)
        }
        (CpuStorage::I64(a), CpuStorage::I64(b)) => CpuStorage::I64(int_binary(op, a, la, b, lb)?),
        (CpuStorage::U32(a), CpuStorage::U32(b)) => CpuStorage::U32(int_binary(op, a, la, b, lb)?),
        (CpuStorage::U8(a), CpuStorage::U8(b)) => CpuStorage::U8(int_binary(op, a, la, b, lb)?),
        _ => return Err(mismatch(op.name(), a, b)),
    })
}

fn mismatch(op: &'static str, a: &CpuStorage, b: &CpuStorage) -> Error {
    Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype(), shapes: String::new() }
}

pub(crate) fn where_cond(
    c: &CpuStorage,
    cl: &Layout,
    t: &CpuStorage,
    tl: &Layout,
    f: &CpuStorage,
    fl: &Layout,
) -> Result<CpuStorage> {
    let CpuStorage::U8(c) = c else {
        return Err(unsupported("where_cond", c.dtype(), "u8 masks"));
    };
    macro_rules! pick {
        ($($v:ident),*) => {
            match (t, f) {
                $((CpuStorage::$v(t), CpuStorage::$v(f)) => {
                    CpuStorage::$v(map3(c, cl, t, tl, f, fl, |m, x, y| if m != 0 { x } else { y })?)
                })*
                _ => return Err(mismatch("where_cond", t, f)),
            }
        };
    }
    for (s, l) in [(t, tl), (f, fl)] {
        s.check("where_cond", l)?;
    }
    if cl.storage_extent() > c.len() {
        return Err(Error::invalid("where_cond", "mask layout reaches past its storage"));
    }
    Ok(pick!(F32, F64, F16, BF16, I64, U32, U8))
}

fn cast_to<T: WithDType, U: WithDType + Default + crate::pool::Pooled>(src: &[T], l: &Layout) -> Result<Buffer<U>> {
    map1(src, l, |x: T| {
        let v = x.to_f64();
        U::from_f64(if v.is_nan() && U::DTYPE.is_int() { 0.0 } else { v })
    })
}

pub(crate) fn cast(s: &CpuStorage, l: &Layout, dtype: DType) -> Result<CpuStorage> {
    s.check("to_dtype", l)?;
    Ok(with_storage!(s, v => storage_of!(dtype, U => cast_to::<_, U>(v, l)?)))
}

pub(crate) fn fill(len: usize, dtype: DType, value: f64) -> Result<CpuStorage> {
    Ok(storage_of!(dtype, T => alloc(len, T::from_f64(value))?))
}

/// `len` elements of kiln's random stream ([`kiln_tensor::random`]), filled in parallel pieces;
/// `random::fill` gives any piece the bits of one sequential pass.
pub(crate) fn random(dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<CpuStorage> {
    const CHUNK: usize = 1 << 14;
    /// `len` elements, each piece filled by `fill(first index, piece)`.
    fn filled<T: crate::pool::Pooled + Default + Send>(
        len: usize,
        fill: impl Fn(u64, &mut [T]) + Sync + Send,
    ) -> Result<Buffer<T>> {
        let mut out = crate::strided::alloc_for_overwrite(len, T::default())?;
        crate::parallel::for_each_chunk_mut(&mut out, CHUNK, |i, chunk| fill((i * CHUNK) as u64, chunk));
        Ok(out)
    }
    if let (Distribution::Uniform { low, high }, DType::F32) = (dist, dtype) {
        // Dropout's masks: Philox 16 blocks at a time in vector registers (same bits).
        return Ok(CpuStorage::F32(filled(len, |start, chunk| {
            crate::simd::vectorized(
                #[inline(always)]
                || kiln_tensor::random::fill_uniform_f32(low, high, seed, start, chunk),
            )
        })?));
    }
    Ok(storage_of!(dtype, T => filled::<T>(len, |start, chunk| kiln_tensor::random::fill(dist, seed, start, chunk))?))
}

/// The logical elements of `l`, contiguous.
pub(crate) fn contiguous(s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
    s.check("contiguous", l)?;
    Ok(map_storage!(s, v => match l.contiguous_range() {
        Some((a, b)) if a == b => Default::default(),
        Some((a, b)) => {
            let mut out = crate::strided::alloc_for_overwrite(b - a, v[a])?;
            out.copy_from_slice(&v[a..b]);
            out
        }
        None => map1(v, l, |x| x)?,
    }))
}

pub(crate) fn copy_strided(src: &CpuStorage, sl: &Layout, dst: &mut CpuStorage, dl: &Layout) -> Result<()> {
    src.check("copy_strided", sl)?;
    dst.check("copy_strided", dl)?;
    if sl.dims() != dl.dims() {
        return Err(Error::invalid(
            "copy_strided",
            format!("source shape {:?} != destination shape {:?}", sl.dims(), dl.dims()),
        ));
    }
    macro_rules! copy {
        ($($v:ident),*) => {
            match (src, dst) {
                $((CpuStorage::$v(s), CpuStorage::$v(d)) => copy_into(s, sl, d, dl)?,)*
                (s, d) => return Err(mismatch("copy_strided", s, d)),
            }
        };
    }
    copy!(F32, F64, F16, BF16, I64, U32, U8);
    Ok(())
}

fn copy_into<T: Copy + Send + Sync + Default>(src: &[T], sl: &Layout, dst: &mut [T], dl: &Layout) -> Result<()> {
    if let Some((a, b)) = dl.contiguous_range() {
        let dst = &mut dst[a..b];
        match sl.contiguous_range() {
            Some((c, d)) => dst.copy_from_slice(&src[c..d]),
            None => crate::strided::map1_into(src, sl, dst, |x| x),
        }
    } else {
        crate::strided::runs([sl, dl], 0, sl.elem_count(), |[so, d_o], [ss, ds], n| {
            for t in 0..n {
                dst[d_o + t * ds] = src[so + t * ss];
            }
        });
    }
    Ok(())
}
