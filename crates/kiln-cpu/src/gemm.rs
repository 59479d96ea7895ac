//! Matrix products `C = A @ B` on strided f32/f64 operands: a packed, cache-blocked GEMM in
//! the BLIS style, with one parallel region per call and runtime dispatch to AVX-512, AVX2+FMA,
//! NEON or portable code.
//!
//! `C` is cut into a grid of blocks (`mc x nc`, at most [`MC`] x [`NC`]); each block is one rayon
//! task. A task walks `k` in steps of [`KC`]: it packs its slice of `B` (`KC x nc`, zero-padded to
//! `NR` columns) and of `A` (`mc x KC`, padded to `MR` rows) into thread-local scratch, then runs
//! the `MR x NR` register tile over every pair of micro-panels. The B micro-panel (`KC x NR`)
//! stays in L1 while the A micro-panels stream from L2. Packing absorbs any strides, so a
//! transposed operand costs nothing extra, and widens f16/bf16 to f32 on the way.
//!
//! Determinism: every element of `C` is accumulated by one task, over `k` in the same order,
//! whatever the grid, so results do not depend on the number of threads.
//!
//! Register tiles: on AVX-512 a hand-written 8 x 2-vector tile (16 of the 32 zmm registers hold
//! accumulators); on NEON a hand-written 8 x 3-vector tile (24 of 32), whose multiply-adds take
//! A from a register lane; elsewhere a tile written once in plain Rust on fixed-size arrays, which
//! `#[target_feature]` wrappers let LLVM compile to 256-bit FMAs. LLVM's auto-vectorizer keeps
//! only small tiles in registers, which is why the AVX-512 tile is written with intrinsics.
//! `KILN_NO_SIMD=1` forces the portable path.

// The target-feature functions are `unsafe fn`s (sound only after the CPU check in `isa`), and
// tasks write disjoint tiles of C through a raw pointer (see `Out`).
#![allow(unsafe_code)]

use kiln_tensor::{Error, Result};
use std::cell::RefCell;

/// Depth of one packed block: a B micro-panel (`KC x NR`) is 32 KiB for f32 with NR = 32.
/// Measured at 1024^3 and 512^3 (2 threads): 256 beat 128 by 7-10 % in both GEMMs (C is
/// loaded and stored half as often); 384 lost at 2048^3.
const KC: usize = 256;
/// The deepest block of `k` (blocks are about `KC` deep, see `blocked`).
pub(crate) const KC_MAX: usize = KC + KC / 2;
/// Rows of a task's block of C (its packed A, `MC x KC`, stays in L2).
const MC: usize = 256;
/// Columns of a task's block of C.
const NC: usize = 512;
/// Below this many multiply-adds a product runs on the calling thread (waking rayon's workers
/// costs more than it saves).
const PAR_FLOPS: usize = 1 << 20;

/// Elements of one operand block an unpacked kernel's task keeps in L2 (256 KiB of f32).
pub(crate) const STRIP: usize = 64 * 1024;
/// Below this many multiply-adds an unpacked kernel runs on the calling thread (it has no
/// packing to amortize, so it splits smaller products than the packed GEMM does).
pub(crate) const UNPACKED_PAR_FLOPS: usize = 1 << 18;

/// Element types the kernel computes in.
pub(crate) trait Elem:
    Copy + Default + Send + Sync + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + crate::pool::Pooled
{
    fn fma(self, a: Self, b: Self) -> Self;
    /// The AVX-512 register tile: `acc` (8 rows, row-major) `=` A panel `*` B panel.
    ///
    /// # Safety
    /// The CPU must support avx512f.
    #[cfg(target_arch = "x86_64")]
    unsafe fn tile_avx512(kc: usize, a: &[Self], b: &[Self], acc: &mut [Self]);
    /// The NEON register tile: `acc` (8 rows, row-major) `=` A panel `*` B panel.
    ///
    /// # Safety
    /// The CPU must support neon.
    #[cfg(target_arch = "aarch64")]
    unsafe fn tile_neon(kc: usize, a: &[Self], b: &[Self], acc: &mut [Self]);
    /// Runs `f` with this thread's packing scratch for A and B, grown to the lengths asked.
    fn with_scratch<R>(a_len: usize, b_len: usize, f: impl FnOnce(&mut [Self], &mut [Self]) -> R) -> Result<R>;
    /// The kernels that need no packing, where this type has them (f32 on AVX-512, see
    /// `gemm_dot` and `gemm_outer`), tried before the packed GEMM.
    const UNPACKED: Option<Unpacked<Self, Self>>;
    /// Grows the scratch of every thread of rayon's pool, once: which threads take a product's
    /// tasks is a race, and a thread that first packs in the middle of training would make a
    /// system allocation in a steady-state step.
    fn grow_all_scratch();
    /// The buffer of `s` if it holds this type.
    fn slice(s: &crate::storage::CpuStorage) -> Option<&[Self]>;
}

