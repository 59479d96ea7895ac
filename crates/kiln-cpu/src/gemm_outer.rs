//! `C = A @ B` when B is row-major, as in `dy.t() @ x` (the weight gradient of every linear
//! layer), `dy @ w` (its input gradient) or a plain `x @ w`.
//!
//! The packed GEMM ([`crate::gemm`]) lays B out as rows of its 32-column tile, which a
//! row-major B already is, and A as the tile's 8 rows per step of `k`, which its register tile
//! only ever reads one scalar at a time (to broadcast it), from wherever it is. So the same
//! 8 x 32 register tile (8 broadcasts and 2 vector loads per step of `k`) reads both operands
//! in place, with strides, and stores straight into C: no packing, and no round trip of the
//! accumulators through a scratch tile.
//!
//! `k` is cut into the packed GEMM's blocks ([`kc_step`]); each tile sums one block in order
//! and stores it (the first block) or adds it into C, as the packed GEMM's tile does, so both
//! return the same bits. Measured against the packed GEMM (2 threads): 32x784x128 48 vs 32
//! us, 36864x288x64 13.1 vs 9.3 ms, 64x9216x128 1.1 vs 0.8 ms, and no slower at 1024^3.
//!
//! Only f32 on AVX-512; everything else goes to the packed GEMM.

// Much of this module serves x86-64 only; elsewhere it stays compiled but unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
// Intrinsics on raw pointers inside `#[target_feature]` functions: sound after the CPU check in
// `gemm::isa` and the bounds checks in `gemm`.
#![allow(unsafe_code)]

use crate::gemm::{isa, kc_step, run_grid, Isa, Out, View, KC_MAX, STRIP, UNPACKED_PAR_FLOPS};
#[cfg(target_arch = "x86_64")]
use crate::simd::lane_mask;
use kiln_tensor::{Error, Result};

/// Rows of the register tile, and its columns (two 16-lane vectors).
const MR: usize = 8;
/// The most rows the last tile of a block takes (24 sums and two B vectors in registers).
const MR_LAST: usize = 12;
const NR: usize = 32;
/// The widest block of columns a task takes (a multiple of `NR`).
const MAX_COLS: usize = 512;
/// From this many rows, and strips this deep, a task copies each strip of B whose rows lie a
/// multiple of [`ALIASED_ROWS`] apart before its row tiles read it (see `block_copying`).
/// Shallower strips fit in L1 wherever their rows lie (copying the 32-deep strips of
/// 128x32x784 cost 3 %).
const COPY_B_ROWS: usize = 32;
const COPY_B_DEPTH: usize = 128;
/// B rows this many floats (4 KiB) apart, or a multiple, fall into the same L1 sets. Only those
/// strips are copied: at other strides the copy cost more than the conflicts it spares, on one
/// thread 32x784x128 70.3 -> 57.2 us, 128x784x128 245 -> 228 us and 512^3 2.51 -> 2.44 ms
/// without it, where 1024^3 needs it (20.7 ms copied, 23.8 not).
const ALIASED_ROWS: usize = 1024;

/// Whether [`gemm`] takes a product of these views and sizes (A may have any strides).
/// Otherwise the caller uses the packed GEMM.
pub(crate) fn applies(_av: View, bv: View, (m, k, n): (usize, usize, usize)) -> bool {
    isa() == Isa::Avx512 && bv.cs == 1 && k > 0 && m * n > 0
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
        return Err(Error::invalid("matmul", format!("the column-major kernel cannot take {m}x{k}x{n} x {batch}")));
    }
    if batch == 0 {
        // A batch dim of size 0: nothing to compute (and no task grid to size).
        return Ok(());
    }
    // Every element either operand's views reach must lie inside its buffer: the kernel reads
    // through raw pointers.
    for &(oa, ob) in offsets {
        let a_end = oa + (m - 1) * av.rs + (k - 1) * av.cs + 1;
        let b_end = ob + (k - 1) * bv.rs + n;
        if a_end > a.len() || b_end > b.len() {
            return Err(Error::invalid("matmul", format!("a {m}x{k}x{n} view reaches past its storage")));
        }
    }
    let threads = if parallel { crate::parallel::threads_for(batch * m * n * k, UNPACKED_PAR_FLOPS) } else { 1 };
    // A task's rows of A fit in L2; its columns are cut so that every thread gets a few tasks.
    let kc = kc_step(k);
    let mut rb = m.min((STRIP / kc).max(MR)).next_multiple_of(MR);
    if threads > 1 && batch < threads && m >= 2 * threads * MR {
        // Each thread's own tasks then cover whole rows of C: a contiguous part of it, the
        // part of the same shape the element-wise ops and the optimizer give that thread.
        rb = rb.min(m.div_ceil(threads).next_multiple_of(MR));
    }
    let ld = Ld { a_rows: av.rs, a_k: av.cs, b: bv.rs, c: n };
    // On one thread a block takes every column it may (no task grid to balance).
    let cb = match threads {
        1 => MAX_COLS,
        _ => {
            let want = (4 * threads).div_ceil(batch * m.div_ceil(rb)).max(1);
            n.div_ceil(want).next_multiple_of(NR).min(MAX_COLS)
        }
    };
    let out = Out::new(c, n);
    run_grid(batch, (m, n), (rb, cb), threads, |i, (row, col), (rows, cols)| {
        let (oa, ob) = offsets[i];
        // SAFETY: the reads stay inside the buffers (checked above for the whole matrix), this
        // task writes only its rows x cols rectangle of matrix i, and `isa()` checked avx512f.
        unsafe {
            let a0 = a.as_ptr().add(oa + row * av.rs);
            let b0 = b.as_ptr().add(ob + col);
            block((k, kc), (a0, b0, out.at(i * m + row, col)), ld, (rows, cols));
        }
        Ok(())
    })
}

