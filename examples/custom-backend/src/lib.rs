#![doc = include_str!("../../../docs/writing-a-backend.md")]

use kiln::backend::unsupported;
use kiln::{bf16, f16};
use kiln::{map_host, Backend, BinaryOp, DType, Error, HostData, Layout, ReduceOp, Result, Shape, UnaryOp, WithDType};

/// A single-threaded CPU backend over plain `Vec`s: the smallest complete kiln backend.
///
/// It implements the fourteen required methods of [`Backend`] and nothing else; kiln's provided
/// defaults supply the rest (scalar ops, random numbers, fused Adam, convolution, pooling and
/// softmax are composed from these methods). Its device is named `"vec"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct VecBackend;

/// The `"vec"` device.
pub fn vec_device() -> kiln::Device {
    kiln::Device::new(VecBackend)
}

/// Makes `kiln::device("vec")` (and `--device vec` in programs that use it) open this backend.
pub fn register() -> Result<()> {
    kiln::register_backend("vec", |ordinal| match ordinal {
        None | Some(0) => Ok(VecBackend),
        Some(n) => Err(Error::Msg(format!("device 'vec:{n}': there is one vec device, \"vec\""))),
    })
}

// ---- reading layouts -------------------------------------------------------------------------

fn backend_error(op: &str, msg: impl std::fmt::Display) -> Error {
    Error::Backend { backend: "vec".into(), msg: format!("{op}: {msg}") }
}

/// The elements of `v` that `layout` views, in row-major order (a layout may be strided,
/// broadcast with stride 0, or start at an offset).
fn gather_view<T: Copy>(op: &str, v: &[T], layout: &Layout) -> Result<Vec<T>> {
    fits(op, v.len(), layout)?;
    Ok(layout.offsets().map(|o| v[o]).collect())
}

/// The viewed elements as f64: how this backend computes. It is simple rather than fast, and
/// exact for every value of every dtype but i64 beyond 2^53.
fn values(op: &str, s: &HostData, layout: &Layout) -> Result<Vec<f64>> {
    map_host!(s, v => Ok(gather_view(op, v, layout)?.into_iter().map(WithDType::to_f64).collect()))
}

/// Stores f64 results as `dtype`: floats round to nearest, integers wrap (two's complement),
/// which is what integer arithmetic in the dtype itself would give.
fn store(dtype: DType, v: Vec<f64>) -> HostData {
    fn wrap<T>(v: Vec<f64>, f: impl Fn(i64) -> T) -> Vec<T> {
        v.into_iter().map(|x| f(x as i128 as i64)).collect()
    }
    match dtype {
        DType::I64 => HostData::I64(wrap(v, |x| x)),
        DType::U32 => HostData::U32(wrap(v, |x| x as u32)),
        DType::U8 => HostData::U8(wrap(v, |x| x as u8)),
        float => HostData::from_f64_slice(float, &v),
    }
}

/// Runs `$body` with `$x` and `$y` bound to the vectors inside two storages of one dtype.
macro_rules! both {
    ($a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr, else $err:expr) => {
        match ($a, $b) {
            (HostData::F32($x), HostData::F32($y)) => $body,
            (HostData::F64($x), HostData::F64($y)) => $body,
            (HostData::F16($x), HostData::F16($y)) => $body,
            (HostData::BF16($x), HostData::BF16($y)) => $body,
            (HostData::I64($x), HostData::I64($y)) => $body,
            (HostData::U32($x), HostData::U32($y)) => $body,
            (HostData::U8($x), HostData::U8($y)) => $body,
            _ => $err,
        }
    };
}

/// Picks `s`'s elements at the storage positions `at` (which lie inside `layout`), keeping the dtype.
fn pick(op: &str, s: &HostData, layout: &Layout, at: &[usize]) -> Result<HostData> {
    fits(op, s.len(), layout)?;
    Ok(map_host!(s, v => WithDType::into_host(at.iter().map(|&i| v[i]).collect())))
}

fn fits(op: &str, len: usize, layout: &Layout) -> Result<()> {
    if layout.elem_count() > 0 && layout.storage_extent() > len {
        return Err(backend_error(op, format!("layout {layout:?} reaches past a storage of {len} elements")));
    }
    Ok(())
}

/// Calls `f` with every multi-index of `dims`, in row-major order.
fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize]) -> Result<()>) -> Result<()> {
    if dims.contains(&0) {
        return Ok(());
    }
    let mut index = vec![0; dims.len()];
    loop {
        f(&index)?;
        let Some(d) = (0..dims.len()).rev().find(|&d| index[d] + 1 < dims[d]) else { return Ok(()) };
        index[d] += 1;
        index[d + 1..].iter_mut().for_each(|i| *i = 0);
    }
}