macro_rules! elem {
    ($t:ty, $variant:ident, $scratch:ident, $avx512:ident, $neon:ident, $unpacked:expr) => {
        thread_local! {
            static $scratch: RefCell<(Vec<$t>, Vec<$t>)> = const { RefCell::new((Vec::new(), Vec::new())) };
        }
        impl Elem for $t {
            #[inline(always)]
            fn fma(self, a: $t, b: $t) -> $t {
                a.mul_add(b, self)
            }
            #[cfg(target_arch = "x86_64")]
            unsafe fn tile_avx512(kc: usize, a: &[$t], b: &[$t], acc: &mut [$t]) {
                // SAFETY: the caller guarantees avx512f.
                unsafe { avx512::$avx512(kc, a, b, acc) }
            }
            #[cfg(target_arch = "aarch64")]
            unsafe fn tile_neon(kc: usize, a: &[$t], b: &[$t], acc: &mut [$t]) {
                // SAFETY: the caller guarantees neon.
                unsafe { neon::$neon(kc, a, b, acc) }
            }
            fn with_scratch<R>(a_len: usize, b_len: usize, f: impl FnOnce(&mut [$t], &mut [$t]) -> R) -> Result<R> {
                $scratch.with(|s| {
                    // A task never re-enters another GEMM task on the same thread (it runs no
                    // rayon work), so the borrow is always free.
                    let mut s = s.borrow_mut();
                    let (a, b) = &mut *s;
                    // Grown to the largest block at once: which thread runs which task varies
                    // from call to call, and a thread growing its scratch late would be a
                    // system allocation in a steady-state training step.
                    grow(a, a_len.max(MC * KC_MAX))?;
                    grow(b, b_len.max(NC * KC_MAX))?;
                    Ok(f(&mut a[..a_len], &mut b[..b_len]))
                })
            }
            const UNPACKED: Option<Unpacked<$t, $t>> = $unpacked;
            fn grow_all_scratch() {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    // An allocation failure here resurfaces as an error at the first product.
                    rayon::broadcast(|_| drop(Self::with_scratch(0, 0, |_, _| ())));
                });
            }
            fn slice(s: &crate::storage::CpuStorage) -> Option<&[$t]> {
                match s {
                    crate::storage::CpuStorage::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
elem!(f32, F32, SCRATCH_F32, tile_f32, tile_f32, Some(unpacked_f32));
elem!(f64, F64, SCRATCH_F64, tile_f64, tile_f64, None);

/// A kernel for some layouts and sizes of `c[i] = A[i] @ B[i]` (operands stored as `S`,
/// computed and stored as `T`), with the arguments of [`gemm`] less `widen`: `None` when it
/// declines, and the caller runs the packed GEMM.
pub(crate) type Unpacked<S, T> =
    fn((&[S], View), (&[S], View), &[(usize, usize)], &mut [T], (usize, usize, usize), bool) -> Option<Result<()>>;

/// The unpacked f32 kernels, in the order they are tried.
#[derive(Clone, Copy)]
enum UnpackedF32 {
    /// `gemm_dot::gemm_short`: B transposed into a pooled buffer, then `gemm_outer`.
    Short,
    /// `gemm_dot::gemm`: both operands along `k`.
    Dot,
    /// `gemm_dot::gemm_narrow`: a narrow row-major B transposed into a pooled buffer.
    Narrow,
    /// `gemm_outer::gemm`: a row-major B.
    Outer,
}

impl UnpackedF32 {
    /// The kernel that takes a batch of `batch` products of these views and sizes, if any.
    fn choose(a: View, b: View, mkn: (usize, usize, usize), batch: usize) -> Option<UnpackedF32> {
        if crate::gemm_dot::short_applies(a, b, mkn) {
            Some(UnpackedF32::Short)
        } else if crate::gemm_dot::applies(a, b, mkn) {
            Some(UnpackedF32::Dot)
        } else if crate::gemm_dot::narrow_applies(a, b, mkn, batch) {
            Some(UnpackedF32::Narrow)
        } else {
            crate::gemm_outer::applies(a, b, mkn).then_some(UnpackedF32::Outer)
        }
    }
}

/// f32 products whose layouts need no packing: both operands along `k` (`x @ w.t()`), or a
/// row-major B (`dy.t() @ x`, `dy @ w`, `x @ w`).
fn unpacked_f32(
    a: (&[f32], View),
    b: (&[f32], View),
    offsets: &[(usize, usize)],
    c: &mut [f32],
    mkn: (usize, usize, usize),
    parallel: bool,
) -> Option<Result<()>> {
    // First a mostly-zero A, which only its data shows (`UnpackedF32::choose` sees layouts).
    // Not for products inside another op's tasks (`parallel` false: Winograd's), which
    // multiply transformed, dense data: sampling them would be wasted.
    if let Some(done) = parallel.then(|| crate::gemm_sparse::gemm(a, b, offsets, c, mkn, parallel)).flatten() {
        return Some(done);
    }
    Some(match UnpackedF32::choose(a.1, b.1, mkn, offsets.len())? {
        UnpackedF32::Short => crate::gemm_dot::gemm_short(a, b, offsets, c, mkn, parallel),
        UnpackedF32::Dot => crate::gemm_dot::gemm(a, b, offsets, c, mkn, parallel),
        UnpackedF32::Narrow => crate::gemm_dot::gemm_narrow(a, b, offsets, c, mkn, parallel),
        UnpackedF32::Outer => crate::gemm_outer::gemm(a, b, offsets, c, mkn, parallel),
    })
}

/// The length of the f32 temporary [`gemm_same`] takes from the pool for a batch of `batch`
/// products (B transposed by the short-column or the narrow kernel), 0 when it takes none.
/// Callers that run products on several threads reserve one per thread with it (see
/// `strided::reserve`).
pub(crate) fn gemm_same_scratch<T: Elem>(a: View, b: View, (m, k, n): (usize, usize, usize), batch: usize) -> usize {
    if T::UNPACKED.is_none() {
        return 0;
    }
    match UnpackedF32::choose(a, b, (m, k, n), batch) {
        Some(UnpackedF32::Short) => batch * k * n,
        Some(UnpackedF32::Narrow) => k * n,
        _ => 0,
    }
}

/// [`gemm`] for operands already of the compute type: an unpacked kernel where one applies,
/// the packed GEMM otherwise.
pub(crate) fn gemm_same<T: Elem>(
    a: (&[T], View),
    b: (&[T], View),
    offsets: &[(usize, usize)],
    c: &mut [T],
    mkn: (usize, usize, usize),
    parallel: bool,
) -> Result<()> {
    match T::UNPACKED.and_then(|kernel| kernel(a, b, offsets, c, mkn, parallel)) {
        Some(done) => done,
        None => gemm(a, b, offsets, c, mkn, |v| v, parallel),
    }
}

/// Hand-written AVX-512 register tiles: 8 rows x 2 vectors.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    macro_rules! tile {
        ($name:ident, $t:ty, $lanes:literal, $vec:ty, $zero:ident, $load:ident, $set1:ident, $fma:ident, $store:ident) => {
            /// `acc` (8 x 2*lanes, row-major) = A panel (kc x 8) * B panel (kc x 2*lanes).
            #[target_feature(enable = "avx512f")]
            pub(super) unsafe fn $name(kc: usize, a: &[$t], b: &[$t], acc: &mut [$t]) {
                const NR: usize = 2 * $lanes;
                assert!(a.len() >= kc * 8 && b.len() >= kc * NR && acc.len() == 8 * NR);
                let mut c: [[$vec; 2]; 8] = [[$zero(); 2]; 8];
                let (ap, bp) = (a.as_ptr(), b.as_ptr());
                for p in 0..kc {
                    // SAFETY: p < kc, so the reads stay inside the lengths asserted above.
                    unsafe {
                        let b0 = $load(bp.add(p * NR));
                        let b1 = $load(bp.add(p * NR + $lanes));
                        for (r, c) in c.iter_mut().enumerate() {
                            let ar = $set1(*ap.add(p * 8 + r));
                            c[0] = $fma(ar, b0, c[0]);
                            c[1] = $fma(ar, b1, c[1]);
                        }
                    }
                }
                for (r, c) in c.iter().enumerate() {
                    // SAFETY: row r of acc holds NR elements (acc.len() == 8 * NR).
                    unsafe {
                        let dst = acc.as_mut_ptr().add(r * NR);
                        $store(dst, c[0]);
                        $store(dst.add($lanes), c[1]);
                    }
                }
            }
        };
    }
    tile!(
        tile_f32,
        f32,
        16,
        __m512,
        _mm512_setzero_ps,
        _mm512_loadu_ps,
        _mm512_set1_ps,
        _mm512_fmadd_ps,
        _mm512_storeu_ps
    );
    tile!(
        tile_f64,
        f64,
        8,
        __m512d,
        _mm512_setzero_pd,
        _mm512_loadu_pd,
        _mm512_set1_pd,
        _mm512_fmadd_pd,
        _mm512_storeu_pd
    );
}

/// Hand-written NEON register tiles: 8 rows x 3 vectors (24 of the 32 registers hold
/// accumulators), each multiply-add taking its A value from a lane of a register
/// (`vfmaq_laneq`), so A needs no broadcasts.
#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    macro_rules! tile {
        ($name:ident, $t:ty, $lanes:literal, $vec:ty, $zero:ident, $load:ident, $fma_lane:ident, $store:ident) => {
            /// `acc` (8 x 3*lanes, row-major) = A panel (kc x 8) * B panel (kc x 3*lanes).
            #[target_feature(enable = "neon")]
            pub(super) unsafe fn $name(kc: usize, a: &[$t], b: &[$t], acc: &mut [$t]) {
                const NR: usize = 3 * $lanes;
                const A_VECS: usize = 8 / $lanes;
                assert!(a.len() >= kc * 8 && b.len() >= kc * NR && acc.len() == 8 * NR);
                let mut c: [[$vec; 3]; 8] = [[$zero(0.0); 3]; 8];
                let (ap, bp) = (a.as_ptr(), b.as_ptr());
                for p in 0..kc {
                    // SAFETY: p < kc, so the reads stay inside the lengths asserted above.
                    unsafe {
                        let bv =
                            [$load(bp.add(p * NR)), $load(bp.add(p * NR + $lanes)), $load(bp.add(p * NR + 2 * $lanes))];
                        let av: [$vec; A_VECS] = std::array::from_fn(|v| $load(ap.add(p * 8 + v * $lanes)));
                        for (r, c) in c.iter_mut().enumerate() {
                            let (v, lane) = (av[r / $lanes], r % $lanes);
                            for (c, b) in c.iter_mut().zip(&bv) {
                                *c = match lane {
                                    0 => $fma_lane::<0>(*c, *b, v),
                                    1 => $fma_lane::<1>(*c, *b, v),
                                    2 => $fma_lane::<2>(*c, *b, v),
                                    _ => $fma_lane::<3>(*c, *b, v),
                                };
                            }
                        }
                    }
                }
                for (r, c) in c.iter().enumerate() {
                    for (j, c) in c.iter().enumerate() {
                        // SAFETY: row r of acc holds NR elements (acc.len() == 8 * NR).
                        unsafe { $store(acc.as_mut_ptr().add(r * NR + j * $lanes), *c) };
                    }
                }
            }
        };
    }
    tile!(tile_f32, f32, 4, float32x4_t, vdupq_n_f32, vld1q_f32, vfmaq_laneq_f32, vst1q_f32);
    tile!(tile_f64, f64, 2, float64x2_t, vdupq_n_f64, vld1q_f64, fma_lane_f64, vst1q_f64);

    /// `vfmaq_laneq_f64` with a lane index up to 3 (the match in the tile is shared with f32;
    /// lanes 2 and 3 never occur for two-lane vectors).
    #[inline(always)]
    fn fma_lane_f64<const LANE: i32>(acc: float64x2_t, b: float64x2_t, a: float64x2_t) -> float64x2_t {
        // SAFETY: neon is enabled in every caller (the tile's target feature).
        unsafe {
            match LANE {
                0 => vfmaq_laneq_f64::<0>(acc, b, a),
                _ => vfmaq_laneq_f64::<1>(acc, b, a),
            }
        }
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, len: usize) -> Result<()> {
    if v.len() < len {
        v.try_reserve(len - v.len()).map_err(|_| Error::Backend {
            backend: "cpu".into(),
            msg: format!("out of memory allocating {len} elements of GEMM packing scratch"),
        })?;
        v.resize(len, T::default());
    }
    Ok(())
}