/// Strides: A's between rows and along `k`, B's between rows, C's between rows.
#[derive(Clone, Copy)]
struct Ld {
    a_rows: usize,
    a_k: usize,
    b: usize,
    c: usize,
}

/// One task's `rows x cols` block, in the packed GEMM's blocks of `k` (`kc` deep): within a
/// block, column tiles outer (a tile's `kc x 32` strip of B stays in L1 while the rows pass
/// over it), row tiles inner.
///
/// # Safety
/// As in `tile`, for every tile of the block; the CPU must support avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block(
    (k, kc): (usize, usize),
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
) {
    // SAFETY: the caller's promises, passed on.
    unsafe {
        if rows >= COPY_B_ROWS && (COPY_B_DEPTH..=KC_MAX).contains(&kc) && ld.b.is_multiple_of(ALIASED_ROWS) {
            block_copying((k, kc), (a, b, c), ld, (rows, cols))
        } else {
            strips((k, kc), (a, b, c), ld, (rows, cols), None)
        }
    }
}

/// [`strips`] with each strip of B copied before its row tiles read it: B's own rows can be a
/// power of two apart (4 KiB at n = 1024), which maps a strip's rows onto a few L1 sets that
/// cannot hold them, so every tile would reload it from L2. Copied, it is contiguous. Measured
/// at 1024^3 on one thread: 84 -> 95 GFLOP/s; 2 threads with KC = 256: 161 -> 180-200. A
/// function of its own so that only products this large pay for the 48 KiB on the stack (its
/// stack probe was 5 % of a 10x32x128 product).
///
/// # Safety
/// As for [`block`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline(never)]
unsafe fn block_copying(
    (k, kc): (usize, usize),
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
) {
    // Uninitialized: only the rows a copy fills are read.
    let mut strip = [const { std::mem::MaybeUninit::<f32>::uninit() }; KC_MAX * NR];
    // SAFETY: the caller's promises; the strip holds KC_MAX rows of NR, and kc <= KC_MAX.
    unsafe { strips((k, kc), (a, b, c), ld, (rows, cols), Some(strip.as_mut_ptr().cast::<f32>())) }
}