/// `len` copies of `value`, or an error naming the op when the memory is not there (`vec!`
/// would abort the process instead).
fn filled<T: Clone>(op: &str, len: usize, value: T) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| backend_error(op, format!("cannot allocate {len} elements")))?;
    v.resize(len, value);
    Ok(v)
}

/// Kiln passes equal shapes where the contract says so; a caller driving the backend directly
/// with other layouts gets this error rather than a silently truncated result.
fn same_shapes(op: &'static str, a: &Layout, b: &Layout) -> Result<()> {
    if a.dims() == b.dims() {
        Ok(())
    } else {
        Err(Error::shape_mismatch(op, a.shape(), b.shape()))
    }
}

/// An index tensor's layout against the tensor it indexes along `dim`: same rank, and no
/// larger in the other dims.
fn index_fits(op: &'static str, indexed: &Layout, index: &Layout, dim: usize) -> Result<()> {
    let (a, b) = (indexed.dims(), index.dims());
    if dim >= a.len() || a.len() != b.len() || a.iter().zip(b).enumerate().any(|(d, (x, y))| d != dim && y > x) {
        return Err(Error::shape_mismatch(op, indexed.shape(), index.shape()));
    }
    Ok(())
}

/// The storage position of a multi-index in `layout`.
fn position(layout: &Layout, index: &[usize]) -> usize {
    layout.offset() + index.iter().zip(layout.strides()).map(|(i, s)| i * s).sum::<usize>()
}

/// Index tensors hold i64 or u32; every index must lie in `0..size`.
fn indices(op: &'static str, ids: &HostData, layout: &Layout) -> Result<Vec<f64>> {
    match ids.dtype() {
        DType::I64 | DType::U32 => values(op, ids, layout),
        other => Err(unsupported(op, other, "i64, u32 (indices)")),
    }
}

fn checked(op: &'static str, index: f64, size: usize, dim: usize, shape: &[usize]) -> Result<usize> {
    if index >= 0.0 && index < size as f64 {
        Ok(index as usize)
    } else {
        Err(Error::IndexOutOfRange { op, index: index as i64, size, dim, shape: Shape::new(shape) })
    }
}

// ---- the backend -----------------------------------------------------------------------------

impl Backend for VecBackend {
    type Storage = HostData;

    fn location(&self) -> String {
        "vec".into()
    }

    fn upload(&self, data: &HostData) -> Result<HostData> {
        Ok(data.clone())
    }

    fn download(&self, s: &HostData, layout: &Layout) -> Result<HostData> {
        map_host!(s, v => Ok(WithDType::into_host(gather_view("download", v, layout)?)))
    }

    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<HostData> {
        Ok(HostData::from_f64_slice(dtype, &filled("fill", len, value)?))
    }

    fn copy_strided(&self, src: &HostData, sl: &Layout, dst: &mut HostData, dl: &Layout) -> Result<()> {
        let (src_dtype, dst_dtype) = (src.dtype(), dst.dtype());
        if sl.dims() != dl.dims() {
            return Err(Error::shape_mismatch("copy_strided", sl.shape(), dl.shape()));
        }
        fits("copy_strided", dst.len(), dl)?;
        both!(src, dst, (s, d) => {
            let values = gather_view("copy_strided", s, sl)?;
            dl.offsets().zip(values).for_each(|(o, v)| d[o] = v);
            Ok(())
        }, else Err(Error::DTypeMismatch { op: "copy_strided", lhs: src_dtype, rhs: dst_dtype, shapes: String::new() }))
    }

    fn cast(&self, s: &HostData, layout: &Layout, dtype: DType) -> Result<HostData> {
        // `from_f64_slice` converts as kiln specifies: floats round, integers truncate toward
        // zero and saturate, NaN becomes 0.
        Ok(HostData::from_f64_slice(dtype, &values("cast", s, layout)?))
    }