/// A strided matrix view: element (i, j) is at `offset + i * rs + j * cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View {
    pub offset: usize,
    pub rs: usize,
    pub cs: usize,
}

/// The row-major output `C` (`m x n`), shared by the tasks.
#[derive(Clone, Copy)]
pub(crate) struct Out<T> {
    ptr: *mut T,
    m: usize,
    n: usize,
}
// SAFETY: tasks only write through `Out::add_tile` or the pointers `Out::at` gives them, and
// every kernel's task grid gives every task its own rectangle of C, so no two threads touch the
// same element.
unsafe impl<T: Send> Send for Out<T> {}
unsafe impl<T: Send> Sync for Out<T> {}

impl<T> Out<T> {
    /// The whole of `c`, seen as `rows x n`.
    pub(crate) fn new(c: &mut [T], n: usize) -> Out<T> {
        Out { ptr: c.as_mut_ptr(), m: c.len().checked_div(n).unwrap_or(0), n }
    }

    /// A pointer to element (`row`, `col`), for a task that owns it.
    pub(crate) fn at(self, row: usize, col: usize) -> *mut T {
        assert!(row < self.m && col < self.n);
        // SAFETY: in bounds by the assert.
        unsafe { self.ptr.add(row * self.n + col) }
    }
}

/// Runs `block(matrix, (row, col), (rows, cols))` once for every `rb x cb` block of a batch of
/// `m x n` outputs (ragged at the edges), as one task each, on up to `threads` threads.
pub(crate) fn run_grid(
    batch: usize,
    (m, n): (usize, usize),
    (rb, cb): (usize, usize),
    threads: usize,
    block: impl Fn(usize, (usize, usize), (usize, usize)) -> Result<()> + Sync,
) -> Result<()> {
    if threads <= 1 {
        // The same blocks in the same order, without the task runner and the divisions that map
        // a task to its block: at 10x32x128 those were a tenth of the product.
        for i in 0..batch {
            for row in (0..m).step_by(rb) {
                for col in (0..n).step_by(cb) {
                    block(i, (row, col), (rb.min(m - row), cb.min(n - col)))?;
                }
            }
        }
        return Ok(());
    }
    let (row_blocks, col_blocks) = (m.div_ceil(rb), n.div_ceil(cb));
    let per_matrix = row_blocks * col_blocks;
    crate::parallel::run_tasks(batch * per_matrix, threads, |t| {
        let (i, t) = (t / per_matrix, t % per_matrix);
        let (row, col) = ((t / col_blocks) * rb, (t % col_blocks) * cb);
        block(i, (row, col), (rb.min(m - row), cb.min(n - col)))
    })
}

