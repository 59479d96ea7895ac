//! Cases for element-wise ops: unary, binary (broadcasting), scalar forms, comparisons,
//! where_cond, clamp and casts.

use crate::harness::{Ctx, Input, View};
use crate::Tolerance;
use kiln_tensor::{BinaryOp, DType, UnaryOp};

/// Shapes with the view each is tested under: scalars, empty and size-1 dims, every kind of
/// non-contiguous layout, and one size above the CPU backend's parallel threshold.
pub(crate) fn shapes_and_views(large: bool) -> Vec<(Vec<usize>, View)> {
    let mut v = vec![
        (vec![], View::Contiguous),
        (vec![7], View::Contiguous),
        (vec![3, 5], View::Transposed),
        (vec![2, 3, 4], View::Strided),
        (vec![0, 3], View::Contiguous),
        (vec![4, 1, 6], View::Broadcast),
        (vec![5, 4], View::Offset),
    ];
    if large {
        v.push((vec![520, 257], View::Contiguous));
        v.push((vec![257, 520], View::Transposed));
    }
    v
}

fn int_range(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::I64 => (-6.0, 6.0),
        _ => (0.0, 10.0),
    }
}

pub(crate) fn unary(ctx: &mut Ctx) {
    for op in UnaryOp::ALL {
        for dtype in DType::FLOATS {
            for (shape, view) in shapes_and_views(dtype == DType::F32) {
                let input = Input::new(&shape, dtype, op.test_domain(), view);
                ctx.check(format!("{} {dtype} {shape:?} {view:?}", op.name()), &[input], None, |t| t[0].unary(op));
            }
        }
        // Integer inputs are refused by both sides.
        let input = Input::new(&[3], DType::I64, (0.0, 4.0), View::Contiguous);
        ctx.check(format!("{} i64 (refused)", op.name()), &[input], None, |t| t[0].unary(op));
    }
}

/// Pairs of operand shapes and views, including NumPy broadcasting.
fn binary_shapes(large: bool) -> Vec<(Vec<usize>, View, Vec<usize>, View)> {
    let mut v = vec![
        (vec![3, 5], View::Contiguous, vec![3, 5], View::Contiguous),
        (vec![3, 5], View::Transposed, vec![3, 5], View::Strided),
        (vec![4, 1, 6], View::Contiguous, vec![5, 1], View::Offset),
        (vec![2, 3, 4], View::Contiguous, vec![4], View::Contiguous),
        (vec![], View::Contiguous, vec![3], View::Contiguous),
        (vec![0, 3], View::Contiguous, vec![3], View::Contiguous),
    ];
    if large {
        v.push((vec![300, 257], View::Contiguous, vec![300, 257], View::Transposed));
        v.push((vec![300, 257], View::Strided, vec![257], View::Contiguous));
    }
    v
}

fn binary_ranges(op: BinaryOp, dtype: DType) -> ((f64, f64), (f64, f64)) {
    if dtype.is_int() {
        let r = int_range(dtype);
        return (r, if op == BinaryOp::Div { (1.0, 6.0) } else { r });
    }
    match op {
        BinaryOp::Pow => ((0.5, 2.0), (-2.0, 2.0)),
        BinaryOp::Div => ((-3.0, 3.0), (0.5, 3.0)),
        _ => ((-3.0, 3.0), (-3.0, 3.0)),
    }
}

