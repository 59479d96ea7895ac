//! 3x3 convolutions at stride 1 by Winograd's minimal filtering F(2x2, 3x3) (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2015).
//!
//! Each 2x2 block of outputs (a *tile*) is computed from the 4x4 block of inputs under it with 16
//! multiplies per input channel instead of 36, so the products, which are nearly all of a
//! convolution's work, shrink 2.25x. Per image, in blocks of tile rows sized so that a block's
//! transformed inputs and products stay in L2:
//! 1. inputs: every 4x4 input block `d` becomes `V = Bᵀ d B` (adds only), stored as 16 matrices
//!    `[cin, tiles]`, one per position of the 4x4 result;
//! 2. products: `M[a] = U[a] @ V[a]` for the 16 positions, one batched GEMM, where `U = G g Gᵀ`
//!    holds the kernels, transformed once per call ([`Kernels`]);
//! 3. outputs: every tile's `Y = Aᵀ M A` (adds only), then the bias and ReLU.
//!
//! The input gradient of such a convolution is one too: the output gradient, padded by `2 - p`,
//! convolved with the kernels flipped and with input and output channels swapped
//! ([`Plan::input_gradient`]), so the backward pass runs the same code.
//!
//! Numerics: the transforms are exact up to rounding (their coefficients are 0, ±1 and ±1/2), but
//! the sums run in another order than the direct product's, and through intermediate values a few
//! times larger than the inputs; the results differ from im2col + GEMM in the last bits, as those
//! of two GEMMs do. Deterministic: every output is computed by one task, in a fixed order.

use crate::buffer::Buffer;
use crate::epilogue::{relu, Bias};
use crate::gemm::{gemm_same, Elem, View};
use crate::strided::alloc_for_overwrite;
use kiln_tensor::{Result, Window2d};
use std::ops::Range;

/// Tile columns computed per pass (one AVX-512 vector of f32). Rows of tiles are computed in
/// whole passes, so the buffers below carry up to `L` lanes of slack.
const L: usize = 16;
/// Elements of a block's transformed inputs plus its products (1 MiB of f32, a Zen 4 core's
/// L2). A larger block means longer products: the MNIST CNN's second layer runs as one block
/// per image instead of two or three, and its forward and backward pass took 21.1-21.4 ms
/// instead of 22.8-23.1 with half this size; the products of its weight gradient sum over a
/// block's tiles, and one block per image took 257 us per image instead of 310.
const BLOCK_ELEMS: usize = 256 * 1024;
/// The fewest input and output channels for which the transforms cost less than the multiplies
/// they save: with one channel on either side the GEMMs are one row or one deep (the MNIST CNN's
/// first layer's input gradient took 4 ms instead of 1.4).
pub(crate) const MIN_CHANNELS: usize = 8;

/// The element types this module computes in.
pub(crate) trait Real: Elem + PartialOrd + std::ops::Sub<Output = Self> + From<f32> {}
impl Real for f32 {}
impl Real for f64 {}

/// The shapes of one image's convolution: `cin` planes of `h x w` in, `cout` planes of
/// `oh x ow` out, the input padded with `pad` zeros (rows, columns).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
    pub(crate) pad: (usize, usize),
}

impl Plan {
    /// The forward convolution of `cin` planes of `h x w` into `cout`, if Winograd applies: a
    /// 3x3 kernel at stride 1 without dilation, and enough input channels.
    pub(crate) fn forward(cin: usize, cout: usize, (h, w): (usize, usize), win: &Window2d) -> Option<Plan> {
        let (oh, ow) = ((h + 2 * win.padding.0).checked_sub(2)?, (w + 2 * win.padding.1).checked_sub(2)?);
        let plan = Plan { cin, cout, h, w, oh, ow, pad: win.padding };
        (Plan::fits(win) && cin.min(cout) >= MIN_CHANNELS && oh * ow > 0).then_some(plan)
    }

    /// The input gradient of the convolution [`Plan::forward`] describes, as a convolution of the
    /// output gradient (`cout` planes of `oh x ow`) into `cin` planes of `h x w`; `None` where
    /// Winograd does not apply (padding over 2 would need negative padding here).
    pub(crate) fn input_gradient(cin: usize, cout: usize, (h, w): (usize, usize), win: &Window2d) -> Option<Plan> {
        let fwd = Plan::forward(cout, cin, (h, w), win)?;
        let pad = (2usize.checked_sub(win.padding.0)?, 2usize.checked_sub(win.padding.1)?);
        Some(Plan { cin: cout, cout: cin, h: fwd.oh, w: fwd.ow, oh: h, ow: w, pad })
    }

