//! Reductions (sum, max, min, argmax, argmin) over any set of dims of a strided layout.
//!
//! The layout is permuted so the kept dims come first; output element `i` then reduces the
//! logical elements `i * r .. (i + 1) * r` of that view. Long reductions are split into blocks of
//! a fixed size, combined in order, so the result is the same at every thread count.

use crate::buffer::Buffer;
use crate::pool::Pooled;
use crate::simd::vectorized;
use crate::storage::CpuStorage;
use crate::strided::{alloc_for_overwrite, CHUNK, PAR_THRESHOLD};
use half::{bf16, f16};
use kiln_tensor::{DimVec, Error, Layout, ReduceOp, Result, WithDType};
use smallvec::SmallVec;

/// How one element type accumulates.
pub(crate) trait Acc: WithDType + PartialOrd + Default + Pooled {
    /// The accumulator for sums: f64 for floats, wrapping native for integers.
    type Sum: Copy + Send + Sync + Default;
    fn zero() -> Self::Sum;
    fn add(acc: Self::Sum, x: Self) -> Self::Sum;
    fn merge(a: Self::Sum, b: Self::Sum) -> Self::Sum;
    fn finish(acc: Self::Sum) -> Self;
    fn is_nan(self) -> bool;
    /// The sum of a contiguous row: [`sum_wide`]'s partial sums in `Sum` unless the type's impl
    /// names another (f32 rows take [`sum_f32`]).
    #[inline(always)]
    fn sum_row(row: &[Self]) -> Self::Sum {
        sum_wide(row)
    }
    /// The max or min of a contiguous, non-empty row: [`best_lanes`] unless the type's impl
    /// has a faster way to the same bits (f32 on AVX-512 takes [`best_f32`]).
    #[inline(always)]
    fn best_row(op: ReduceOp, row: &[Self]) -> Self {
        best_lanes(op, row)
    }
    /// The sum of the runs of `run` elements starting at `starts`, in order: each run's
    /// [`Acc::sum_row`], merged, unless the type's impl keeps its lanes across runs (f32 runs
    /// of 64 and more take [`sum_f32_runs`]). `None` for no runs.
    #[inline(always)]
    fn sum_runs(src: &[Self], starts: Starts<'_>, run: usize) -> Option<Self::Sum> {
        sum_runs_apart(src, starts, run)
    }
}

/// Where the runs of [`over_runs`]'s block start: one slice, or the starts of several runs.
pub(crate) enum Starts<'a> {
    One(Option<usize>),
    Many(std::iter::Take<kiln_tensor::StridedOffsets<'a>>),
}

impl Iterator for Starts<'_> {
    type Item = usize;
    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        match self {
            Starts::One(o) => o.take(),
            Starts::Many(offsets) => offsets.next(),
        }
    }
}