    fn unary(&self, op: UnaryOp, s: &HostData, layout: &Layout) -> Result<HostData> {
        Ok(match self.download(s, layout)? {
            HostData::F32(v) => HostData::F32(v.into_iter().map(|x| op.eval(x)).collect()),
            HostData::F64(v) => HostData::F64(v.into_iter().map(|x| op.eval(x)).collect()),
            // Half types compute in f32 and round once, as kiln's other backends do.
            HostData::F16(v) => HostData::F16(v.into_iter().map(|x| f16::from_f32(op.eval(x.to_f32()))).collect()),
            HostData::BF16(v) => HostData::BF16(v.into_iter().map(|x| bf16::from_f32(op.eval(x.to_f32()))).collect()),
            other => return Err(unsupported(op.name(), other.dtype(), "f32, f64, f16, bf16")),
        })
    }

    fn binary(&self, op: BinaryOp, a: &HostData, la: &Layout, b: &HostData, lb: &Layout) -> Result<HostData> {
        let dtype = a.dtype();
        same_shapes(op.name(), la, lb)?;
        if dtype != b.dtype() {
            return Err(Error::DTypeMismatch { op: op.name(), lhs: dtype, rhs: b.dtype(), shapes: String::new() });
        }
        let int = dtype.is_int();
        if int && !op.supports_int() {
            return Err(unsupported(op.name(), dtype, "f32, f64, f16, bf16"));
        }
        let (x, y) = (values(op.name(), a, la)?, values(op.name(), b, lb)?);
        if int && op == BinaryOp::Div && y.contains(&0.0) {
            return Err(Error::invalid("div", format!("integer division by zero ({dtype} tensor)")));
        }
        // One f64 operation rounded to the dtype is the correctly rounded result for + - * /.
        let out = x.iter().zip(&y).map(|(&p, &q)| match op {
            BinaryOp::Div if int => (p / q).trunc(),
            _ => op.eval_f64(p, q),
        });
        Ok(store(if op.is_comparison() { DType::U8 } else { dtype }, out.collect()))
    }

    fn where_cond(
        &self,
        cond: &HostData,
        cl: &Layout,
        on_true: &HostData,
        tl: &Layout,
        on_false: &HostData,
        fl: &Layout,
    ) -> Result<HostData> {
        same_shapes("where_cond", cl, tl)?;
        same_shapes("where_cond", cl, fl)?;
        let HostData::U8(mask) = cond else { return Err(unsupported("where_cond", cond.dtype(), "u8 masks")) };
        let mask = gather_view("where_cond", mask, cl)?;
        let (t, f) = (self.download(on_true, tl)?, self.download(on_false, fl)?);
        let (dt, df) = (t.dtype(), f.dtype());
        both!(t, f, (t, f) => {
            let out = mask.iter().zip(t.into_iter().zip(f)).map(|(&m, (a, b))| if m != 0 { a } else { b });
            Ok(WithDType::into_host(out.collect()))
        }, else Err(Error::DTypeMismatch { op: "where_cond", lhs: dt, rhs: df, shapes: String::new() }))
    }

