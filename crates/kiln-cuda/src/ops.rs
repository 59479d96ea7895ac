//! `impl Backend for CudaBackend`: each op checks what a kernel cannot (shapes, dtypes, views
//! inside their storage), names its kernel with `kernels::*`, and launches it on the stream.
//! Matmul is in `matmul.rs`, indexing in `indexing.rs`, the fused overrides in `fused.rs`.
//! Convolutions keep the trait's default: kiln composes them from [`Backend::im2col`] (a kernel
//! here) and cuBLAS matmuls.
#![allow(unsafe_code)]

use crate::backend::CudaBackend;
use crate::kernels;
use crate::storage::{check_fits, host_from_bytes, CudaStorage, Scalar, Strided};
use cudarc::driver::CudaView;
use kiln_tensor::backend::unsupported;
use kiln_tensor::{
    AdamStep, Backend, BinaryOp, DType, Distribution, Error, HostData, Layout, ReduceOp, Result, SgdStep, UnaryOp,
    Window2d,
};

const FLOATS: &str = "f32, f64, f16, bf16";

fn same_shapes(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(Error::shape_mismatch(op, a.shape(), b.shape()))
    }
}

fn same_dtypes(op: &'static str, a: DType, b: DType) -> Result<()> {
    if a == b {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs: a, rhs: b, shapes: String::new() })
    }
}

impl CudaBackend {
    /// `s` viewed through `layout` as one contiguous run: a view into `s` when the layout is
    /// contiguous already, else a copy made into `tmp`.
    pub(crate) fn contiguous<'a>(
        &self,
        op: &'static str,
        s: &'a CudaStorage,
        layout: &Layout,
        tmp: &'a mut Option<CudaStorage>,
    ) -> Result<CudaView<'a, u8>> {
        check_fits(op, s, layout)?;
        let size = s.dtype.size_in_bytes();
        if let Some((start, _)) = layout.contiguous_range() {
            // An empty view may sit anywhere; never let cudarc's bounds assert panic on it.
            return s.buf.try_slice(start * size..).ok_or_else(|| {
                Error::invalid(op, format!("view {layout:?} starts past a storage of {} elements", s.len))
            });
        }
        let copy = tmp.insert(self.make_contiguous(op, s, layout)?);
        Ok(copy.buf.slice(..))
    }

    /// A contiguous copy of the elements of `layout`.
    pub(crate) fn make_contiguous(&self, op: &'static str, s: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        let n = layout.elem_count();
        let mut out = self.alloc(op, s.dtype, n)?;
        self.copy_strided(s, layout, &mut out, &Layout::contiguous(layout.shape().clone()))?;
        Ok(out)
    }

    /// Launches an element-wise kernel `name(in..., out, n)` over `n` outputs, each input a
    /// `(storage, layout)` pair passed as pointer and collapsed view.
    fn elementwise(
        &self,
        op: &'static str,
        name: &str,
        inputs: &[(&CudaStorage, &Layout)],
        out_dtype: DType,
    ) -> Result<CudaStorage> {
        let n = inputs.first().map_or(0, |(_, l)| l.elem_count());
        let mut out = self.alloc(op, out_dtype, n)?;
        if n == 0 {
            return Ok(out);
        }
        let views = inputs
            .iter()
            .map(|(s, l)| {
                check_fits(op, s, l)?;
                Strided::collapsed(op, l)
            })
            .collect::<Result<Vec<_>>>()?;
        let n64 = n as u64;
        let mut launch = self.launch(op, name)?;
        for ((s, _), view) in inputs.iter().zip(&views) {
            launch.buf(&s.buf).value(view);
        }
        launch.buf_mut(&mut out.buf).value(&n64).run(self.grid(n))?;
        Ok(out)
    }
}

impl kiln_tensor::Backend for CudaBackend {
    type Storage = CudaStorage;

    fn location(&self) -> String {
        format!("cuda:{}", self.info.ordinal)
    }

    fn upload(&self, data: &HostData) -> Result<CudaStorage> {
        let mut out = self.alloc("upload", data.dtype(), data.len())?;
        if !data.is_empty() {
            self.stream.memcpy_htod(data.as_bytes(), &mut out.buf).map_err(|e| self.driver_error("upload", e))?;
        }
        Ok(out)
    }

    fn download(&self, s: &CudaStorage, layout: &Layout) -> Result<HostData> {
        let n = layout.elem_count();
        let size = s.dtype.size_in_bytes();
        let mut bytes = vec![0u8; n * size];
        if n > 0 {
            let mut tmp = None;
            let view = self.contiguous("download", s, layout, &mut tmp)?;
            self.stream
                .memcpy_dtoh(&view.slice(..n * size), &mut bytes)
                .map_err(|e| self.driver_error("download", e))?;
        }
        self.sync("download")?;
        Ok(host_from_bytes(s.dtype, &bytes))
    }

    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<CudaStorage> {
        let mut out = self.alloc("fill", dtype, len)?;
        if len > 0 {
            let (value, n) = (Scalar::new(dtype, value), len as u64);
            let mut launch = self.launch("fill", &kernels::fill_kernel(dtype))?;
            launch.buf_mut(&mut out.buf).scalar(&value, dtype).value(&n).run(self.grid(len))?;
        }
        Ok(out)
    }

