//! The fused overrides of `Backend`'s provided methods: the Adam update in one pass, softmax and
//! log-softmax over rows, im2col and its adjoint, and max pooling's argmax. Each returns `None`
//! for a case its kernel does not cover (an integer dtype, a shape the window does not fit), and
//! kiln then composes the op as on any backend.
#![allow(unsafe_code)]

use crate::backend::CudaBackend;
use crate::kernels;
use crate::storage::CudaStorage;
use cudarc::driver::DeviceRepr;
use kiln_tensor::{AdamStep, DType, Layout, Result, SgdStep, Shape, Window2d};

/// `struct AdamArgs` of `optim.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct AdamArgs {
    k: [f64; 8],
    eps: f64,
    decoupled: i32,
    has_weight_decay: i32,
}
// SAFETY: plain old data with the C struct's layout (72 bytes of f64, then two i32).
unsafe impl DeviceRepr for AdamArgs {}

/// `struct SgdArgs` of `optim.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SgdArgs {
    k: [f64; 4],
    first: i32,
    nesterov: i32,
    has_weight_decay: i32,
    has_momentum: i32,
}
// SAFETY: plain old data with the C struct's layout (32 bytes of f64, then four i32).
unsafe impl DeviceRepr for SgdArgs {}

/// `struct Window` of `conv.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Window {
    n: u64,
    c: u64,
    h: u64,
    w: u64,
    kh: u64,
    kw: u64,
    oh: u64,
    ow: u64,
    sh: i64,
    sw: i64,
    ph: i64,
    pw: i64,
    dh: i64,
    dw: i64,
}
// SAFETY: plain old data with the C struct's layout (fourteen 8-byte fields).
unsafe impl DeviceRepr for Window {}

impl Window {
    /// The geometry for a contiguous `[N, C, H, W]` input, or `None` when the window does not
    /// fit (kiln reports that error itself).
    fn new(dims: [usize; 4], win: &Window2d) -> Option<Window> {
        let (oh, ow) = win.output_size("conv", &Shape::new(dims)).ok()?;
        let [n, c, h, w] = dims.map(|d| d as u64);
        let i = |v: usize| v as i64;
        Some(Window {
            n,
            c,
            h,
            w,
            kh: win.kernel.0 as u64,
            kw: win.kernel.1 as u64,
            oh: oh as u64,
            ow: ow as u64,
            sh: i(win.stride.0.max(1)),
            sw: i(win.stride.1.max(1)),
            ph: i(win.padding.0),
            pw: i(win.padding.1),
            dh: i(win.dilation.0),
            dw: i(win.dilation.1),
        })
    }

    fn columns(&self) -> usize {
        (self.n * self.c * self.kh * self.kw * self.oh * self.ow) as usize
    }
}

fn dims4(layout: &Layout) -> Option<[usize; 4]> {
    <[usize; 4]>::try_from(layout.dims()).ok()
}

/// One pass of an optimizer kernel, `name(inputs..., outputs..., args, n)`, over `inputs` of one
/// float dtype and shape, writing `outputs` new tensors of the same; `None` for mixed dtypes or
/// shapes (kiln then composes the update).
fn optimizer_pass<A: DeviceRepr>(
    dev: &CudaBackend,
    op: &'static str,
    inputs: &[(&CudaStorage, &Layout)],
    outputs: usize,
    name: fn(DType) -> String,
    args: impl FnOnce(DType) -> A,
) -> Result<Option<Vec<CudaStorage>>> {
    let dtype = inputs[0].0.dtype;
    let dims = inputs[0].1.dims();
    if !dtype.is_float() || inputs.iter().any(|(s, l)| s.dtype != dtype || l.dims() != dims) {
        return Ok(None);
    }
    let n = inputs[0].1.elem_count();
    let mut outs = (0..outputs).map(|_| dev.alloc(op, dtype, n)).collect::<Result<Vec<_>>>()?;
    if n == 0 {
        return Ok(Some(outs));
    }
    let (args, n64) = (args(dtype), n as u64);
    let mut tmps: Vec<Option<CudaStorage>> = inputs.iter().map(|_| None).collect();
    let views = inputs
        .iter()
        .zip(tmps.iter_mut())
        .map(|((s, l), tmp)| dev.contiguous(op, s, l, tmp))
        .collect::<Result<Vec<_>>>()?;
    {
        let mut launch = dev.launch(op, &name(dtype))?;
        for view in &views {
            launch.buf(view);
        }
        for out in outs.iter_mut() {
            launch.buf_mut(&mut out.buf);
        }
        launch.value(&args).value(&n64).run(dev.grid(n))?;
    }
    Ok(Some(outs))
}