macro_rules! acc_float {
    ($($t:ty => $sum_row:ident, $best_row:ident, $sum_runs:ident),*) => {$(
        impl Acc for $t {
            type Sum = f64;
            fn zero() -> f64 { 0.0 }
            fn add(acc: f64, x: Self) -> f64 { acc + x.to_f64() }
            fn merge(a: f64, b: f64) -> f64 { a + b }
            fn finish(acc: f64) -> Self { <$t as WithDType>::from_f64(acc) }
            #[allow(clippy::float_cmp)]
            fn is_nan(self) -> bool { self != self }
            #[inline(always)]
            fn sum_row(row: &[Self]) -> f64 { $sum_row(row) }
            #[inline(always)]
            fn best_row(op: ReduceOp, row: &[Self]) -> Self { $best_row(op, row) }
            #[inline(always)]
            fn sum_runs(src: &[Self], starts: Starts<'_>, run: usize) -> Option<f64> { $sum_runs(src, starts, run) }
        }
    )*};
}
acc_float!(
    f32 => sum_f32, best_f32, sum_f32_runs,
    f64 => sum_wide, best_lanes, sum_runs_apart,
    f16 => sum_wide, best_lanes, sum_runs_apart,
    bf16 => sum_wide, best_lanes, sum_runs_apart
);

/// [`Acc::sum_runs`]'s default: each run summed on its own.
#[inline(always)]
fn sum_runs_apart<T: Acc>(src: &[T], starts: Starts<'_>, run: usize) -> Option<T::Sum> {
    each_run(
        src,
        starts,
        run,
        #[inline(always)]
        |row: &[T]| T::sum_row(row),
        T::merge,
    )
}

/// Each run of `run` elements at `starts` reduced by `row`, the results combined in order by
/// `merge`; `None` for no runs. A loop, for callers inside `vectorized` (see [`over_runs`]).
#[inline(always)]
fn each_run<T, R>(
    src: &[T],
    starts: Starts<'_>,
    run: usize,
    row: impl Fn(&[T]) -> R,
    merge: impl Fn(R, R) -> R,
) -> Option<R> {
    let mut acc = None;
    for o in starts {
        let x = row(&src[o..o + run]);
        acc = Some(match acc {
            Some(a) => merge(a, x),
            None => x,
        });
    }
    acc
}

macro_rules! acc_int {
    ($($t:ty),*) => {$(
        impl Acc for $t {
            type Sum = $t;
            fn zero() -> $t { 0 }
            fn add(acc: $t, x: Self) -> $t { acc.wrapping_add(x) }
            fn merge(a: $t, b: $t) -> $t { a.wrapping_add(b) }
            fn finish(acc: $t) -> Self { acc }
            fn is_nan(self) -> bool { false }
        }
    )*};
}
acc_int!(i64, u32, u8);

/// The running state of a max/min/argmax/argmin: best value and its position.
fn better<T: Acc>(op: ReduceOp, cand: T, best: T) -> bool {
    if best.is_nan() {
        return false;
    }
    if cand.is_nan() {
        return true;
    }
    match op {
        ReduceOp::Max | ReduceOp::ArgMax => cand > best,
        _ => cand < best,
    }
}

/// Lanes of a contiguous reduction: independent accumulators the compiler keeps in vector
/// registers, combined in a fixed order (so the result does not depend on threads either).
const LANES: usize = 16;

/// The sum of a contiguous row (see [`Acc::sum_row`]).
// Always inlined: callers run it inside `vectorized`, whose wide registers it must share.
#[inline(always)]
pub(crate) fn sum_lanes<T: Acc>(row: &[T]) -> T::Sum {
    T::sum_row(row)
}

/// Elements in one block of [`sum_f32`]: each of its 64 f32 partial sums adds 8 of them.
const F32_BLOCK: usize = 512;

/// The sum of a contiguous f32 row: each block of [`F32_BLOCK`] elements in 64 interleaved f32
/// partial sums (four vectors, so four independent chains of additions), which are then added
/// in f64. Widening every element to f64 instead converts and adds twice as many vectors: a row
/// sum of 1024x1024 took 44 µs that way, 28 µs this way (PyTorch: about 30).
///
/// Rounding: a lane adds at most 10 elements (8 in a whole block; up to 7 chunks and 3 vectors
/// in a last, partial one), and two lanes are then added in f32, so each f32 value that reaches
/// f64 is off by at most 10 units of 2^-24 of the sum of its elements' magnitudes. The f64
/// sums add nothing to that which shows in an f32 result.
#[inline(always)]
fn sum_f32(row: &[f32]) -> f64 {
    // Rows shorter than one chunk (MNIST's 10 classes) as before: setting up and adding up the
    // block's lanes cost the MLP step's two cross-entropy ops 0.5 µs.
    if row.len() < 64 {
        return sum_wide(row);
    }
    let (mut wide, mut tail) = ([0f64; 16], 0f64);
    sum_f32_into(row, &mut wide, &mut tail);
    wide.into_iter().fold(0f64, |a, b| a + b) + tail
}

/// The sum of several f32 runs of at least 64 elements: their blocks' f32 lanes go into one set
/// of f64 lanes, folded once, where [`sum_f32`] per run folded 16 lanes in a chain for each (a
/// channel sum over 16x32x26x26: 512 runs of 676, and each fold took about as long as its run).
#[inline(always)]
fn sum_f32_runs(src: &[f32], starts: Starts<'_>, run: usize) -> Option<f64> {
    if run < 64 {
        return sum_runs_apart(src, starts, run);
    }
    let (mut wide, mut tail, mut any) = ([0f64; 16], 0f64, false);
    for o in starts {
        sum_f32_into(&src[o..o + run], &mut wide, &mut tail);
        any = true;
    }
    any.then(|| wide.into_iter().fold(0f64, |a, b| a + b) + tail)
}

/// Adds a row's blocks (see [`sum_f32`]) into 16 f64 lanes, and its last single elements into
/// `tail`.
#[inline(always)]
fn sum_f32_into(row: &[f32], wide: &mut [f64; 16], tail: &mut f64) {
    for block in row.chunks(F32_BLOCK) {
        let (mut l0, mut l1, mut l2, mut l3) = ([0f32; 16], [0f32; 16], [0f32; 16], [0f32; 16]);
        let mut chunks = block.chunks_exact(64);
        for c in &mut chunks {
            for i in 0..16 {
                l0[i] += c[i];
                l1[i] += c[i + 16];
                l2[i] += c[i + 32];
                l3[i] += c[i + 48];
            }
        }
        // The last block's rest: whole vectors into the first lanes, then single elements.
        let mut rest = chunks.remainder().chunks_exact(16);
        for c in &mut rest {
            for (l, &x) in l0.iter_mut().zip(c) {
                *l += x;
            }
        }
        for (i, w) in wide.iter_mut().enumerate() {
            *w += (l0[i] + l1[i]) as f64 + (l2[i] + l3[i]) as f64;
        }
        *tail = rest.remainder().iter().fold(*tail, |a, &x| a + x as f64);
    }
}

/// The sum of a contiguous row, in `LANES` interleaved partial sums of the accumulator type.
#[inline(always)]
fn sum_wide<T: Acc>(row: &[T]) -> T::Sum {
    let mut lanes = [T::zero(); LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = T::add(*l, x);
        }
    }
    let acc = lanes.into_iter().fold(T::zero(), T::merge);
    chunks.remainder().iter().fold(acc, |a, &x| T::add(a, x))
}