    fn fits(win: &Window2d) -> bool {
        win.kernel == (3, 3) && win.stride == (1, 1) && win.dilation == (1, 1)
    }

    /// Tile rows and tile columns.
    fn tiles(&self) -> (usize, usize) {
        (self.oh.div_ceil(2), self.ow.div_ceil(2))
    }

    /// Tile columns rounded up to whole passes.
    fn lanes(&self) -> usize {
        self.tiles().1.next_multiple_of(L)
    }

    /// The blocks of tile rows for `budget` elements each, in order.
    fn blocks(&self, budget: usize) -> impl Iterator<Item = Block> + '_ {
        let ((th, tw), rows) = (self.tiles(), self.block_rows(budget));
        (0..th).step_by(rows).map(move |ty0| {
            let tys = ty0..(ty0 + rows).min(th);
            let tb = tys.len() * tw;
            let ld = tb + L;
            Block { tys, tb, ld, vs: self.cin * ld, ms: self.cout * tb + L }
        })
    }

    /// Tile rows per block: as many as fit `budget` elements, then evened out over the blocks.
    fn block_rows(&self, budget: usize) -> usize {
        let (th, tw) = self.tiles();
        let fit = (budget / (16 * (self.cin + self.cout) * tw.max(1))).clamp(1, th.max(1));
        th.div_ceil(th.div_ceil(fit))
    }
}

/// A convolution ready to run: its plan and its kernels transformed once (`U = G g Gᵀ`, as 16
/// matrices `[cout, cin]`).
pub(crate) struct Kernels<T: Real> {
    plan: Plan,
    u: Buffer<T>,
}

impl<T: Real> Kernels<T> {
    /// `kernel(o, i)` returns the 3x3 kernel (row-major) from input plane `i` to output plane `o`.
    pub(crate) fn new(plan: Plan, kernel: impl Fn(usize, usize) -> [T; 9]) -> Result<Kernels<T>> {
        Ok(Kernels { plan, u: weights(&plan, kernel)? })
    }

    /// One task's buffers for [`Kernels::image`].
    pub(crate) fn scratch(&self) -> Result<Scratch<T>> {
        Scratch::with_blocks(&self.plan, BLOCK_ELEMS)
    }

    /// Makes sure the pool holds `count` sets of [`Kernels::scratch`] (one per thread: see
    /// `strided::reserve`).
    pub(crate) fn reserve_scratch(&self, count: usize) -> Result<()> {
        reserve_sets::<T>(&Scratch::<T>::lens(&self.plan, BLOCK_ELEMS), count)
    }

    /// `y = relu?(conv(x, kernels) + bias)` for one image: `x` holds `cin` planes, `y` gets
    /// `cout`.
    pub(crate) fn image(&self, x: &[T], y: &mut [T], epilogue: (Bias<'_, T>, bool), s: &mut Scratch<T>) -> Result<()> {
        image(&self.plan, &self.u, x, y, epilogue, s)
    }

    pub(crate) fn give(self) {
        T::pool().give(self.u);
    }
}

/// `U = G g Gᵀ` for every kernel (see [`Kernels::new`]).
fn weights<T: Real>(plan: &Plan, kernel: impl Fn(usize, usize) -> [T; 9]) -> Result<Buffer<T>> {
    let (co, ci) = (plan.cout, plan.cin);
    let mut u = alloc_for_overwrite(16 * co * ci, T::default())?;
    let half = T::from(0.5);
    // G's rows applied to (a, b, c): a, (a + b + c) / 2, (a - b + c) / 2, c.
    let g = |a: T, b: T, c: T| [a, (a + b + c) * half, (a - b + c) * half, c];
    for o in 0..co {
        for i in 0..ci {
            let k = kernel(o, i);
            let cols: [[T; 4]; 3] = std::array::from_fn(|j| g(k[j], k[3 + j], k[6 + j]));
            for r in 0..4 {
                for (s, v) in g(cols[0][r], cols[1][r], cols[2][r]).into_iter().enumerate() {
                    u[((r * 4 + s) * co + o) * ci + i] = v;
                }
            }
        }
    }
    Ok(u)
}

/// Makes sure the pool holds `count` sets of free buffers of the lengths `lens`.
fn reserve_sets<T: Real>(lens: &[usize], count: usize) -> Result<()> {
    // Two of the lengths can be equal: each length's buffers are counted once per set.
    for (i, &len) in lens.iter().enumerate() {
        if !lens[..i].contains(&len) {
            let per_set = lens.iter().filter(|&&l| l == len).count();
            crate::strided::reserve::<T>(len, per_set * count)?;
        }
    }
    Ok(())
}

/// One task's buffers, taken from the pool once and given back by [`Scratch::give`].
pub(crate) struct Scratch<T: Real> {
    v: Buffer<T>,
    m: Buffer<T>,
    rows: Buffer<T>,
}

impl<T: Real> Scratch<T> {
    /// The lengths of `v`, `m` and `rows`.
    fn lens(plan: &Plan, budget: usize) -> [usize; 3] {
        let (rows, lanes) = (plan.block_rows(budget), plan.lanes());
        let tb = rows * plan.tiles().1;
        [16 * plan.cin * (tb + L), 16 * (plan.cout * tb + L), rows_len(rows, lanes)]
    }

