//! Batched matrix multiplication: a packed, register-blocked GEMM (BLIS style), parallel over
//! row panels, with runtime dispatch to AVX-512 / AVX2+FMA code paths.
//!
//! Both operands are packed from their strided layouts (a transposed view costs nothing extra):
//! `A` into panels of `MR` rows, `B` into panels of `NR` columns, `KC` deep. The micro-kernel
//! keeps an `MR x NR` tile of `C` in registers. It is written once in plain Rust; the
//! `#[target_feature]` wrappers let the compiler vectorize the same code for each instruction
//! set, chosen at run time. Every element of `C` is summed by one thread in a fixed order, so
//! results do not depend on the thread count. f16 and bf16 are widened to f32 while packing.

// The target-feature wrappers are `unsafe fn`s: calling them is sound only after checking that
// the CPU has the feature, which `dispatch` does.
#![allow(unsafe_code)]

use crate::storage::CpuStorage;
use crate::strided::alloc;
use half::{bf16, f16};
use kiln_tensor::backend::unsupported;
use kiln_tensor::{Error, Layout, Result, Shape};
use rayon::prelude::*;

/// Rows of a register tile.
const MR: usize = 4;
/// Columns of a register tile.
const NR: usize = 16;
/// Depth of one packed block (the B panel of `KC x NR` stays in L1).
const KC: usize = 256;
/// Below this many multiply-adds a product runs on the calling thread.
const PAR_FLOPS: usize = 1 << 16;

/// Element types the kernel computes in.
trait Elem: Copy + Default + Send + Sync + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {
    fn fma(self, a: Self, b: Self) -> Self;
}
impl Elem for f32 {
    #[inline(always)]
    fn fma(self, a: f32, b: f32) -> f32 {
        a.mul_add(b, self)
    }
}
impl Elem for f64 {
    #[inline(always)]
    fn fma(self, a: f64, b: f64) -> f64 {
        a.mul_add(b, self)
    }
}

/// `acc[MR][NR] += A panel (kc x MR) * B panel (kc x NR)`.
#[inline(always)]
fn tile<T: Elem, const FMA: bool>(kc: usize, a: &[T], b: &[T], acc: &mut [[T; NR]; MR]) {
    for (bp, ap) in b.chunks_exact(NR).zip(a.chunks_exact(MR)).take(kc) {
        // Fixed-size views let the compiler keep the tile in registers without bounds checks.
        let (Ok(bp), Ok(ap)) = (<&[T; NR]>::try_from(bp), <&[T; MR]>::try_from(ap)) else { continue };
        for r in 0..MR {
            let ar = ap[r];
            for c in 0..NR {
                acc[r][c] = if FMA { acc[r][c].fma(ar, bp[c]) } else { acc[r][c] + ar * bp[c] };
            }
        }
    }
}