impl<T: Elem> Out<T> {
    /// Matrix `i` of a batch of `rows x n` matrices stored back to back in this output.
    fn matrix(self, i: usize, rows: usize) -> Out<T> {
        assert!((i + 1) * rows <= self.m);
        // SAFETY: in bounds by the assert; the batch's output outlives every task.
        Out { ptr: unsafe { self.ptr.add(i * rows * self.n) }, m: rows, n: self.n }
    }

    /// `C[row.., col..] = acc` (the first block of `k`) or `+= acc` (the others) for the first
    /// `rows x cols` of the tile. Storing the first block spares zeroing C beforehand.
    #[inline(always)]
    fn add_tile<const MR: usize, const NR: usize>(
        &self,
        (row, col): (usize, usize),
        (rows, cols): (usize, usize),
        acc: &[[T; NR]; MR],
        first: bool,
    ) {
        assert!(row + rows <= self.m && col + cols <= self.n && rows <= MR && cols <= NR);
        for (r, acc_row) in acc.iter().enumerate().take(rows) {
            // SAFETY: in bounds by the assert above; this task owns the rectangle (see `Out`).
            let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add((row + r) * self.n + col), cols) };
            if first {
                match <&mut [T; NR]>::try_from(&mut *dst) {
                    // Fixed-size: vector stores, not a call to memmove per row.
                    Ok(full) => *full = *acc_row,
                    Err(_) => dst.copy_from_slice(&acc_row[..cols]),
                }
            } else {
                for (d, v) in dst.iter_mut().zip(acc_row) {
                    *d = *d + *v;
                }
            }
        }
    }
}