pub(crate) fn binary(ctx: &mut Ctx) {
    for op in BinaryOp::ALL {
        for dtype in DType::ALL {
            for (sa, va, sb, vb) in binary_shapes(dtype == DType::F32) {
                let (ra, rb) = binary_ranges(op, dtype);
                let name = format!("{} {dtype} {sa:?}{va:?} {sb:?}{vb:?}", op.name());
                if op.is_comparison() && dtype.is_float() {
                    // Integer-valued floats so that ties (==, <=) actually occur.
                    let (a, b) =
                        (Input::new(&sa, DType::I64, (-3.0, 3.0), va), Input::new(&sb, DType::I64, (-3.0, 3.0), vb));
                    ctx.check(name, &[a, b], None, |t| t[0].to_dtype(dtype)?.binary(op, &t[1].to_dtype(dtype)?));
                } else {
                    let (a, b) = (Input::new(&sa, dtype, ra, va), Input::new(&sb, dtype, rb, vb));
                    ctx.check(name, &[a, b], None, |t| t[0].binary(op, &t[1]));
                }
            }
        }
    }
    // Shapes that do not broadcast, dtypes that differ, integer division by zero: both sides error.
    let bad = [
        (
            Input::new(&[3, 4], DType::F32, (0.0, 1.0), View::Contiguous),
            Input::new(&[4, 3], DType::F32, (0.0, 1.0), View::Contiguous),
        ),
        (
            Input::new(&[3], DType::F32, (0.0, 1.0), View::Contiguous),
            Input::new(&[3], DType::F64, (0.0, 1.0), View::Contiguous),
        ),
        (
            Input::new(&[3], DType::I64, (1.0, 5.0), View::Contiguous),
            Input::values(&[3], DType::I64, vec![1.0, 0.0, 2.0]),
        ),
    ];
    for (k, (a, b)) in bad.into_iter().enumerate() {
        ctx.check(format!("binary error case {k}"), &[a, b], None, |t| t[0].div(&t[1]));
    }
}

pub(crate) fn scalar(ctx: &mut Ctx) {
    for op in BinaryOp::ALL {
        for dtype in DType::ALL {
            let (ra, _) = binary_ranges(op, dtype);
            let s = if op == BinaryOp::Pow {
                1.5
            } else if dtype.is_int() {
                2.0
            } else {
                0.75
            };
            for (shape, view) in [(vec![3, 5], View::Transposed), (vec![6], View::Contiguous)] {
                let input = Input::new(&shape, dtype, ra, view);
                ctx.check(format!("{}_scalar {dtype} {shape:?} {view:?}", op.name()), &[input], None, |t| {
                    t[0].binary_scalar(op, s)
                });
            }
        }
    }
    for dtype in DType::FLOATS {
        let input = Input::new(&[4, 5], dtype, (-3.0, 3.0), View::Strided);
        ctx.check(format!("clamp {dtype}"), &[input.clone()], None, |t| t[0].clamp(-1.0, 0.5));
        ctx.check(format!("affine {dtype}"), &[input], None, |t| t[0].affine(2.0, -1.0));
    }
}

pub(crate) fn where_cond(ctx: &mut Ctx) {
    for dtype in DType::ALL {
        let range = if dtype.is_int() { int_range(dtype) } else { (-3.0, 3.0) };
        let cases = [
            (vec![3, 4], vec![3, 4], vec![3, 4], View::Contiguous),
            (vec![3, 1], vec![1, 4], vec![4], View::Contiguous),
            (vec![4, 3], vec![4, 3], vec![4, 3], View::Transposed),
            (vec![0, 2], vec![2], vec![1], View::Contiguous),
        ];
        for (sc, st, sf, view) in cases {
            let inputs = [
                Input::new(&sc, DType::U8, (0.0, 2.0), view),
                Input::new(&st, dtype, range, View::Contiguous),
                Input::new(&sf, dtype, range, View::Contiguous),
            ];
            ctx.check(format!("where_cond {dtype} {sc:?} {st:?} {sf:?}"), &inputs, None, |t| {
                t[0].where_cond(&t[1], &t[2])
            });
        }
    }
}

pub(crate) fn cast(ctx: &mut Ctx) {
    for from in DType::ALL {
        for to in DType::ALL {
            let range = if from.is_int() { int_range(from) } else { (-300.0, 300.0) };
            let input = Input::new(&[4, 6], from, range, View::Transposed);
            // A cast is one rounding: exact unless the target is a float narrower than f64,
            // where the two sides may round a value sitting on a tie differently.
            let tol = if to.is_float() { Tolerance::for_dtype(to) } else { Tolerance::EXACT };
            ctx.check(format!("to_dtype {from} -> {to}"), &[input], Some(tol), |t| t[0].to_dtype(to));
        }
    }
    let nan = Input::values(&[3], DType::F32, vec![f64::NAN, f64::INFINITY, -1.5]);
    ctx.check("to_dtype non-finite f32 -> f64".into(), &[nan], None, |t| t[0].to_dtype(DType::F64));
}
