//! `Profiled<B>`: a backend that wraps any other backend and records, per op, how often it ran,
//! how long it took and how many bytes it read and wrote. It shows that layers over backends
//! (profiling, tracing, fault injection) are as easy to write as backends.
//!
//! ```
//! use kiln::profile::Profiled;
//! use kiln::{DType, Device, Tensor};
//! # fn main() -> kiln::Result<()> {
//! let profiled = Profiled::new(kiln::kiln_cpu::CpuBackend);
//! let stats = profiled.stats();
//! let dev = Device::new(profiled);
//! let x = Tensor::ones([64, 64], DType::F32, &dev)?;
//! x.matmul(&x)?.relu()?.sum_all()?;
//! let table = stats.table();
//! assert!(table.contains("matmul") && table.contains("unary/relu"));
//! # Ok(()) }
//! ```

use kiln_tensor::backend::{ConvGradRequest, ConvGrads, Distribution, Epilogue};
use kiln_tensor::{
    AdadeltaStep, AdamStep, Backend, BinaryOp, DType, HostData, Layout, ReduceOp, Result, SgdStep, UnaryOp, Window2d,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Default)]
struct Entry {
    count: u64,
    time: Duration,
    bytes: u64,
    /// Some call's storage had a dtype the wrapped backend did not report.
    bytes_unknown: bool,
}

/// A byte count that is unknown when some storage's dtype was (sums and multiples stay unknown).
#[derive(Clone, Copy)]
struct Bytes(Option<u64>);

impl From<u64> for Bytes {
    fn from(n: u64) -> Self {
        Bytes(Some(n))
    }
}
impl std::ops::Add for Bytes {
    type Output = Bytes;
    fn add(self, o: Bytes) -> Bytes {
        Bytes(self.0.zip(o.0).map(|(a, b)| a + b))
    }
}
impl std::ops::Add<u64> for Bytes {
    type Output = Bytes;
    fn add(self, o: u64) -> Bytes {
        self + Bytes::from(o)
    }
}
impl std::ops::Mul<Bytes> for u64 {
    type Output = Bytes;
    fn mul(self, b: Bytes) -> Bytes {
        Bytes(b.0.map(|n| n * self))
    }
}
impl std::iter::Sum for Bytes {
    fn sum<I: Iterator<Item = Bytes>>(it: I) -> Bytes {
        it.fold(Bytes(Some(0)), |a, b| a + b)
    }
}

/// The counters a [`Profiled`] backend fills; cheap to clone and shared with the backend.
#[derive(Clone, Default)]
pub struct Stats(Arc<Mutex<HashMap<String, Entry>>>);

impl Stats {
    fn record(&self, op: String, time: Duration, Bytes(bytes): Bytes) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let e = map.entry(op).or_default();
        e.count += 1;
        e.time += time;
        e.bytes += bytes.unwrap_or(0);
        e.bytes_unknown |= bytes.is_none();
    }

    /// Forgets everything recorded so far.
    pub fn reset(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// A table of op, calls, total and mean time, share of the total, and bytes moved, sorted by
    /// total time. Bytes show as `-` where the wrapped backend does not report its storages'
    /// dtypes ([`Backend::storage_dtype`]).
    pub fn table(&self) -> String {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(&String, &Entry)> = map.iter().collect();
        rows.sort_by(|a, b| b.1.time.cmp(&a.1.time).then(a.0.cmp(b.0)));
        let total: f64 = rows.iter().map(|(_, e)| e.time.as_secs_f64()).sum::<f64>().max(1e-12);
        let mut s = format!(
            "{:<24} {:>9} {:>11} {:>10} {:>7} {:>11}\n",
            "op", "calls", "total ms", "mean us", "share", "MB moved"
        );
        for (op, e) in rows {
            let t = e.time.as_secs_f64();
            let moved = if e.bytes_unknown { "-".to_string() } else { format!("{:.1}", e.bytes as f64 / 1e6) };
            s.push_str(&format!(
                "{op:<24} {:>9} {:>11.2} {:>10.2} {:>6.1}% {moved:>11}\n",
                e.count,
                t * 1e3,
                t * 1e6 / e.count.max(1) as f64,
                100.0 * t / total,
            ));
        }
        s
    }
}

