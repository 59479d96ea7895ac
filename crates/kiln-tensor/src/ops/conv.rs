//! Convolution and pooling over `[N, C, H, W]` tensors: conv2d is im2col + `matmul`, max pooling
//! is a `gather` at the windows' argmax. im2col, its adjoint col2im and the pooling argmax are
//! provided `Backend` methods; where a backend declines, they are composed from strided views
//! (every window offset is one slice of the padded input), which is also the conformance oracle.

use crate::autograd::{with_grad, Op};
use crate::backend::{ConvGradRequest, Epilogue};
use crate::{Error, Result, Shape, Tensor, Var};

/// Stride, padding and dilation of a 2-D convolution or pooling window, as `(height, width)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window2d {
    /// Window size.
    pub kernel: (usize, usize),
    /// Step between windows.
    pub stride: (usize, usize),
    /// Implicit padding on each side.
    pub padding: (usize, usize),
    /// Spacing between window elements.
    pub dilation: (usize, usize),
}

impl Window2d {
    /// A `k x k` window with stride 1, no padding, no dilation.
    pub fn square(k: usize) -> Self {
        Window2d { kernel: (k, k), stride: (1, 1), padding: (0, 0), dilation: (1, 1) }
    }

    /// The output size for an input of `h x w`, or an error naming `op` and the input shape.
    pub fn output_size(&self, op: &'static str, shape: &Shape) -> Result<(usize, usize)> {
        let d = shape.dims();
        let (h, w) = (d[2], d[3]);
        let out = |size: usize, k: usize, s: usize, p: usize, dil: usize| -> Option<usize> {
            if k == 0 || s == 0 || dil == 0 {
                return None;
            }
            let span = dil.checked_mul(k - 1)?.checked_add(1)?;
            size.checked_add(p.checked_mul(2)?)?.checked_sub(span).map(|r| r / s + 1)
        };
        match (
            out(h, self.kernel.0, self.stride.0, self.padding.0, self.dilation.0),
            out(w, self.kernel.1, self.stride.1, self.padding.1, self.dilation.1),
        ) {
            (Some(oh), Some(ow)) => Ok((oh, ow)),
            _ => Err(Error::invalid(
                op,
                format!(
                    "a {:?} window (stride {:?}, padding {:?}, dilation {:?}) does not fit an input of shape {shape}",
                    self.kernel, self.stride, self.padding, self.dilation
                ),
            )),
        }
    }
}

fn check_4d(op: &'static str, x: &Tensor) -> Result<()> {
    if x.rank() != 4 {
        return Err(Error::invalid(op, format!("expects a [N, C, H, W] input, got shape {}", x.shape())));
    }
    Ok(())
}

impl Tensor {
    /// Pads dims 2 and 3 of an `[N, C, H, W]` tensor with `value` on both sides.
    pub fn pad2d(&self, pad_h: usize, pad_w: usize, value: f64) -> Result<Tensor> {
        check_4d("pad2d", self)?;
        let mut x = self.clone();
        for (dim, pad) in [(2usize, pad_h), (3, pad_w)] {
            if pad == 0 {
                continue;
            }
            let mut side = x.dims().to_vec();
            side[dim] = pad;
            let fill = Tensor::full(value, side, x.dtype(), x.device())?;
            x = Tensor::cat(&[&fill, &x, &fill], dim as isize)?;
        }
        Ok(x)
    }

    /// The windows of an `[N, C, H, W]` tensor as `[N, C, KH * KW, OH, OW]` (padding with `pad`).
    pub fn windows2d(&self, op: &'static str, win: Window2d, pad: f64) -> Result<Tensor> {
        check_4d(op, self)?;
        let (oh, ow) = win.output_size(op, self.shape())?;
        let x = self.pad2d(win.padding.0, win.padding.1, pad)?;
        let mut slices = Vec::with_capacity(win.kernel.0 * win.kernel.1);
        for i in 0..win.kernel.0 {
            for j in 0..win.kernel.1 {
                let (r, c) = (i * win.dilation.0, j * win.dilation.1);
                let rows = x.slice(2, r, r + win.stride.0 * (oh - 1) + 1, win.stride.0)?;
                slices.push(rows.slice(3, c, c + win.stride.1 * (ow - 1) + 1, win.stride.1)?);
            }
        }
        Tensor::stack(&slices.iter().collect::<Vec<_>>(), 2)
    }

