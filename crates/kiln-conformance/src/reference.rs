//! The reference oracle: a [`Backend`] in plain scalar code that stores every dtype as f64
//! (rounded to the dtype on every store), walks any strided layout with its own index
//! arithmetic (not `Layout::offsets`, so layout bugs cannot hide), and favours obviousness over
//! speed. Backends are compared against it.

use kiln_tensor::backend::unsupported;
use kiln_tensor::{Backend, BinaryOp, DType, Error, HostData, Layout, ReduceOp, Result, Shape, UnaryOp};

/// Storage of the reference backend: values as f64, already rounded to `dtype`.
#[derive(Clone, Debug)]
pub struct RefStorage {
    dtype: DType,
    data: Vec<f64>,
}

/// The reference backend. Its device location is `"reference"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceBackend;

/// The reference device.
pub fn reference_device() -> kiln_tensor::Device {
    kiln_tensor::Device::new(ReferenceBackend)
}

/// Every multi-index of `dims`, row-major.
fn positions(dims: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = dims.iter().product();
    let mut out = Vec::with_capacity(n);
    let mut pos = vec![0; dims.len()];
    for _ in 0..n {
        out.push(pos.clone());
        for d in (0..dims.len()).rev() {
            pos[d] += 1;
            if pos[d] < dims[d] {
                break;
            }
            pos[d] = 0;
        }
    }
    out
}

fn at(l: &Layout, pos: &[usize]) -> usize {
    l.offset() + pos.iter().zip(l.strides()).map(|(p, s)| p * s).sum::<usize>()
}

fn read(s: &RefStorage, l: &Layout) -> Result<Vec<f64>> {
    if l.storage_extent() > s.data.len() {
        return Err(Error::Backend { backend: "reference".into(), msg: "layout reaches past its storage".into() });
    }
    Ok(positions(l.dims()).iter().map(|p| s.data[at(l, p)]).collect())
}

/// Stores `v` as `dtype` does: floats round, integers wrap (two's complement).
fn store(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::I64 | DType::U32 | DType::U8 if v.is_finite() => {
            let bits = dtype.size_in_bytes() * 8;
            let w = (v.trunc() as i128).rem_euclid(1i128 << bits);
            if dtype == DType::I64 {
                w as u64 as i64 as f64
            } else {
                w as f64
            }
        }
        _ => dtype.round_f64(v),
    }
}

fn new(dtype: DType, data: Vec<f64>) -> RefStorage {
    RefStorage { dtype, data: data.into_iter().map(|v| store(dtype, v)).collect() }
}

fn index_values(op: &'static str, s: &RefStorage, l: &Layout) -> Result<Vec<f64>> {
    if !matches!(s.dtype, DType::I64 | DType::U32) {
        return Err(unsupported(op, s.dtype, "i64, u32 (indices)"));
    }
    read(s, l)
}

fn in_range(op: &'static str, ix: f64, size: usize, dim: usize, dims: &[usize]) -> Result<usize> {
    if ix < 0.0 || ix >= size as f64 {
        return Err(Error::IndexOutOfRange { op, index: ix as i64, size, dim, shape: Shape::new(dims) });
    }
    Ok(ix as usize)
}

impl Backend for ReferenceBackend {
    type Storage = RefStorage;