    fn copy_strided(&self, src: &CudaStorage, sl: &Layout, dst: &mut CudaStorage, dl: &Layout) -> Result<()> {
        same_shapes("copy_strided", sl, dl)?;
        same_dtypes("copy_strided", src.dtype, dst.dtype)?;
        check_fits("copy_strided", src, sl)?;
        check_fits("copy_strided", dst, dl)?;
        let n = sl.elem_count();
        if n == 0 {
            return Ok(());
        }
        let (vs, vd, n64) =
            (Strided::collapsed("copy_strided", sl)?, Strided::collapsed("copy_strided", dl)?, n as u64);
        let mut launch = self.launch("copy_strided", &kernels::copy_kernel(src.dtype))?;
        launch.buf(&src.buf).value(&vs).buf_mut(&mut dst.buf).value(&vd).value(&n64).run(self.grid(n))?;
        Ok(())
    }

    fn cast(&self, s: &CudaStorage, layout: &Layout, dtype: DType) -> Result<CudaStorage> {
        if s.dtype == dtype {
            return self.make_contiguous("cast", s, layout);
        }
        self.elementwise("cast", &kernels::cast_kernel(s.dtype, dtype), &[(s, layout)], dtype)
    }

    fn unary(&self, op: UnaryOp, s: &CudaStorage, layout: &Layout) -> Result<CudaStorage> {
        if !s.dtype.is_float() {
            return Err(unsupported(op.name(), s.dtype, FLOATS));
        }
        self.elementwise(op.name(), &kernels::unary_kernel(op, s.dtype), &[(s, layout)], s.dtype)
    }

    fn binary(&self, op: BinaryOp, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout) -> Result<CudaStorage> {
        let dtype = a.dtype;
        same_shapes(op.name(), la, lb)?;
        same_dtypes(op.name(), dtype, b.dtype)?;
        if dtype.is_int() && !op.supports_int() {
            return Err(unsupported(op.name(), dtype, FLOATS));
        }
        // A kernel cannot raise an error; integer division checks its divisor on the host.
        if dtype.is_int() && op == BinaryOp::Div && self.download(b, lb)?.to_f64_vec().contains(&0.0) {
            return Err(Error::invalid("div", format!("integer division by zero ({dtype} tensor)")));
        }
        let out = if op.is_comparison() { DType::U8 } else { dtype };
        self.elementwise(op.name(), &kernels::binary_kernel(op, dtype), &[(a, la), (b, lb)], out)
    }

    fn where_cond(
        &self,
        cond: &CudaStorage,
        cl: &Layout,
        on_true: &CudaStorage,
        tl: &Layout,
        on_false: &CudaStorage,
        fl: &Layout,
    ) -> Result<CudaStorage> {
        same_shapes("where_cond", cl, tl)?;
        same_shapes("where_cond", cl, fl)?;
        if cond.dtype != DType::U8 {
            return Err(unsupported("where_cond", cond.dtype, "u8 masks"));
        }
        same_dtypes("where_cond", on_true.dtype, on_false.dtype)?;
        let name = kernels::where_kernel(on_true.dtype);
        self.elementwise("where_cond", &name, &[(cond, cl), (on_true, tl), (on_false, fl)], on_true.dtype)
    }