/// The max (or min) of a contiguous, non-empty row with `better`'s NaN rule (a NaN wins and
/// stays), in lanes written as selects so that they vectorize. Four vectors of lanes, because
/// each compare-and-select waits for the previous one in its lane: with one vector a row max of
/// 1024x1024 took 112 µs, with four 43 µs.
#[inline(always)]
pub(crate) fn best_lanes<T: Acc>(op: ReduceOp, row: &[T]) -> T {
    #[allow(clippy::eq_op)]
    #[inline(always)]
    fn lanes<T: Acc>(row: &[T], wins: impl Fn(T, T) -> bool, loses: impl Fn(T, T) -> bool) -> T {
        let pick = |l: T, x: T| if (l == l) & !loses(x, l) { x } else { l };
        let mut best = row[0];
        let mut chunks = row.chunks_exact(4 * LANES);
        let mut rest = row;
        if chunks.len() > 0 {
            // Four vectors of lanes: four independent chains of compare-and-select.
            let (mut l0, mut l1, mut l2, mut l3) = ([best; LANES], [best; LANES], [best; LANES], [best; LANES]);
            for c in &mut chunks {
                for i in 0..LANES {
                    l0[i] = pick(l0[i], c[i]);
                    l1[i] = pick(l1[i], c[i + LANES]);
                    l2[i] = pick(l2[i], c[i + 2 * LANES]);
                    l3[i] = pick(l3[i], c[i + 3 * LANES]);
                }
            }
            // The rest in whole vectors, then single elements.
            let mut vectors = chunks.remainder().chunks_exact(LANES);
            for c in &mut vectors {
                for i in 0..LANES {
                    l0[i] = pick(l0[i], c[i]);
                }
            }
            for i in 0..LANES {
                l0[i] = pick(pick(pick(l0[i], l1[i]), l2[i]), l3[i]);
            }
            for &l in &l0 {
                if best == best && (l != l || wins(l, best)) {
                    best = l;
                }
            }
            rest = vectors.remainder();
        }
        for &x in rest {
            if best == best && (x != x || wins(x, best)) {
                best = x;
            }
        }
        best
    }
    match op {
        ReduceOp::Max => lanes(row, |x, b| x > b, |x, b| x <= b),
        _ => lanes(row, |x, b| x < b, |x, b| x >= b),
    }
}

/// The max or min of a contiguous, non-empty f32 row: on AVX-512, [`best_lanes`]'s lanes with
/// one `vmaxps`/`vminps` per vector in place of its NaN-aware select, and a NaN check on the
/// side (an unordered compare covers two vectors); a row with a NaN goes to `best_lanes`,
/// which returns its first NaN. The same bits either way. Row max, 2 threads: 1024x1024 42.4 ->
/// 26.8 µs, 4096x1000 199 -> 151 µs (the harness); against PyTorch's `amax`, three runs of
/// `cargo xtask bench reduce --compare`: 0.69x -> 0.80-1.23x and 0.71x -> 0.95-0.98x.
#[inline(always)]
fn best_f32(op: ReduceOp, row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if row.len() >= 4 * LANES && crate::gemm::isa() == crate::gemm::Isa::Avx512 {
        // SAFETY: `isa()` returns Avx512 only after detecting avx512f.
        #[allow(unsafe_code)]
        if let Some(best) = unsafe { best_f32_avx512(op == ReduceOp::Max, row) } {
            return best;
        }
    }
    best_lanes(op, row)
}

