//! # Writing a backend
//!
//! A backend is a type that implements [`Backend`]: a storage type plus fourteen required
//! methods (`location` and thirteen ops). Everything else — views, broadcasting, autograd,
//! softmax, losses, optimizers, the whole `kiln-nn` stack — is built on top by `kiln-tensor` and works unchanged on a new backend.
//!
//! ```
//! # use kiln_tensor::*;
//! // Any crate can do this with its own backend value:
//! # fn wrap<B: Backend>(my_backend: B) {
//! let device = Device::new(my_backend);
//! # }
//! ```
//!
//! ## The contract
//!
//! - **Storage** is a flat buffer of one dtype. Your storage type knows its own dtype; kiln never
//!   asks it for anything else. Storage handed to you is never mutated except through `&mut`
//!   (`copy_strided`, `scatter_add`), and kiln only passes `&mut` to storage it has just created
//!   and not yet shared, so views never observe a write.
//! - **Layouts** ([`Layout`]) give shape, strides in elements and an offset. Any input may be
//!   non-contiguous, have stride-0 (broadcast) dims, or have zero elements. Outputs are always
//!   new contiguous storage with exactly `elem_count` elements of the output shape.
//! - **Broadcasting** is done by kiln before you are called: the two layouts given to `binary`,
//!   the three given to `where_cond`, and the batch dims of the two given to `matmul` have equal
//!   shapes (stretched dims have stride 0).
//! - **Dtypes**: kiln checks dtypes before calling (both `binary` operands share a dtype, unary ops
//!   only see floats, `matmul` only floats, index tensors are `i64` or `u32`, `where_cond`
//!   masks are `u8`). Return [`Error::UnsupportedDType`] for a dtype you do not implement; the
//!   conformance suite reports which dtypes you claim.
//! - **Errors**: never panic. Out-of-range indices in `gather`/`scatter_add`/`index_select`,
//!   integer division by zero, and allocation failures are `Err`.
//!
//! ## Provided methods
//!
//! Everything else has a default built from the required core: [`Backend::binary_scalar`] (a
//! filled 1-element storage broadcast with stride 0), [`Backend::random`] (Philox numbers
//! generated on the host and uploaded), the fused kernels ([`Backend::adam_step`], [`Backend::sgd_step`],
//! [`Backend::cross_entropy_rows`] and its backward,
//! [`Backend::softmax_last`], [`Backend::linear`], [`Backend::im2col`], [`Backend::col2im`], [`Backend::conv2d`],
//! [`Backend::conv2d_backward`], [`Backend::max_pool2d_indices`], which return `None` so that
//! kiln composes them), [`Backend::synchronize`] and [`Backend::storage_dtype`]. Override them
//! when your device can do better; the conformance suite checks an override against the
//! composed results. The random stream is defined by [`crate::random`] and an override must
//! reproduce it exactly, so that the same seed gives the same weights on every device.
//!
//! The guide `docs/writing-a-backend.md` in the repository walks through a complete backend
//! written outside kiln (`examples/custom-backend`), method by method, with when to override
//! which default.
//!
//! ## Testing
//!
//! Add `kiln-conformance` as a dev-dependency and write, in `tests/conformance.rs`:
//!
//! ```ignore
//! kiln_conformance::suite!(kiln_tensor::Device::new(MyBackend::new()));
//! ```
//!
//! That generates one `#[test]` per op family. Each compares your backend with the reference
//! oracle on fresh random inputs (the seed is printed on failure; set `KILN_SEED` to replay)
//! and runs finite-difference gradient checks. For a device that is not always present, return
//! `None` from the expression (`suite!(optional "name": expr)`) and the tests print
//! `skipped: no <name> device` and pass.
//!
//! ## Versioning
//!
//! A kiln release may add *provided* methods (with defaults) and new variants to the op enums
//! ([`UnaryOp`], [`BinaryOp`] and [`ReduceOp`] are `#[non_exhaustive]`: match them with a
//! fallback arm that returns an `Invalid` error). Changing or adding a *required* method, or
//! adding a dtype, is a breaking release.

use crate::{
    AdadeltaStep, AdamStep, BinaryOp, DType, Error, HostData, Layout, ReduceOp, Result, SgdStep, UnaryOp, Window2d,
};