pub(crate) fn adam_step(
    dev: &CudaBackend,
    step: &AdamStep,
    inputs: [(&CudaStorage, &Layout); 4],
) -> Result<Option<[CudaStorage; 3]>> {
    // The constants rounded to the storage dtype straight from f64, as the composed form's
    // scalar operands are; the kernel's conversions of them are then exact.
    let args = |dtype: DType| {
        let (k, eps) = step.prepare::<f64>();
        AdamArgs {
            k: k.map(|v| dtype.round_f64(v)),
            eps: dtype.round_f64(eps),
            decoupled: i32::from(step.decoupled),
            has_weight_decay: i32::from(step.weight_decay != 0.0),
        }
    };
    let outs = optimizer_pass(dev, "adam_step", &inputs, 3, kernels::adam_kernel, args)?;
    Ok(outs.and_then(|v| <[CudaStorage; 3]>::try_from(v).ok()))
}

pub(crate) fn sgd_step(
    dev: &CudaBackend,
    step: &SgdStep,
    inputs: [(&CudaStorage, &Layout); 3],
) -> Result<Option<[CudaStorage; 2]>> {
    let args = |dtype: DType| SgdArgs {
        k: [step.weight_decay, step.momentum, 1.0 - step.dampening, step.lr].map(|v| dtype.round_f64(v)),
        first: i32::from(step.first),
        nesterov: i32::from(step.nesterov),
        has_weight_decay: i32::from(step.weight_decay != 0.0),
        has_momentum: i32::from(step.momentum != 0.0),
    };
    let outs = optimizer_pass(dev, "sgd_step", &inputs, 2, kernels::sgd_kernel, args)?;
    Ok(outs.and_then(|v| <[CudaStorage; 2]>::try_from(v).ok()))
}

pub(crate) fn softmax_last(
    dev: &CudaBackend,
    x: &CudaStorage,
    layout: &Layout,
    log: bool,
) -> Result<Option<CudaStorage>> {
    let op = if log { "log_softmax" } else { "softmax" };
    if !x.dtype.is_float() {
        return Ok(None);
    }
    let n = layout.elem_count();
    let cols = layout.dims().last().copied().unwrap_or(1);
    let mut out = dev.alloc(op, x.dtype, n)?;
    if n == 0 {
        return Ok(Some(out));
    }
    let rows = n / cols;
    let mut tmp = None;
    let input = dev.contiguous(op, x, layout, &mut tmp)?;
    let (r, c) = (rows as u64, cols as u64);
    let mut launch = dev.launch(op, &kernels::softmax_kernel(log, x.dtype))?;
    launch.buf(&input).buf_mut(&mut out.buf).value(&r).value(&c).run(dev.rows(rows))?;
    Ok(Some(out))
}

/// `(rows, cols)` of logits `[N, C]` with `[N]` class indices, or `None` for shapes and dtypes
/// the cross-entropy kernels do not take.
fn cross_entropy_shape(x: (&CudaStorage, &Layout), t: (&CudaStorage, &Layout)) -> Option<(usize, usize)> {
    let [rows, cols] = <[usize; 2]>::try_from(x.1.dims()).ok()?;
    let [n] = <[usize; 1]>::try_from(t.1.dims()).ok()?;
    let ok = x.0.dtype.is_float() && matches!(t.0.dtype, DType::I64 | DType::U32) && n == rows && cols > 0;
    ok.then_some((rows, cols))
}

pub(crate) fn cross_entropy_rows(
    dev: &CudaBackend,
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
) -> Result<Option<CudaStorage>> {
    const OP: &str = "cross_entropy";
    let Some((rows, cols)) = cross_entropy_shape(x, t) else { return Ok(None) };
    let mut out = dev.alloc(OP, x.0.dtype, rows)?;
    if rows == 0 {
        return Ok(Some(out));
    }
    let (mut tx, mut tt) = (None, None);
    let logits = dev.contiguous(OP, x.0, x.1, &mut tx)?;
    let classes = dev.contiguous(OP, t.0, t.1, &mut tt)?;
    let bad = dev.bad_flag(OP)?;
    let (r, c) = (rows as u64, cols as u64);
    let mut launch = dev.launch(OP, &kernels::cross_entropy_kernel(false, x.0.dtype, t.0.dtype))?;
    launch.buf(&logits).buf(&classes).buf_mut(&mut out.buf).value(&r).value(&c).buf(&bad).run(dev.rows(rows))?;
    // A bad class is reported as indexing reports a bad index: the row's class, out of `cols`.
    match dev.flagged(OP, &bad)? {
        Some(row) => Err(dev.out_of_range(OP, t.0, t.1, row, x.1, 1)),
        None => Ok(Some(out)),
    }
}

