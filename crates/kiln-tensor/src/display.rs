//! `Display` for tensors, formatted like PyTorch's `print(tensor)`: 4 decimals or scientific
//! notation chosen from the value range, aligned columns, and large tensors elided in the
//! middle (more than 1000 elements: the first and last 3 of each dim).

use crate::{DType, Tensor};
use std::fmt;

const THRESHOLD: usize = 1000;
const EDGE: usize = 3;
const LINE_WIDTH: usize = 80;

enum Style {
    Int,
    /// Floats that are all whole numbers: `1.`, `-3.`
    Whole,
    Fixed,
    Sci,
}

fn style_for(dtype: DType, values: &[f64]) -> Style {
    if dtype.is_int() {
        return Style::Int;
    }
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite() && *v != 0.0).map(f64::abs).collect();
    if finite.is_empty() {
        return Style::Whole;
    }
    let (min, max) = finite.iter().fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    if finite.iter().all(|v| v.fract() == 0.0) {
        return if max > 1e8 { Style::Sci } else { Style::Whole };
    }
    if max / min > 1000.0 || max > 1e8 || min < 1e-4 {
        Style::Sci
    } else {
        Style::Fixed
    }
}

fn format_value(v: f64, style: &Style) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf".into() } else { "-inf".into() };
    }
    match style {
        Style::Int => format!("{}", v as i64),
        Style::Whole => format!("{v:.0}."),
        Style::Fixed => format!("{v:.4}"),
        Style::Sci => {
            let s = format!("{v:.4e}");
            // Rust writes 1.2340e3; PyTorch writes 1.2340e+03.
            match s.split_once('e') {
                Some((mantissa, exp)) => {
                    let (sign, digits) = exp.strip_prefix('-').map(|d| ('-', d)).unwrap_or(('+', exp));
                    format!("{mantissa}e{sign}{digits:0>2}")
                }
                None => s,
            }
        }
    }
}

/// The positions printed along a dim of a compacted tensor; `None` marks the `...`.
fn shown(size: usize, elided: bool) -> Vec<Option<usize>> {
    if elided {
        (0..EDGE).map(Some).chain([None]).chain((EDGE..2 * EDGE).map(Some)).collect()
    } else {
        (0..size).map(Some).collect()
    }
}

/// The tensor cut down to what is printed: each long dim keeps its first and last `EDGE`
/// entries. Only that part is read from the device, so printing a huge tensor is cheap.
fn compact(t: &Tensor) -> crate::Result<(Tensor, Vec<bool>)> {
    let summarize = t.elem_count() > THRESHOLD;
    let mut t = t.clone();
    let mut elided = vec![false; t.rank()];
    for (d, e) in elided.iter_mut().enumerate() {
        let n = t.dims()[d];
        if summarize && n > 2 * EDGE {
            let head = t.narrow(d as isize, 0, EDGE)?;
            let tail = t.narrow(d as isize, n - EDGE, EDGE)?;
            t = Tensor::cat(&[&head, &tail], d as isize)?;
            *e = true;
        }
    }
    Ok((t, elided))
}

struct Printer<'a> {
    dims: &'a [usize],
    strides: Vec<usize>,
    cells: Vec<String>,
    elided: Vec<bool>,
    width: usize,
}

impl Printer<'_> {
    fn block(&self, out: &mut String, depth: usize, base: usize, indent: usize) {
        out.push('[');
        let idx = shown(self.dims[depth], self.elided[depth]);
        if depth + 1 == self.dims.len() {
            let per_line = ((LINE_WIDTH.saturating_sub(indent)) / (self.width + 2)).max(1);
            for (k, i) in idx.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                    if k % per_line == 0 {
                        out.push('\n');
                        out.push_str(&" ".repeat(indent + 1));
                    } else {
                        out.push(' ');
                    }
                }
                match i {
                    Some(i) => {
                        out.push_str(&format!("{:>w$}", self.cells[base + i * self.strides[depth]], w = self.width))
                    }
                    None => out.push_str(" ..."),
                }
            }
        } else {
            let blank_lines = self.dims.len() - depth - 2;
            for (k, i) in idx.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                    out.push_str(&"\n".repeat(1 + blank_lines));
                    out.push_str(&" ".repeat(indent + 1));
                }
                match i {
                    Some(i) => self.block(out, depth + 1, base + i * self.strides[depth], indent + 1),
                    None => out.push_str("..."),
                }
            }
        }
        out.push(']');
    }
}

/// The compacted tensor, which dims are elided, its values and their formatted cells.
type Compacted = (Tensor, Vec<bool>, Vec<f64>, Vec<String>);

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let read = || -> crate::Result<Compacted> {
            let (t, elided) = compact(self)?;
            let values = t.to_f64_vec()?;
            // i64 beyond 2^53 is not exact in f64: format integers from their own type.
            let ints = if t.dtype() == DType::I64 { Some(t.to_vec::<i64>()?) } else { None };
            let style = style_for(t.dtype(), &values);
            let cells = match ints {
                Some(v) => v.iter().map(|x| x.to_string()).collect(),
                None => values.iter().map(|&v| format_value(v, &style)).collect(),
            };
            Ok((t, elided, values, cells))
        };
        let (t, elided, values, cells) = match read() {
            Ok(r) => r,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let dims = t.dims();
        let width = cells.iter().map(|c| c.len()).max().unwrap_or(0);
        let mut body = String::new();
        if dims.is_empty() {
            body = cells.first().cloned().unwrap_or_default();
        } else if values.is_empty() {
            body.push_str("[]");
        } else {
            let strides = crate::Shape::new(dims).contiguous_strides();
            Printer { dims, strides: strides.to_vec(), cells, elided, width }.block(&mut body, 0, 0, "tensor(".len());
        }
        write!(f, "tensor({body}")?;
        if self.elem_count() == 0 && self.rank() != 1 {
            let d: Vec<String> = self.dims().iter().map(|d| d.to_string()).collect();
            write!(f, ", size=({})", d.join(", "))?;
        }
        if !matches!(self.dtype(), DType::F32 | DType::I64) {
            write!(f, ", dtype={}", self.dtype())?;
        }
        if self.device().location() != "cpu" {
            write!(f, ", device='{}'", self.device().location())?;
        }
        write!(f, ")")
    }
}