/// `acc[MR][NR] += A micro-panel (kc x MR) * B micro-panel (kc x NR)`.
#[inline(always)]
fn tile<T: Elem, const MR: usize, const NR: usize, const FUSED: bool>(
    kc: usize,
    a: &[T],
    b: &[T],
    acc: &mut [[T; NR]; MR],
) {
    for (bp, ap) in b.chunks_exact(NR).zip(a.chunks_exact(MR)).take(kc) {
        // Fixed-size views let the compiler keep the tile in registers without bounds checks.
        let (Ok(bp), Ok(ap)) = (<&[T; NR]>::try_from(bp), <&[T; MR]>::try_from(ap)) else { continue };
        for r in 0..MR {
            let ar = ap[r];
            for c in 0..NR {
                acc[r][c] = if FUSED { acc[r][c].fma(ar, bp[c]) } else { acc[r][c] + ar * bp[c] };
            }
        }
    }
}

// How `block` computes a register tile (a const parameter, so each variant compiles on its own).
/// `Elem::tile_avx512` (the tile must be 8 x 32 for f32, 8 x 16 for f64).
#[cfg(target_arch = "x86_64")]
const AVX512: u8 = 0;
/// `Elem::tile_neon` (the tile must be 8 x 12 for f32, 8 x 6 for f64).
#[cfg(target_arch = "aarch64")]
const NEON: u8 = 3;
/// The generic `tile` with fused multiply-adds.
const FMA: u8 = 1;
/// The generic `tile`, multiply then add.
const PLAIN: u8 = 2;