    fn reduce(&self, op: ReduceOp, s: &CudaStorage, layout: &Layout, dims: &[usize]) -> Result<CudaStorage> {
        let rank = layout.dims().len();
        if dims.iter().any(|&d| d >= rank) || (op.is_arg() && dims.len() != 1) {
            return Err(Error::invalid(op.name(), format!("cannot reduce dims {dims:?} of {}", layout.shape())));
        }
        // The reduced dims last: each output then reduces one contiguous row.
        let perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).chain(dims.iter().copied()).collect();
        let permuted = layout.permute(op.name(), &perm)?;
        let cols: usize = dims.iter().map(|&d| layout.dims()[d]).product();
        let rows: usize = (0..rank).filter(|d| !dims.contains(d)).map(|d| layout.dims()[d]).product();
        if cols == 0 && op != ReduceOp::Sum && rows > 0 {
            return Err(Error::invalid(
                op.name(),
                format!("{} over an empty set (dims {dims:?} of {})", op.name(), layout.shape()),
            ));
        }
        let out_dtype = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
            ReduceOp::Sum if s.dtype.is_int() => DType::I64,
            _ => s.dtype,
        };
        if rows == 0 || cols == 0 {
            // Nothing to reduce (a sum over nothing is 0; the others were refused above).
            return self.fill(rows, out_dtype, 0.0);
        }
        let mut out = self.alloc(op.name(), out_dtype, rows)?;
        let mut tmp = None;
        let x = self.contiguous(op.name(), s, &permuted, &mut tmp)?;
        let (r, c) = (rows as u64, cols as u64);
        // The row kernels need exactly THREADS threads per block, which `rows` gives.
        let mut launch = self.launch(op.name(), &kernels::reduce_kernel(op, s.dtype))?;
        launch.buf(&x).buf_mut(&mut out.buf).value(&r).value(&c).run(self.rows(rows))?;
        Ok(out)
    }

    fn matmul(&self, a: &CudaStorage, la: &Layout, b: &CudaStorage, lb: &Layout) -> Result<CudaStorage> {
        crate::matmul::matmul(self, (a, la), (b, lb))
    }

    fn gather(
        &self,
        s: &CudaStorage,
        sl: &Layout,
        index: &CudaStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<CudaStorage> {
        crate::indexing::gather(self, (s, sl), (index, il), dim)
    }

    fn scatter_add(
        &self,
        dst: &mut CudaStorage,
        dl: &Layout,
        index: &CudaStorage,
        il: &Layout,
        src: &CudaStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        crate::indexing::scatter_add(self, (dst, dl), (index, il), (src, sl), dim)
    }

    fn index_select(
        &self,
        s: &CudaStorage,
        sl: &Layout,
        ids: &CudaStorage,
        il: &Layout,
        dim: usize,
    ) -> Result<CudaStorage> {
        crate::indexing::index_select(self, (s, sl), (ids, il), dim)
    }

    // ---- fused overrides ----

    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<CudaStorage> {
        let Distribution::Uniform { low, high } = dist else {
            // Normal draws need libm's log and cos bit for bit: generated on the host.
            return self.upload(&kiln_tensor::random::sample_as(dist, len, seed, dtype));
        };
        if !dtype.is_float() {
            return self.upload(&kiln_tensor::random::sample_as(dist, len, seed, dtype));
        }
        let mut out = self.alloc("random", dtype, len)?;
        if len > 0 {
            let (n, below) = (len as u64, kiln_tensor::random::largest_below(dtype, high));
            let mut launch = self.launch("random", &kernels::random_uniform_kernel(dtype))?;
            launch.buf_mut(&mut out.buf).value(&n).value(&seed).value(&low).value(&high).value(&below);
            launch.run(self.grid(len))?;
        }
        Ok(out)
    }

    fn adam_step(&self, step: &AdamStep, inputs: [(&CudaStorage, &Layout); 4]) -> Result<Option<[CudaStorage; 3]>> {
        crate::fused::adam_step(self, step, inputs)
    }

    fn cross_entropy_rows(
        &self,
        logits: (&CudaStorage, &Layout),
        targets: (&CudaStorage, &Layout),
    ) -> Result<Option<CudaStorage>> {
        crate::fused::cross_entropy_rows(self, logits, targets)
    }

    fn cross_entropy_rows_backward(
        &self,
        logits: (&CudaStorage, &Layout),
        targets: (&CudaStorage, &Layout),
        grad: (&CudaStorage, &Layout),
    ) -> Result<Option<CudaStorage>> {
        crate::fused::cross_entropy_rows_backward(self, logits, targets, grad)
    }

    fn sgd_step(&self, step: &SgdStep, inputs: [(&CudaStorage, &Layout); 3]) -> Result<Option<[CudaStorage; 2]>> {
        crate::fused::sgd_step(self, step, inputs)
    }

    fn softmax_last(&self, x: &CudaStorage, layout: &Layout, log: bool) -> Result<Option<CudaStorage>> {
        crate::fused::softmax_last(self, x, layout, log)
    }

    fn im2col(&self, x: &CudaStorage, layout: &Layout, win: &Window2d) -> Result<Option<CudaStorage>> {
        crate::fused::im2col(self, x, layout, win)
    }

    fn col2im(
        &self,
        cols: &CudaStorage,
        layout: &Layout,
        input_dims: [usize; 4],
        win: &Window2d,
    ) -> Result<Option<CudaStorage>> {
        crate::fused::col2im(self, cols, layout, input_dims, win)
    }

    fn max_pool2d_indices(&self, x: &CudaStorage, layout: &Layout, win: &Window2d) -> Result<Option<CudaStorage>> {
        crate::fused::max_pool2d_indices(self, x, layout, win)
    }

    fn synchronize(&self) -> Result<()> {
        self.sync("synchronize")
    }

    fn storage_dtype(&self, storage: &CudaStorage) -> Option<DType> {
        Some(storage.dtype)
    }
}
