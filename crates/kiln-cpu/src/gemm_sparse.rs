//! `C = A @ B` when most entries of A are zero: MNIST's pixels in [0, 1] (81 % of them are 0),
//! one-hot rows, masks. The dense kernels multiply every zero; this one skips them.
//!
//! Rows of A go in pairs. Both are scanned 16 lanes at a time, and the columns where either is
//! not zero (NaN included) are compressed, with both rows' values, into a short list on the
//! stack. Then each block of up to 128 output columns is summed in registers (8 vectors per
//! row) over that list: per entry, 8 vector loads of row `p` of B serve 16 multiply-adds. One
//! row at a time, a load per multiply-add, ran at the pace of L2 (24 cycles an entry for 8
//! vectors); the pair's shared list holds 220 entries where the two rows have 285 between them
//! (MNIST), and the loads they save pay for the extra multiply-adds. B must be row-major for
//! this; a transposed B (`x @ w.t()`, every linear layer) is first copied row-major, by each
//! thread into its own GEMM scratch: `k x n` elements against `m x k x n` multiply-adds.
//!
//! Exactness: an entry `a[i, p] = 0` contributes `0 * b[p, j]`, which is a zero whenever
//! `b[p, j]` is finite, and adding a zero to a sum leaves it as it is (its sign aside, and the
//! sums here start from +0, as the dense kernels' do). So the result is the dense product's
//! up to summation order, as long as B is finite: a B holding an infinity or a NaN makes this
//! kernel decline, since `0 * inf` is NaN. Each output is one row's sum in column order,
//! whoever runs it: results do not depend on the number of threads.
//!
//! When it applies: A row-major, at least [`MIN_ROWS`] rows ([`MIN_ROWS_TRANSPOSED`] for a
//! transposed B) and [`MIN_K`] columns, and at most [`MAX_DENSITY`] of the entries of a sample
//! of rows nonzero. Sampling costs a scan of a few rows; a dense A is then left to the dense
//! kernels at that cost only.
//!
//! Only f32 on AVX-512; everything else goes to the dense kernels.

// Much of this module serves x86-64 only; elsewhere it stays compiled but unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
// Intrinsics on raw pointers inside `#[target_feature]` functions: sound after the CPU check in
// `gemm::isa` and the bounds checks in `gemm`.
#![allow(unsafe_code)]

use crate::gemm::{isa, Elem, Isa, Out, View, UNPACKED_PAR_FLOPS};
use kiln_tensor::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};

/// The fewest rows of A worth checking that a row-major B is finite for.
const MIN_ROWS: usize = 32;
/// The fewest rows of A worth copying a transposed B for as well. MNIST's test images through
/// the MLP's first layer, 2 threads: 32 rows took 38 us dense and 47 sparse, 64 rows 72 and
/// 58, 128 rows 171 and 94.
const MIN_ROWS_TRANSPOSED: usize = 64;
/// The shortest rows of A worth scanning.
const MIN_K: usize = 64;
/// The fewest multiply-adds worth sampling A for (a dense 32x128x10 takes 1.7 us; sampling 16
/// of its rows took a tenth of that).
const MIN_WORK: usize = 1 << 18;
/// The largest share of nonzero entries in A's sampled rows at which this kernel runs.
const MAX_DENSITY: f64 = 0.25;
/// Rows of A sampled, evenly spread, to estimate its share of nonzeros.
const SAMPLE_ROWS: usize = 16;
/// Columns of A listed at a time: the list of one segment's entries lives on the stack.
const SEGMENT: usize = 512;
/// Output columns summed in registers at a time: 8 vectors for each of two rows.
const BLOCK: usize = 128;
/// Pairs of rows ahead whose rows of A are fetched into L2 while a pair is summed.
const AHEAD: usize = 2;

/// Whether [`gemm`] may take this product: layouts, sizes and the sampled share of nonzeros in
/// A (`oa` is where its matrix starts). It may still decline if B is not finite.
fn applies((a, av): (&[f32], View), bv: View, oa: usize, (m, k, n): (usize, usize, usize)) -> bool {
    let min_rows = if bv.cs == 1 { MIN_ROWS } else { MIN_ROWS_TRANSPOSED };
    let small = m * k * n < MIN_WORK;
    if isa() != Isa::Avx512 || av.cs != 1 || (bv.cs != 1 && bv.rs != 1) || m < min_rows || k < MIN_K || small {
        return false;
    }
    if oa + (m - 1) * av.rs + k > a.len() {
        return false;
    }
    let rows = m.min(SAMPLE_ROWS);
    let mut nonzero = 0;
    for r in 0..rows {
        let start = oa + (r * m / rows) * av.rs;
        // SAFETY: the row lies inside `a` (checked above); avx512f checked by `isa()`.
        nonzero += unsafe { count_nonzero(a.as_ptr().add(start), k) };
        // A dense A is turned away after its first row: sampling all 16 added 2 % to a dense
        // 32x784x128.
        if r == 0 && nonzero as f64 > 2.0 * MAX_DENSITY * k as f64 {
            return false;
        }
    }
    (nonzero as f64) <= MAX_DENSITY * (rows * k) as f64
}