/// The loops of [`block`]: blocks of `k`, then column tiles, then row tiles. With `strip`, each
/// column tile's strip of B is copied there (rows of NR) and the tiles read the copy; the next
/// strip's rows and each tile's rows of C are prefetched meanwhile.
///
/// # Safety
/// As for [`block`]; `strip`, if any, is writable for KC_MAX x NR floats and `kc <= KC_MAX`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn strips(
    (k, kc): (usize, usize),
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (rows, cols): (usize, usize),
    strip: Option<*mut f32>,
) {
    use crate::simd::{prefetch, TO_L2};
    let tiles = rows.div_ceil(MR);
    for p0 in (0..k).step_by(kc) {
        let (depth, first) = (kc.min(k - p0), p0 == 0);
        for j in (0..cols).step_by(NR) {
            let width = (cols - j).min(NR);
            // SAFETY: rows p0.. p0 + depth, columns j.. j + width of B lie inside the block the
            // caller checked; the copy fills the first `depth` rows of the strip (depth <= kc <=
            // KC_MAX), which is all the tiles read of it.
            let (b_strip, b_rows) = unsafe {
                match strip {
                    Some(s) => {
                        copy_strip(b.add(p0 * ld.b + j), ld.b, s, (depth, width));
                        (s.cast_const(), NR)
                    }
                    None => (b.add(p0 * ld.b + j), ld.b),
                }
            };
            // The strip the next column tile copies, fetched into L2 while this one's tiles
            // compute, a share per tile: its rows are in pages of their own at n = 1024, which
            // the hardware prefetchers do not follow, so the copy waited on every line
            // (1024^3 on one thread: 22.6 -> 22.15 ms).
            let next = match (strip.is_some(), j + NR < cols, p0 + kc < k) {
                (false, _, _) | (true, false, false) => None,
                (true, true, _) => Some((p0, depth, j + NR, (cols - j - NR).min(NR))),
                (true, false, true) => Some((p0 + kc, kc.min(k - p0 - kc), 0, cols.min(NR))),
            };
            let mut i = 0;
            while i < rows {
                // The last rows in one tile when at most MR_LAST are left: a 2-row tile keeps
                // too few sums in flight to hide the FMA latency (10x32x128, as 8 + 2 rows:
                // 1.23 us; as one 10-row tile: 1.20).
                let rr = if rows - i <= MR_LAST { rows - i } else { MR };
                if let Some((q0, q_depth, q_col, q_width)) = next {
                    // This tile's share of the next strip's rows; the last tile (which may
                    // take up to MR_LAST rows) takes the rest.
                    let t = i / MR;
                    let to = if i + rr == rows { q_depth } else { (t + 1) * q_depth / tiles };
                    for q in q0 + t * q_depth / tiles..q0 + to {
                        prefetch::<f32, TO_L2>(b.wrapping_add(q * ld.b + q_col), q_width);
                    }
                }
                if strip.is_some() {
                    // This tile's rows of C, which it reads (or, in the first block of k,
                    // writes) at its end: a power-of-two row stride puts them in one L1 set as
                    // well (1024^3 on one thread: 22.0 -> 21.1-21.3 ms).
                    for r in 0..rr {
                        prefetch::<f32, TO_L2>(c.wrapping_add((i + r) * ld.c + j), width);
                    }
                }
                // SAFETY: tile (i, j) of this block of k lies inside the task's block, whose
                // reads the caller checked.
                unsafe {
                    let abc = (a.add(i * ld.a_rows + p0 * ld.a_k), b_strip, c.add(i * ld.c + j));
                    let ld = Ld { b: b_rows, ..ld };
                    let at = (depth, width, first);
                    // Tiles of at most 16 columns (a narrow C, or its last tile) use one
                    // vector per row, not two half-empty ones.
                    macro_rules! rows {
                        ($v:literal) => {
                            match rr {
                                12.. => tile::<12, $v>(abc, ld, at),
                                11 => tile::<11, $v>(abc, ld, at),
                                10 => tile::<10, $v>(abc, ld, at),
                                9 => tile::<9, $v>(abc, ld, at),
                                8 => tile::<8, $v>(abc, ld, at),
                                7 => tile::<7, $v>(abc, ld, at),
                                6 => tile::<6, $v>(abc, ld, at),
                                5 => tile::<5, $v>(abc, ld, at),
                                4 => tile::<4, $v>(abc, ld, at),
                                3 => tile::<3, $v>(abc, ld, at),
                                2 => tile::<2, $v>(abc, ld, at),
                                _ => tile::<1, $v>(abc, ld, at),
                            }
                        };
                    }
                    if width <= 16 {
                        rows!(1)
                    } else {
                        rows!(2)
                    }
                }
                i += rr;
            }
        }
    }
}

