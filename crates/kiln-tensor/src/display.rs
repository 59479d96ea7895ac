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

/// The indices of a dim shown when summarizing; `None` marks the `...`.
fn shown(size: usize, summarize: bool) -> Vec<Option<usize>> {
    if summarize && size > 2 * EDGE {
        (0..EDGE).map(Some).chain([None]).chain((size - EDGE..size).map(Some)).collect()
    } else {
        (0..size).map(Some).collect()
    }
}

struct Printer<'a> {
    dims: &'a [usize],
    strides: Vec<usize>,
    values: &'a [f64],
    style: Style,
    width: usize,
    summarize: bool,
}

impl Printer<'_> {
    fn block(&self, out: &mut String, depth: usize, base: usize, indent: usize) {
        out.push('[');
        let idx = shown(self.dims[depth], self.summarize);
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
                        let s = format_value(self.values[base + i * self.strides[depth]], &self.style);
                        out.push_str(&format!("{s:>w$}", w = self.width));
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

impl fmt::Display for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let values = match self.to_f64_vec() {
            Ok(v) => v,
            Err(e) => return write!(f, "tensor(<unreadable: {e}>)"),
        };
        let dims = self.dims();
        let summarize = values.len() > THRESHOLD;
        let strides = crate::Shape::new(dims).contiguous_strides();
        // Only the shown elements decide the style and width, as in PyTorch.
        let mut picked = Vec::new();
        collect_shown(dims, &strides, &values, 0, 0, summarize, &mut picked);
        let style = style_for(self.dtype(), &picked);
        let width = picked.iter().map(|&v| format_value(v, &style).len()).max().unwrap_or(0);
        let mut body = String::new();
        if dims.is_empty() {
            body = format_value(values[0], &style);
        } else if values.is_empty() {
            body.push_str("[]");
        } else {
            Printer { dims, strides, values: &values, style, width, summarize }.block(&mut body, 0, 0, "tensor(".len());
        }
        write!(f, "tensor({body}")?;
        if values.is_empty() && dims.len() != 1 {
            let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
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

fn collect_shown(
    dims: &[usize],
    strides: &[usize],
    values: &[f64],
    depth: usize,
    base: usize,
    summarize: bool,
    out: &mut Vec<f64>,
) {
    if dims.is_empty() {
        out.extend(values.first());
        return;
    }
    for i in shown(dims[depth], summarize).into_iter().flatten() {
        let at = base + i * strides[depth];
        if depth + 1 == dims.len() {
            out.push(values[at]);
        } else {
            collect_shown(dims, strides, values, depth + 1, at, summarize, out);
        }
    }
}
