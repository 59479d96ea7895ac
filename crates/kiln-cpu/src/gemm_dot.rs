//! `C = A @ B` when both operands run contiguously along `k`: A row-major and B a transposed
//! row-major matrix, as in `x @ w.t()`, the forward pass of every linear layer.
//!
//! The packed GEMM in [`crate::gemm`] re-lays both operands out for its broadcast tile. With
//! a batch of 32 rows the weight is gathered column by column into panels, once per call, for
//! only 32 rows of use: at 32x784x128 the packed GEMM took 70 us on 2 threads, this kernel 33.
//! Here no operand is packed. A register tile of `R` rows x `C` columns keeps one 16-lane
//! accumulator per output and walks `k` in vector steps, reading both operands straight from memory (2 FMAs per load
//! for a 4 x 4 tile); each accumulator is summed across its lanes once at the end.
//!
//! A task takes a block of rows and a block of columns small enough that both strips sit in L2
//! (about 256 KiB each), and walks its columns in tiles, outer, over its rows, inner.
//!
//! Determinism: every element of `C` is one tile's sum over the whole of `k`, in a fixed order,
//! whoever runs it, so results do not depend on the number of threads. They differ in the last
//! bits from the packed GEMM's (another summation order), as any two GEMMs' do.
//!
//! Only f32 on AVX-512; everything else goes to the packed GEMM.

// Much of this module serves x86-64 only; elsewhere it stays compiled but unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
// Intrinsics on raw pointers inside `#[target_feature]` functions: sound after the CPU check in
// `gemm::isa` and the bounds checks in `gemm`.
#![allow(unsafe_code)]

use crate::gemm::{isa, run_grid, Isa, Out, View, STRIP, UNPACKED_PAR_FLOPS};
use kiln_tensor::{Error, Result};

/// Rows and columns of the register tile (16 accumulators of the 32 zmm registers).
const R: usize = 4;
const C: usize = 4;

/// The deepest block of `k` a tile sums before storing (or adding) into C: deeper products are
/// cut into equal blocks, so that a task's strips of A and B stay in L2 (at 64x9216x128, the
/// CNN's fc1, one pass over all of `k` ran at 100 GFLOP/s in the packed GEMM).
const KB_MAX: usize = 4096;

/// Whether [`gemm`] takes a product of these views and sizes. Otherwise the caller uses the
/// packed GEMM. The upper bound keeps this kernel where it wins: with both `m` and `n` large
/// the packed GEMM's reuse of cache blocks is worth its packing.
pub(crate) fn applies(av: View, bv: View, (m, k, n): (usize, usize, usize)) -> bool {
    isa() == Isa::Avx512 && av.cs == 1 && bv.rs == 1 && k >= 64 && m.min(n) <= 256 && m * n > 0
}

/// `c[i] = A[i] @ B[i]`, matrix `i` of A starting at `offsets[i].0` and of B at `offsets[i].1`
/// (the views' own offsets are not used, as in [`crate::gemm::gemm`]); call only
/// where [`applies`] said yes. With `parallel` false everything runs on the calling thread.
pub(crate) fn gemm(
    a: (&[f32], View),
    b: (&[f32], View),
    offsets: &[(usize, usize)],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    parallel: bool,
) -> Result<()> {
    let ((a, av), (b, bv)) = (a, b);
    let batch = offsets.len();
    if !applies(av, bv, (m, k, n)) || c.len() != batch * m * n {
        return Err(Error::invalid("matmul", format!("the k-contiguous kernel cannot take {m}x{k}x{n} x {batch}")));
    }
    if batch == 0 {
        // A batch dim of size 0: nothing to compute (and no task grid to size).
        return Ok(());
    }
    // Every element either operand's views reach must lie inside its buffer: the kernel reads
    // through raw pointers.
    for &(oa, ob) in offsets {
        let a_end = oa + (m - 1) * av.rs + k;
        let b_end = ob + (n - 1) * bv.cs + k;
        if a_end > a.len() || b_end > b.len() {
            return Err(Error::invalid("matmul", format!("a {m}x{k}x{n} view reaches past its storage")));
        }
    }
    // Blocks of rows and columns whose strips of A and B each fit in about STRIP elements.
    let kb = k.div_ceil(k.div_ceil(KB_MAX));
    let side = (STRIP / kb).max(R) / R * R;
    let (rb, cb) = (m.min(side).next_multiple_of(R), n.min(side).next_multiple_of(C));
    let threads = if parallel { crate::parallel::threads_for(batch * m * n * k, UNPACKED_PAR_FLOPS) } else { 1 };
    let ld = Ld { a: av.rs, b: bv.cs, c: n };
    // Spread small products over the threads too: split columns until each thread has a few
    // tasks (a straggling helper then costs a fraction of the op, not half of it).
    let row_tasks = batch * m.div_ceil(rb);
    let cb = if threads > 1 && row_tasks * n.div_ceil(cb) < 4 * threads {
        n.div_ceil((4 * threads).div_ceil(row_tasks)).next_multiple_of(C).max(C)
    } else {
        cb
    };
    let out = Out::new(c, n);
    run_grid(batch, (m, n), (rb, cb), threads, |i, (row, col), (rows, cols)| {
        let (oa, ob) = offsets[i];
        // SAFETY: the reads stay inside the buffers (checked above for the whole matrix), this
        // task writes only its rows x cols rectangle of matrix i, and `isa()` checked avx512f.
        unsafe {
            let a0 = a.as_ptr().add(oa + row * av.rs);
            let b0 = b.as_ptr().add(ob + col * bv.cs);
            block((k, kb), (a0, b0, out.at(i * m + row, col)), ld, (rows, cols));
        }
        Ok(())
    })
}