/// One packed A block (`rows` of C) times one packed B block (`cols` of C), added into C.
#[inline(always)]
fn block<T: Elem, const MR: usize, const NR: usize, const K: u8>(
    kc: usize,
    a: &[T],
    b: &[T],
    out: Out<T>,
    (row, col, rows, cols): (usize, usize, usize, usize),
    first: bool,
) {
    // B micro-panel outer: it stays in L1 while every A micro-panel passes over it.
    for (jp, bp) in b.chunks_exact(kc * NR).enumerate().take(cols.div_ceil(NR)) {
        let c_cols = NR.min(cols - jp * NR);
        for (ip, ap) in a.chunks_exact(kc * MR).enumerate().take(rows.div_ceil(MR)) {
            let mut acc = [[T::default(); NR]; MR];
            match K {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: K is AVX512 only inside `block_avx512`, whose caller checked avx512f.
                AVX512 => unsafe { T::tile_avx512(kc, ap, bp, acc.as_flattened_mut()) },
                #[cfg(target_arch = "aarch64")]
                // SAFETY: K is NEON only inside `block_neon`, whose caller checked neon.
                NEON => unsafe { T::tile_neon(kc, ap, bp, acc.as_flattened_mut()) },
                FMA => tile::<T, MR, NR, true>(kc, ap, bp, &mut acc),
                _ => tile::<T, MR, NR, false>(kc, ap, bp, &mut acc),
            }
            out.add_tile((row + ip * MR, col + jp * NR), (MR.min(rows - ip * MR), c_cols), &acc, first);
        }
    }
}

/// `block` compiled for one instruction set, with one way of computing its register tile: each
/// is called only after `isa()` detected that set.
macro_rules! block_for {
    ($arch:literal, $name:ident, $features:literal, $tile:ident) => {
        #[cfg(target_arch = $arch)]
        #[target_feature(enable = $features)]
        unsafe fn $name<T: Elem, const MR: usize, const NR: usize>(
            kc: usize,
            a: &[T],
            b: &[T],
            out: Out<T>,
            at: (usize, usize, usize, usize),
            first: bool,
        ) {
            block::<T, MR, NR, $tile>(kc, a, b, out, at, first)
        }
    };
}
block_for!("x86_64", block_avx512, "avx512f,avx512vl,fma", AVX512);
block_for!("x86_64", block_avx2, "avx2,fma", FMA);
block_for!("aarch64", block_neon, "neon", NEON);

/// The instruction set the kernels run with, detected once.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    /// x86-64 with avx512f, avx512vl and fma.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx512,
    /// x86-64 with avx2 and fma.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    Avx2,
    /// AArch64 with neon (which every AArch64 Linux and macOS machine has).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    Neon,
    /// Plain Rust, vectorized by the compiler for the build's baseline target.
    Portable,
}

pub(crate) fn isa() -> Isa {
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
        #[cfg(target_arch = "aarch64")]
        {
            if std::env::var_os("KILN_NO_SIMD").is_none() && std::arch::is_aarch64_feature_detected!("neon") {
                return Isa::Neon;
            }
        }
        Isa::Portable
    })
}

