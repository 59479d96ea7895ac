//! # kiln-cpu
//!
//! kiln's CPU backend: every dtype and every strided layout, parallel with rayon above a size
//! threshold, deterministic at any thread count (work is split into fixed-size chunks and
//! partial results are combined in a fixed order).
//!
//! ```
//! use kiln_tensor::{DType, Tensor};
//! # fn main() -> kiln_tensor::Result<()> {
//! let dev = kiln_cpu::cpu();
//! let x = Tensor::arange(0.0, 6.0, DType::F32, &dev)?.reshape([2, 3])?;
//! assert_eq!(x.sum(1, false)?.to_vec::<f32>()?, vec![3.0, 12.0]);
//! # Ok(()) }
//! ```
//!
//! Module map: `storage` (a `Buffer` per dtype), `buffer` (where buffers lie), `pool` (reuse),
//! `strided` (parallel loops over layouts),
//! `elementwise` (unary, binary, where, cast, copy), `reduce`, `matmul` (batches and dtypes) over
//! `gemm` (the packed GEMM) and the two kernels that need no packing, `gemm_dot` (`x @ w.t()`)
//! and `gemm_outer` (a row-major B), `index`; convolution in `conv` (im2col, col2im, pooling),
//! `conv_fused` (a whole convolution per image) and `winograd` (3x3 stride-1 convolutions).

mod buffer;
mod conv;
mod conv_fused;
mod elementwise;
mod epilogue;
mod fused;
mod gemm;
mod gemm_dot;
mod gemm_outer;
mod gemm_sparse;
mod index;
mod math;
mod matmul;
mod parallel;
mod pool;
mod reduce;
mod simd;
mod softmax;
mod spin_pool;
mod storage;
mod stream;
mod strided;
mod winograd;

pub use buffer::Buffer;
pub use simd::set_flush_denormal;
pub use storage::CpuStorage;

use kiln_tensor::backend::{ConvGradRequest, ConvGrads, Distribution, Epilogue};
use kiln_tensor::{
    AdadeltaStep, AdamStep, Backend, BinaryOp, DType, Device, HostData, Layout, ReduceOp, Result, UnaryOp, Window2d,
};
use std::sync::OnceLock;

/// The CPU backend. Stateless: every value is the same device, `"cpu"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend;

/// The CPU device (one shared instance).
pub fn cpu() -> Device {
    static CPU: OnceLock<Device> = OnceLock::new();
    CPU.get_or_init(|| Device::new(CpuBackend)).clone()
}

impl Backend for CpuBackend {
    type Storage = CpuStorage;