/// [`best_f32`]'s fast path: `None` when the row holds a NaN.
///
/// `_mm512_max_ps(x, l)` returns `l` unless `x > l`, and `_mm512_min_ps(x, l)` unless `x < l`:
/// without NaNs, exactly `best_lanes`'s pick (which keeps the earlier of equal elements, so a
/// `-0.0` before a `+0.0` stays).
///
/// # Safety
/// The CPU must support avx512f; `row` holds at least 64 elements.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(unsafe_code)]
#[inline]
unsafe fn best_f32_avx512(max: bool, row: &[f32]) -> Option<f32> {
    use std::arch::x86_64::*;
    let pick = |l: __m512, x: __m512| if max { _mm512_max_ps(x, l) } else { _mm512_min_ps(x, l) };
    let unordered = |a: __m512, b: __m512| _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(a, b);
    let mut best = row[0];
    let mut l = [_mm512_set1_ps(best); 4];
    let mut nan: __mmask16 = 0;
    let mut chunks = row.chunks_exact(4 * LANES);
    for c in &mut chunks {
        // SAFETY: each load reads 16 of the chunk's 64 elements.
        let x: [__m512; 4] = std::array::from_fn(|v| unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * v)) });
        for v in 0..4 {
            l[v] = pick(l[v], x[v]);
        }
        nan |= unordered(x[0], x[1]) | unordered(x[2], x[3]);
    }
    let mut vectors = chunks.remainder().chunks_exact(LANES);
    for c in &mut vectors {
        // SAFETY: a whole vector of the row.
        let x = unsafe { _mm512_loadu_ps(c.as_ptr()) };
        l[0] = pick(l[0], x);
        nan |= unordered(x, x);
    }
    let rest = vectors.remainder();
    if nan != 0 || rest.iter().any(|x| x.is_nan()) {
        return None;
    }
    let lanes = pick(pick(pick(l[0], l[1]), l[2]), l[3]);
    // Without NaNs the best value is one number, whatever the order it is found in, but for
    // the sign of a zero: `best_lanes` keeps the first of equal elements (row[0], then the lanes
    // in order, then the rest), so a best of zero takes that walk.
    let wins = |x: f32, b: f32| if max { x > b } else { x < b };
    let reduced = if max { _mm512_reduce_max_ps(lanes) } else { _mm512_reduce_min_ps(lanes) };
    let found = rest.iter().fold(reduced, |b, &x| if wins(x, b) { x } else { b });
    let found = if wins(best, found) { best } else { found };
    if found != 0.0 {
        return Some(found);
    }
    let mut lane = [0f32; LANES];
    // SAFETY: `lane` holds one vector.
    unsafe { _mm512_storeu_ps(lane.as_mut_ptr(), lanes) };
    for &x in lane.iter().chain(rest) {
        if wins(x, best) {
            best = x;
        }
    }
    Some(best)
}

fn sum_run<T: Acc>(src: &[T], view: &Layout, start: usize, len: usize) -> T::Sum {
    view.offsets_from(start).take(len).fold(T::zero(), |acc, o| T::add(acc, src[o]))
}

fn best_run<T: Acc>(op: ReduceOp, src: &[T], view: &Layout, start: usize, len: usize) -> (T, usize) {
    let mut offs = view.offsets_from(start).take(len);
    let first = offs.next().map(|o| src[o]).unwrap_or_default();
    let mut best = (first, 0);
    for (k, o) in offs.enumerate() {
        if better(op, src[o], best.0) {
            best = (src[o], k + 1);
        }
    }
    best
}

/// The longest run of trailing logical elements of `view` that is contiguous in memory and
/// divides `r` (the reduced dims are the view's last ones), and the view of the runs' starts.
fn contiguous_runs(view: &Layout, r: usize) -> (usize, Layout) {
    let (dims, strides) = (view.dims(), view.strides());
    let (mut run, mut keep) = (1, dims.len());
    while keep > 0 && (strides[keep - 1] == run || dims[keep - 1] == 1) && run * dims[keep - 1] <= r {
        run *= dims[keep - 1];
        keep -= 1;
    }
    let outer = Layout::new(kiln_tensor::Shape::new(&dims[..keep]), &strides[..keep], view.offset());
    (run, outer)
}