/// The widest row-major B that [`gemm_narrow`] takes: a tile of the column-major kernel
/// ([`crate::gemm_outer`]) multiplies a whole 16-lane vector for each row, so at 12 columns or
/// fewer it wastes a quarter of its work or more.
const NARROW: usize = 12;

/// Whether [`gemm_narrow`] takes a product of these views and sizes: one matrix, A row-major,
/// B row-major and at most [`NARROW`] columns wide (`x @ w` with a classifier's weight stored
/// `[in, out]`), and enough rows of A to pay for transposing B.
pub(crate) fn narrow_applies(av: View, bv: View, (m, k, n): (usize, usize, usize), batch: usize) -> bool {
    isa() == Isa::Avx512
        && batch == 1
        && av.cs == 1
        && bv.cs == 1
        && (1..=NARROW).contains(&n)
        && m >= 16
        && k >= 64
        && k * n <= STRIP
}

/// `c = A @ B` for a narrow row-major B (see [`narrow_applies`]): B is transposed into a pooled
/// buffer (its `k x n` elements, against `m x k x n` multiply-adds), and this module's kernel,
/// whose every lane does useful work, runs on it. 32x128x10: 1.64-1.65 -> 1.36-1.37 us.
pub(crate) fn gemm_narrow(
    (a, av): (&[f32], View),
    (b, bv): (&[f32], View),
    offsets: &[(usize, usize)],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    parallel: bool,
) -> Result<()> {
    let &[(oa, ob)] = offsets else {
        return Err(Error::invalid("matmul", format!("the narrow kernel takes one matrix, got {}", offsets.len())));
    };
    if !narrow_applies(av, bv, (m, k, n), 1) || ob + (k - 1) * bv.rs + n > b.len() {
        return Err(Error::invalid("matmul", format!("the narrow kernel cannot take {m}x{k}x{n}")));
    }
    let mut bt = crate::strided::alloc_for_overwrite(k * n, 0f32)?;
    // SAFETY: row p < k of B, columns j < n, lie inside `b` (checked above); bt holds n rows
    // of k; `narrow_applies` checked avx512f.
    unsafe { transpose(b.as_ptr().add(ob), bv.rs, &mut bt, (k, n)) };
    let done = gemm((a, av), (&bt, View { offset: 0, rs: 1, cs: k }), &[(oa, 0)], c, (m, k, n), parallel);
    <f32 as crate::pool::Pooled>::pool().give(bt);
    done
}

/// The deepest column-major B that [`gemm_short`] takes: below this each dot product of this
/// module's tile is a few vector steps long, and summing its lanes at the end costs a large
/// share of it (64x144x32, the MNIST CNN's Winograd weight gradient: 7.15 us here, 5.9 with
/// B row-major in [`crate::gemm_outer`]; at k = 288, 12.2 against 11.5).
const SHORT: usize = 256;

