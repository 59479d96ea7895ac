//! Batched matrix multiplication: a cache-blocked loop, parallel over rows.
//!
//! Operands are packed into contiguous row-major matrices first (a transposed view is packed,
//! not refused); f16 and bf16 are widened to f32 in the packing. The SIMD micro-kernel GEMM
//! replaces `gemm_rows` in the performance work; the packing seam stays.

use crate::storage::CpuStorage;
use crate::strided::{alloc, map1};
use half::{bf16, f16};
use kiln_tensor::backend::unsupported;
use kiln_tensor::{Error, Layout, Result, Shape};
use rayon::prelude::*;

/// Depth of one block of the shared dimension: one block of `b` rows stays in L2.
const KC: usize = 256;
/// Below this many multiply-adds the product runs on the calling thread.
const PAR_FLOPS: usize = 1 << 18;

trait Elem: Copy + Default + Send + Sync + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> {}
impl Elem for f32 {}
impl Elem for f64 {}

/// `c[m, n] = a[m, k] @ b[k, n]`, all contiguous row-major.
fn gemm<T: Elem>(a: &[T], b: &[T], c: &mut [T], m: usize, k: usize, n: usize) {
    if n == 0 {
        return;
    }
    let rows = |(i, row): (usize, &mut [T])| {
        for p0 in (0..k).step_by(KC) {
            for p in p0..(p0 + KC).min(k) {
                let aip = a[i * k + p];
                let brow = &b[p * n..(p + 1) * n];
                for (cj, &bj) in row.iter_mut().zip(brow) {
                    *cj = *cj + aip * bj;
                }
            }
        }
    };
    if m * n * k >= PAR_FLOPS && m > 1 {
        c.par_chunks_mut(n).enumerate().for_each(rows);
    } else {
        c.chunks_mut(n).enumerate().for_each(rows);
    }
}

/// The matrices of a batched layout `[batch..., r, c]`: the layout of each matrix, in order.
fn matrices(l: &Layout) -> Vec<Layout> {
    let d = l.dims();
    let rank = d.len();
    let batch = Layout::new(Shape::new(&d[..rank - 2]), l.strides()[..rank - 2].to_vec(), l.offset());
    let mat_shape = Shape::new(&d[rank - 2..]);
    let mat_strides = l.strides()[rank - 2..].to_vec();
    batch.offsets().map(|off| Layout::new(mat_shape.clone(), mat_strides.clone(), off)).collect()
}

fn batched<S: Copy + Send + Sync, T: Elem>(
    a: &[S],
    la: &Layout,
    b: &[S],
    lb: &Layout,
    widen: impl Fn(S) -> T + Send + Sync + Copy,
) -> Result<Vec<T>> {
    let (da, db) = (la.dims(), lb.dims());
    let (m, k, n) = (da[da.len() - 2], da[da.len() - 1], db[db.len() - 1]);
    let (ma, mb) = (matrices(la), matrices(lb));
    let mut out = alloc(ma.len() * m * n, T::default())?;
    if m * n == 0 {
        return Ok(out);
    }
    for ((a_l, b_l), c) in ma.iter().zip(&mb).zip(out.chunks_mut(m * n)) {
        let pa = map1(a, a_l, widen)?;
        let pb = map1(b, b_l, widen)?;
        gemm(&pa, &pb, c, m, k, n);
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