/// A batch of products `c[i] = A[i] @ B[i]`: matrix `i` of A starts at `offsets[i].0`, of B at
/// `offsets[i].1`; `c` holds the `m x n` results back to back. `widen` converts stored elements
/// to `T`. With `parallel` false everything runs on the calling thread (for callers that are
/// already one task among many).
pub(crate) fn gemm<S: Copy + Send + Sync, T: Elem>(
    a: (&[S], View),
    b: (&[S], View),
    offsets: &[(usize, usize)],
    c: &mut [T],
    mkn: (usize, usize, usize),
    widen: impl Fn(S) -> T + Send + Sync + Copy,
    parallel: bool,
) -> Result<()> {
    let wide = std::mem::size_of::<T>() == 8;
    // Register tiles: 16 accumulators on AVX-512 (of 32 registers), 8 on AVX2 (of 16), 24 on
    // NEON (of 32).
    match (isa(), wide) {
        (Isa::Avx512, false) => blocked::<S, T, 8, 32>(a, b, offsets, c, mkn, widen, (Isa::Avx512, parallel)),
        (Isa::Avx512, true) => blocked::<S, T, 8, 16>(a, b, offsets, c, mkn, widen, (Isa::Avx512, parallel)),
        (Isa::Avx2, false) => blocked::<S, T, 4, 16>(a, b, offsets, c, mkn, widen, (Isa::Avx2, parallel)),
        (Isa::Avx2, true) => blocked::<S, T, 4, 8>(a, b, offsets, c, mkn, widen, (Isa::Avx2, parallel)),
        (Isa::Neon, false) => blocked::<S, T, 8, 12>(a, b, offsets, c, mkn, widen, (Isa::Neon, parallel)),
        (Isa::Neon, true) => blocked::<S, T, 8, 6>(a, b, offsets, c, mkn, widen, (Isa::Neon, parallel)),
        (Isa::Portable, _) => blocked::<S, T, 4, 16>(a, b, offsets, c, mkn, widen, (Isa::Portable, parallel)),
    }
}

/// The depth of the blocks a product's `k` is cut into: equal blocks about KC deep (at most
/// 1.5 KC), so k = 288 runs as 2 x 144, not 128 + 128 + 32.
pub(crate) fn kc_step(k: usize) -> usize {
    if k < KC + KC / 2 {
        // One block (the division below gives the same), without two divisions per product.
        return k;
    }
    k.div_ceil(((k + KC / 2) / KC).max(1))
}

fn blocked<S: Copy + Send + Sync, T: Elem, const MR: usize, const NR: usize>(
    (a, av): (&[S], View),
    (b, bv): (&[S], View),
    offsets: &[(usize, usize)],
    c: &mut [T],
    (m, k, n): (usize, usize, usize),
    widen: impl Fn(S) -> T + Send + Sync + Copy,
    (isa, parallel): (Isa, bool),
) -> Result<()> {
    let batch = offsets.len();
    if c.len() != batch * m * n {
        return Err(Error::invalid("matmul", format!("output holds {} elements, expected {batch} x {m}x{n}", c.len())));
    }
    if k == 0 {
        c.fill(T::default());
    }
    if m == 0 || n == 0 || k == 0 || batch == 0 {
        return Ok(());
    }
    let kc_step = kc_step(k);
    let threads = if parallel { crate::parallel::threads_for(batch * m * n * k, PAR_FLOPS) } else { 1 };
    if threads > 1 {
        T::grow_all_scratch();
    }
    // One task grid over the whole batch (one parallel region, however small each product), with
    // at least one block per thread. A new row block re-packs B and a new column block re-packs
    // A, so split whichever dimension has the taller blocks; then balance the block sizes.
    let (mut rb, mut cb) = (m.div_ceil(MC), n.div_ceil(NC));
    while batch * rb * cb < threads {
        let (h, w) = (m / rb, n / cb);
        if h >= 2 * MR && (h >= w || w < 2 * NR) {
            rb += 1;
        } else if w >= 2 * NR {
            cb += 1;
        } else {
            break;
        }
    }
    let (mc, nc) = (m.div_ceil(rb).next_multiple_of(MR), n.div_ceil(cb).next_multiple_of(NR));
    let (row_blocks, col_blocks) = (m.div_ceil(mc), n.div_ceil(nc));
    let per_matrix = row_blocks * col_blocks;
    let whole = Out { ptr: c.as_mut_ptr(), m: batch * m, n };
    let task = |t: usize| -> Result<()> {
        let (i, t) = (t / per_matrix, t % per_matrix);
        let (a_off, b_off) = offsets[i];
        let (av, bv) = (View { offset: a_off, ..av }, View { offset: b_off, ..bv });
        let out = whole.matrix(i, m);
        let (row, col) = ((t / col_blocks) * mc, (t % col_blocks) * nc);
        let (rows, cols) = (mc.min(m - row), nc.min(n - col));
        let (a_len, b_len) = (rows.div_ceil(MR) * MR * kc_step, cols.div_ceil(NR) * NR * kc_step);
        T::with_scratch(a_len, b_len, |a_pack, b_pack| {
            for p0 in (0..k).step_by(kc_step) {
                let (kc, first) = (kc_step.min(k - p0), p0 == 0);
                let b_now = &mut b_pack[..cols.div_ceil(NR) * NR * kc];
                pack_b::<S, T, NR>(b, bv, (p0, kc), (col, cols), b_now, widen);
                let a_now = &mut a_pack[..rows.div_ceil(MR) * MR * kc];
                pack_a::<S, T, MR>(a, av, (p0, kc), (row, rows), a_now, widen);
                let at = (row, col, rows, cols);
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx512vl, fma.
                    Isa::Avx512 => unsafe { block_avx512::<T, MR, NR>(kc, a_now, b_now, out, at, first) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `isa()` returns Avx2 only after detecting avx2 and fma.
                    Isa::Avx2 => unsafe { block_avx2::<T, MR, NR>(kc, a_now, b_now, out, at, first) },
                    #[cfg(target_arch = "aarch64")]
                    // SAFETY: `isa()` returns Neon only after detecting neon.
                    Isa::Neon => unsafe { block_neon::<T, MR, NR>(kc, a_now, b_now, out, at, first) },
                    _ => block::<T, MR, NR, PLAIN>(kc, a_now, b_now, out, at, first),
                }
            }
        })
    };
    crate::parallel::run_tasks(batch * per_matrix, threads, task)
}