/// `c = A @ B` for one matrix (A starting at `offsets[0].0`, B at `offsets[0].1`) when
/// [`applies`] said yes: `None` when B is not finite and the caller should run a dense kernel.
pub(crate) fn gemm(
    (a, av): (&[f32], View),
    (b, bv): (&[f32], View),
    offsets: &[(usize, usize)],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    parallel: bool,
) -> Option<Result<()>> {
    let &[(oa, ob)] = offsets else { return None };
    if !applies((a, av), bv, oa, (m, k, n)) {
        return None;
    }
    let b_end = ob + (k - 1) * bv.rs + (n - 1) * bv.cs + 1;
    if b_end > b.len() || c.len() != m * n {
        return Some(Err(Error::invalid("matmul", format!("the sparse kernel cannot take {m}x{k}x{n}"))));
    }
    // SAFETY (for every `unsafe` below): rows i < m of A and rows p < k of B lie inside `a`
    // and `b` (checked above); a part writes only its own rows of C; `applies` checked avx512f.
    if bv.cs == 1 && !unsafe { all_finite(b.as_ptr().add(ob), bv.rs, (k, n)) } {
        return None;
    }
    let threads = if parallel { crate::parallel::threads_for(m * n * k / 4, UNPACKED_PAR_FLOPS) } else { 1 };
    if threads > 1 && bv.cs != 1 {
        // Every thread's scratch grown at once, as the packed GEMM does: which thread runs which
        // part varies, and one growing late would allocate in a steady-state step.
        <f32 as Elem>::grow_all_scratch();
    }
    // One part of the rows per thread, an even number each (rows go in pairs). A transposed B
    // is copied by each part for itself, into its thread's GEMM scratch: a copy one thread
    // made, read from the other core's cache, made 2-thread times swing between 6.6 and 9 ms
    // for 10 batches of MNIST.
    let per_part = m.div_ceil(threads).next_multiple_of(2);
    let not_finite = AtomicBool::new(false);
    let out = Out::new(c, n);
    let done = crate::parallel::run_tasks(m.div_ceil(per_part), threads, |part| {
        let rows = part * per_part..((part + 1) * per_part).min(m);
        let run = |rows_b: *const f32, ldb: usize| {
            for i in rows.clone().step_by(2) {
                let pair = [i, (i + 1).min(rows.end - 1)];
                // Rows past the part are still rows of A (or, past A, never read: a prefetch).
                let ahead = [0, 1].map(|r| a.as_ptr().wrapping_add(oa + (i + 2 * AHEAD + r) * av.rs));
                unsafe {
                    let a_rows = pair.map(|r| a.as_ptr().add(oa + r * av.rs));
                    row_pair(a_rows, ahead, k, (rows_b, ldb), pair.map(|r| out.at(r, 0)), n);
                }
            }
        };
        if bv.cs == 1 {
            run(unsafe { b.as_ptr().add(ob) }, bv.rs);
            return Ok(());
        }
        <f32 as Elem>::with_scratch(0, k * n, |_, bt| {
            unsafe { crate::gemm_dot::transpose_to_rows(b.as_ptr().add(ob), bv.cs, bt, (k, n)) };
            if unsafe { all_finite(bt.as_ptr(), n, (k, n)) } {
                run(bt.as_ptr(), n);
            } else {
                not_finite.store(true, Ordering::Relaxed);
            }
        })
    });
    // A B that is not finite: C is left for the dense kernel to write whole.
    (!not_finite.load(Ordering::Relaxed)).then_some(done)
}

/// The nonzero (or NaN) entries among `len` floats from `a`.
///
/// # Safety
/// `a..a + len` is readable; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn count_nonzero(a: *const f32, len: usize) -> usize {
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    let mut count = 0;
    for p in (0..len).step_by(16) {
        let lanes = crate::simd::lane_mask(len, p);
        // SAFETY: lanes below `len` only.
        let x = unsafe { _mm512_maskz_loadu_ps(lanes, a.add(p)) };
        count += _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, x, zero).count_ones() as usize;
    }
    count
}