/// Whether [`gemm_short`] takes a product: what [`applies`] takes, with `k` at most [`SHORT`],
/// B at least one vector wide and enough rows of A to pay for transposing B.
pub(crate) fn short_applies(av: View, bv: View, (m, k, n): (usize, usize, usize)) -> bool {
    applies(av, bv, (m, k, n)) && k <= SHORT && n >= 16 && m >= 32
}

/// `c[i] = A[i] @ B[i]` for a column-major B with short columns (see [`short_applies`]): each
/// B is transposed into a pooled row-major buffer (`k x n` elements, against `m x k x n`
/// multiply-adds) and [`crate::gemm_outer`] runs on it.
pub(crate) fn gemm_short(
    (a, av): (&[f32], View),
    (b, bv): (&[f32], View),
    offsets: &[(usize, usize)],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    parallel: bool,
) -> Result<()> {
    if !short_applies(av, bv, (m, k, n)) || offsets.iter().any(|&(_, ob)| ob + (n - 1) * bv.cs + k > b.len()) {
        return Err(Error::invalid("matmul", format!("the short-column kernel cannot take {m}x{k}x{n}")));
    }
    let mut bt = crate::strided::alloc_for_overwrite(offsets.len() * k * n, 0f32)?;
    for (i, &(_, ob)) in offsets.iter().enumerate() {
        // SAFETY: columns j < n of B, rows p < k, lie inside `b` (checked above); `bt` holds
        // `offsets.len()` matrices of k x n; `short_applies` checked avx512f.
        unsafe { transpose_to_rows(b.as_ptr().add(ob), bv.cs, &mut bt[i * k * n..], (k, n)) };
    }
    let offsets_t: smallvec::SmallVec<[(usize, usize); 16]> =
        offsets.iter().enumerate().map(|(i, &(oa, _))| (oa, i * k * n)).collect();
    let done =
        crate::gemm_outer::gemm((a, av), (&bt, View { offset: 0, rs: n, cs: 1 }), &offsets_t, c, (m, k, n), parallel);
    <f32 as crate::pool::Pooled>::pool().give(bt);
    done
}

/// A column-major `k x n` B (column `j` at `b + j * ld`) copied row-major into `bt`:
/// `bt[p * n + j] = b[j * ld + p]`.
///
/// # Safety
/// `b + j * ld + p` is readable for p < k, j < n; `bt` holds `k * n`; the CPU supports avx512f.
pub(crate) unsafe fn transpose_to_rows(b: *const f32, ld: usize, bt: &mut [f32], (k, n): (usize, usize)) {
    assert!(bt.len() >= k * n);
    // B's columns are rows of `b`, `ld` apart: 16 elements of each at a time (16 rows of B)
    // become 16 rows of `bt`.
    for p0 in (0..k).step_by(16) {
        // SAFETY: column j < n of B, rows p0.. p0 + 16 <= k: inside the caller's promise.
        unsafe { transpose(b.add(p0), ld, &mut bt[p0 * n..], (n, (k - p0).min(16))) };
    }
}