    fn reduce(&self, op: ReduceOp, s: &HostData, layout: &Layout, dims: &[usize]) -> Result<HostData> {
        let rank = layout.dims().len();
        if dims.iter().any(|&d| d >= rank) || (op.is_arg() && dims.len() != 1) {
            return Err(Error::invalid(op.name(), format!("cannot reduce dims {dims:?} of {}", layout.shape())));
        }
        // Move the reduced dims last: every output element then reduces one contiguous run.
        let perm: Vec<usize> = (0..rank).filter(|d| !dims.contains(d)).chain(dims.iter().copied()).collect();
        let v = values(op.name(), s, &layout.permute(op.name(), &perm)?)?;
        let run: usize = dims.iter().map(|&d| layout.dims()[d]).product();
        let outputs: usize = (0..rank).filter(|d| !dims.contains(d)).map(|d| layout.dims()[d]).product();
        if run == 0 && op != ReduceOp::Sum && outputs > 0 {
            return Err(Error::invalid(
                op.name(),
                format!("{} over an empty set (dims {dims:?} of {})", op.name(), layout.shape()),
            ));
        }
        // The first maximum (minimum) wins, and a NaN beats everything, as in PyTorch.
        fn first_best(run: &[f64], better: fn(f64, f64) -> bool) -> usize {
            (1..run.len())
                .fold(0, |b, i| if !run[b].is_nan() && (run[i].is_nan() || better(run[i], run[b])) { i } else { b })
        }
        let per_run: fn(&[f64]) -> f64 = match op {
            ReduceOp::Sum => |r| r.iter().sum(),
            ReduceOp::Max => |r| r[first_best(r, |a, b| a > b)],
            ReduceOp::Min => |r| r[first_best(r, |a, b| a < b)],
            ReduceOp::ArgMax => |r| first_best(r, |a, b| a > b) as f64,
            ReduceOp::ArgMin => |r| first_best(r, |a, b| a < b) as f64,
            // The op enums grow with kiln (they are #[non_exhaustive]); an op this backend does
            // not know yet is an error, not a breakage.
            other => return Err(Error::invalid(other.name(), "not implemented by the vec backend")),
        };
        let out = (0..outputs).map(|o| per_run(&v[o * run..(o + 1) * run]));
        let dtype = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
            ReduceOp::Sum if s.dtype().is_int() => DType::I64,
            _ => s.dtype(),
        };
        Ok(store(dtype, out.collect()))
    }

    fn matmul(&self, a: &HostData, la: &Layout, b: &HostData, lb: &Layout) -> Result<HostData> {
        let dtype = a.dtype();
        if !dtype.is_float() {
            return Err(unsupported("matmul", dtype, "f32, f64, f16, bf16"));
        }
        let (da, db) = (la.dims(), lb.dims());
        let r = da.len();
        if r < 2 || db.len() != r || da[..r - 2] != db[..r - 2] || da[r - 1] != db[r - 2] {
            return Err(Error::shape_mismatch("matmul", la.shape(), lb.shape()));
        }
        let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
        let batches: usize = da[..r - 2].iter().product();
        let (x, y) = (values("matmul", a, la)?, values("matmul", b, lb)?);
        let mut out = filled("matmul", batches * m * n, 0.0)?;
        // i-p-j order walks both operands row by row; each sum is accumulated in f64.
        for batch in 0..batches {
            let (x, y) = (&x[batch * m * k..], &y[batch * k * n..]);
            for (i, row) in out[batch * m * n..(batch + 1) * m * n].chunks_mut(n.max(1)).enumerate() {
                for p in 0..k {
                    let xip = x[i * k + p];
                    row.iter_mut().zip(&y[p * n..(p + 1) * n]).for_each(|(o, &ypj)| *o += xip * ypj);
                }
            }
        }
        Ok(store(dtype, out))
    }

    fn gather(&self, s: &HostData, sl: &Layout, index: &HostData, il: &Layout, dim: usize) -> Result<HostData> {
        index_fits("gather", sl, il, dim)?;
        let ids = indices("gather", index, il)?;
        let mut at = Vec::with_capacity(ids.len());
        for_each_index(il.dims(), |p| {
            let mut q = p.to_vec();
            q[dim] = checked("gather", ids[at.len()], sl.dims()[dim], dim, sl.dims())?;
            at.push(position(sl, &q));
            Ok(())
        })?;
        pick("gather", s, sl, &at)
    }

    fn scatter_add(
        &self,
        dst: &mut HostData,
        dl: &Layout,
        index: &HostData,
        il: &Layout,
        src: &HostData,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        index_fits("scatter_add", dl, il, dim)?;
        same_shapes("scatter_add", il, sl)?;
        let ids = indices("scatter_add", index, il)?;
        let add = values("scatter_add", src, sl)?;
        let dtype = dst.dtype();
        let mut d = values("scatter_add", dst, &Layout::contiguous([dst.len()]))?;
        fits("scatter_add", d.len(), dl)?;
        let mut k = 0;
        for_each_index(il.dims(), |p| {
            let mut q = p.to_vec();
            q[dim] = checked("scatter_add", ids[k], dl.dims()[dim], dim, dl.dims())?;
            let o = position(dl, &q);
            // Round after every addition, as a kernel adding in the dtype would.
            d[o] = if dtype.is_float() { dtype.round_f64(d[o] + add[k]) } else { d[o] + add[k] };
            k += 1;
            Ok(())
        })?;
        *dst = store(dtype, d);
        Ok(())
    }

    fn index_select(&self, s: &HostData, sl: &Layout, ids: &HostData, il: &Layout, dim: usize) -> Result<HostData> {
        if dim >= sl.dims().len() || il.dims().len() != 1 {
            return Err(Error::shape_mismatch("index_select", sl.shape(), il.shape()));
        }
        let ids = indices("index_select", ids, il)?;
        let mut dims = sl.dims().to_vec();
        dims[dim] = ids.len();
        let mut at = Vec::with_capacity(dims.iter().product());
        for_each_index(&dims, |p| {
            let mut q = p.to_vec();
            q[dim] = checked("index_select", ids[p[dim]], sl.dims()[dim], dim, sl.dims())?;
            at.push(position(sl, &q));
            Ok(())
        })?;
        pick("index_select", s, sl, &at)
    }
}