/// Reduces logical elements `start..start + r` of `view`.
fn reduce_one<T: Acc>(op: ReduceOp, src: &[T], view: &Layout, start: usize, r: usize, par: bool) -> (T, usize) {
    match op {
        ReduceOp::Sum => {
            // A closure marked for inlining, not a fn item: a fn item's `Fn::call` shim was
            // compiled apart with 128-bit registers (a channel sum ran at half PyTorch's speed).
            let total = over_runs(
                view,
                (start, r),
                par,
                #[inline(always)]
                |starts: Starts<'_>, run: usize| T::sum_runs(src, starts, run),
                |s, n| sum_run(src, view, s, n),
                T::merge,
            );
            // Added to zero, as the sums before `over_runs` began: a sum of -0.0s stays +0.0.
            (T::finish(T::merge(T::zero(), total.unwrap_or(T::zero()))), 0)
        }
        ReduceOp::Max | ReduceOp::Min if r > 0 => {
            let pick = |best: T, cand: T| if better(op, cand, best) { cand } else { best };
            let walk = |s, n| best_run(op, src, view, s, n).0;
            (
                over_runs(
                    view,
                    (start, r),
                    par,
                    #[inline(always)]
                    |starts: Starts<'_>, run: usize| {
                        each_run(
                            src,
                            starts,
                            run,
                            #[inline(always)]
                            |row: &[T]| T::best_row(op, row),
                            pick,
                        )
                    },
                    walk,
                    pick,
                )
                .unwrap_or_default(),
                0,
            )
        }
        _ => {
            let blocks = r.div_ceil(CHUNK).max(1);
            let run = |b: usize| {
                let (s, n) = (start + b * CHUNK, CHUNK.min(r - b * CHUNK));
                let (v, k) = best_run(op, src, view, s, n);
                (v, k + b * CHUNK)
            };
            let pick = |best: (T, usize), cand: (T, usize)| if better(op, cand.0, best.0) { cand } else { best };
            let best = match par && blocks > 1 {
                true => crate::parallel::map_fold(blocks, run, pick),
                false => (0..blocks).map(run).reduce(pick),
            };
            best.unwrap_or_default()
        }
    }
}