/// `bt[j * k + p] = b[p * ld + j]` for p < k, j < n (at most 16), by 16 x 16 blocks transposed
/// in registers: a scalar loop, or 16-lane gathers, took 0.45 us of a 32x128x10 product's 1.7.
///
/// # Safety
/// `b + p * ld + j` is readable for p < k, j < n; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose(b: *const f32, ld: usize, bt: &mut [f32], (k, n): (usize, usize)) {
    use std::arch::x86_64::*;
    assert!(n <= 16 && bt.len() >= k * n);
    let cols = crate::simd::lane_mask(n, 0);
    for p0 in (0..k).step_by(16) {
        let depth = (k - p0).min(16);
        // SAFETY: rows p0.. p0 + depth < k, lanes below n: inside the caller's promise.
        let r: [__m512; 16] = std::array::from_fn(|i| match i < depth {
            true => unsafe { _mm512_maskz_loadu_ps(cols, b.add((p0 + i) * ld)) },
            false => _mm512_setzero_ps(),
        });
        // Pairs of rows interleaved, then quads: u[4g + o] holds, in 128-bit lane L, column
        // 4L + o of rows 4g..4g + 4.
        let t: [__m512; 16] = std::array::from_fn(|i| match i % 2 {
            0 => _mm512_unpacklo_ps(r[i], r[i + 1]),
            _ => _mm512_unpackhi_ps(r[i - 1], r[i]),
        });
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let (g, o) = (i / 4 * 4, i % 4);
            let (x, y) = (t[g + o / 2], t[g + 2 + o / 2]);
            match o % 2 {
                0 => _mm512_shuffle_ps::<0x44>(x, y),
                _ => _mm512_shuffle_ps::<0xEE>(x, y),
            }
        });
        // Lanes gathered across the four quads: column 4L + o is lanes L of u[o], u[4 + o],
        // u[8 + o], u[12 + o].
        let rows = crate::simd::lane_mask(depth, 0);
        for o in 0..4 {
            let w01 = [_mm512_shuffle_f32x4::<0x88>(u[o], u[4 + o]), _mm512_shuffle_f32x4::<0xDD>(u[o], u[4 + o])];
            let w23 =
                [_mm512_shuffle_f32x4::<0x88>(u[8 + o], u[12 + o]), _mm512_shuffle_f32x4::<0xDD>(u[8 + o], u[12 + o])];
            for l in 0..4 {
                let j = 4 * l + o;
                if j >= n {
                    continue;
                }
                let (x, y) = (w01[l % 2], w23[l % 2]);
                let col = match l / 2 {
                    0 => _mm512_shuffle_f32x4::<0x88>(x, y),
                    _ => _mm512_shuffle_f32x4::<0xDD>(x, y),
                };
                // SAFETY: row j < n of bt, elements p0.. p0 + depth <= k.
                unsafe { _mm512_mask_storeu_ps(bt.as_mut_ptr().add(j * k + p0), rows, col) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose(_: *const f32, _: usize, _: &mut [f32], _: (usize, usize)) {
    unreachable!("`narrow_applies` is false off x86-64")
}

/// Leading dimensions (row stride of A, column stride of B, row stride of C).
#[derive(Clone, Copy)]
struct Ld {
    a: usize,
    b: usize,
    c: usize,
}

/// One task's `rows x cols` block, in blocks of `k` (`kb` deep), each a [`pass`] over its tiles.
///
/// # Safety
/// As in `tile`, for every tile of the block; the CPU must support avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(
    (k, kb): (usize, usize),
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
) {
    for p0 in (0..k).step_by(kb) {
        let depth = kb.min(k - p0);
        // SAFETY: k-indices p0.. p0 + depth of the block, whose reads the caller checked.
        unsafe {
            let abc = (a.add(p0), b.add(p0), c);
            // The first block stores, the others add: a const parameter, because a run-time
            // flag in the tile cost a register and the 4 x 4 tile spilled (inference -25 %).
            match p0 {
                0 => pass::<false>(depth, abc, ld, (rows, cols)),
                _ => pass::<true>(depth, abc, ld, (rows, cols)),
            }
        }
    }
}

/// One block of `k` over the task's tiles: column tiles outer (a tile's B strip stays in L1
/// while the rows pass over it), row tiles inner.
///
/// # Safety
/// As in `block`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pass<const ADD: bool>(
    k: usize,
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
) {
    for j in (0..cols).step_by(C) {
        for i in (0..rows).step_by(R) {
            // SAFETY: tile (i, j) lies inside the block, whose reads the caller checked.
            unsafe {
                let (a, b, c) = (a.add(i * ld.a), b.add(j * ld.b), c.add(i * ld.c + j));
                match (rows - i >= R, cols - j >= C) {
                    (true, true) => tile::<R, C, ADD>(k, (a, b, c), ld),
                    _ => edge::<ADD>(k, (a, b, c), ld, ((rows - i).min(R), (cols - j).min(C))),
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block(_: (usize, usize), _: (*const f32, *const f32, *mut f32), _: Ld, _: (usize, usize)) {
    unreachable!("`applies` is false off x86-64")
}

/// A ragged tile at the block's bottom or right edge, computed with the full tile's shape on
/// the rows and columns that exist (the same arithmetic, so the same bits, as a full tile).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn edge<const ADD: bool>(
    k: usize,
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
) {
    // SAFETY: each call reads `rows` rows and `cols` columns, which the caller vouches for.
    unsafe {
        match (rows, cols) {
            (4, n) => edge_cols::<4, ADD>(k, (a, b, c), ld, n),
            (3, n) => edge_cols::<3, ADD>(k, (a, b, c), ld, n),
            (2, n) => edge_cols::<2, ADD>(k, (a, b, c), ld, n),
            (_, n) => edge_cols::<1, ADD>(k, (a, b, c), ld, n),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn edge_cols<const RR: usize, const ADD: bool>(
    k: usize,
    abc: (*const f32, *const f32, *mut f32),
    ld: Ld,
    cols: usize,
) {
    // SAFETY: forwarded from `edge`.
    unsafe {
        match cols {
            4 => tile::<RR, 4, ADD>(k, abc, ld),
            3 => tile::<RR, 3, ADD>(k, abc, ld),
            2 => tile::<RR, 2, ADD>(k, abc, ld),
            _ => tile::<RR, 1, ADD>(k, abc, ld),
        }
    }
}

/// `c[r][j] = sum_p a[r][p] * b[j][p]` (or `+=` with `ADD`) for `RR` rows of A
/// (stride `ld.a`) and `CC` columns of B (stride `ld.b`), each `k` long and contiguous.
///
/// # Safety
/// `a + r * ld.a + p` and `b + j * ld.b + p` are readable for r < RR, j < CC, p < k; `c + r *
/// ld.c + j` is writable and owned by this call; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const RR: usize, const CC: usize, const ADD: bool>(
    k: usize,
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); CC]; RR];
    let mut p = 0;
    // SAFETY: every load reads k-indices below k (the tail through a mask), within the caller's
    // promise; every store is one of the RR x CC outputs.
    unsafe {
        while p + 16 <= k {
            let mut bv = [_mm512_setzero_ps(); CC];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(b.add(j * ld.b + p));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_loadu_ps(a.add(r * ld.a + p));
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *bv, *acc);
                }
            }
            p += 16;
        }
        if p < k {
            let mask = crate::simd::lane_mask(k, p);
            let mut bv = [_mm512_setzero_ps(); CC];
            for (j, v) in bv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, b.add(j * ld.b + p));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_maskz_loadu_ps(mask, a.add(r * ld.a + p));
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(av, *bv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (j, acc) in acc.iter().enumerate() {
                let sum = _mm512_reduce_add_ps(*acc);
                let dst = c.add(r * ld.c + j);
                *dst = if ADD { *dst + sum } else { sum };
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Every size class against a sum in f64: ragged tiles (m, n not multiples of 4), k with
    /// and without a masked tail, in one block and in several, offsets that leave loads
    /// unaligned, row strides wider than k, small and parallel products, batches.
    #[test]
    fn matches_a_reference_on_every_size_class() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for &(m, k, n, batch, pad) in &[
            (1, 64, 1, 1, 0),
            (3, 65, 5, 1, 1),
            (4, 79, 4, 2, 3),
            (32, 784, 128, 1, 0),
            (33, 100, 130, 1, 7),
            (7, 1000, 9, 3, 2),
            (256, 96, 300, 1, 0),
            (300, 96, 20, 1, 5),
            (1000, 784, 128, 1, 0),
            // Deeper than one block of k (3 blocks of 3072, and 3 ragged ones with a tail).
            (6, 9216, 10, 1, 0),
            (9, 8195, 5, 2, 1),
        ] {
            let lda = k + pad;
            let a: Vec<f32> = (0..batch * m * lda + 3).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect();
            let b: Vec<f32> = (0..batch * n * lda + 3).map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0).collect();
            let (av, bv) = (View { offset: 0, rs: lda, cs: 1 }, View { offset: 0, rs: 1, cs: lda });
            let offsets: Vec<_> = (0..batch).map(|i| (3 + i * m * lda, 1 + i * n * lda)).collect();
            let mut c = vec![f32::NAN; batch * m * n];
            gemm((&a, av), (&b, bv), &offsets, &mut c, (m, k, n), true).unwrap();
            for (i, &(oa, ob)) in offsets.iter().enumerate() {
                for r in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| a[oa + r * lda + p] as f64 * b[ob + j * lda + p] as f64);
                        let (want, size) = terms.fold((0.0, 0.0), |(s, z): (f64, f64), t| (s + t, z + t.abs()));
                        let got = c[i * m * n + r * n + j] as f64;
                        // The standard bound for an f32 sum of k products, on their absolute sum.
                        let tol = k as f64 * f32::EPSILON as f64 * size;
                        assert!((got - want).abs() <= tol, "{m}x{k}x{n} [{i}][{r}][{j}]: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// The narrow path (B row-major, at most 12 columns) against a sum in f64: every width, k
    /// with and without a tail of the 16-row transpose blocks, B's rows wider than n, offsets.
    #[test]
    fn narrow_b_matches_a_reference() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for &(m, k, n, pad) in &[(16, 64, 1, 0), (32, 128, 10, 0), (17, 70, 12, 3), (40, 100, 7, 9), (600, 300, 5, 1)] {
            assert!(narrow_applies(
                View { offset: 0, rs: k, cs: 1 },
                View { offset: 0, rs: n + pad, cs: 1 },
                (m, k, n),
                1
            ));
            let ldb = n + pad;
            let a: Vec<f32> = (0..m * k + 3).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect();
            let b: Vec<f32> = (0..k * ldb + 1).map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0).collect();
            let (av, bv) = (View { offset: 0, rs: k, cs: 1 }, View { offset: 0, rs: ldb, cs: 1 });
            let mut c = vec![f32::NAN; m * n];
            gemm_narrow((&a, av), (&b, bv), &[(3, 1)], &mut c, (m, k, n), true).unwrap();
            for r in 0..m {
                for j in 0..n {
                    let terms = (0..k).map(|p| a[3 + r * k + p] as f64 * b[1 + p * ldb + j] as f64);
                    let (want, size) = terms.fold((0.0, 0.0), |(s, z): (f64, f64), t| (s + t, z + t.abs()));
                    let got = c[r * n + j] as f64;
                    let tol = k as f64 * f32::EPSILON as f64 * size;
                    assert!((got - want).abs() <= tol, "{m}x{k}x{n} [{r}][{j}]: {got} vs {want}");
                }
            }
        }
    }

    /// The short-column path (B column-major, k at most 256) against a sum in f64: k and n with
    /// and without tails of the 16 x 16 transpose blocks, B's columns wider apart than k,
    /// batches with offsets, products large enough to run in parallel.
    #[test]
    fn short_columns_match_a_reference() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for &(m, k, n, pad, batch) in
            &[(32, 64, 16, 0, 1), (64, 144, 32, 16, 16), (33, 70, 17, 3, 2), (300, 256, 40, 1, 1)]
        {
            let (av, bv) = (View { offset: 0, rs: k, cs: 1 }, View { offset: 0, rs: 1, cs: k + pad });
            assert!(short_applies(av, bv, (m, k, n)));
            let (a_step, b_step) = (m * k + 1, n * (k + pad) + 2);
            let a: Vec<f32> = (0..batch * a_step + 3).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect();
            let b: Vec<f32> = (0..batch * b_step + 1).map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0).collect();
            let offsets: Vec<_> = (0..batch).map(|i| (3 + i * a_step, 1 + i * b_step)).collect();
            let mut c = vec![f32::NAN; batch * m * n];
            gemm_short((&a, av), (&b, bv), &offsets, &mut c, (m, k, n), true).unwrap();
            for (i, &(oa, ob)) in offsets.iter().enumerate() {
                for r in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| a[oa + r * k + p] as f64 * b[ob + j * (k + pad) + p] as f64);
                        let (want, size) = terms.fold((0.0, 0.0), |(s, z): (f64, f64), t| (s + t, z + t.abs()));
                        let got = c[(i * m + r) * n + j] as f64;
                        let tol = k as f64 * f32::EPSILON as f64 * size;
                        assert!((got - want).abs() <= tol, "{m}x{k}x{n} #{i} [{r}][{j}]: {got} vs {want}");
                    }
                }
            }
        }
    }

    /// A batch of no matrices computes nothing (the no-panic fuzz test found it dividing by 0).
    #[test]
    fn an_empty_batch_is_nothing_to_do() {
        if isa() != Isa::Avx512 {
            return;
        }
        let (av, bv) = (View { offset: 0, rs: 64, cs: 1 }, View { offset: 0, rs: 1, cs: 64 });
        assert!(gemm((&[], av), (&[], bv), &[], &mut [], (2, 64, 2), true).is_ok());
    }

    #[test]
    fn refuses_views_past_their_storage() {
        if isa() != Isa::Avx512 {
            return;
        }
        let (a, b) = (vec![0f32; 64 * 2 - 1], vec![0f32; 64 * 2]);
        let (av, bv) = (View { offset: 0, rs: 64, cs: 1 }, View { offset: 0, rs: 1, cs: 64 });
        let mut c = vec![0f32; 4];
        assert!(gemm((&a, av), (&b, bv), &[(0, 0)], &mut c, (2, 64, 2), true).is_err());
    }
}