pub(crate) fn cross_entropy_rows_backward(
    dev: &CudaBackend,
    x: (&CudaStorage, &Layout),
    t: (&CudaStorage, &Layout),
    g: (&CudaStorage, &Layout),
) -> Result<Option<CudaStorage>> {
    const OP: &str = "cross_entropy_backward";
    let Some((rows, cols)) = cross_entropy_shape(x, t) else { return Ok(None) };
    if g.0.dtype != x.0.dtype || g.1.dims() != [rows] {
        return Ok(None);
    }
    let mut out = dev.alloc(OP, x.0.dtype, rows * cols)?;
    if rows == 0 {
        return Ok(Some(out));
    }
    let (mut tx, mut tt, mut tg) = (None, None, None);
    let logits = dev.contiguous(OP, x.0, x.1, &mut tx)?;
    let classes = dev.contiguous(OP, t.0, t.1, &mut tt)?;
    let grad = dev.contiguous(OP, g.0, g.1, &mut tg)?;
    let (r, c) = (rows as u64, cols as u64);
    // The forward checked every class (the backward only runs after it).
    let mut launch = dev.launch(OP, &kernels::cross_entropy_kernel(true, x.0.dtype, t.0.dtype))?;
    launch.buf(&logits).buf(&classes).buf(&grad).buf_mut(&mut out.buf).value(&r).value(&c).run(dev.rows(rows))?;
    Ok(Some(out))
}

/// Launches `family_T(input, out, Window)` over `out_len` outputs of `out_dtype`.
fn window_kernel(
    dev: &CudaBackend,
    family: &'static str,
    (x, layout): (&CudaStorage, &Layout),
    g: Window,
    out_dtype: DType,
    out_len: usize,
) -> Result<Option<CudaStorage>> {
    if !x.dtype.is_float() {
        return Ok(None);
    }
    let mut out = dev.alloc(family, out_dtype, out_len)?;
    if out_len == 0 {
        return Ok(Some(out));
    }
    let mut tmp = None;
    let input = dev.contiguous(family, x, layout, &mut tmp)?;
    let mut launch = dev.launch(family, &kernels::conv_kernel(family, x.dtype))?;
    launch.buf(&input).buf_mut(&mut out.buf).value(&g).run(dev.grid(out_len))?;
    Ok(Some(out))
}

pub(crate) fn im2col(
    dev: &CudaBackend,
    x: &CudaStorage,
    layout: &Layout,
    win: &Window2d,
) -> Result<Option<CudaStorage>> {
    let Some(g) = dims4(layout).and_then(|d| Window::new(d, win)) else { return Ok(None) };
    window_kernel(dev, "im2col", (x, layout), g, x.dtype, g.columns())
}

pub(crate) fn col2im(
    dev: &CudaBackend,
    cols: &CudaStorage,
    layout: &Layout,
    input_dims: [usize; 4],
    win: &Window2d,
) -> Result<Option<CudaStorage>> {
    let Some(g) = Window::new(input_dims, win) else { return Ok(None) };
    if layout.elem_count() != g.columns() {
        return Ok(None);
    }
    window_kernel(dev, "col2im", (cols, layout), g, cols.dtype, input_dims.iter().product())
}

pub(crate) fn max_pool2d_indices(
    dev: &CudaBackend,
    x: &CudaStorage,
    layout: &Layout,
    win: &Window2d,
) -> Result<Option<CudaStorage>> {
    let Some(g) = dims4(layout).and_then(|d| Window::new(d, win)) else { return Ok(None) };
    let len = (g.n * g.c * g.oh * g.ow) as usize;
    window_kernel(dev, "max_pool2d_indices", (x, layout), g, DType::I64, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_argument_structs_match_their_c_sizes() {
        assert_eq!(std::mem::size_of::<AdamArgs>(), 80);
        assert_eq!(std::mem::size_of::<SgdArgs>(), 48);
        assert_eq!(std::mem::size_of::<Window>(), 112);
    }
}