    /// The im2col columns of an `[N, C, H, W]` tensor: `[N, C * KH * KW, OH * OW]` (zero padding),
    /// so that a convolution is one matrix product per image.
    pub fn im2col(&self, win: Window2d) -> Result<Tensor> {
        const OP: &str = "im2col";
        check_4d(OP, self)?;
        let (oh, ow) = win.output_size(OP, self.shape())?;
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let rows = c * win.kernel.0 * win.kernel.1;
        let x = crate::no_grad(|| self.contiguous())?;
        if let Some(s) = self.backend().im2col(x.storage(), x.layout(), &win)? {
            return Ok(self.result(
                s,
                Shape::new([n, rows, oh * ow]),
                self.dtype(),
                Some(Op::Im2col(self.clone(), win)),
            ));
        }
        self.windows2d(OP, win, 0.0)?.reshape([n, rows, oh * ow])
    }

    /// The adjoint of [`Tensor::im2col`]: sums columns back into an input of shape `input`.
    pub(crate) fn col2im(&self, input: &Shape, win: Window2d) -> Result<Tensor> {
        let d = input.dims();
        let dims = [d[0], d[1], d[2], d[3]];
        let g = self.contiguous()?;
        if let Some(s) = self.backend().col2im(g.storage(), g.layout(), dims, &win)? {
            return Ok(self.result(s, input.clone(), self.dtype(), None));
        }
        // The vector-Jacobian product of the composed im2col.
        let x = Var::new(Tensor::zeros(input.clone(), self.dtype(), self.device())?);
        let grads = with_grad(|| -> Result<_> {
            let (n, c) = (d[0], d[1]);
            let (oh, ow) = win.output_size("col2im", input)?;
            let cols =
                x.as_tensor().windows2d("col2im", win, 0.0)?.reshape([n, c * win.kernel.0 * win.kernel.1, oh * ow])?;
            cols.backward_with(g.clone())
        })?;
        match grads.get(&x) {
            Some(t) => Ok(t.clone()),
            None => Tensor::zeros(input.clone(), self.dtype(), self.device()),
        }
    }

    /// 2-D convolution (PyTorch's `conv2d`): input `[N, C, H, W]`, weight `[O, C / groups, KH, KW]`,
    /// optional bias `[O]`; output `[N, O, OH, OW]`.
    pub fn conv2d(&self, weight: &Tensor, bias: Option<&Tensor>, win: Window2d, groups: usize) -> Result<Tensor> {
        self.conv2d_then(weight, bias, win, groups, false)
    }

    /// `conv2d(...).relu()` in one op: a backend that fuses convolutions applies the bias and
    /// ReLU to each image's output while it is in cache, and masks the gradient and sums the
    /// bias's the same way in the backward pass, instead of separate passes over the whole
    /// activation. The outputs are those of the two ops; the bias gradient may differ from theirs
    /// in the last bits (it sums in another order).
    ///
    /// ```
    /// # use kiln_tensor::*;
    /// # let dev = kiln_cpu::cpu();
    /// let x = Tensor::randn(0.0, 1.0, [2, 3, 8, 8], DType::F32, 1, &dev)?;
    /// let w = Tensor::randn(0.0, 0.1, [4, 3, 3, 3], DType::F32, 2, &dev)?;
    /// let b = Tensor::zeros([4], DType::F32, &dev)?;
    /// let fused = x.conv2d_relu(&w, Some(&b), Window2d::square(3), 1)?;
    /// let apart = x.conv2d(&w, Some(&b), Window2d::square(3), 1)?.relu()?;
    /// assert!(fused.sub(&apart)?.abs()?.max((), false)?.to_scalar::<f32>()? < 1e-5);
    /// # Ok::<(), Error>(())
    /// ```
    pub fn conv2d_relu(&self, weight: &Tensor, bias: Option<&Tensor>, win: Window2d, groups: usize) -> Result<Tensor> {
        self.conv2d_then(weight, bias, win, groups, true)
    }