    fn with_blocks(plan: &Plan, budget: usize) -> Result<Scratch<T>> {
        let [v, m, rows] = Self::lens(plan, budget);
        Ok(Scratch {
            v: alloc_for_overwrite(v, T::default())?,
            m: alloc_for_overwrite(m, T::default())?,
            rows: alloc_for_overwrite(rows, T::default())?,
        })
    }

    pub(crate) fn give(self) {
        for v in [self.v, self.m, self.rows] {
            T::pool().give(v);
        }
    }
}

/// [`Kernels::image`], with the transformed kernels `u`.
fn image<T: Real>(
    plan: &Plan,
    u: &[T],
    x: &[T],
    y: &mut [T],
    (bias, relu_after): (Bias<'_, T>, bool),
    s: &mut Scratch<T>,
) -> Result<()> {
    let (ci, co) = (plan.cin, plan.cout);
    let a = View { offset: 0, rs: ci, cs: 1 };
    for block in plan.blocks(BLOCK_ELEMS) {
        let (tb, ld) = (block.tb, block.ld);
        crate::simd::vectorized(
            #[inline(always)]
            || inputs(plan, x, &block, &mut s.v, &mut s.rows),
        );
        let b = View { offset: 0, rs: ld, cs: 1 };
        for p in 0..16 {
            let m = &mut s.m[p * block.ms..p * block.ms + co * tb];
            gemm_same((u, a), (&s.v, b), &[(p * co * ci, p * block.vs)], m, (co, ci, tb), false)?;
        }
        crate::simd::vectorized(
            #[inline(always)]
            || outputs(plan, &s.m, &block, y, (bias, relu_after)),
        );
    }
    Ok(())
}

/// One block of tile rows: `tb` tiles, rows of the transformed inputs `ld` apart (`L` of slack
/// after each), and the 16 matrices of transformed inputs `vs` apart and of products `ms`
/// apart (`L` of slack after each: the transforms run whole passes of `L` tiles).
struct Block {
    tys: Range<usize>,
    tb: usize,
    ld: usize,
    vs: usize,
    ms: usize,
}

/// The `L` elements of `s` from `at`.
#[inline(always)]
fn chunk<T>(s: &[T], at: usize) -> &[T; L] {
    match s[at..at + L].first_chunk::<L>() {
        Some(c) => c,
        None => unreachable!("a range of L elements"),
    }
}

/// The `L` elements of `s` from `at`, to write.
#[inline(always)]
fn chunk_mut<T>(s: &mut [T], at: usize) -> &mut [T; L] {
    match s[at..at + L].first_chunk_mut::<L>() {
        Some(c) => c,
        None => unreachable!("a range of L elements"),
    }
}

// The transforms work on arrays of L lanes held by value (each loop over the lanes becomes one
// vector instruction), a few at a time so that they stay in registers: references between
// arrays kept LLVM from vectorizing (it could not rule out overlap), and arrays of arrays or
// `array::from_fn` went through memory.
type Lanes<T> = [T; L];

#[inline(always)]
fn add<T: Real>(mut x: Lanes<T>, y: Lanes<T>) -> Lanes<T> {
    for (x, y) in x.iter_mut().zip(y) {
        *x = *x + y;
    }
    x
}

#[inline(always)]
fn sub<T: Real>(mut x: Lanes<T>, y: Lanes<T>) -> Lanes<T> {
    for (x, y) in x.iter_mut().zip(y) {
        *x = *x - y;
    }
    x
}

/// The `L` lanes at `at`, `at + step`, `at + 2 step` and `at + 3 step` of `s`.
#[inline(always)]
fn four<T: Real>(s: &[T], at: usize, step: usize) -> [Lanes<T>; 4] {
    [*chunk(s, at), *chunk(s, at + step), *chunk(s, at + 2 * step), *chunk(s, at + 3 * step)]
}

/// `Bᵀ`'s row `a` applied to (d0, d1, d2, d3): d0 - d2, d1 + d2, d2 - d1, d1 - d3.
#[inline(always)]
fn b_t<T: Real>(a: usize, [d0, d1, d2, d3]: [Lanes<T>; 4]) -> Lanes<T> {
    match a {
        0 => sub(d0, d2),
        1 => add(d1, d2),
        2 => sub(d2, d1),
        _ => sub(d1, d3),
    }
}

/// `Aᵀ`'s row `u` applied to (m0, m1, m2, m3): m0 + m1 + m2, m1 - m2 - m3.
#[inline(always)]
fn a_t<T: Real>(u: usize, [m0, m1, m2, m3]: [Lanes<T>; 4]) -> Lanes<T> {
    match u {
        0 => add(add(m0, m1), m2),
        _ => sub(sub(m1, m2), m3),
    }
}

/// Brings the rows of the next plane a transform reads into the caches: it reads each plane's
/// rows once, a few lines from each of many planes, which the hardware prefetchers do not
/// foresee.
#[inline(always)]
fn prefetch_rows<T>(s: &[T]) {
    crate::simd::prefetch::<T, { crate::simd::TO_L1 }>(s.as_ptr(), s.len());
}

/// Elements of one zero-padded input row in the scratch.
fn row_len(lanes: usize) -> usize {
    2 * (lanes + L)
}

/// The scratch the transforms need for blocks of `rows` tile rows, `lanes` tile columns wide:
/// the block's zero-padded input rows and their column transforms.
fn rows_len(rows: usize, lanes: usize) -> usize {
    (2 * rows + 2) * (4 * lanes + row_len(lanes))
}

/// Copies the `w` elements of the plane row `row` of `src` (zeros for `None`) into `dst` after
/// `pad` zeros, and zeros the rest of `dst`.
#[inline(always)]
fn stage_row<T: Real>(dst: &mut [T], src: &[T], row: Option<usize>, w: usize, pad: usize) {
    dst.fill(T::default());
    if let Some(row) = row {
        let n = w.min(dst.len().saturating_sub(pad));
        crate::conv::copy_short(&mut dst[pad..pad + n], &src[row * w..row * w + n]);
    }
}

/// The even and the odd elements of `p[at .. at + 2L]`.
#[inline(always)]
fn deinterleave<T: Real>(p: &[T], at: usize) -> (Lanes<T>, Lanes<T>) {
    let pairs: &[T; 2 * L] = match p[at..at + 2 * L].first_chunk::<{ 2 * L }>() {
        Some(c) => c,
        None => unreachable!("a range of 2L elements"),
    };
    let (mut even, mut odd) = ([T::default(); L], [T::default(); L]);
    for ((e, o), pair) in even.iter_mut().zip(odd.iter_mut()).zip(pairs.chunks_exact(2)) {
        (*e, *o) = (pair[0], pair[1]);
    }
    (even, odd)
}

/// `V = Bᵀ d B` for the tiles of the block's rows, into `v` (16 matrices of `cin` rows): along
/// each input row's columns first, then down the rows.
///
/// A channel's input rows are all staged (zero-padded) first, then transformed: a staged row
/// is read back as wide vectors at other offsets than the narrow writes that filled it, and
/// the writes have left the store buffer by then.
#[inline(always)]
fn inputs<T: Real>(plan: &Plan, x: &[T], block: &Block, v: &mut [T], rows: &mut [T]) {
    let (tw, lanes) = (plan.tiles().1, plan.lanes());
    let (ci, plane, (ph, pw)) = (plan.cin, plan.h * plan.w, plan.pad);
    let (tys, ld) = (&block.tys, block.ld);
    let (in_rows, prow) = (2 * tys.len() + 2, row_len(lanes));
    let (cols, rest) = rows.split_at_mut(in_rows * 4 * lanes);
    let staged = &mut rest[..in_rows * prow];
    let rows_read = (2 * tys.start).saturating_sub(ph).min(plan.h)..(2 * tys.end + 2).saturating_sub(ph).min(plan.h);
    for c in 0..ci {
        let src = &x[c * plane..(c + 1) * plane];
        if let Some(next) = x.get((c + 1) * plane..(c + 2) * plane) {
            prefetch_rows(&next[rows_read.start * plan.w..rows_read.end * plan.w]);
        }
        for (r, dst) in staged.chunks_exact_mut(prow).enumerate() {
            let iy = (2 * tys.start + r).checked_sub(ph).filter(|&iy| iy < plan.h);
            stage_row(dst, src, iy, plan.w, pw);
        }
        // Input column j - pw at p[j]; tile t reads p[2t .. 2t + 4]: the even and odd elements
        // from 2t, then from 2t + 2.
        for (p, out) in staged.chunks_exact(prow).zip(cols.chunks_exact_mut(4 * lanes)) {
            for t0 in (0..lanes).step_by(L) {
                let ((e0, o0), (e1, o1)) = (deinterleave(p, 2 * t0), deinterleave(p, 2 * t0 + 2));
                for b in 0..4 {
                    *chunk_mut(out, b * lanes + t0) = b_t(b, [e0, o0, e1, o1]);
                }
            }
        }
        // Then down the rows: tile row `ty` of the block reads its input rows 2ty .. 2ty + 4.
        // Stores run up to L - 1 tiles past a tile row: into the next one, written after this
        // one, or into the slack of `ld`.
        for ty in 0..tys.len() {
            for b in 0..4 {
                for t0 in (0..tw).step_by(L) {
                    let d = four(cols, (2 * ty * 4 + b) * lanes + t0, 4 * lanes);
                    for a in 0..4 {
                        *chunk_mut(v, (a * 4 + b) * block.vs + c * ld + ty * tw + t0) = b_t(a, d);
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` for the tiles of the block's rows, plus the bias and ReLU, into the output
/// planes `y`.
#[inline(always)]
fn outputs<T: Real>(plan: &Plan, m: &[T], block: &Block, y: &mut [T], (bias, relu_after): (Bias<'_, T>, bool)) {
    let tw = plan.tiles().1;
    let (co, tb, tys) = (plan.cout, block.tb, &block.tys);
    let (oh, ow) = (plan.oh, plan.ow);
    for o in 0..co {
        let b = match bias {
            Bias::PerRow(b) => Some(b[o]),
            _ => None,
        };
        let out_plane = &mut y[o * oh * ow..(o + 1) * oh * ow];
        for (ty_local, ty) in tys.clone().enumerate() {
            for t0 in (0..tw).step_by(L) {
                // Loads run up to L - 1 tiles past the row, into the L elements of slack.
                let base = o * tb + ty_local * tw + t0;
                let n = (ow - 2 * t0).min(2 * L);
                // Down the rows (Aᵀ's rows 0 and 1) for each column position s, each of M's
                // 16 vectors loaded once for both output rows.
                let at = |s: usize| four(m, s * block.ms + base, 4 * block.ms);
                let (c0, c1, c2, c3) = (down(at(0)), down(at(1)), down(at(2)), down(at(3)));
                for (u, cols) in [[c0.0, c1.0, c2.0, c3.0], [c0.1, c1.1, c2.1, c3.1]].into_iter().enumerate() {
                    let oy = 2 * ty + u;
                    if oy >= oh {
                        break;
                    }
                    // Then along them.
                    let (y0, y1) = (finish(a_t(0, cols), b, relu_after), finish(a_t(1, cols), b, relu_after));
                    let mut line = [T::default(); 2 * L];
                    for (two, (y0, y1)) in line.chunks_exact_mut(2).zip(y0.into_iter().zip(y1)) {
                        (two[0], two[1]) = (y0, y1);
                    }
                    crate::conv::copy_short(&mut out_plane[oy * ow + 2 * t0..][..n], &line[..n]);
                }
            }
        }
    }
}

/// `Aᵀ`'s two rows applied to one column position of a tile's products (`a_t` for `u` = 0, 1).
#[inline(always)]
fn down<T: Real>(d: [Lanes<T>; 4]) -> (Lanes<T>, Lanes<T>) {
    (a_t(0, d), a_t(1, d))
}

/// The epilogue on `L` outputs: plus the bias, then ReLU. Lane by lane, as the other transforms
/// (an iterator over two vectors' lanes compiled to one scalar compare per lane).
// Indexed lanes are the form LLVM vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn finish<T: Real>(mut y: Lanes<T>, bias: Option<T>, relu_after: bool) -> Lanes<T> {
    if let Some(b) = bias {
        for l in 0..L {
            y[l] = y[l] + b;
        }
    }
    if relu_after {
        for l in 0..L {
            y[l] = relu(y[l]);
        }
    }
    y
}

/// The kernels' gradient of one convolution, summed over images in the transformed domain: for
/// every tile, `dL/dU = (A g Aᵀ) ⊙ V` (the output gradient's 2x2 tile `g` spread to 4x4, times
/// the transformed inputs), summed by one batched GEMM per block of tiles; [`WeightGrad::finish`]
/// maps the sum back to the 3x3 kernels (`dL/dw = Gᵀ (dL/dU) G`). This is the exact gradient of
/// the transformed forward pass, which equals the convolution; its multiplies shrink 2.25x as
/// the forward's do.
pub(crate) struct WeightGrad<T: Real> {
    plan: Plan,
    /// The running sum: 16 matrices `[cout, cin]`.
    du: Buffer<T>,
    /// One image's block, before it is added to the sum.
    part: Buffer<T>,
    scratch: Scratch<T>,
    started: bool,
}

impl<T: Real> WeightGrad<T> {
    /// Makes sure the pool holds the buffers of `count` [`WeightGrad`]s for `plan` (one per
    /// thread: see `strided::reserve`).
    pub(crate) fn reserve(plan: &Plan, count: usize) -> Result<()> {
        let n = 16 * plan.cout * plan.cin;
        let [v, m, rows] = Scratch::<T>::lens(plan, BLOCK_ELEMS);
        reserve_sets::<T>(&[n, n, v, m, rows], count)?;
        // The GEMM's own temporary (a transposed B), one length per block size.
        let lens: smallvec::SmallVec<[usize; 4]> = plan
            .blocks(BLOCK_ELEMS)
            .map(|block| {
                let (a, b, _) = grad_operands(&block);
                crate::gemm::gemm_same_scratch::<T>(a, b, (plan.cout, block.tb, plan.cin), 16)
            })
            .collect();
        reserve_sets::<f32>(&lens, count)
    }

    pub(crate) fn new(plan: Plan) -> Result<WeightGrad<T>> {
        let n = 16 * plan.cout * plan.cin;
        Ok(WeightGrad {
            plan,
            du: alloc_for_overwrite(n, T::default())?,
            part: alloc_for_overwrite(n, T::default())?,
            scratch: Scratch::with_blocks(&plan, BLOCK_ELEMS)?,
            started: false,
        })
    }

    /// Adds one image: `x` holds its `cin` input planes, `g` the gradient of its `cout` output
    /// planes.
    pub(crate) fn add_image(&mut self, x: &[T], g: &[T]) -> Result<()> {
        let plan = &self.plan;
        let (ci, co) = (plan.cin, plan.cout);
        let s = &mut self.scratch;
        for block in plan.blocks(BLOCK_ELEMS) {
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    inputs(plan, x, &block, &mut s.v, &mut s.rows);
                    spread_grads(plan, g, &block, &mut s.m, &mut s.rows);
                },
            );
            let (a, b, offsets) = grad_operands(&block);
            let dst = if self.started { &mut self.part } else { &mut self.du };
            gemm_same((&s.m, a), (&s.v, b), &offsets, dst, (co, block.tb, ci), false)?;
            if self.started {
                let (du, part) = (&mut self.du, &self.part);
                crate::simd::vectorized(
                    #[inline(always)]
                    || du.iter_mut().zip(part).for_each(|(d, &p)| *d = *d + p),
                );
            }
            self.started = true;
        }
        Ok(())
    }

    /// Writes the kernels' gradient `Gᵀ (dL/dU) G` into `dw` (`[cout, cin * 9]`, zeros if no
    /// image was added) and gives the buffers back.
    pub(crate) fn finish(self, dw: &mut [T]) {
        let (co, ci) = (self.plan.cout, self.plan.cin);
        let half = T::from(0.5);
        // Gᵀ's rows applied to (u0, u1, u2, u3): u0 + (u1 + u2) / 2, (u1 - u2) / 2, (u1 + u2) / 2 + u3.
        let g_t = |u: [T; 4]| [u[0] + (u[1] + u[2]) * half, (u[1] - u[2]) * half, (u[1] + u[2]) * half + u[3]];
        for o in 0..co {
            for c in 0..ci {
                let k = &mut dw[(o * ci + c) * 9..][..9];
                if !self.started {
                    k.fill(T::default());
                    continue;
                }
                let du = |r: usize, s: usize| self.du[((r * 4 + s) * co + o) * ci + c];
                let rows: [[T; 3]; 4] = std::array::from_fn(|s| g_t([du(0, s), du(1, s), du(2, s), du(3, s)]));
                for i in 0..3 {
                    let row = g_t([rows[0][i], rows[1][i], rows[2][i], rows[3][i]]);
                    k[i * 3..i * 3 + 3].copy_from_slice(&row);
                }
            }
        }
        self.give();
    }

    pub(crate) fn give(self) {
        T::pool().give(self.du);
        T::pool().give(self.part);
        self.scratch.give();
    }
}

/// The views and the 16 offsets of one block's weight-gradient product,
/// dL/dU[p] (cout x cin) = dM[p] (cout x tiles) @ V[p]ᵀ (tiles x cin): both run along the tiles.
fn grad_operands(block: &Block) -> (View, View, [(usize, usize); 16]) {
    let offsets = std::array::from_fn(|p| (p * block.ms, p * block.vs));
    (View { offset: 0, rs: block.tb, cs: 1 }, View { offset: 0, rs: 1, cs: block.ld }, offsets)
}

/// `A`'s row `r` applied to (g0, g1): g0, g0 + g1, g0 - g1, -g1 (the transpose of `Aᵀ`).
#[inline(always)]
fn a<T: Real>(r: usize, g0: Lanes<T>, g1: Lanes<T>) -> Lanes<T> {
    match r {
        0 => g0,
        1 => add(g0, g1),
        2 => sub(g0, g1),
        _ => sub([T::default(); L], g1),
    }
}

/// `dM = A g Aᵀ` for the tiles of the block's rows, into `dm` (16 matrices of `cout` rows of
/// `tiles`, `ms` apart); outputs past the edge (odd output sizes) count as zero.
#[inline(always)]
fn spread_grads<T: Real>(plan: &Plan, g: &[T], block: &Block, dm: &mut [T], rows: &mut [T]) {
    let (tw, lanes) = (plan.tiles().1, plan.lanes());
    let (co, tb, (oh, ow)) = (plan.cout, block.tb, (plan.oh, plan.ow));
    let (g_rows, prow) = (2 * block.tys.len(), row_len(lanes));
    // The block's gradient rows spread along their columns: [row][s][lanes].
    let (cols, rest) = rows.split_at_mut(g_rows * 4 * lanes);
    let staged = &mut rest[..g_rows * prow];
    let rows_read = (2 * block.tys.start).min(oh)..(2 * block.tys.end).min(oh);
    for o in 0..co {
        let src = &g[o * oh * ow..(o + 1) * oh * ow];
        if let Some(next) = g.get((o + 1) * oh * ow..(o + 2) * oh * ow) {
            prefetch_rows(&next[rows_read.start * ow..rows_read.end * ow]);
        }
        // Staged first, as in `inputs`.
        for (r, dst) in staged.chunks_exact_mut(prow).enumerate() {
            let oy = Some(2 * block.tys.start + r).filter(|&oy| oy < oh);
            stage_row(dst, src, oy, ow, 0);
        }
        for (p, out) in staged.chunks_exact(prow).zip(cols.chunks_exact_mut(4 * lanes)) {
            for t0 in (0..lanes).step_by(L) {
                let (g0, g1) = deinterleave(p, 2 * t0);
                for s in 0..4 {
                    *chunk_mut(out, s * lanes + t0) = a(s, g0, g1);
                }
            }
        }
        // Then down each tile row's two rows. Stores run up to L - 1 tiles past the tile row,
        // into rows written after this one or into the slack of `ms`.
        for ty in 0..block.tys.len() {
            for s in 0..4 {
                for t0 in (0..tw).step_by(L) {
                    let g0 = *chunk(cols, (2 * ty * 4 + s) * lanes + t0);
                    let g1 = *chunk(cols, ((2 * ty + 1) * 4 + s) * lanes + t0);
                    for r in 0..4 {
                        *chunk_mut(dm, (r * 4 + s) * block.ms + o * tb + ty * tw + t0) = a(r, g0, g1);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The direct sum, and the sum of the terms' magnitudes (the scale of its rounding error).
    fn direct(plan: &Plan, x: &[f64], w: &[f64]) -> (Vec<f64>, Vec<f64>) {
        let (p, n) = (plan, plan.cout * plan.oh * plan.ow);
        let (mut y, mut scale) = (vec![0.0; n], vec![0.0; n]);
        for o in 0..p.cout {
            for oy in 0..p.oh {
                for ox in 0..p.ow {
                    let at = (o * p.oh + oy) * p.ow + ox;
                    for c in 0..p.cin {
                        for (k, &wk) in w[(o * p.cin + c) * 9..][..9].iter().enumerate() {
                            let (iy, ix) = ((oy + k / 3).checked_sub(p.pad.0), (ox + k % 3).checked_sub(p.pad.1));
                            if let (Some(iy), Some(ix)) = (iy.filter(|&r| r < p.h), ix.filter(|&c| c < p.w)) {
                                let term = wk * x[(c * p.h + iy) * p.w + ix];
                                y[at] += term;
                                scale[at] += term.abs();
                            }
                        }
                    }
                }
            }
        }
        (y, scale)
    }

    /// Every output within a few roundings of the direct sum: odd and even output sizes, tiles
    /// in the padding, several blocks of tile rows, and a bias with ReLU.
    #[test]
    fn matches_the_direct_sum() {
        for &(cin, cout, h, w, pad) in &[
            (8, 8, 6, 6, (0, 0)),
            (9, 8, 7, 5, (1, 1)),
            (8, 11, 5, 9, (2, 1)),
            (8, 8, 4, 4, (3, 0)),
            (64, 64, 30, 29, (1, 0)),
        ] {
            let win = Window2d { padding: pad, ..Window2d::square(3) };
            let plan = Plan::forward(cin, cout, (h, w), &win).unwrap();
            let x: Vec<f64> = (0..cin * h * w).map(|i| ((i * 7919) % 201) as f64 / 100.0 - 1.0).collect();
            let k: Vec<f64> = (0..cout * cin * 9).map(|i| ((i * 104729) % 199) as f64 / 99.0 - 1.0).collect();
            let bias: Vec<f64> = (0..cout).map(|o| o as f64 / 10.0 - 0.4).collect();
            let kernels = Kernels::new(plan, |o, i| std::array::from_fn(|t| k[(o * cin + i) * 9 + t])).unwrap();
            let mut scratch = kernels.scratch().unwrap();
            let mut got = vec![f64::NAN; cout * plan.oh * plan.ow];
            kernels.image(&x, &mut got, (Bias::PerRow(&bias), true), &mut scratch).unwrap();
            scratch.give();
            let (want, scale) = direct(&plan, &x, &k);
            let plane = plan.oh * plan.ow;
            for (at, ((&g, &d), &s)) in got.iter().zip(&want).zip(&scale).enumerate() {
                let want = (d + bias[at / plane]).max(0.0);
                assert!((g - want).abs() <= 1e-13 * (s + 1.0), "{plan:?}: output {at} is {g}, want {want}");
            }
        }
    }

    /// The kernels' gradient within a few roundings of the direct sum over two images.
    #[test]
    fn weight_gradient_matches_the_direct_sum() {
        for &(cin, cout, h, w, pad) in &[(8, 8, 6, 6, (0, 0)), (9, 8, 7, 5, (1, 2)), (64, 64, 30, 29, (1, 0))] {
            let win = Window2d { padding: pad, ..Window2d::square(3) };
            let p = Plan::forward(cin, cout, (h, w), &win).unwrap();
            let (xn, gn) = (cin * h * w, cout * p.oh * p.ow);
            let x: Vec<f64> = (0..2 * xn).map(|i| ((i * 7919) % 201) as f64 / 100.0 - 1.0).collect();
            let g: Vec<f64> = (0..2 * gn).map(|i| ((i * 104729) % 199) as f64 / 99.0 - 1.0).collect();
            let mut grad = WeightGrad::new(p).unwrap();
            for i in 0..2 {
                grad.add_image(&x[i * xn..(i + 1) * xn], &g[i * gn..(i + 1) * gn]).unwrap();
            }
            let mut got = vec![f64::NAN; cout * cin * 9];
            grad.finish(&mut got);
            for (at, &got) in got.iter().enumerate() {
                let (o, c, k) = (at / (cin * 9), at / 9 % cin, at % 9);
                let (mut want, mut scale) = (0.0, 0.0);
                for i in 0..2 {
                    for oy in 0..p.oh {
                        for ox in 0..p.ow {
                            let (iy, ix) = ((oy + k / 3).checked_sub(pad.0), (ox + k % 3).checked_sub(pad.1));
                            if let (Some(iy), Some(ix)) = (iy.filter(|&r| r < h), ix.filter(|&c| c < w)) {
                                let term = g[i * gn + (o * p.oh + oy) * p.ow + ox] * x[i * xn + (c * h + iy) * w + ix];
                                want += term;
                                scale += term.abs();
                            }
                        }
                    }
                }
                assert!((got - want).abs() <= 1e-13 * (scale + 1.0), "{p:?}: dw[{at}] is {got}, want {want}");
            }
        }
    }

    #[test]
    fn declines_what_it_cannot_compute() {
        let square = Window2d::square(3);
        assert!(Plan::forward(1, 32, (28, 28), &square).is_none(), "one input channel");
        assert!(Plan::forward(32, 64, (26, 26), &Window2d { stride: (2, 2), ..square }).is_none());
        assert!(Plan::forward(32, 64, (26, 26), &Window2d::square(5)).is_none());
        assert!(Plan::input_gradient(32, 64, (26, 26), &Window2d { padding: (3, 0), ..square }).is_none());
        let dx = Plan::input_gradient(32, 64, (26, 26), &square).unwrap();
        assert_eq!((dx.cin, dx.cout, dx.h, dx.oh, dx.pad), (64, 32, 24, 26, (2, 2)));
    }
}