/// Packs `B[p0..p0+kc, col..col+cols]` into `NR`-column micro-panels, each `kc x NR` row-major.
fn pack_b<S: Copy, T: Elem, const NR: usize>(
    b: &[S],
    bv: View,
    (p0, kc): (usize, usize),
    (col, cols): (usize, usize),
    dst: &mut [T],
    widen: impl Fn(S) -> T,
) {
    for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
        let (c0, width) = (col + jp * NR, NR.min(cols - jp * NR));
        if bv.rs == 1 && bv.cs != 1 {
            // A transposed B (`x @ w.t()`): each column is contiguous along k, so read columns
            // as streams and scatter them into the panel, which sits in L1; row by row, every
            // element would come from a different cache line.
            for j in 0..width {
                let start = bv.offset + p0 + (c0 + j) * bv.cs;
                for (d, &x) in panel.iter_mut().skip(j).step_by(NR).zip(&b[start..start + kc]) {
                    *d = widen(x);
                }
            }
            for d in panel.chunks_exact_mut(NR) {
                d[width..].fill(T::default());
            }
            continue;
        }
        for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
            let start = bv.offset + (p0 + p) * bv.rs + c0 * bv.cs;
            if let (1, Ok(d), Some(Ok(src))) =
                (bv.cs, <&mut [T; NR]>::try_from(&mut d[..]), b.get(start..start + NR).map(<&[S; NR]>::try_from))
            {
                // A whole row of the panel: a fixed-size copy compiles to a few vector moves, where
                // a copy of run-time length became a call to memmove per row.
                for (d, &x) in d.iter_mut().zip(src) {
                    *d = widen(x);
                }
            } else if bv.cs == 1 {
                for (d, &x) in d[..width].iter_mut().zip(&b[start..start + width]) {
                    *d = widen(x);
                }
            } else {
                for (j, d) in d[..width].iter_mut().enumerate() {
                    *d = widen(b[start + j * bv.cs]);
                }
            }
            d[width..].fill(T::default());
        }
    }
}

/// Packs `A[row..row+rows, p0..p0+kc]` into `MR`-row micro-panels, each `kc x MR` (k-major).
fn pack_a<S: Copy, T: Elem, const MR: usize>(
    a: &[S],
    av: View,
    (p0, kc): (usize, usize),
    (row, rows): (usize, usize),
    dst: &mut [T],
    widen: impl Fn(S) -> T,
) {
    for (ip, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
        let (r0, height) = (row + ip * MR, MR.min(rows - ip * MR));
        if av.rs == 1 {
            // Column-major A (a transposed view): each k step reads `height` adjacent elements.
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                let start = av.offset + r0 + (p0 + p) * av.cs;
                for (d, &x) in d[..height].iter_mut().zip(&a[start..start + height]) {
                    *d = widen(x);
                }
                d[height..].fill(T::default());
            }
        } else {
            // Row-major A: one element from each of the panel's rows per k step.
            let mut src: [&[S]; MR] = [&[]; MR];
            for (r, s) in src.iter_mut().enumerate().take(height) {
                let start = av.offset + (r0 + r) * av.rs + p0 * av.cs;
                *s = &a[start..start + (kc - 1) * av.cs + 1];
            }
            for (p, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (d, s) in d.iter_mut().zip(&src) {
                    *d = s.get(p * av.cs).map_or(T::default(), |&x| widen(x));
                }
            }
        }
    }
}