/// Elements `start..start + r` of `view` reduced in blocks of whole contiguous runs (a conv
/// bias gradient's H x W planes, or all of a contiguous tensor): `runs(starts, len)` reduces
/// the contiguous runs of `len` elements at `starts` in wide registers (called inside
/// `vectorized`; its loop over the runs is its own, so that it may keep state across them),
/// `walk(s, n)` elements `s..s + n` through the layout where runs are
/// single elements (walking every element through the offsets cost 0.9 ns an element, 2.9 for
/// a max), and `merge` combines results in index order. The blocks depend on the shape only,
/// not on threads; `None` when there is nothing to reduce.
fn over_runs<R: Copy + Default + Send>(
    view: &Layout,
    (start, r): (usize, usize),
    par: bool,
    runs: impl Fn(Starts<'_>, usize) -> Option<R> + Sync,
    walk: impl Fn(usize, usize) -> R + Sync,
    merge: impl Fn(R, R) -> R + Sync,
) -> Option<R> {
    let (run, outer) = contiguous_runs(view, r);
    let step = if run > 1 && run <= CHUNK { (CHUNK / run) * run } else { CHUNK };
    let blocks = r.div_ceil(step);
    let block = |b: usize| {
        let (s, n) = (start + b * step, step.min(r - b * step));
        if run == r && r > CHUNK {
            // One contiguous run per output: each block is a slice.
            let base = outer.offsets_from(start / run).next().unwrap_or(0) + (s - start);
            vectorized(
                #[inline(always)]
                || runs(Starts::One(Some(base)), n),
            )
            .unwrap_or_default()
        } else if run > 1 && run <= CHUNK {
            // The runs' loop inside `runs`, not `map(..).reduce(..)` here: the iterator's
            // closure was compiled apart from the wide registers, in 128-bit code (the sum over
            // (0, 2, 3) of 16x32x26x26: 21.1-35.9 -> 14.7-19.0 µs).
            vectorized(
                #[inline(always)]
                || runs(Starts::Many(outer.offsets_from(s / run).take(n / run)), run),
            )
            .unwrap_or_default()
        } else {
            walk(s, n)
        }
    };
    match par && blocks > 1 {
        true => crate::parallel::map_fold(blocks, block, &merge),
        false => (0..blocks).map(block).reduce(&merge),
    }
}

/// The most offsets of a short reduction's window kept (inline) for every output.
const INLINE_OFFSETS: usize = 64;

fn reduce_typed<T: Acc>(op: ReduceOp, src: &[T], l: &Layout, dims: &[usize]) -> Result<(Buffer<T>, Buffer<i64>)> {
    let rank = l.dims().len();
    let kept: DimVec = (0..rank).filter(|d| !dims.contains(d)).collect();
    let perm: DimVec = kept.iter().chain(dims).copied().collect();
    let view = l.permute(op.name(), &perm)?;
    let r: usize = dims.iter().map(|&d| l.dims()[d]).product();
    let outs: usize = kept.iter().map(|&d| l.dims()[d]).product();
    let per_output_par = outs >= 2 * rayon::current_num_threads().max(1) && outs * r >= PAR_THRESHOLD;
    let red = Layout::new(
        kiln_tensor::Shape::new(dims.iter().map(|&d| l.dims()[d]).collect::<DimVec>()),
        dims.iter().map(|&d| l.strides()[d]).collect::<DimVec>(),
        0,
    );
    // Rows that are contiguous in memory (the last dims, reduced): lane-parallel loops. One
    // strided dim (a column sum): its stride. Otherwise the reduced elements' offsets, inline
    // for the common short windows; longer windows of several dims take the general path below
    // (collected, their offsets went to the allocator, as a column's did from 65 rows: every
    // bias gradient at batch 1024).
    let mut long = red.dims().iter().zip(red.strides()).filter(|(&d, _)| d > 1).map(|(_, &s)| s);
    let (first_long, more) = (long.next(), long.next().is_some());
    let contiguous = red.is_contiguous();
    if r <= CHUNK && (contiguous || !more || r <= INLINE_OFFSETS) {
        // Short reductions (pooling windows, rows): the reduced elements' relative offsets are
        // computed once, and outputs are walked in chunks, not one iterator per output.
        let rel: SmallVec<[usize; INLINE_OFFSETS]> =
            if !contiguous && more { red.offsets().collect() } else { SmallVec::new() };
        let window = match (contiguous, first_long, more) {
            (true, _, _) | (false, None, _) => Window::Contiguous,
            (false, Some(stride), false) => Window::Strided(stride),
            (false, Some(_), true) => Window::Offsets(&rel),
        };
        let kept_l = Layout::new(
            kiln_tensor::Shape::new(kept.iter().map(|&d| l.dims()[d]).collect::<DimVec>()),
            kept.iter().map(|&d| l.strides()[d]).collect::<DimVec>(),
            l.offset(),
        );
        // Few rows per chunk when rows are long, so both threads get work.
        let rows_per_task = (CHUNK / r.max(1)).max(1);
        let fill = |first: usize, vals: &mut [T], idx: &mut [i64]| {
            vectorized(
                #[inline(always)]
                || {
                    for (k, base) in kept_l.offsets_from(first).take(vals.len().max(idx.len())).enumerate() {
                        put(vals, idx, k, short_one(op, src, base, r, window));
                    }
                },
            )
        };
        return outputs(op, outs, rows_per_task, per_output_par, fill);
    }
    let fill = |first: usize, vals: &mut [T], idx: &mut [i64]| {
        let par = !per_output_par && r >= PAR_THRESHOLD;
        for k in 0..vals.len().max(idx.len()) {
            put(vals, idx, k, reduce_one(op, src, &view, (first + k) * r, r, par));
        }
    };
    outputs(op, outs, 1, per_output_par, fill)
}

/// Where a short reduction's elements lie, relative to each output's first one.
#[derive(Clone, Copy)]
enum Window<'a> {
    /// A contiguous row.
    Contiguous,
    /// Evenly spaced, this many elements apart (a column).
    Strided(usize),
    /// At these offsets (a pooling window).
    Offsets(&'a [usize]),
}

/// One output of a short reduction: the `r` elements of `window` from `base`. A function, not
/// a closure, so that it is inlined into the caller's `vectorized` body: a closure there was
/// compiled apart, with 128-bit registers only (a row sum of 1024x1024 f32 took 78 µs, 3x
/// PyTorch's).
#[inline(always)]
fn short_one<T: Acc>(op: ReduceOp, src: &[T], base: usize, r: usize, window: Window<'_>) -> (T, usize) {
    match window {
        Window::Contiguous if r > 0 => {
            let row = &src[base..base + r];
            match op {
                ReduceOp::Sum => (T::finish(sum_lanes(row)), 0),
                ReduceOp::Max | ReduceOp::Min => (T::best_row(op, row), 0),
                _ => best_of(op, row.iter().copied()),
            }
        }
        Window::Contiguous => fold(op, src, base, std::iter::empty()),
        Window::Strided(stride) => fold(op, src, base, (0..r).map(|i| i * stride)),
        Window::Offsets(rel) => fold(op, src, base, rel.iter().copied()),
    }
}

/// The sum, or first best element and its position, of `src[base + o]` over offsets `rel`.
#[inline(always)]
fn fold<T: Acc>(op: ReduceOp, src: &[T], base: usize, rel: impl Iterator<Item = usize>) -> (T, usize) {
    match op {
        ReduceOp::Sum => (T::finish(rel.fold(T::zero(), |acc, o| T::add(acc, src[base + o]))), 0),
        _ => best_of(op, rel.map(|o| src[base + o])),
    }
}

/// Output `k`'s value or index, into whichever of the two slices the op returns.
#[inline(always)]
fn put<T>(vals: &mut [T], idx: &mut [i64], k: usize, (v, i): (T, usize)) {
    if let Some(slot) = vals.get_mut(k) {
        *slot = v;
    }
    if let Some(slot) = idx.get_mut(k) {
        *slot = i as i64;
    }
}

/// The first best element of `xs` (NaN wins) and its position; `(default, 0)` when empty.
fn best_of<T: Acc>(op: ReduceOp, mut xs: impl Iterator<Item = T>) -> (T, usize) {
    let Some(first) = xs.next() else { return (T::default(), 0) };
    let mut best = (first, 0);
    for (k, x) in xs.enumerate() {
        if better(op, x, best.0) {
            best = (x, k + 1);
        }
    }
    best
}

/// The values (or, for argmax/argmin, the indices) of `outs` outputs in pooled buffers, filled
/// by `fill(first_output, values, indices)` in pieces of `per_task` outputs, in parallel when
/// `par`. The slice the op does not return is empty.
fn outputs<T: Acc>(
    op: ReduceOp,
    outs: usize,
    per_task: usize,
    par: bool,
    fill: impl Fn(usize, &mut [T], &mut [i64]) + Sync,
) -> Result<(Buffer<T>, Buffer<i64>)> {
    let (mut vals, mut idx) = if op.is_arg() {
        (Buffer::default(), alloc_for_overwrite(outs, 0i64)?)
    } else {
        (alloc_for_overwrite(outs, T::default())?, Buffer::default())
    };
    let per_task = per_task.max(1);
    match (par, op.is_arg()) {
        (false, _) => fill(0, &mut vals, &mut idx),
        (true, false) => {
            crate::parallel::for_each_chunk_mut(&mut vals, per_task, |c, v| fill(c * per_task, v, &mut []))
        }
        (true, true) => crate::parallel::for_each_chunk_mut(&mut idx, per_task, |c, i| fill(c * per_task, &mut [], i)),
    }
    Ok((vals, idx))
}

/// Sums an unsigned integer storage into i64 (the widened storage is the layout's own elements,
/// so the layout is reused as is).
fn int_sum_of<T: Copy + Into<i64>>(v: &[T], l: &Layout, dims: &[usize]) -> Result<CpuStorage> {
    let wide: Vec<i64> = v.iter().map(|&x| x.into()).collect();
    let (vals, _) = reduce_typed(ReduceOp::Sum, &wide, l, dims)?;
    Ok(CpuStorage::I64(vals))
}

/// Sums over the leading dims of a small contiguous f32 tensor (a bias gradient, `dy.sum(0)`):
/// rows added into one f64 accumulator per column, a vector of columns at a time. The general
/// path sums each column on its own, strided, and took 3.4 us for `[32, 128]`. Each column is
/// summed in f64 in row order, as there, so the bits are the same. `None` for other cases.
fn column_sums(v: &[f32], l: &Layout, dims: &[usize]) -> Result<Option<Buffer<f32>>> {
    let leading = !dims.is_empty() && dims.iter().enumerate().all(|(i, &d)| i == d);
    let Some((start, end)) = l.contiguous_range().filter(|_| leading) else { return Ok(None) };
    let rows: usize = l.dims()[..dims.len()].iter().product();
    let cols: usize = l.dims()[dims.len()..].iter().product();
    // One column is a contiguous run, which the general path sums in lanes (other bits).
    if rows == 0 || cols < 2 || rows > CHUNK || rows * cols >= PAR_THRESHOLD {
        return Ok(None);
    }
    let mut acc = alloc_for_overwrite(cols, 0f64)?;
    let mut out = alloc_for_overwrite(cols, 0f32)?;
    vectorized(
        #[inline(always)]
        || {
            acc.fill(0.0);
            for row in v[start..end].chunks_exact(cols) {
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += x as f64;
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = a as f32;
            }
        },
    );
    f64::pool().give(acc);
    Ok(Some(out))
}

pub(crate) fn reduce(op: ReduceOp, s: &CpuStorage, l: &Layout, dims: &[usize]) -> Result<CpuStorage> {
    s.check(op.name(), l)?;
    if op.is_arg() && dims.len() != 1 {
        return Err(Error::invalid(op.name(), format!("reduces exactly one dim, got {dims:?}")));
    }
    match (op, s) {
        (ReduceOp::Sum, CpuStorage::U32(v)) => return int_sum_of(v, l, dims),
        (ReduceOp::Sum, CpuStorage::U8(v)) => return int_sum_of(v, l, dims),
        (ReduceOp::Sum, CpuStorage::F32(v)) => {
            if let Some(sums) = column_sums(v, l, dims)? {
                return Ok(CpuStorage::F32(sums));
            }
        }
        _ => {}
    }
    macro_rules! go {
        ($($v:ident),*) => {
            match s {
                $(CpuStorage::$v(v) => {
                    let (vals, idx) = reduce_typed(op, v, l, dims)?;
                    if op.is_arg() { CpuStorage::I64(idx) } else { CpuStorage::$v(vals) }
                })*
            }
        };
    }
    Ok(go!(F32, F64, F16, BF16, I64, U32, U8))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Rows for the f32 max/min fast path: lengths around its vector sizes, with signed zeros
    /// (whose winner is the first of them), infinities, and NaNs in each part of the row.
    fn rows() -> Vec<Vec<f32>> {
        let mut rows = Vec::new();
        for len in [64, 65, 79, 80, 100, 127, 128, 129, 1000, 1024] {
            let noise: Vec<f32> = (0..len).map(|i| ((i * 7919) % 201) as f32 / 50.0 - 2.0).collect();
            rows.push(noise.clone());
            rows.push(noise.iter().map(|x| -x.abs() - 1.0).collect());
            for zeros in [[0.0f32, -0.0], [-0.0, 0.0]] {
                // The best is a zero: all zeros, or zeros among negatives.
                let mut row: Vec<f32> = (0..len).map(|i| zeros[usize::from(i % 5 == 3)]).collect();
                rows.push(row.clone());
                row.iter_mut().step_by(2).for_each(|x| *x = -1.5);
                rows.push(row.clone());
                rows.push(row.iter().map(|x| -x).collect());
            }
            // Two zeros of opposite signs among negatives (positives for min), in different
            // lanes, vectors or the scalar rest: the first in `best_lanes`'s walk wins.
            for (i, j) in [(5, 9), (9, 5), (1, 30), (20, 47), (3, len - 1), (len - 1, 2)] {
                for (zi, zj) in [(0.0f32, -0.0f32), (-0.0, 0.0)] {
                    let mut row = vec![-1.0f32; len];
                    (row[i], row[j]) = (zi, zj);
                    rows.push(row.clone());
                    rows.push(row.iter().map(|x| if *x == 0.0 { *x } else { 1.0 }).collect());
                }
            }
            for at in [0, 1, 17, 63, len - 1, len / 2 + 3] {
                for special in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut row = noise.clone();
                    row[at] = special;
                    rows.push(row);
                }
            }
        }
        rows
    }

    #[test]
    fn f32_max_and_min_match_the_lanes_bit_for_bit() {
        if crate::gemm::isa() != crate::gemm::Isa::Avx512 {
            // `best_f32` is `best_lanes` itself there.
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for row in rows() {
            for op in [ReduceOp::Max, ReduceOp::Min] {
                let (got, want) = (best_f32(op, &row), best_lanes(op, &row));
                assert_eq!(got.to_bits(), want.to_bits(), "{op:?} of a row of {}: {got} vs {want}", row.len());
            }
        }
    }

    /// The fast path takes every row without a NaN, and hands every row with one back.
    #[cfg(target_arch = "x86_64")]
    #[test]
    #[allow(unsafe_code)]
    fn the_fast_path_declines_exactly_the_rows_with_nan() {
        if crate::gemm::isa() != crate::gemm::Isa::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        for row in rows() {
            for max in [true, false] {
                // SAFETY: avx512f checked above; every row holds at least 64 elements.
                let got = unsafe { best_f32_avx512(max, &row) };
                assert_eq!(got.is_none(), row.iter().any(|x| x.is_nan()), "a row of {}", row.len());
            }
        }
    }
}