/// Whether every one of `k` rows of `n` floats, `ld` apart from `b`, is finite.
///
/// # Safety
/// Those rows are readable; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn all_finite(b: *const f32, ld: usize, (k, n): (usize, usize)) -> bool {
    use std::arch::x86_64::*;
    let exponent = _mm512_set1_epi32(0x7f80_0000);
    let mut bad = 0u16;
    for p in 0..k {
        for j in (0..n).step_by(16) {
            let lanes = crate::simd::lane_mask(n, j);
            // SAFETY: row p, lanes below n: inside the caller's promise.
            let x = unsafe { _mm512_maskz_loadu_epi32(lanes, b.add(p * ld + j) as *const i32) };
            bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(x, exponent), exponent);
        }
    }
    bad == 0
}

/// Rows `c[r][0..n] = a[r][0..k] @ B` for a pair of rows `r` (B's row `p` at `b + p * ld`).
/// The two rows' entries are listed together, wherever either is nonzero, and each vector of
/// B loaded serves both rows: a single row's list took 24 cycles per entry for 8 vectors of
/// work, one load per multiply-add. Where one row is zero and the other is not, that row adds
/// `0 * b`, a zero (B is finite), so each sum is still the sum of its own row's products.
/// The same row twice is one row, computed twice.
///
/// # Safety
/// `a[r]..a[r] + k`, B's `k` rows of `n` and `c[r]..c[r] + n` are valid; the CPU supports
/// avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_pair(
    a: [*const f32; 2],
    ahead: [*const f32; 2],
    k: usize,
    (b, ld): (*const f32, usize),
    c: [*mut f32; 2],
    n: usize,
) {
    use std::arch::x86_64::*;
    // One segment's listed entries: both rows' values and the rows of B they multiply. 16 spare
    // slots: each chunk stores a whole vector, of which the first `count` lanes are kept.
    // Left uninitialised: clearing them took 6 % of a 1000x784x128 product.
    let mut vals = [[std::mem::MaybeUninit::<f32>::uninit(); SEGMENT + 16]; 2];
    let mut offs = [std::mem::MaybeUninit::<u32>::uninit(); SEGMENT + 16];
    let zero = _mm512_setzero_ps();
    let step = _mm512_set1_epi32(16);
    for p0 in (0..k).step_by(SEGMENT) {
        let len = (k - p0).min(SEGMENT);
        let mut count = 0;
        let mut cols = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        for p in (0..len).step_by(16) {
            let lanes = crate::simd::lane_mask(len, p);
            // SAFETY: lanes below `len` of both rows; the stores land below SEGMENT + 16. A
            // compressing store to memory is microcoded on Zen 4: compress in a register.
            unsafe {
                let x = a.map(|row| _mm512_maskz_loadu_ps(lanes, row.add(p0 + p)));
                let keep = _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, x[0], zero)
                    | _mm512_mask_cmp_ps_mask::<_CMP_NEQ_UQ>(lanes, x[1], zero);
                for r in 0..2 {
                    _mm512_storeu_ps(vals[r].as_mut_ptr().add(count) as *mut f32, _mm512_maskz_compress_ps(keep, x[r]));
                }
                _mm512_storeu_si512(offs.as_mut_ptr().add(count) as *mut _, _mm512_maskz_compress_epi32(keep, cols));
                count += keep.count_ones() as usize;
            }
            cols = _mm512_add_epi32(cols, step);
        }
        // SAFETY: the first `count` slots were written above.
        let list = unsafe {
            (
                [0, 1].map(|r| std::slice::from_raw_parts(vals[r].as_ptr() as *const f32, count)),
                std::slice::from_raw_parts(offs.as_ptr() as *const u32, count),
            )
        };
        // SAFETY: segment p0's rows of B, and rows c: inside the caller's promise.
        unsafe {
            let b0 = b.add(p0 * ld);
            for j in (0..n).step_by(BLOCK) {
                let width = (n - j).min(BLOCK);
                // The next rows' lines of A, spread over the first block's multiply-adds: all
                // at once, the prefetches stalled on full fill buffers (10 % of the time).
                let fetch = (ahead, if p0 == 0 && j == 0 { k.div_ceil(16) } else { 0 });
                let block = (b0.add(j), ld, c.map(|row| row.add(j)), width);
                match width.div_ceil(16) {
                    1 => columns::<1>(list, block, p0 == 0, fetch),
                    2 => columns::<2>(list, block, p0 == 0, fetch),
                    3 => columns::<3>(list, block, p0 == 0, fetch),
                    4 => columns::<4>(list, block, p0 == 0, fetch),
                    5 => columns::<5>(list, block, p0 == 0, fetch),
                    6 => columns::<6>(list, block, p0 == 0, fetch),
                    7 => columns::<7>(list, block, p0 == 0, fetch),
                    _ => columns::<8>(list, block, p0 == 0, fetch),
                }
            }
        }
    }
}