    fn conv2d_then(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        win: Window2d,
        groups: usize,
        relu: bool,
    ) -> Result<Tensor> {
        const OP: &str = "conv2d";
        check_4d(OP, self)?;
        if weight.rank() != 4 {
            return Err(Error::invalid(OP, format!("expects a [O, C, KH, KW] weight, got shape {}", weight.shape())));
        }
        let (n, c) = (self.dims()[0], self.dims()[1]);
        let (o, cg, kh, kw) = (weight.dims()[0], weight.dims()[1], weight.dims()[2], weight.dims()[3]);
        if groups == 0 || c % groups != 0 || o % groups != 0 || cg * groups != c {
            return Err(Error::ShapeMismatch {
                op: OP,
                lhs: self.shape().clone(),
                rhs: weight.shape().clone(),
                hint: format!("; with groups = {groups} the weight needs [O, C / groups, KH, KW] with C and O divisible by groups"),
            });
        }
        if let Some(b) = bias {
            if b.dims() != [o] {
                return Err(Error::shape_mismatch(OP, weight.shape(), b.shape()));
            }
        }
        let win = Window2d { kernel: (kh, kw), ..win };
        let (oh, ow) = win.output_size(OP, self.shape())?;
        if groups == 1 {
            if let Some(y) = self.conv2d_fused(&weight.reshape([o, c * kh * kw])?, bias, relu, win, (oh, ow))? {
                return Ok(y);
            }
        }
        let og = o / groups;
        let mut outs = Vec::with_capacity(groups);
        for g in 0..groups {
            let x = if groups == 1 { self.clone() } else { self.narrow(1, g * cg, cg)? };
            let w = if groups == 1 { weight.clone() } else { weight.narrow(0, g * og, og)? };
            let cols = x.im2col(win)?;
            outs.push(w.reshape([og, cg * kh * kw])?.matmul(&cols)?);
        }
        let y = if groups == 1 {
            outs.pop().ok_or_else(|| Error::invalid(OP, "no output"))?
        } else {
            Tensor::cat(&outs.iter().collect::<Vec<_>>(), 1)?
        };
        let y = y.reshape([n, o, oh, ow])?;
        let y = match bias {
            Some(b) => y.add(&b.reshape([1, o, 1, 1])?)?,
            None => y,
        };
        if relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// The backend's fused convolution of `self` with `w` `[O, C * KH * KW]` and its epilogue,
    /// if it has one.
    fn conv2d_fused(
        &self,
        w: &Tensor,
        bias: Option<&Tensor>,
        relu: bool,
        win: Window2d,
        (oh, ow): (usize, usize),
    ) -> Result<Option<Tensor>> {
        self.same_device("conv2d", w)?;
        self.same_dtype("conv2d", w)?;
        if let Some(b) = bias {
            self.same_device("conv2d", b)?;
            self.same_dtype("conv2d", b)?;
        }
        let (x, wc, bc) = crate::no_grad(|| {
            Ok::<_, Error>((self.contiguous()?, w.contiguous()?, bias.map(Tensor::contiguous).transpose()?))
        })?;
        let epilogue = Epilogue { bias: bc.as_ref().map(|b| (b.storage(), b.layout())), relu };
        let Some(s) = self.backend().conv2d((x.storage(), x.layout()), (wc.storage(), wc.layout()), epilogue, &win)?
        else {
            return Ok(None);
        };
        let shape = Shape::new([self.dims()[0], w.dims()[0], oh, ow]);
        let op = Op::Conv2d { x: self.clone(), w: w.clone(), bias: bias.cloned(), relu, win };
        Ok(Some(self.result(s, shape, self.dtype(), Some(op))))
    }

    /// 2-D max pooling (padding counts as -inf).
    pub fn max_pool2d(&self, win: Window2d) -> Result<Tensor> {
        const OP: &str = "max_pool2d";
        self.float_only(OP)?;
        check_4d(OP, self)?;
        let (oh, ow) = win.output_size(OP, self.shape())?;
        let d = self.dims();
        let (n, c, h, w) = (d[0], d[1], d[2], d[3]);
        let x = crate::no_grad(|| self.contiguous())?;
        let index = |s| {
            let layout = crate::Layout::contiguous(Shape::new([n, c, oh * ow]));
            Tensor::from_storage(s, layout, crate::DType::I64, self.device().clone(), None)
        };
        if let Some([values, idx]) = self.backend().max_pool2d(x.storage(), x.layout(), &win)? {
            // The gather below, done by the backend in its pass: recorded as that gather.
            let (src, idx) = (self.reshape([n, c, h * w])?, index(idx));
            let rec = Op::Gather(src, idx.clone(), 2);
            return self.result(values, idx.shape().clone(), self.dtype(), Some(rec)).reshape([n, c, oh, ow]);
        }
        if let Some(s) = self.backend().max_pool2d_indices(x.storage(), x.layout(), &win)? {
            let idx = index(s);
            // A gather at the argmax: its backward (a scatter-add) is max pooling's.
            return self.reshape([n, c, h * w])?.gather(2, &idx)?.reshape([n, c, oh, ow]);
        }
        // The element at each window's argmax (the first maximum, as the backends pick it), so
        // the gradient goes to that one element, not shared among ties.
        let windows = self.windows2d(OP, win, f64::NEG_INFINITY)?;
        let k = windows.dims()[2];
        let picked = crate::no_grad(|| -> Result<Tensor> {
            let at = windows.argmax(2, true)?;
            let pos = Tensor::arange(0.0, k as f64, crate::DType::I64, self.device())?.reshape([1, 1, k, 1, 1])?;
            pos.binary(crate::BinaryOp::Eq, &at)
        })?;
        let zero = Tensor::zeros([1], self.dtype(), self.device())?;
        picked.where_cond(&windows, &zero)?.sum(2, false)
    }

    /// 2-D average pooling (padding counts as zeros, PyTorch's `count_include_pad=True`).
    pub fn avg_pool2d(&self, win: Window2d) -> Result<Tensor> {
        self.float_only("avg_pool2d")?;
        self.windows2d("avg_pool2d", win, 0.0)?.mean(2, false)
    }

    /// Average pooling to a fixed `(OH, OW)` output, PyTorch's adaptive bins
    /// (`start = floor(i * H / OH)`, `end = ceil((i + 1) * H / OH)`).
    pub fn adaptive_avg_pool2d(&self, out: (usize, usize)) -> Result<Tensor> {
        const OP: &str = "adaptive_avg_pool2d";
        check_4d(OP, self)?;
        self.float_only(OP)?;
        let (h, w) = (self.dims()[2], self.dims()[3]);
        if out.0 == 0 || out.1 == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(
                OP,
                format!("output size {out:?} and input shape {} must be non-empty", self.shape()),
            ));
        }
        let bins = |size: usize, n: usize| (0..n).map(move |i| (i * size / n, ((i + 1) * size).div_ceil(n)));
        let mut rows = Vec::with_capacity(out.0);
        for (r0, r1) in bins(h, out.0) {
            let band = self.narrow(2, r0, r1 - r0)?;
            let cells = bins(w, out.1)
                .map(|(c0, c1)| band.narrow(3, c0, c1 - c0)?.mean([2, 3], true))
                .collect::<Result<Vec<_>>>()?;
            rows.push(Tensor::cat(&cells.iter().collect::<Vec<_>>(), 3)?);
        }
        Tensor::cat(&rows.iter().collect::<Vec<_>>(), 2)
    }
}