    fn location(&self) -> String {
        "cpu".into()
    }
    fn upload(&self, data: &HostData) -> Result<CpuStorage> {
        CpuStorage::from_host(data)
    }
    fn download(&self, s: &CpuStorage, l: &Layout) -> Result<HostData> {
        Ok(elementwise::contiguous(s, l)?.into_host())
    }
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<CpuStorage> {
        elementwise::fill(len, dtype, value)
    }
    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<CpuStorage> {
        elementwise::random(dist, len, dtype, seed)
    }
    fn copy_strided(&self, src: &CpuStorage, sl: &Layout, dst: &mut CpuStorage, dl: &Layout) -> Result<()> {
        elementwise::copy_strided(src, sl, dst, dl)
    }
    fn contiguous(&self, s: &CpuStorage, l: &Layout) -> Result<Option<CpuStorage>> {
        elementwise::contiguous(s, l).map(Some)
    }
    fn cast(&self, s: &CpuStorage, l: &Layout, dtype: DType) -> Result<CpuStorage> {
        elementwise::cast(s, l, dtype)
    }
    fn unary(&self, op: UnaryOp, s: &CpuStorage, l: &Layout) -> Result<CpuStorage> {
        elementwise::unary(op, s, l)
    }
    fn binary(&self, op: BinaryOp, a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
        elementwise::binary(op, a, la, b, lb)
    }
    fn where_cond(
        &self,
        c: &CpuStorage,
        cl: &Layout,
        t: &CpuStorage,
        tl: &Layout,
        f: &CpuStorage,
        fl: &Layout,
    ) -> Result<CpuStorage> {
        elementwise::where_cond(c, cl, t, tl, f, fl)
    }
    fn reduce(&self, op: ReduceOp, s: &CpuStorage, l: &Layout, dims: &[usize]) -> Result<CpuStorage> {
        reduce::reduce(op, s, l, dims)
    }
    fn matmul(&self, a: &CpuStorage, la: &Layout, b: &CpuStorage, lb: &Layout) -> Result<CpuStorage> {
        matmul::matmul(a, la, b, lb)
    }
    fn gather(&self, s: &CpuStorage, sl: &Layout, i: &CpuStorage, il: &Layout, dim: usize) -> Result<CpuStorage> {
        index::gather(s, sl, i, il, dim)
    }
    fn scatter_add(
        &self,
        d: &mut CpuStorage,
        dl: &Layout,
        i: &CpuStorage,
        il: &Layout,
        s: &CpuStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        index::scatter_add(d, dl, i, il, s, sl, dim)
    }
    fn scatter_add_into_zeros(
        &self,
        dl: &Layout,
        dtype: DType,
        i: &CpuStorage,
        il: &Layout,
        s: &CpuStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<CpuStorage> {
        index::scatter_add_into_zeros(dl, dtype, i, il, s, sl, dim)
    }
    fn index_select(&self, s: &CpuStorage, sl: &Layout, i: &CpuStorage, il: &Layout, dim: usize) -> Result<CpuStorage> {
        index::index_select(s, sl, i, il, dim)
    }
    fn adam_step(&self, step: &AdamStep, inputs: [(&CpuStorage, &Layout); 4]) -> Result<Option<[CpuStorage; 3]>> {
        fused::adam_step(step, inputs)
    }
    fn adadelta_step(
        &self,
        step: &AdadeltaStep,
        inputs: [(&CpuStorage, &Layout); 4],
    ) -> Result<Option<[CpuStorage; 3]>> {
        fused::adadelta_step(step, inputs)
    }
    fn im2col(&self, x: &CpuStorage, l: &Layout, win: &Window2d) -> Result<Option<CpuStorage>> {
        conv::im2col(x, l, win)
    }
    fn col2im(&self, c: &CpuStorage, l: &Layout, dims: [usize; 4], win: &Window2d) -> Result<Option<CpuStorage>> {
        conv::col2im(c, l, dims, win)
    }
    fn softmax_last(&self, x: &CpuStorage, l: &Layout, log: bool) -> Result<Option<CpuStorage>> {
        softmax::softmax_last(x, l, log)
    }
    fn relu_backward(&self, y: (&CpuStorage, &Layout), g: (&CpuStorage, &Layout)) -> Result<Option<CpuStorage>> {
        epilogue::relu_backward(y, g)
    }
    fn cross_entropy_rows(&self, x: (&CpuStorage, &Layout), t: (&CpuStorage, &Layout)) -> Result<Option<CpuStorage>> {
        softmax::cross_entropy_rows(x, t)
    }
    fn cross_entropy_rows_backward(
        &self,
        x: (&CpuStorage, &Layout),
        t: (&CpuStorage, &Layout),
        g: (&CpuStorage, &Layout),
    ) -> Result<Option<CpuStorage>> {
        softmax::cross_entropy_rows_backward(x, t, g)
    }
    fn linear(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        epilogue: Epilogue<'_, CpuStorage>,
    ) -> Result<Option<CpuStorage>> {
        matmul::linear(x, w, epilogue)
    }
    fn conv2d(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        epilogue: Epilogue<'_, CpuStorage>,
        win: &Window2d,
    ) -> Result<Option<CpuStorage>> {
        conv_fused::conv2d(x, w, epilogue, win)
    }
    fn conv2d_backward(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        g: (&CpuStorage, &Layout),
        win: &Window2d,
        request: ConvGradRequest<'_, CpuStorage>,
    ) -> Result<Option<ConvGrads<CpuStorage>>> {
        conv_fused::conv2d_backward(x, w, g, win, request)
    }
    fn max_pool2d(&self, x: &CpuStorage, l: &Layout, win: &Window2d) -> Result<Option<[CpuStorage; 2]>> {
        conv::max_pool2d(x, l, win)
    }
    fn storage_dtype(&self, s: &CpuStorage) -> Option<DType> {
        Some(s.dtype())
    }
}