/// A backend that forwards every call to `B` and times it.
pub struct Profiled<B: Backend> {
    inner: B,
    stats: Stats,
}

impl<B: Backend> Profiled<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Profiled { inner, stats: Stats::default() }
    }
    /// The counters (shared: read them after the wrapped device has done its work).
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    fn bytes(&self, s: &B::Storage, l: &Layout) -> Bytes {
        Bytes(self.inner.storage_dtype(s).map(|d| (l.elem_count() * d.size_in_bytes()) as u64))
    }

    fn timed<T>(
        &self,
        op: impl FnOnce() -> String,
        bytes: impl Into<Bytes>,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let bytes = bytes.into();
        let start = Instant::now();
        let out = f();
        self.stats.record(op(), start.elapsed(), bytes);
        out
    }
}

impl<B: Backend> Backend for Profiled<B> {
    type Storage = B::Storage;

    fn location(&self) -> String {
        format!("{}+profile", self.inner.location())
    }
    fn upload(&self, data: &HostData) -> Result<B::Storage> {
        self.timed(|| "upload".into(), data.as_bytes().len() as u64, || self.inner.upload(data))
    }
    fn download(&self, s: &B::Storage, l: &Layout) -> Result<HostData> {
        self.timed(|| "download".into(), self.bytes(s, l), || self.inner.download(s, l))
    }
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<B::Storage> {
        self.timed(|| "fill".into(), (len * dtype.size_in_bytes()) as u64, || self.inner.fill(len, dtype, value))
    }
    fn copy_strided(&self, src: &B::Storage, sl: &Layout, dst: &mut B::Storage, dl: &Layout) -> Result<()> {
        self.timed(|| "copy_strided".into(), 2 * self.bytes(src, sl), || self.inner.copy_strided(src, sl, dst, dl))
    }
    fn contiguous(&self, s: &B::Storage, l: &Layout) -> Result<Option<B::Storage>> {
        self.timed(|| "contiguous".into(), 2 * self.bytes(s, l), || self.inner.contiguous(s, l))
    }
    fn cast(&self, s: &B::Storage, l: &Layout, dtype: DType) -> Result<B::Storage> {
        let bytes = self.bytes(s, l) + (l.elem_count() * dtype.size_in_bytes()) as u64;
        self.timed(|| format!("cast/{dtype}"), bytes, || self.inner.cast(s, l, dtype))
    }
    fn unary(&self, op: UnaryOp, s: &B::Storage, l: &Layout) -> Result<B::Storage> {
        self.timed(|| format!("unary/{}", op.name()), 2 * self.bytes(s, l), || self.inner.unary(op, s, l))
    }
    fn binary(&self, op: BinaryOp, a: &B::Storage, la: &Layout, b: &B::Storage, lb: &Layout) -> Result<B::Storage> {
        let bytes = 3 * self.bytes(a, la);
        self.timed(|| format!("binary/{}", op.name()), bytes, || self.inner.binary(op, a, la, b, lb))
    }
    fn binary_scalar(&self, op: BinaryOp, s: &B::Storage, l: &Layout, dtype: DType, v: f64) -> Result<B::Storage> {
        self.timed(
            || format!("scalar/{}", op.name()),
            2 * self.bytes(s, l),
            || self.inner.binary_scalar(op, s, l, dtype, v),
        )
    }
    fn where_cond(
        &self,
        c: &B::Storage,
        cl: &Layout,
        t: &B::Storage,
        tl: &Layout,
        f: &B::Storage,
        fl: &Layout,
    ) -> Result<B::Storage> {
        let bytes = self.bytes(c, cl) + 3 * self.bytes(t, tl);
        self.timed(|| "where_cond".into(), bytes, || self.inner.where_cond(c, cl, t, tl, f, fl))
    }
    fn reduce(&self, op: ReduceOp, s: &B::Storage, l: &Layout, dims: &[usize]) -> Result<B::Storage> {
        self.timed(|| format!("reduce/{}", op.name()), self.bytes(s, l), || self.inner.reduce(op, s, l, dims))
    }
    fn matmul(&self, a: &B::Storage, la: &Layout, b: &B::Storage, lb: &Layout) -> Result<B::Storage> {
        let bytes = self.bytes(a, la) + self.bytes(b, lb);
        self.timed(|| "matmul".into(), bytes, || self.inner.matmul(a, la, b, lb))
    }
    fn gather(&self, s: &B::Storage, sl: &Layout, i: &B::Storage, il: &Layout, dim: usize) -> Result<B::Storage> {
        self.timed(|| "gather".into(), 2 * self.bytes(i, il), || self.inner.gather(s, sl, i, il, dim))
    }
    fn scatter_add(
        &self,
        d: &mut B::Storage,
        dl: &Layout,
        i: &B::Storage,
        il: &Layout,
        s: &B::Storage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        let bytes = self.bytes(i, il) + 2 * self.bytes(s, sl);
        self.timed(|| "scatter_add".into(), bytes, || self.inner.scatter_add(d, dl, i, il, s, sl, dim))
    }
    fn scatter_add_into_zeros(
        &self,
        dl: &Layout,
        dtype: DType,
        i: &B::Storage,
        il: &Layout,
        s: &B::Storage,
        sl: &Layout,
        dim: usize,
    ) -> Result<B::Storage> {
        let bytes = self.bytes(i, il) + self.bytes(s, sl) + (dl.elem_count() * dtype.size_in_bytes()) as u64;
        self.timed(
            || "scatter_add_into_zeros".into(),
            bytes,
            || self.inner.scatter_add_into_zeros(dl, dtype, i, il, s, sl, dim),
        )
    }
    fn index_select(&self, s: &B::Storage, sl: &Layout, i: &B::Storage, il: &Layout, dim: usize) -> Result<B::Storage> {
        self.timed(|| "index_select".into(), self.bytes(i, il), || self.inner.index_select(s, sl, i, il, dim))
    }
    fn random(&self, dist: Distribution, len: usize, dtype: DType, seed: u64) -> Result<B::Storage> {
        self.timed(
            || "random".into(),
            (len * dtype.size_in_bytes()) as u64,
            || self.inner.random(dist, len, dtype, seed),
        )
    }
    fn adam_step(&self, step: &AdamStep, inputs: [(&B::Storage, &Layout); 4]) -> Result<Option<[B::Storage; 3]>> {
        let bytes = Bytes(inputs.iter().map(|(s, l)| self.bytes(s, l)).sum::<Bytes>().0.map(|n| n * 7 / 4));
        self.timed(|| "adam_step".into(), bytes, || self.inner.adam_step(step, inputs))
    }
    fn adadelta_step(
        &self,
        step: &AdadeltaStep,
        inputs: [(&B::Storage, &Layout); 4],
    ) -> Result<Option<[B::Storage; 3]>> {
        let bytes = Bytes(inputs.iter().map(|(s, l)| self.bytes(s, l)).sum::<Bytes>().0.map(|n| n * 7 / 4));
        self.timed(|| "adadelta_step".into(), bytes, || self.inner.adadelta_step(step, inputs))
    }
    fn cross_entropy_rows(&self, x: (&B::Storage, &Layout), t: (&B::Storage, &Layout)) -> Result<Option<B::Storage>> {
        self.timed(|| "cross_entropy".into(), self.bytes(x.0, x.1), || self.inner.cross_entropy_rows(x, t))
    }
    fn cross_entropy_rows_backward(
        &self,
        x: (&B::Storage, &Layout),
        t: (&B::Storage, &Layout),
        g: (&B::Storage, &Layout),
    ) -> Result<Option<B::Storage>> {
        // The logits read and their gradient written.
        let bytes = Bytes(self.bytes(x.0, x.1).0.map(|n| 2 * n));
        self.timed(|| "cross_entropy_backward".into(), bytes, || self.inner.cross_entropy_rows_backward(x, t, g))
    }
    fn sgd_step(&self, step: &SgdStep, inputs: [(&B::Storage, &Layout); 3]) -> Result<Option<[B::Storage; 2]>> {
        // Three read, two written.
        let bytes = Bytes(inputs.iter().map(|(s, l)| self.bytes(s, l)).sum::<Bytes>().0.map(|n| n * 5 / 3));
        self.timed(|| "sgd_step".into(), bytes, || self.inner.sgd_step(step, inputs))
    }
    fn im2col(&self, x: &B::Storage, l: &Layout, win: &Window2d) -> Result<Option<B::Storage>> {
        self.timed(|| "im2col".into(), self.bytes(x, l), || self.inner.im2col(x, l, win))
    }
    fn col2im(&self, c: &B::Storage, l: &Layout, dims: [usize; 4], win: &Window2d) -> Result<Option<B::Storage>> {
        self.timed(|| "col2im".into(), self.bytes(c, l), || self.inner.col2im(c, l, dims, win))
    }
    fn softmax_last(&self, x: &B::Storage, l: &Layout, log: bool) -> Result<Option<B::Storage>> {
        let name = if log { "log_softmax" } else { "softmax" };
        self.timed(|| name.into(), self.bytes(x, l), || self.inner.softmax_last(x, l, log))
    }
    fn relu_backward(&self, y: (&B::Storage, &Layout), g: (&B::Storage, &Layout)) -> Result<Option<B::Storage>> {
        let bytes = self.bytes(y.0, y.1) + 2 * self.bytes(g.0, g.1);
        self.timed(|| "relu_backward".into(), bytes, || self.inner.relu_backward(y, g))
    }
    fn linear(
        &self,
        x: (&B::Storage, &Layout),
        w: (&B::Storage, &Layout),
        epilogue: Epilogue<'_, B::Storage>,
    ) -> Result<Option<B::Storage>> {
        let bytes = self.bytes(x.0, x.1) + self.bytes(w.0, w.1);
        self.timed(|| "linear".into(), bytes, || self.inner.linear(x, w, epilogue))
    }
    fn conv2d(
        &self,
        x: (&B::Storage, &Layout),
        w: (&B::Storage, &Layout),
        epilogue: Epilogue<'_, B::Storage>,
        win: &Window2d,
    ) -> Result<Option<B::Storage>> {
        let bytes = self.bytes(x.0, x.1) + self.bytes(w.0, w.1);
        self.timed(|| "conv2d".into(), bytes, || self.inner.conv2d(x, w, epilogue, win))
    }
    fn conv2d_backward(
        &self,
        x: (&B::Storage, &Layout),
        w: (&B::Storage, &Layout),
        g: (&B::Storage, &Layout),
        win: &Window2d,
        request: ConvGradRequest<'_, B::Storage>,
    ) -> Result<Option<ConvGrads<B::Storage>>> {
        let bytes = self.bytes(x.0, x.1) + self.bytes(w.0, w.1) + self.bytes(g.0, g.1);
        self.timed(|| "conv2d_backward".into(), bytes, || self.inner.conv2d_backward(x, w, g, win, request))
    }
    fn max_pool2d_indices(&self, x: &B::Storage, l: &Layout, win: &Window2d) -> Result<Option<B::Storage>> {
        self.timed(|| "max_pool2d_indices".into(), self.bytes(x, l), || self.inner.max_pool2d_indices(x, l, win))
    }
    fn max_pool2d(&self, x: &B::Storage, l: &Layout, win: &Window2d) -> Result<Option<[B::Storage; 2]>> {
        self.timed(|| "max_pool2d".into(), self.bytes(x, l), || self.inner.max_pool2d(x, l, win))
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn storage_dtype(&self, s: &B::Storage) -> Option<DType> {
        self.inner.storage_dtype(s)
    }
}