/// One row panel of C (`MR` rows, all columns) for one `KC` block.
#[inline(always)]
fn row_panel<T: Elem, const FMA: bool>(kc: usize, n: usize, a_panel: &[T], b_packed: &[T], c: &mut [T], rows: usize) {
    for (jb, b_panel) in b_packed.chunks(kc * NR).enumerate() {
        let mut acc = [[T::default(); NR]; MR];
        tile::<T, FMA>(kc, a_panel, b_panel, &mut acc);
        let cols = NR.min(n - jb * NR);
        for (r, acc_row) in acc.iter().enumerate().take(rows) {
            let out = &mut c[r * n + jb * NR..r * n + jb * NR + cols];
            for (o, v) in out.iter_mut().zip(acc_row) {
                *o = *o + *v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn row_panel_avx512<T: Elem>(kc: usize, n: usize, a: &[T], b: &[T], c: &mut [T], rows: usize) {
    row_panel::<T, true>(kc, n, a, b, c, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_panel_avx2<T: Elem>(kc: usize, n: usize, a: &[T], b: &[T], c: &mut [T], rows: usize) {
    row_panel::<T, true>(kc, n, a, b, c, rows)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isa {
    Avx512,
    Avx2,
    Portable,
}

fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("KILN_NO_SIMD").is_none() {
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                    return Isa::Avx2;
                }
            }
        }
        Isa::Portable
    })
}

fn dispatch<T: Elem>(kc: usize, n: usize, a: &[T], b: &[T], c: &mut [T], rows: usize) {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx512 only after detecting avx512f, avx512vl and fma.
        Isa::Avx512 => unsafe { row_panel_avx512(kc, n, a, b, c, rows) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returned Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { row_panel_avx2(kc, n, a, b, c, rows) },
        _ => row_panel::<T, false>(kc, n, a, b, c, rows),
    }
}

/// A strided matrix view: element (i, j) is at `offset + i * rs + j * cs`.
#[derive(Clone, Copy)]
struct View {
    offset: usize,
    rs: usize,
    cs: usize,
}

/// `c[m, n] = A[m, k] @ B[k, n]` (c is contiguous and zeroed).
fn gemm<S: Copy + Send + Sync, T: Elem>(
    a: &[S],
    av: View,
    b: &[S],
    bv: View,
    c: &mut [T],
    (m, k, n): (usize, usize, usize),
    widen: impl Fn(S) -> T + Send + Sync + Copy,
) -> Result<()> {
    if m == 0 || n == 0 || k == 0 {
        return Ok(());
    }
    let n_panels = n.div_ceil(NR);
    let m_panels = m.div_ceil(MR);
    let parallel = m * n * k >= PAR_FLOPS && m_panels > 1;
    let mut b_packed = alloc(n_panels * KC * NR, T::default())?;
    let mut a_packed = alloc(m_panels * KC * MR, T::default())?;
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        // Pack B[p0..p0+kc, :] into column panels, zero-padded to NR.
        let pack_b = |(jb, panel): (usize, &mut [T])| {
            let cols = NR.min(n - jb * NR);
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate().take(kc) {
                let row = bv.offset + (p0 + p) * bv.rs + jb * NR * bv.cs;
                if bv.cs == 1 {
                    for (d, &x) in dst[..cols].iter_mut().zip(&b[row..row + cols]) {
                        *d = widen(x);
                    }
                } else {
                    for (c, d) in dst[..cols].iter_mut().enumerate() {
                        *d = widen(b[row + c * bv.cs]);
                    }
                }
                dst[cols..].fill(T::default());
            }
        };
        let pack_a = |(ib, panel): (usize, &mut [T])| {
            let rows = MR.min(m - ib * MR);
            for r in 0..MR {
                if r >= rows {
                    for p in 0..kc {
                        panel[p * MR + r] = T::default();
                    }
                    continue;
                }
                let start = av.offset + (ib * MR + r) * av.rs + p0 * av.cs;
                if av.cs == 1 {
                    for (p, &x) in a[start..start + kc].iter().enumerate() {
                        panel[p * MR + r] = widen(x);
                    }
                } else {
                    for p in 0..kc {
                        panel[p * MR + r] = widen(a[start + p * av.cs]);
                    }
                }
            }
        };
        let b_now = &mut b_packed[..n_panels * kc * NR];
        let a_now = &mut a_packed[..m_panels * kc * MR];
        if parallel {
            b_now.par_chunks_mut(kc * NR).enumerate().for_each(pack_b);
            a_now.par_chunks_mut(kc * MR).enumerate().for_each(pack_a);
        } else {
            b_now.chunks_mut(kc * NR).enumerate().for_each(pack_b);
            a_now.chunks_mut(kc * MR).enumerate().for_each(pack_a);
        }
        let (a_now, b_now) = (&*a_now, &*b_now);
        let run = |(ib, c_rows): (usize, &mut [T])| {
            let rows = c_rows.len() / n;
            dispatch(kc, n, &a_now[ib * kc * MR..(ib + 1) * kc * MR], b_now, c_rows, rows);
        };
        if parallel {
            c.par_chunks_mut(MR * n).enumerate().for_each(run);
        } else {
            c.chunks_mut(MR * n).enumerate().for_each(run);
        }
    }
    Ok(())
}

/// The offsets of the matrices of a batched layout `[batch..., r, c]`.
fn matrix_offsets(l: &Layout) -> Vec<usize> {
    let d = l.dims();
    let rank = d.len();
    let batch = Layout::new(Shape::new(&d[..rank - 2]), l.strides()[..rank - 2].to_vec(), l.offset());
    batch.offsets().collect()
}

fn batched<S: Copy + Send + Sync, T: Elem>(
    a: &[S],
    la: &Layout,
    b: &[S],
    lb: &Layout,
    widen: impl Fn(S) -> T + Send + Sync + Copy,
) -> Result<Vec<T>> {
    let (da, db) = (la.dims(), lb.dims());
    let r = da.len();
    let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
    let (sa, sb) = (la.strides(), lb.strides());
    let (oa, ob) = (matrix_offsets(la), matrix_offsets(lb));
    let mut out = alloc(oa.len() * m * n, T::default())?;
    if m * n == 0 {
        return Ok(out);
    }
    for ((&a_off, &b_off), c) in oa.iter().zip(&ob).zip(out.chunks_mut(m * n)) {
        let av = View { offset: a_off, rs: sa[r - 2], cs: sa[r - 1] };
        let bv = View { offset: b_off, rs: sb[r - 2], cs: sb[r - 1] };
        gemm(a, av, b, bv, c, (m, k, n), widen)?;
    }
    Ok(out)
}

pub(crate) fn matmul(a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
    a.check("matmul", la)?;
    b.check("matmul", lb)?;
    if la.dims().len() < 2 || la.dims().len() != lb.dims().len() {
        return Err(Error::invalid("matmul", format!("backend got ranks {} and {}", la.dims().len(), lb.dims().len())));
    }
    Ok(match (a, b) {
        (CpuStorage::F32(a), CpuStorage::F32(b)) => CpuStorage::F32(batched(a, la, b, lb, |x| x)?),
        (CpuStorage::F64(a), CpuStorage::F64(b)) => CpuStorage::F64(batched(a, la, b, lb, |x| x)?),
        (CpuStorage::F16(a), CpuStorage::F16(b)) => {
            CpuStorage::F16(batched(a, la, b, lb, f16::to_f32)?.into_iter().map(f16::from_f32).collect())
        }
        (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
            CpuStorage::BF16(batched(a, la, b, lb, bf16::to_f32)?.into_iter().map(bf16::from_f32).collect())
        }
        (a, b) if a.dtype() != b.dtype() => {
            return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype(), shapes: String::new() })
        }
        (a, _) => return Err(unsupported("matmul", a.dtype(), "f32, f64, f16, bf16")),
    })
}