/// The gradients of a one-group convolution of `x` with `w` `[O, C * KH * KW]` for the output
/// gradient `g`: `(dx if want.0, dw, db if want.1)`. `relu_output` is the output of a convolution
/// fused with ReLU, whose mask applies to `g` first. From the backend's fused kernel, or composed
/// from im2col, matmul and col2im.
pub(crate) fn conv2d_grads(
    x: &Tensor,
    w: &Tensor,
    g: &Tensor,
    relu_output: Option<&Tensor>,
    win: Window2d,
    (need_dx, need_db): (bool, bool),
) -> Result<(Option<Tensor>, Tensor, Option<Tensor>)> {
    let (x, w, g) = (x.contiguous()?, w.contiguous()?, g.contiguous()?);
    let y = relu_output.map(Tensor::contiguous).transpose()?;
    let request =
        ConvGradRequest { dx: need_dx, db: need_db, relu_output: y.as_ref().map(|y| (y.storage(), y.layout())) };
    let grads = x.backend().conv2d_backward(
        (x.storage(), x.layout()),
        (w.storage(), w.layout()),
        (g.storage(), g.layout()),
        &win,
        request,
    )?;
    if let Some(grads) = grads {
        let dx = grads.dx.map(|s| x.result(s, x.shape().clone(), x.dtype(), None));
        let db = grads.db.map(|s| w.result(s, Shape::new([w.dims()[0]]), w.dtype(), None));
        return Ok((dx, w.result(grads.dw, w.shape().clone(), w.dtype(), None), db));
    }
    // ReLU's backward, as the rule for a separate ReLU computes it.
    let g = match &y {
        Some(y) => crate::ops_internal::relu_backward(y, &g)?,
        None => g,
    };
    let db = match need_db {
        true => Some(g.sum([0, 2, 3], false)?),
        false => None,
    };
    let (n, o) = (g.dims()[0], g.dims()[1]);
    let l = g.dims()[2] * g.dims()[3];
    let g = g.reshape([n, o, l])?;
    let cols = x.im2col(win)?;
    let dw = g.matmul(&cols.transpose(1, 2)?)?.sum(0, false)?;
    let dx = match need_dx {
        true => Some(w.t()?.matmul(&g)?.col2im(x.shape(), win)?),
        false => None,
    };
    Ok((dx, dw, db))
}