    fn location(&self) -> String {
        "reference".into()
    }
    fn upload(&self, data: &HostData) -> Result<RefStorage> {
        Ok(RefStorage { dtype: data.dtype(), data: data.to_f64_vec() })
    }
    fn download(&self, s: &RefStorage, l: &Layout) -> Result<HostData> {
        Ok(HostData::from_f64_slice(s.dtype, &read(s, l)?))
    }
    fn fill(&self, len: usize, dtype: DType, value: f64) -> Result<RefStorage> {
        Ok(new(dtype, vec![value; len]))
    }
    fn copy_strided(&self, src: &RefStorage, sl: &Layout, dst: &mut RefStorage, dl: &Layout) -> Result<()> {
        if src.dtype != dst.dtype {
            return Err(Error::DTypeMismatch {
                op: "copy_strided",
                lhs: src.dtype,
                rhs: dst.dtype,
                shapes: String::new(),
            });
        }
        let values = read(src, sl)?;
        if dl.storage_extent() > dst.data.len() || sl.dims() != dl.dims() {
            return Err(Error::invalid("copy_strided", "destination layout does not fit"));
        }
        for (p, v) in positions(dl.dims()).iter().zip(values) {
            dst.data[at(dl, p)] = v;
        }
        Ok(())
    }
    fn cast(&self, s: &RefStorage, l: &Layout, dtype: DType) -> Result<RefStorage> {
        let v = read(s, l)?;
        Ok(RefStorage {
            dtype,
            data: v.into_iter().map(|x| if dtype.is_int() && x.is_nan() { 0.0 } else { dtype.round_f64(x) }).collect(),
        })
    }
    fn unary(&self, op: UnaryOp, s: &RefStorage, l: &Layout) -> Result<RefStorage> {
        if !s.dtype.is_float() {
            return Err(unsupported(op.name(), s.dtype, "f32, f64, f16, bf16"));
        }
        Ok(new(s.dtype, read(s, l)?.into_iter().map(|x| op.eval(x)).collect()))
    }
    fn binary(&self, op: BinaryOp, a: &RefStorage, la: &Layout, b: &RefStorage, lb: &Layout) -> Result<RefStorage> {
        if a.dtype != b.dtype {
            return Err(Error::DTypeMismatch { op: op.name(), lhs: a.dtype, rhs: b.dtype, shapes: String::new() });
        }
        let (x, y) = (read(a, la)?, read(b, lb)?);
        let int = a.dtype.is_int();
        if int && op == BinaryOp::Pow {
            return Err(unsupported(op.name(), a.dtype, "f32, f64, f16, bf16"));
        }
        if int && op == BinaryOp::Div && y.contains(&0.0) {
            return Err(Error::invalid("div", format!("integer division by zero ({} tensor)", a.dtype)));
        }
        let out: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(&p, &q)| if int && op == BinaryOp::Div { (p / q).trunc() } else { op.eval_f64(p, q) })
            .collect();
        Ok(new(if op.is_comparison() { DType::U8 } else { a.dtype }, out))
    }
    fn where_cond(
        &self,
        c: &RefStorage,
        cl: &Layout,
        t: &RefStorage,
        tl: &Layout,
        f: &RefStorage,
        fl: &Layout,
    ) -> Result<RefStorage> {
        if c.dtype != DType::U8 {
            return Err(unsupported("where_cond", c.dtype, "u8 masks"));
        }
        let (c, x, y) = (read(c, cl)?, read(t, tl)?, read(f, fl)?);
        Ok(new(t.dtype, c.iter().zip(x.iter().zip(&y)).map(|(&m, (&a, &b))| if m != 0.0 { a } else { b }).collect()))
    }
    fn reduce(&self, op: ReduceOp, s: &RefStorage, l: &Layout, dims: &[usize]) -> Result<RefStorage> {
        let out_dims: Vec<usize> =
            l.dims().iter().enumerate().map(|(i, &d)| if dims.contains(&i) { 1 } else { d }).collect();
        let red_dims: Vec<usize> = dims.iter().map(|&d| l.dims()[d]).collect();
        let mut out = Vec::new();
        for o in positions(&out_dims) {
            let mut values = Vec::new();
            for r in positions(&red_dims) {
                let mut p = o.clone();
                for (k, &d) in dims.iter().enumerate() {
                    p[d] = r[k];
                }
                values.push(s.data[at(l, &p)]);
            }
            let first_best = |better: &dyn Fn(f64, f64) -> bool| {
                let mut best = 0;
                for (i, &v) in values.iter().enumerate() {
                    if !values[best].is_nan() && (v.is_nan() || better(v, values[best])) {
                        best = i;
                    }
                }
                best
            };
            out.push(match op {
                // From +0.0, as PyTorch and the CPU backend: an empty sum is +0.0 (Rust's
                // `Sum` for floats starts from -0.0).
                ReduceOp::Sum => values.iter().fold(0.0, |a, b| a + b),
                ReduceOp::Max => values[first_best(&|a, b| a > b)],
                ReduceOp::Min => values[first_best(&|a, b| a < b)],
                ReduceOp::ArgMax => first_best(&|a, b| a > b) as f64,
                ReduceOp::ArgMin => first_best(&|a, b| a < b) as f64,
                _ => return Err(Error::invalid(op.name(), "not implemented by the reference backend")),
            });
        }
        let dtype = match op {
            ReduceOp::ArgMax | ReduceOp::ArgMin => DType::I64,
            ReduceOp::Sum if s.dtype.is_int() => DType::I64,
            _ => s.dtype,
        };
        Ok(new(dtype, out))
    }
    fn matmul(&self, a: &RefStorage, la: &Layout, b: &RefStorage, lb: &Layout) -> Result<RefStorage> {
        if !a.dtype.is_float() {
            return Err(unsupported("matmul", a.dtype, "f32, f64, f16, bf16"));
        }
        let (da, db) = (la.dims(), lb.dims());
        let r = da.len();
        let (m, k, n) = (da[r - 2], da[r - 1], db[r - 1]);
        let mut out = Vec::new();
        for batch in positions(&da[..r - 2]) {
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0;
                    for p in 0..k {
                        let mut pa = batch.clone();
                        pa.extend([i, p]);
                        let mut pb = batch.clone();
                        pb.extend([p, j]);
                        acc += a.data[at(la, &pa)] * b.data[at(lb, &pb)];
                    }
                    out.push(acc);
                }
            }
        }
        Ok(new(a.dtype, out))
    }
    fn gather(&self, s: &RefStorage, sl: &Layout, i: &RefStorage, il: &Layout, dim: usize) -> Result<RefStorage> {
        let ids = index_values("gather", i, il)?;
        let mut out = Vec::new();
        for (pos, &ix) in positions(il.dims()).iter().zip(&ids) {
            let mut p = pos.clone();
            p[dim] = in_range("gather", ix, sl.dims()[dim], dim, sl.dims())?;
            out.push(s.data[at(sl, &p)]);
        }
        Ok(new(s.dtype, out))
    }
    fn scatter_add(
        &self,
        d: &mut RefStorage,
        dl: &Layout,
        i: &RefStorage,
        il: &Layout,
        s: &RefStorage,
        sl: &Layout,
        dim: usize,
    ) -> Result<()> {
        let ids = index_values("scatter_add", i, il)?;
        let src = read(s, sl)?;
        for ((pos, &ix), v) in positions(il.dims()).iter().zip(&ids).zip(src) {
            let mut p = pos.clone();
            p[dim] = in_range("scatter_add", ix, dl.dims()[dim], dim, dl.dims())?;
            let o = at(dl, &p);
            d.data[o] = store(d.dtype, d.data[o] + v);
        }
        Ok(())
    }
    fn index_select(&self, s: &RefStorage, sl: &Layout, i: &RefStorage, il: &Layout, dim: usize) -> Result<RefStorage> {
        // Every id is checked up front, even when the output is empty (PyTorch does the same).
        let ids = index_values("index_select", i, il)?
            .into_iter()
            .map(|ix| in_range("index_select", ix, sl.dims()[dim], dim, sl.dims()))
            .collect::<Result<Vec<usize>>>()?;
        let mut dims = sl.dims().to_vec();
        dims[dim] = ids.len();
        let mut out = Vec::new();
        for pos in positions(&dims) {
            let mut p = pos.clone();
            p[dim] = ids[pos[dim]];
            out.push(s.data[at(sl, &p)]);
        }
        Ok(new(s.dtype, out))
    }
}