/// For both rows r: `c[r][0..width] (+)= sum over the list of vals[r][t] * B[offs[t],
/// 0..width]`, in `V` vectors (the last masked to `width`); stores when `first`, adds into `c`
/// otherwise.
///
/// # Safety
/// As [`row_pair`]'s, for this block of columns; `width <= 16 V`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::needless_range_loop)] // Both rows' accumulators and the mask, by vector.
unsafe fn columns<const V: usize>(
    (vals, offs): ([&[f32]; 2], &[u32]),
    (b, ld, c, width): (*const f32, usize, [*mut f32; 2], usize),
    first: bool,
    (ahead, lines): ([*const f32; 2], usize),
) {
    use std::arch::x86_64::*;
    let last = crate::simd::lane_mask(width, 16 * (V - 1));
    let mut acc = [[_mm512_setzero_ps(); V]; 2];
    let fetch = |t: usize| {
        for row in ahead {
            crate::simd::prefetch::<f32, { crate::simd::TO_L2 }>(row.wrapping_add(16 * t), 1);
        }
    };
    for t in offs.len()..lines {
        fetch(t);
    }
    for (t, &p) in offs.iter().enumerate() {
        if t < lines {
            fetch(t);
        }
        let x = [_mm512_set1_ps(vals[0][t]), _mm512_set1_ps(vals[1][t])];
        let row = b.add(p as usize * ld);
        for v in 0..V {
            let lanes = if v + 1 == V { last } else { 0xFFFF };
            // SAFETY: lanes below `width` of row p: inside the caller's promise.
            let y = unsafe { _mm512_maskz_loadu_ps(lanes, row.add(16 * v)) };
            acc[0][v] = _mm512_fmadd_ps(x[0], y, acc[0][v]);
            acc[1][v] = _mm512_fmadd_ps(x[1], y, acc[1][v]);
        }
    }
    // The same row twice is stored once: adding both into it would count the segment twice.
    let rows = if c[0] == c[1] { 1 } else { 2 };
    for r in 0..rows {
        for v in 0..V {
            let lanes = if v + 1 == V { last } else { 0xFFFF };
            // SAFETY: lanes below `width` of row c[r].
            unsafe {
                let dst = c[r].add(16 * v);
                let sum = if first { acc[r][v] } else { _mm512_add_ps(_mm512_maskz_loadu_ps(lanes, dst), acc[r][v]) };
                _mm512_mask_storeu_ps(dst, lanes, sum);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn count_nonzero(_: *const f32, _: usize) -> usize {
    unreachable!("`applies` is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn all_finite(_: *const f32, _: usize, _: (usize, usize)) -> bool {
    unreachable!("`applies` is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn row_pair(
    _: [*const f32; 2],
    _: [*const f32; 2],
    _: usize,
    _: (*const f32, usize),
    _: [*mut f32; 2],
    _: usize,
) {
    unreachable!("`applies` is false off x86-64")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A test matrix with about one entry in six nonzero (NaN where `nan` says), at `pad` extra
    /// elements per row.
    fn sparse_a((m, k, pad): (usize, usize, usize), nan: Option<(usize, usize)>) -> Vec<f32> {
        let mut a: Vec<f32> = (0..m * (k + pad) + 3)
            .map(|i| match (i * 7919) % 6 {
                0 => ((i * 31) % 201) as f32 / 100.0 - 1.0,
                // A negative zero is a zero too.
                1 => -0.0,
                _ => 0.0,
            })
            .collect();
        if let Some((r, p)) = nan {
            a[3 + r * (k + pad) + p] = f32::NAN;
        }
        a
    }

    /// What the kernel computes, step by step: each segment's nonzero (or NaN) entries of a row,
    /// multiply-added in order from zero, then added into the row's sum.
    fn reference(
        a: impl Fn(usize, usize) -> f32,
        b: impl Fn(usize, usize) -> f32,
        (m, k, n): (usize, usize, usize),
    ) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for r in 0..m {
            for j in 0..n {
                for p0 in (0..k).step_by(SEGMENT) {
                    let part = (p0..(p0 + SEGMENT).min(k))
                        .filter(|&p| a(r, p) != 0.0 || a(r, p).is_nan())
                        .fold(0f32, |s, p| a(r, p).mul_add(b(p, j), s));
                    c[r * n + j] = if p0 == 0 { part } else { c[r * n + j] + part };
                }
            }
        }
        c
    }

    /// Every size class, both layouts of B, bit for bit against [`reference`]: an odd number of
    /// rows (the last pair is one row twice), k with a masked tail and deeper than a segment, n
    /// with a masked tail and wider than a block, padded rows, offsets, a NaN in A.
    #[test]
    fn matches_the_sum_of_nonzero_products_on_every_size_class() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for &(m, k, n, pad) in &[
            (64, 64, 64, 0),
            (300, 1000, 1, 0),
            (65, 65, 65, 3),
            (65, 100, 130, 1),
            (64, 1100, 33, 0),
            (1000, 784, 128, 0),
            (67, 2000, 300, 5),
        ] {
            let lda = k + pad;
            let a = sparse_a((m, k, pad), Some((m / 2, k / 3)));
            let b: Vec<f32> =
                (0..(k + pad) * (n + pad) + 1).map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0).collect();
            let av = View { offset: 0, rs: lda, cs: 1 };
            for bv in [View { offset: 0, rs: n + pad, cs: 1 }, View { offset: 0, rs: 1, cs: k + pad }] {
                assert!(applies((&a, av), bv, 3, (m, k, n)), "{m}x{k}x{n}");
                let mut c = vec![f32::NAN; m * n];
                gemm((&a, av), (&b, bv), &[(3, 1)], &mut c, (m, k, n), true).unwrap().unwrap();
                let want = reference(|r, p| a[3 + r * lda + p], |p, j| b[1 + p * bv.rs + j * bv.cs], (m, k, n));
                for (i, (got, want)) in c.iter().zip(&want).enumerate() {
                    assert!(got.to_bits() == want.to_bits(), "{m}x{k}x{n} {bv:?} [{i}]: {got} vs {want}");
                }
                assert!(c[(m / 2) * n].is_nan(), "a NaN in row {} of A reaches C", m / 2);
            }
        }
    }

    /// `0 * inf` is NaN: with an infinity in B, skipping A's zeros would change the result, so
    /// the kernel declines and a dense kernel runs.
    #[test]
    fn declines_a_b_that_is_not_finite() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let (m, k, n) = (64, 256, 20);
        let a = sparse_a((m, k, 0), None);
        let av = View { offset: 0, rs: k, cs: 1 };
        for bad in [f32::INFINITY, f32::NAN] {
            for bv in [View { offset: 0, rs: n, cs: 1 }, View { offset: 0, rs: 1, cs: k }] {
                let mut b = vec![0.5f32; k * n + 1];
                b[1 + 7 * bv.rs + 3 * bv.cs] = bad;
                assert!(applies((&a, av), bv, 3, (m, k, n)));
                let declined = gemm((&a, av), (&b, bv), &[(3, 1)], &mut vec![0.0; m * n], (m, k, n), true);
                assert!(declined.is_none(), "{bad} in B {bv:?}");
            }
        }
    }

    /// A mostly nonzero A is left to the dense kernels, as are shapes too small to pay.
    #[test]
    fn leaves_dense_and_small_products_alone() {
        let (m, k, n) = (64, 256, 32);
        let dense: Vec<f32> = (0..m * k).map(|i| 1.0 + i as f32).collect();
        let (av, bv) = (View { offset: 0, rs: k, cs: 1 }, View { offset: 0, rs: n, cs: 1 });
        assert!(!applies((&dense, av), bv, 0, (m, k, n)));
        let zeros = vec![0f32; m * k];
        assert!(!applies((&zeros, av), bv, 0, (31, k, n)), "too few rows");
        assert!(!applies((&zeros, av), View { offset: 0, rs: 1, cs: k }, 0, (63, k, n)), "too few to copy B for");
        assert!(!applies((&zeros, av), bv, 0, (m, 32, n)), "too short");
        assert!(!applies((&zeros, av), bv, 0, (m, 64, 32)), "too little work");
        assert!(!applies((&zeros, av), View { offset: 0, rs: 2, cs: 2 * k }, 0, (m, k, n)), "B strided both ways");
    }
}