/// A probability distribution for [`Backend::random`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform in `[low, high)`.
    Uniform {
        /// Inclusive lower bound.
        low: f64,
        /// Exclusive upper bound.
        high: f64,
    },
    /// Normal with the given mean and standard deviation.
    Normal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
}

/// What a fused product ([`Backend::conv2d`], [`Backend::linear`]) applies to its result before
/// writing it: `relu?(product + bias)`. Doing it while the result is still in cache saves the
/// passes (and, for small layers, the op overheads) of a separate add and ReLU.
pub struct Epilogue<'a, S> {
    /// Contiguous, one value per output channel (conv2d) or output feature (linear).
    pub bias: Option<(&'a S, &'a Layout)>,
    /// ReLU after the bias, with [`crate::UnaryOp::Relu`]'s exact values (a NaN stays NaN).
    pub relu: bool,
}

impl<S> Clone for Epilogue<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for Epilogue<'_, S> {}

/// Which gradients [`Backend::conv2d_backward`] returns, and the ReLU output to mask with.
pub struct ConvGradRequest<'a, S> {
    /// The input's gradient (the first convolution of a network needs none).
    pub dx: bool,
    /// The bias's: the sum of the (masked) output gradient over images, rows and columns.
    pub db: bool,
    /// The output of a convolution fused with ReLU, contiguous `[N, O, OH, OW]`: the output
    /// gradient counts only where it is `> 0`, as ReLU's backward `where(y > 0, g, 0)`.
    pub relu_output: Option<(&'a S, &'a Layout)>,
}

impl<S> Clone for ConvGradRequest<'_, S> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S> Copy for ConvGradRequest<'_, S> {}

/// The gradients of a convolution from [`Backend::conv2d_backward`].
pub struct ConvGrads<S> {
    /// The input's, `[N, C, H, W]`, when asked for.
    pub dx: Option<S>,
    /// The weight's, `[O, C * KH * KW]`.
    pub dw: S,
    /// The bias's, `[O]`, when asked for.
    pub db: Option<S>,
}