/// Copies `depth` rows of `width` (at most NR) floats, `ld` apart, to rows of NR.
///
/// # Safety
/// The reads and writes must be in bounds; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn copy_strip(src: *const f32, ld: usize, dst: *mut f32, (depth, width): (usize, usize)) {
    use std::arch::x86_64::*;
    let (m0, m1) = (lane_mask(width, 0), lane_mask(width, 16));
    // SAFETY: lanes at or past `width` are masked off, rows stay below `depth` (the caller's
    // promise).
    unsafe {
        for p in 0..depth {
            let (s, d) = (src.add(p * ld), dst.add(p * NR));
            _mm512_mask_storeu_ps(d, m0, _mm512_maskz_loadu_ps(m0, s));
            _mm512_mask_storeu_ps(d.add(16), m1, _mm512_maskz_loadu_ps(m1, s.add(16)));
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block(_: (usize, usize), _: (*const f32, *const f32, *mut f32), _: Ld, _: (usize, usize)) {
    unreachable!("`applies` is false off x86-64")
}

/// `c[r][j] = sum_p a[r][p] * b[p][j]` (`first`) or `c[r][j] += ...` for `RR` rows, `width` (at
/// most 16 `V`) columns and `k` steps, the sum taken in order with fused multiply-adds and added
/// to C once, as the packed GEMM's tile does.
///
/// # Safety
/// `a + r * ld.a_rows + p * ld.a_k` and `b + p * ld.b + j` are readable for p < k, r < RR,
/// j < width; `c + r * ld.c + j` is writable and owned by this call; the CPU supports avx512f.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const RR: usize, const V: usize>(
    (a, b, c): (*const f32, *const f32, *mut f32),
    ld: Ld,
    (k, width, first): (usize, usize, bool),
) {
    use std::arch::x86_64::*;
    // Lanes past `width` are neither read nor written (masked loads do not fault).
    let masks: [__mmask16; V] = std::array::from_fn(|v| lane_mask(width, 16 * v));
    let mut acc = [[_mm512_setzero_ps(); V]; RR];
    // SAFETY: every access is at p < k, r < RR or a lane below `width`, as the caller promised.
    unsafe {
        for p in 0..k {
            let bv: [__m512; V] = std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], b.add(p * ld.b + 16 * v)));
            for (r, acc) in acc.iter_mut().enumerate() {
                let ar = _mm512_set1_ps(*a.add(r * ld.a_rows + p * ld.a_k));
                for (acc, bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm512_fmadd_ps(ar, *bv, *acc);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            for (v, (acc, &mask)) in acc.iter().zip(&masks).enumerate() {
                let dst = c.add(r * ld.c + 16 * v);
                let sum = if first { *acc } else { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), *acc) };
                _mm512_mask_storeu_ps(dst, mask, sum);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Bit for bit the packed GEMM's results, on every size class: ragged tiles (m not a
    /// multiple of 8, n not of 32), k from 1 through one block to several, offsets that leave
    /// loads unaligned, strides wider than the matrix, small and parallel products, batches.
    #[test]
    fn matches_the_packed_gemm_bit_for_bit() {
        if isa() != Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for &(m, k, n, batch, pad) in &[
            (1, 1, 1, 1, 0),
            (3, 5, 17, 1, 1),
            (8, 32, 32, 2, 3),
            (9, 31, 33, 1, 0),
            (128, 32, 784, 1, 0),
            (10, 32, 128, 1, 2),
            (130, 191, 70, 1, 5),
            (300, 64, 700, 1, 0),
            (17, 100, 40, 3, 1),
            (32, 784, 128, 1, 0),
            (32, 128, 10, 1, 0),
            (9, 40, 16, 1, 2),
            (33, 288, 70, 2, 3),
            (64, 1000, 64, 1, 1),
            // B rows 4 KiB apart: the strips are copied (full and ragged ones).
            (40, 300, 1024, 1, 0),
            (33, 260, 1000, 2, 24),
        ] {
            let (lda, ldb, step) = (m + pad, n + pad, (m + pad) * (k + pad));
            let a: Vec<f32> = (0..batch * step + 3).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect();
            let b: Vec<f32> = (0..batch * k * ldb + 3).map(|i| ((i * 104729) % 199) as f32 / 99.0 - 1.0).collect();
            let bv = View { offset: 0, rs: ldb, cs: 1 };
            let offsets: Vec<_> = (0..batch).map(|i| (3 + i * step, 1 + i * k * ldb)).collect();
            // A column-major (`dy.t()`) and row-major (`dy`).
            for av in [View { offset: 0, rs: 1, cs: lda }, View { offset: 0, rs: k + pad, cs: 1 }] {
                let mut got = vec![f32::NAN; batch * m * n];
                gemm((&a, av), (&b, bv), &offsets, &mut got, (m, k, n), true).unwrap();
                let mut want = vec![f32::NAN; batch * m * n];
                crate::gemm::gemm((&a, av), (&b, bv), &offsets, &mut want, (m, k, n), |x| x, true).unwrap();
                let same = got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits());
                assert!(same, "{m}x{k}x{n} x {batch}, A {av:?}: results differ from the packed GEMM's");
            }
        }
    }

    /// A batch of no matrices computes nothing (the no-panic fuzz test found it dividing by 0).
    #[test]
    fn an_empty_batch_is_nothing_to_do() {
        if isa() != Isa::Avx512 {
            return;
        }
        let (av, bv) = (View { offset: 0, rs: 8, cs: 1 }, View { offset: 0, rs: 2, cs: 1 });
        assert!(gemm((&[], av), (&[], bv), &[], &mut [], (2, 8, 2), true).is_ok());
    }

    #[test]
    fn refuses_views_past_their_storage() {
        if isa() != Isa::Avx512 {
            return;
        }
        let (a, b) = (vec![0f32; 2 * 8 - 1], vec![0f32; 8 * 2]);
        let (av, bv) = (View { offset: 0, rs: 1, cs: 2 }, View { offset: 0, rs: 2, cs: 1 });
        let mut c = vec![0f32; 4];
        assert!(gemm((&a, av), (&b, bv), &[(0, 0)], &mut c, (2, 8, 2), true).is_err());
    }
}