/// What a device implements. See the [module docs](self) for the contract.
pub trait Backend: Send + Sync + 'static {
    /// A flat buffer of elements of one dtype, owned by this backend.
    type Storage: Send + Sync + 'static;

    /// The device's name as users write it: `"cpu"`, `"cuda:0"`. Two devices with the same
    /// backend type and location are the same device.
    fn location(&self) -> String;

    // ---- storage ----

    /// Copies contiguous host data into new storage.
    fn upload(&self, data: &HostData) -> Result<Self::Storage>;
    /// Copies the logical elements of `layout` to the host, in row-major order.
    fn download(&self, storage: &Self::Storage, layout: &Layout) -> Result<HostData>;
    /// New storage of `len` elements of `dtype`, all equal to `value` (rounded to the dtype).
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<Self::Storage>;
    /// Copies the elements of `src` viewed through `src_layout` into `dst` viewed through
    /// `dst_layout` (equal shapes, same dtype). This one method makes tensors contiguous,
    /// concatenates, and writes gradients of slices.
    fn copy_strided(
        &self,
        src: &Self::Storage,
        src_layout: &Layout,
        dst: &mut Self::Storage,
        dst_layout: &Layout,
    ) -> Result<()>;
    /// The logical elements of `layout` in new row-major storage, in one pass. Default: `None`
    /// (then kiln fills new storage and writes it with [`Backend::copy_strided`], two passes
    /// over the output).
    fn contiguous(&self, storage: &Self::Storage, layout: &Layout) -> Result<Option<Self::Storage>> {
        let _ = (storage, layout);
        Ok(None)
    }
    /// Converts the elements of `layout` to `dtype` (floats to integers truncate toward zero and
    /// saturate; NaN becomes 0).
    fn cast(&self, storage: &Self::Storage, layout: &Layout, dtype: DType) -> Result<Self::Storage>;

    // ---- compute ----

    /// Applies `op` to every element (float dtypes).
    fn unary(&self, op: UnaryOp, storage: &Self::Storage, layout: &Layout) -> Result<Self::Storage>;
    /// Applies `op` element-wise; the layouts have equal shapes. Comparisons return `u8`.
    fn binary(
        &self,
        op: BinaryOp,
        lhs: &Self::Storage,
        lhs_layout: &Layout,
        rhs: &Self::Storage,
        rhs_layout: &Layout,
    ) -> Result<Self::Storage>;
    /// `cond ? on_true : on_false` element-wise; `cond` is `u8`, the three shapes are equal.
    fn where_cond(
        &self,
        cond: &Self::Storage,
        cond_layout: &Layout,
        on_true: &Self::Storage,
        true_layout: &Layout,
        on_false: &Self::Storage,
        false_layout: &Layout,
    ) -> Result<Self::Storage>;
    /// Reduces over `dims` (sorted, distinct); the output keeps them with size 1. `ArgMax` and
    /// `ArgMin` get exactly one dim and return `i64`. `Sum` of an integer dtype returns `i64`
    /// (wrapping); of a float dtype, the same dtype, accumulated in at least f32.
    fn reduce(&self, op: ReduceOp, storage: &Self::Storage, layout: &Layout, dims: &[usize]) -> Result<Self::Storage>;
    /// Batched matrix product: `lhs` is `[..., m, k]`, `rhs` is `[..., k, n]` with equal batch
    /// dims (possibly stride 0); the output is contiguous `[..., m, n]`. Float dtypes.
    fn matmul(
        &self,
        lhs: &Self::Storage,
        lhs_layout: &Layout,
        rhs: &Self::Storage,
        rhs_layout: &Layout,
    ) -> Result<Self::Storage>;
    /// `out[i][j] = src[i][index[i][j]]` along `dim` (shown for dim 1); the output has the index's
    /// shape, which matches `src` except along `dim`. Indices are `i64` or `u32`.
    fn gather(
        &self,
        src: &Self::Storage,
        src_layout: &Layout,
        index: &Self::Storage,
        index_layout: &Layout,
        dim: usize,
    ) -> Result<Self::Storage>;
    /// `dst[index[i][j]][j] += src[i][j]` along `dim` (shown for dim 0), in place on a
    /// contiguous `dst`. `index` and `src` have equal shapes.
    #[allow(clippy::too_many_arguments)]
    fn scatter_add(
        &self,
        dst: &mut Self::Storage,
        dst_layout: &Layout,
        index: &Self::Storage,
        index_layout: &Layout,
        src: &Self::Storage,
        src_layout: &Layout,
        dim: usize,
    ) -> Result<()>;
    /// [`Backend::scatter_add`] into zeros: a new contiguous storage of `dst_layout`'s shape and
    /// `dtype`, zero except where `src` is added (the backward of `gather`, and so of max
    /// pooling). Default: [`Backend::fill`], then [`Backend::scatter_add`]; a backend can zero
    /// each destination row as it adds into it, writing the result once instead of twice.
    #[allow(clippy::too_many_arguments)]
    fn scatter_add_into_zeros(
        &self,
        dst_layout: &Layout,
        dtype: DType,
        index: &Self::Storage,
        index_layout: &Layout,
        src: &Self::Storage,
        src_layout: &Layout,
        dim: usize,
    ) -> Result<Self::Storage> {
        let mut dst = self.fill(dst_layout.elem_count(), dtype, 0.0)?;
        self.scatter_add(&mut dst, dst_layout, index, index_layout, src, src_layout, dim)?;
        Ok(dst)
    }
    /// Selects the slices `ids[k]` of `src` along `dim`; `ids` is 1-D `i64` or `u32`.
    fn index_select(
        &self,
        src: &Self::Storage,
        src_layout: &Layout,
        ids: &Self::Storage,
        ids_layout: &Layout,
        dim: usize,
    ) -> Result<Self::Storage>;

    // ---- provided ----

    /// `op(x, scalar)` element-wise. Default: a 1-element storage broadcast with stride 0.
    fn binary_scalar(
        &self,
        op: BinaryOp,
        storage: &Self::Storage,
        layout: &Layout,
        dtype: DType,
        scalar: f64,
    ) -> Result<Self::Storage> {
        let s = self.fill(1, dtype, scalar)?;
        let sl = Layout::new(layout.shape().clone(), crate::DimVec::from_elem(0, layout.shape().rank()), 0);
        self.binary(op, storage, layout, &s, &sl)
    }

    /// `len` random numbers of `dtype` from `dist`, the stream of [`crate::random`] for `seed`.
    /// Default: generated on the host and uploaded.
    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<Self::Storage> {
        self.upload(&crate::random::sample_as(dist, len, seed, dtype))
    }

    /// One fused Adam/AdamW update: `inputs` are the parameter, its gradient and the two moments
    /// (equal shapes and dtypes, any layouts); returns the new `[param, m, v]`, each computed
    /// with [`AdamStep::apply`]'s roundings. Default: `None`, and kiln composes the update from
    /// primitive ops. Return `None` too for any case your kernel does not cover.
    fn adam_step(&self, step: &AdamStep, inputs: [(&Self::Storage, &Layout); 4]) -> Result<Option<[Self::Storage; 3]>> {
        let _ = (step, inputs);
        Ok(None)
    }

    /// One fused Adadelta update: `inputs` are the parameter, its gradient and its two running
    /// averages (squared gradients, squared updates; equal shapes and dtypes, any layouts);
    /// returns the new `[param, square_avg, acc_delta]`, each computed with
    /// [`AdadeltaStep::apply`]'s roundings. Default: `None` (composed from primitive ops).
    fn adadelta_step(
        &self,
        step: &AdadeltaStep,
        inputs: [(&Self::Storage, &Layout); 4],
    ) -> Result<Option<[Self::Storage; 3]>> {
        let _ = (step, inputs);
        Ok(None)
    }

    /// One fused SGD update: `inputs` are the parameter, its gradient and its momentum buffer
    /// (equal shapes and dtypes, any layouts); returns the new `[param, buffer]`, each computed
    /// with [`SgdStep::apply`]'s roundings. Default: `None` (composed from primitive ops).
    fn sgd_step(&self, step: &SgdStep, inputs: [(&Self::Storage, &Layout); 3]) -> Result<Option<[Self::Storage; 2]>> {
        let _ = (step, inputs);
        Ok(None)
    }

    /// The im2col columns of a contiguous `[N, C, H, W]` input: `[N, C * KH * KW, OH * OW]`, row
    /// `(c * KH + i) * KW + j` holding input element `(c, oh * sh - ph + i * dh, ow * sw - pw + j * dw)`
    /// (0 outside the input). Default: `None`, and kiln composes it from strided views.
    fn im2col(&self, x: &Self::Storage, layout: &Layout, win: &Window2d) -> Result<Option<Self::Storage>> {
        let _ = (x, layout, win);
        Ok(None)
    }

    /// The adjoint of [`Backend::im2col`]: sums contiguous columns `[N, C * KH * KW, OH * OW]` back
    /// into a new `[N, C, H, W]` (`input_dims`). Default: `None` (kiln differentiates the composed
    /// im2col instead).
    fn col2im(
        &self,
        cols: &Self::Storage,
        layout: &Layout,
        input_dims: [usize; 4],
        win: &Window2d,
    ) -> Result<Option<Self::Storage>> {
        let _ = (cols, layout, input_dims, win);
        Ok(None)
    }

    /// Softmax (or, with `log`, log-softmax) over the last dim of a contiguous float input, each
    /// row shifted by its maximum (a non-finite maximum counts as 0, as in the composed form:
    /// a row of -inf gives NaN, not a division by zero that hides). Default: `None` (composed
    /// from max, exp, sum and a division or log).
    fn softmax_last(&self, x: &Self::Storage, layout: &Layout, log: bool) -> Result<Option<Self::Storage>> {
        let _ = (x, layout, log);
        Ok(None)
    }

    /// ReLU's backward, `where(y > 0, g, 0)`, for `y` (ReLU's input or output) and `g` of one
    /// shape and float dtype, any layouts: a new contiguous storage. Default: `None` (composed
    /// from a comparison and a `where_cond`).
    fn relu_backward(
        &self,
        y: (&Self::Storage, &Layout),
        g: (&Self::Storage, &Layout),
    ) -> Result<Option<Self::Storage>> {
        let _ = (y, g);
        Ok(None)
    }

    /// Cross-entropy per row of float `logits` `[N, C]` against class indices `targets` `[N]`
    /// (`i64` or `u32`), both in any layout: `[N]` values `lse(x_r) - x_r[t_r]`, each row
    /// shifted by its maximum as in [`Backend::softmax_last`]. A class outside `0..C` is
    /// [`Error::IndexOutOfRange`]. Default: `None` (composed from log-softmax and gather).
    fn cross_entropy_rows(
        &self,
        logits: (&Self::Storage, &Layout),
        targets: (&Self::Storage, &Layout),
    ) -> Result<Option<Self::Storage>> {
        let _ = (logits, targets);
        Ok(None)
    }

    /// The gradient of [`Backend::cross_entropy_rows`] with respect to the logits, for the
    /// per-row gradient `grad` `[N]` (the logits' dtype; any layouts): `[N, C]` values
    /// `(softmax(x_r)[c] - [c == t_r]) * grad_r`. Default: `None` (composed).
    fn cross_entropy_rows_backward(
        &self,
        logits: (&Self::Storage, &Layout),
        targets: (&Self::Storage, &Layout),
        grad: (&Self::Storage, &Layout),
    ) -> Result<Option<Self::Storage>> {
        let _ = (logits, targets, grad);
        Ok(None)
    }

    /// A whole 2-D convolution (one group): `x` `[N, C, H, W]` and `weight` `[O, C * KH * KW]`,
    /// both contiguous; returns `y` `[N, O, OH, OW]`, image by image `weight @ im2col(x)` (see
    /// [`Backend::im2col`] for the column order) with the [`Epilogue`] applied. A backend
    /// fuses this to keep each image's columns in cache instead of writing the whole batch's to
    /// memory. Default: `None` (im2col + matmul, then the bias add and ReLU as separate ops).
    fn conv2d(
        &self,
        x: (&Self::Storage, &Layout),
        weight: (&Self::Storage, &Layout),
        epilogue: Epilogue<'_, Self::Storage>,
        win: &Window2d,
    ) -> Result<Option<Self::Storage>> {
        let _ = (x, weight, epilogue, win);
        Ok(None)
    }

    /// A Linear layer's forward: `relu?(x @ w^T + bias)` for `x` `[M, K]` and `w` `[N, K]` (any
    /// strides), returning `[M, N]`. It must give the values of `matmul(x, w.t())`, then the bias
    /// add, then ReLU, as [`Backend::matmul`] and the element-wise ops compute them (the backward
    /// pass is composed from those). Default: `None` (the three ops).
    fn linear(
        &self,
        x: (&Self::Storage, &Layout),
        w: (&Self::Storage, &Layout),
        epilogue: Epilogue<'_, Self::Storage>,
    ) -> Result<Option<Self::Storage>> {
        let _ = (x, w, epilogue);
        Ok(None)
    }

    /// The gradients of [`Backend::conv2d`] for the contiguous output gradient `grad`
    /// `[N, O, OH, OW]`, as [`ConvGradRequest`] asks. The sums over images must run in an order
    /// that does not depend on the number of threads. Default: `None` (composed from im2col,
    /// matmul and col2im).
    fn conv2d_backward(
        &self,
        x: (&Self::Storage, &Layout),
        weight: (&Self::Storage, &Layout),
        grad: (&Self::Storage, &Layout),
        win: &Window2d,
        request: ConvGradRequest<'_, Self::Storage>,
    ) -> Result<Option<ConvGrads<Self::Storage>>> {
        let _ = (x, weight, grad, win, request);
        Ok(None)
    }

    /// For max pooling of a contiguous `[N, C, H, W]` input: the `i64` index within each `H * W`
    /// plane of every window's maximum (the first one on ties; a NaN wins), as `[N, C, OH * OW]`.
    /// Padding is never selected. Default: `None` (kiln composes pooling from views).
    fn max_pool2d_indices(&self, x: &Self::Storage, layout: &Layout, win: &Window2d) -> Result<Option<Self::Storage>> {
        let _ = (x, layout, win);
        Ok(None)
    }

    /// [`Backend::max_pool2d_indices`] and the maxima themselves, from one pass: `[values,
    /// indices]`, both `[N, C, OH * OW]`, the values in `x`'s dtype and equal to the input at the
    /// indices. Default: `None`, and kiln gathers the values at the indices.
    fn max_pool2d(&self, x: &Self::Storage, layout: &Layout, win: &Window2d) -> Result<Option<[Self::Storage; 2]>> {
        let _ = (x, layout, win);
        Ok(None)
    }

    /// Waits until queued work is done (a no-op for synchronous backends).
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    /// The dtype a storage holds, when the backend can tell (layers over backends, such as
    /// profilers, use it to count bytes). Default: unknown.
    fn storage_dtype(&self, _storage: &Self::Storage) -> Option<DType> {
        None
    }
}

/// Builds the error a backend returns for a dtype it does not implement.
pub fn unsupported(op: &'static str, dtype: DType, supported: &'static str) -> Error {
    Error::UnsupportedDType { op, dtype, supported }
}
