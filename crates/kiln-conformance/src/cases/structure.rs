//! Cases for reductions, softmax-style composites, matmul, views and copies, indexing, and
//! creation.

use crate::harness::{Ctx, Input, View};
use crate::Tolerance;
use kiln_tensor::{DType, ReduceOp, Tensor, Window2d};

fn range_for(dtype: DType) -> (f64, f64) {
    match dtype {
        DType::I64 => (-6.0, 6.0),
        d if d.is_int() => (0.0, 10.0),
        _ => (-3.0, 3.0),
    }
}

pub(crate) fn reduce(ctx: &mut Ctx) {
    let cases: Vec<(Vec<usize>, View, Vec<isize>)> = vec![
        (vec![2, 3, 4], View::Contiguous, vec![1]),
        (vec![2, 3, 4], View::Strided, vec![0, 2]),
        (vec![2, 3, 4], View::Contiguous, vec![0, 1, 2]),
        (vec![3, 5], View::Transposed, vec![0]),
        (vec![4, 1, 6], View::Broadcast, vec![-1]),
        (vec![0, 3], View::Contiguous, vec![1]),
        (vec![], View::Contiguous, vec![]),
        // Rows long enough for lane-parallel loops, with a remainder; an offset (unaligned) start.
        (vec![5, 37], View::Contiguous, vec![1]),
        (vec![3, 2, 40], View::Offset, vec![2]),
        (vec![70, 300], View::Contiguous, vec![-1]),
        // Rows of several summation blocks (512 f32 on the CPU) whose last block has every
        // kind of rest: 1123 = 2 x 512 + 64 + 2 x 16 + 3.
        (vec![3, 1123], View::Offset, vec![-1]),
        // One strided dim longer than a short window's 64 inline offsets (a column), and
        // several dims as long, over contiguous runs of 11 (a bias gradient's planes).
        (vec![100, 7], View::Contiguous, vec![0]),
        (vec![12, 5, 11], View::Offset, vec![0, 2]),
        // Several runs of 675 = 512 + 2 x 64 + 2 x 16 + 3 per output (a channel sum over
        // larger planes): a backend may carry its partial sums from one run into the next.
        (vec![5, 3, 9, 75], View::Offset, vec![0, 2, 3]),
    ];
    for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
        for dtype in DType::ALL {
            for (shape, view, dims) in &cases {
                let input = Input::new(shape, dtype, range_for(dtype), *view);
                let tol = Tolerance::for_dtype(dtype).scaled(if op == ReduceOp::Sum { 2.0 } else { 1.0 });
                let dims = dims.clone();
                ctx.check(
                    format!("{} {dtype} {shape:?} {view:?} dims {dims:?}", op.name()),
                    &[input],
                    Some(tol),
                    |t| match op {
                        ReduceOp::Sum => t[0].sum(dims.clone(), true),
                        ReduceOp::Max => t[0].max(dims.clone(), false),
                        _ => t[0].min(dims.clone(), true),
                    },
                );
            }
        }
    }
    // NaN wins max and min wherever it sits in a long row: in a lane of any of several vectors,
    // in the whole vectors after them, or in the remainder (rows of 37 and of 150 = 2 x 64 +
    // 16 + 6 elements; one row of each has no NaN).
    for dtype in [DType::F32, DType::F64] {
        for (cols, nans) in [(37, vec![3, 37 + 35]), (150, vec![3, 150 + 130, 300 + 147, 600 + 70, 750 + 100])] {
            let rows = nans.len() + 1;
            let mut values: Vec<f64> = (0..rows * cols).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0).collect();
            for at in nans {
                values[at] = f64::NAN;
            }
            let input = Input::values(&[rows, cols], dtype, values);
            ctx.check(format!("max {dtype} rows of {cols} with NaN"), &[input.clone()], None, |t| t[0].max(-1, false));
            ctx.check(format!("min {dtype} rows of {cols} with NaN"), &[input], None, |t| t[0].min(-1, false));
        }
    }
    // ... and over several dims (runs of 9 x 13 = 117 = 64 + 3 x 16 + 5 elements): channel 0
    // has no NaN, channel 1 one in a run's rest, channel 2 one in a run's first lanes; and a
    // whole tensor of several parallel blocks with one NaN.
    for dtype in [DType::F32, DType::F64] {
        let mut values: Vec<f64> = (0..6 * 3 * 117).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0).collect();
        for at in [(4 * 3 + 1) * 117 + 115, (2 * 3 + 2) * 117 + 1] {
            values[at] = f64::NAN;
        }
        let input = Input::values(&[6, 3, 9, 13], dtype, values);
        ctx.check(format!("max {dtype} dims [0, 2, 3] with NaN"), &[input.clone()], None, |t| {
            t[0].max([0, 2, 3], false)
        });
        ctx.check(format!("min {dtype} dims [0, 2, 3] with NaN"), &[input], None, |t| t[0].min([0, 2, 3], false));
    }
    let mut values: Vec<f64> = (0..300 * 257).map(|i| ((i * 7919) % 101) as f64 / 10.0 - 5.0).collect();
    values[50_000] = f64::NAN;
    let input = Input::values(&[300, 257], DType::F32, values);
    ctx.check("max f32 [300, 257] all with NaN".into(), &[input.clone()], None, |t| t[0].max((), false));
    ctx.check("min f32 [300, 257] all with NaN".into(), &[input], None, |t| t[0].min((), false));
    for dtype in DType::ALL {
        for (shape, view, dim) in
            [(vec![3, 5], View::Transposed, 0), (vec![2, 3, 4], View::Strided, -1), (vec![6], View::Contiguous, 0)]
        {
            let input = Input::new(&shape, dtype, range_for(dtype), view);
            ctx.check(format!("argmax {dtype} {shape:?} {view:?} dim {dim}"), &[input.clone()], None, |t| {
                t[0].argmax(dim, false)
            });
            ctx.check(format!("argmin {dtype} {shape:?} {view:?} dim {dim}"), &[input], None, |t| {
                t[0].argmin(dim, true)
            });
        }
    }
    // Long reductions that cross the parallel threshold, and an empty max (an error on both).
    for (shape, view) in [(vec![520, 257], View::Contiguous), (vec![257, 520], View::Transposed)] {
        let input = Input::new(&shape, DType::F32, (-1.0, 1.0), view);
        ctx.check(
            format!("sum f32 large {view:?} all"),
            &[input.clone()],
            Some(Tolerance { rel: 1e-3, abs: 1e-2 }),
            |t| t[0].sum_all(),
        );
        ctx.check(format!("sum f32 large {view:?} dim 0"), &[input.clone()], None, |t| t[0].sum(0, false));
        ctx.check(format!("max f32 large {view:?} all"), &[input.clone()], None, |t| t[0].max((), false));
        ctx.check(format!("argmax f32 large {view:?} dim 1"), &[input], None, |t| t[0].argmax(1, false));
    }
    // Rows longer than a block, each contiguous, from an offset start: summed as slices.
    let rows = Input::new(&[3, 40_000], DType::F32, (-1.0, 1.0), View::Offset);
    ctx.check("sum f32 [3, 40000] Offset dim 1".into(), &[rows], Some(Tolerance { rel: 1e-3, abs: 1e-2 }), |t| {
        t[0].sum(1, false)
    });
    // A bias gradient's sum: every dim but the channels, longer than a block, over contiguous
    // planes (and over strided ones), in the float dtypes.
    for dtype in DType::FLOATS {
        for view in [View::Contiguous, View::Strided, View::Offset] {
            let input = Input::new(&[40, 3, 15, 17], dtype, (-1.0, 1.0), view);
            let tol = Tolerance::for_dtype(dtype).scaled(4.0);
            ctx.check(format!("sum {dtype} [40, 3, 15, 17] {view:?} dims [0, 2, 3]"), &[input], Some(tol), |t| {
                t[0].sum([0, 2, 3], false)
            });
        }
    }
    let empty = Input::new(&[0, 3], DType::F32, (0.0, 1.0), View::Contiguous);
    ctx.check("max over an empty dim (error)".into(), &[empty], None, |t| t[0].max(0, false));
}

pub(crate) fn composite(ctx: &mut Ctx) {
    for dtype in DType::FLOATS {
        for (shape, view, dim) in [
            (vec![4, 7], View::Contiguous, -1isize),
            (vec![3, 5], View::Transposed, 0),
            (vec![2, 3, 4], View::Strided, 1),
        ] {
            let input = Input::new(&shape, dtype, (-4.0, 4.0), view);
            let tol = Some(Tolerance::for_dtype(dtype).scaled(2.0));
            let name = |op: &str| format!("{op} {dtype} {shape:?} {view:?} dim {dim}");
            ctx.check(name("softmax"), &[input.clone()], tol, |t| t[0].softmax(dim));
            ctx.check(name("log_softmax"), &[input.clone()], tol, |t| t[0].log_softmax(dim));
            ctx.check(name("logsumexp"), &[input.clone()], tol, |t| t[0].logsumexp(dim, false));
            ctx.check(name("mean"), &[input.clone()], tol, |t| t[0].mean(dim, true));
            ctx.check(name("var"), &[input], tol, |t| t[0].var(dim, false));
        }
    }
    // The fused optimizer update against the same update composed from primitive ops (which is
    // what the oracle runs): small, transposed and above the CPU's threading threshold.
    for dtype in DType::FLOATS {
        for (shape, grad_view) in
            [(vec![4, 7], View::Contiguous), (vec![5, 3], View::Transposed), (vec![70_001], View::Contiguous)]
        {
            for (decoupled, weight_decay, t) in [(false, 0.0, 1), (false, 0.01, 7), (true, 0.01, 3)] {
                let step =
                    kiln_tensor::AdamStep { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled, t };
                let inputs = [
                    Input::new(&shape, dtype, (-1.0, 1.0), View::Contiguous),
                    Input::new(&shape, dtype, (-1.0, 1.0), grad_view),
                    Input::new(&shape, dtype, (-0.1, 0.1), View::Contiguous),
                    Input::new(&shape, dtype, (0.0, 0.01), View::Contiguous),
                ];
                // Bit-identical where a backend fuses (f32, f64 on the CPU): the fused kernel makes
                // the composed form's roundings. Half types go through f32 and round twice.
                let tol = Some(if dtype.size_in_bytes() >= 4 { Tolerance::EXACT } else { Tolerance::for_dtype(dtype) });
                let name = format!(
                    "adam_step {dtype} {shape:?} grad {grad_view:?} decoupled {decoupled} wd {weight_decay} t {t}"
                );
                ctx.check(name, &inputs, tol, move |t| {
                    let (p, m, v) = t[0].adam_step(&t[1], &t[2], &t[3], &step)?;
                    Tensor::cat(&[&p, &m, &v], 0)
                });
            }
        }
    }
    // The fused SGD update against the composed one: plain, momentum (first and later steps),
    // dampening with weight decay and Nesterov.
    for dtype in DType::FLOATS {
        for (shape, grad_view) in [(vec![4, 7], View::Contiguous), (vec![5, 3], View::Transposed)] {
            for (momentum, dampening, weight_decay, nesterov, first) in [
                (0.0, 0.0, 0.0, false, false),
                (0.9, 0.0, 0.0, false, true),
                (0.9, 0.0, 0.0, false, false),
                (0.9, 0.1, 0.01, true, false),
            ] {
                let step = kiln_tensor::SgdStep { lr: 0.05, momentum, dampening, weight_decay, nesterov, first };
                let inputs = [
                    Input::new(&shape, dtype, (-1.0, 1.0), View::Contiguous),
                    Input::new(&shape, dtype, (-1.0, 1.0), grad_view),
                    Input::new(&shape, dtype, (-0.1, 0.1), View::Contiguous),
                ];
                let tol = Some(if dtype.size_in_bytes() >= 4 { Tolerance::EXACT } else { Tolerance::for_dtype(dtype) });
                let name = format!("sgd_step {dtype} {shape:?} grad {grad_view:?} {step:?}");
                ctx.check(name, &inputs, tol, move |t| {
                    let (p, b) = t[0].sgd_step(&t[1], &t[2], &step)?;
                    Tensor::cat(&[&p, &b], 0)
                });
            }
        }
    }
    // The fused Adadelta update against the composed one, with and without weight decay, on a
    // size that a backend splits across threads.
    for dtype in DType::FLOATS {
        for (shape, grad_view) in
            [(vec![4, 7], View::Contiguous), (vec![5, 3], View::Transposed), (vec![70_001], View::Contiguous)]
        {
            for weight_decay in [0.0, 0.01] {
                let step = kiln_tensor::AdadeltaStep { lr: 1.0, rho: 0.9, eps: 1e-6, weight_decay };
                let inputs = [
                    Input::new(&shape, dtype, (-1.0, 1.0), View::Contiguous),
                    Input::new(&shape, dtype, (-1.0, 1.0), grad_view),
                    Input::new(&shape, dtype, (0.0, 0.01), View::Contiguous),
                    Input::new(&shape, dtype, (0.0, 0.001), View::Contiguous),
                ];
                let tol = Some(if dtype.size_in_bytes() >= 4 { Tolerance::EXACT } else { Tolerance::for_dtype(dtype) });
                let name = format!("adadelta_step {dtype} {shape:?} grad {grad_view:?} wd {weight_decay}");
                ctx.check(name, &inputs, tol, move |t| {
                    let (p, v, u) = t[0].adadelta_step(&t[1], &t[2], &t[3], &step)?;
                    Tensor::cat(&[&p, &v, &u], 0)
                });
            }
        }
    }
    // Linear layers: a backend may fuse the bias and ReLU into the product (`Backend::linear`).
    for dtype in DType::FLOATS {
        let tol = Some(Tolerance::for_dtype(dtype).scaled(8.0));
        for (xv, wv) in [(View::Contiguous, View::Contiguous), (View::Transposed, View::Strided)] {
            let inputs = [
                Input::new(&[5, 7], dtype, (-1.0, 1.0), xv),
                Input::new(&[3, 7], dtype, (-1.0, 1.0), wv),
                Input::new(&[3], dtype, (-1.0, 1.0), View::Contiguous),
                Input::new(&[3], dtype, (0.5, 1.5), View::Contiguous),
            ];
            let weighed = dtype.size_in_bytes() >= 4;
            for relu in [false, true] {
                let linear = move |x: &Tensor, w: &Tensor, b: &Tensor| match relu {
                    true => x.linear_relu(w, Some(b)),
                    false => x.linear(w, Some(b)),
                };
                let name = format!("linear {dtype} x {xv:?} w {wv:?} relu {relu}");
                ctx.check(name.clone(), &inputs, tol, move |t| linear(&t[0], &t[1], &t[2]));
                // All three gradients (a backend may fuse the whole backward pass).
                ctx.check(format!("{name} gradients"), &inputs, tol, move |t| input_grads(t, weighed, linear));
            }
        }
    }
    // Convolution and pooling: backends may fuse im2col, col2im and the pooling argmax.
    let odd = Window2d { kernel: (3, 2), stride: (2, 1), padding: (1, 2), dilation: (1, 2) };
    let pad = |rows, cols| Window2d { padding: (rows, cols), ..Window2d::square(3) };
    for dtype in DType::FLOATS {
        let tol = Some(Tolerance::for_dtype(dtype).scaled(8.0));
        for (xs, xv, ws, win, groups) in [
            (vec![2, 3, 7, 6], View::Contiguous, vec![4, 3, 3, 3], Window2d::square(3), 1),
            (vec![2, 3, 7, 6], View::Strided, vec![4, 3, 3, 2], odd, 1),
            (vec![1, 4, 6, 6], View::Transposed, vec![6, 2, 3, 3], Window2d::square(3), 2),
            (vec![64, 1, 10, 10], View::Contiguous, vec![8, 1, 3, 3], Window2d::square(3), 1),
            // Enough channels for Winograd (kiln-cpu): odd output sizes, then padding of 1 and 2,
            // then 3 (where the input gradient cannot use it).
            (vec![2, 16, 7, 6], View::Contiguous, vec![16, 16, 3, 3], Window2d::square(3), 1),
            (vec![1, 8, 6, 9], View::Strided, vec![8, 8, 3, 3], pad(1, 2), 1),
            (vec![1, 8, 5, 4], View::Contiguous, vec![9, 8, 3, 3], pad(3, 0), 1),
        ] {
            let inputs = [
                Input::new(&xs, dtype, (-1.0, 1.0), xv),
                Input::new(&ws, dtype, (-1.0, 1.0), View::Contiguous),
                Input::new(&[ws[0]], dtype, (-1.0, 1.0), View::Contiguous),
                Input::new(&[ws[0], 1, 1], dtype, (0.5, 1.5), View::Contiguous),
            ];
            let weighed = dtype.size_in_bytes() >= 4;
            for relu in [false, true] {
                // With ReLU: the op a backend may fuse into the convolution's epilogue.
                let conv = move |x: &Tensor, w: &Tensor, b: &Tensor| match relu {
                    true => x.conv2d_relu(w, Some(b), win, groups),
                    false => x.conv2d(w, Some(b), win, groups),
                };
                let name = format!("conv2d {dtype} {xs:?}{xv:?} w {ws:?} {win:?} groups {groups} relu {relu}");
                ctx.check(name.clone(), &inputs, tol, move |t| conv(&t[0], &t[1], &t[2]));
                // All three gradients (a backend may fuse the whole backward pass).
                ctx.check(format!("{name} gradients"), &inputs, tol, move |t| input_grads(t, weighed, conv));
            }
        }
        for win in [
            Window2d::square(2),
            Window2d { stride: (2, 2), ..Window2d::square(2) },
            Window2d { kernel: (2, 3), stride: (1, 2), padding: (0, 0), dilation: (2, 1) },
            Window2d { kernel: (3, 3), stride: (2, 2), padding: (1, 1), dilation: (1, 1) },
            odd,
        ] {
            let x = Input::new(&[2, 3, 7, 6], dtype, (-1.0, 1.0), View::Strided);
            ctx.check(format!("max_pool2d {dtype} {win:?}"), &[x.clone()], tol, move |t| t[0].max_pool2d(win));
            ctx.check(format!("im2col {dtype} {win:?}"), &[x], tol, move |t| t[0].im2col(win));
        }
        // Ties and NaNs: the gradient shows which element each window picked (the first maximum,
        // a NaN over any number, the first NaN).
        #[rustfmt::skip]
        let ties = vec![
            1.0, 1.0, 1.0, 1.0, 3.0,
            1.0, 1.0, 0.5, 1.0, 3.0,
            2.0, f64::NAN, 2.0, 2.0, 0.0,
            f64::NAN, f64::NAN, 0.0, 2.0, 0.0,
        ];
        for win in [Window2d::square(2), Window2d { stride: (2, 2), ..Window2d::square(2) }] {
            let x = Input::values(&[1, 1, 4, 5], dtype, ties.clone());
            ctx.check(format!("max_pool2d {dtype} ties and NaNs {win:?} gradient"), &[x], None, move |t| {
                let x = kiln_tensor::Var::new(t[0].clone());
                let grads = x.as_tensor().max_pool2d(win)?.sum((), false)?.backward()?;
                grads.get(&x).cloned().ok_or_else(|| kiln_tensor::Error::Msg("no gradient".into()))
            });
        }
        // A window that lies entirely in the padding: its maximum is -inf.
        let all_pad = Window2d { kernel: (2, 2), stride: (1, 1), padding: (1, 1), dilation: (3, 3) };
        let x = Input::new(&[1, 2, 2, 2], dtype, (-1.0, 1.0), View::Contiguous);
        ctx.check(format!("max_pool2d {dtype} window in the padding"), &[x], None, move |t| t[0].max_pool2d(all_pad));
    }
    // Rows with -inf, +inf and NaN (a backend may fuse softmax over the last dim), and both
    // gradients compared with the oracle's.
    #[rustfmt::skip]
    let odd_rows = vec![
        f64::NEG_INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY,
        1.0, f64::INFINITY, 2.0,
        0.5, f64::NAN, -1.0,
        f64::NEG_INFINITY, 3.0, -2.0,
    ];
    for dtype in DType::FLOATS {
        let x = Input::values(&[4, 3], dtype, odd_rows.clone());
        ctx.check(format!("softmax {dtype} rows with inf and NaN"), &[x.clone()], None, |t| t[0].softmax(-1));
        ctx.check(format!("log_softmax {dtype} rows with inf and NaN"), &[x], None, |t| t[0].log_softmax(-1));
        let tol = Some(Tolerance::for_dtype(dtype).scaled(4.0));
        for log in [false, true] {
            let x = Input::new(&[5, 37], dtype, (-4.0, 4.0), View::Offset);
            ctx.check(
                format!("{} {dtype} gradient", if log { "log_softmax" } else { "softmax" }),
                &[x],
                tol,
                move |t| {
                    let x = kiln_tensor::Var::new(t[0].clone());
                    let y = if log { x.as_tensor().log_softmax(-1)? } else { x.as_tensor().softmax(-1)? };
                    let weights = Tensor::arange(0.0, 37.0, t[0].dtype(), t[0].device())?;
                    let grads = y.mul(&weights)?.sum((), false)?.backward()?;
                    grads.get(&x).cloned().ok_or_else(|| kiln_tensor::Error::Msg("no gradient".into()))
                },
            );
        }
    }
    // Cross-entropy rows (a backend may fuse the forward and the backward), against i64 and u32
    // classes, with the logits' gradient; then a class out of range.
    for dtype in DType::FLOATS {
        let tol = Some(Tolerance::for_dtype(dtype).scaled(4.0));
        for index in [DType::I64, DType::U32] {
            let classes = Input::values(&[5], index, vec![0.0, 36.0, 7.0, 7.0, 20.0]);
            let x = Input::new(&[5, 37], dtype, (-4.0, 4.0), View::Offset);
            ctx.check(format!("cross_entropy_rows {dtype} {index}"), &[x.clone(), classes.clone()], tol, |t| {
                t[0].cross_entropy_rows(&t[1])
            });
            ctx.check(format!("cross_entropy_rows {dtype} {index} gradient"), &[x, classes], tol, |t| {
                let x = kiln_tensor::Var::new(t[0].clone());
                let weights = Tensor::arange(1.0, 6.0, t[0].dtype(), t[0].device())?;
                let grads = x.as_tensor().cross_entropy_rows(&t[1])?.mul(&weights)?.sum((), false)?.backward()?;
                grads.get(&x).cloned().ok_or_else(|| kiln_tensor::Error::Msg("no gradient".into()))
            });
        }
        let x = Input::new(&[2, 3], dtype, (-1.0, 1.0), View::Contiguous);
        let bad = Input::values(&[2], DType::I64, vec![1.0, 3.0]);
        ctx.check(format!("cross_entropy_rows {dtype} class out of range"), &[x, bad], None, |t| {
            t[0].cross_entropy_rows(&t[1])
        });
    }
    // Extreme logits stay finite.
    let big = Input::values(&[2, 3], DType::F32, vec![1e4, -1e4, 0.0, -1e4, -1e4, -1e4]);
    ctx.check("log_softmax of +-1e4".into(), &[big.clone()], None, |t| t[0].log_softmax(-1));
    ctx.check("softmax of +-1e4".into(), &[big], None, |t| t[0].softmax(-1));
}

pub(crate) fn matmul(ctx: &mut Ctx) {
    type Case = (Vec<usize>, View, Vec<usize>, View);
    let cases: Vec<Case> = vec![
        (vec![1, 1], View::Contiguous, vec![1, 1], View::Contiguous),
        (vec![3, 4], View::Contiguous, vec![4, 5], View::Contiguous),
        (vec![3, 4], View::Transposed, vec![4, 5], View::Transposed),
        (vec![3, 4], View::Strided, vec![4, 5], View::Offset),
        (vec![2, 1, 3, 4], View::Contiguous, vec![5, 4, 2], View::Transposed),
        (vec![4], View::Contiguous, vec![4, 3], View::Contiguous),
        (vec![3, 4], View::Contiguous, vec![4], View::Contiguous),
        (vec![3, 0], View::Contiguous, vec![0, 4], View::Contiguous),
        (vec![64, 130], View::Contiguous, vec![130, 70], View::Transposed),
        (vec![16, 300], View::Strided, vec![300, 40], View::Transposed),
        (vec![8, 20, 30], View::Contiguous, vec![8, 30, 25], View::Offset),
        // Above a CPU GEMM's threading threshold, with ragged tiles: split by columns, then rows.
        (vec![37, 260], View::Contiguous, vec![260, 300], View::Transposed),
        (vec![300, 140], View::Transposed, vec![140, 90], View::Contiguous),
        // The MLP's `x @ w.t()`, and a batch with an odd k (a CPU kernel's masked tail).
        (vec![32, 784], View::Contiguous, vec![784, 128], View::Transposed),
        (vec![3, 5, 71], View::Offset, vec![3, 71, 6], View::Transposed),
        (vec![5], View::Contiguous, vec![5], View::Contiguous),
    ];
    for dtype in DType::FLOATS {
        for (sa, va, sb, vb) in &cases {
            let k = sa[sa.len() - 1] as f64;
            // Relative error as for one op; the absolute floor grows with the number of terms, for
            // results that cancel to near zero.
            let preset = Tolerance::for_dtype(dtype);
            let tol = Tolerance { rel: preset.rel, abs: preset.abs * k.max(1.0) };
            let (a, b) = (Input::new(sa, dtype, (-1.0, 1.0), *va), Input::new(sb, dtype, (-1.0, 1.0), *vb));
            ctx.check(format!("matmul {dtype} {sa:?}{va:?} @ {sb:?}{vb:?}"), &[a, b], Some(tol), |t| {
                t[0].matmul(&t[1])
            });
        }
    }
    // A mostly zero (about 1 entry in 5 above 0 after the ReLU), as MNIST's pixels are: a
    // backend may skip the zeros (kiln-cpu does) but must still return the dense product.
    for (sa, sb, vb) in
        [(vec![64, 784], vec![784, 128], View::Transposed), (vec![33, 1100], vec![1100, 150], View::Contiguous)]
    {
        let k = sa[1] as f64;
        let preset = Tolerance::for_dtype(DType::F32);
        let tol = Tolerance { rel: preset.rel, abs: preset.abs * k };
        let (a, b) =
            (Input::new(&sa, DType::F32, (-4.0, 1.0), View::Contiguous), Input::new(&sb, DType::F32, (-1.0, 1.0), vb));
        ctx.check(format!("matmul mostly-zero {sa:?} @ {sb:?}{vb:?}"), &[a, b], Some(tol), |t| {
            t[0].relu()?.matmul(&t[1])
        });
    }
    for (sa, sb) in [(vec![3, 4], vec![5, 6]), (vec![2, 3, 4], vec![3, 4, 5])] {
        let (a, b) = (
            Input::new(&sa, DType::F32, (0.0, 1.0), View::Contiguous),
            Input::new(&sb, DType::F32, (0.0, 1.0), View::Contiguous),
        );
        ctx.check(format!("matmul {sa:?} @ {sb:?} (error)"), &[a, b], None, |t| t[0].matmul(&t[1]));
    }
    let ints = [
        Input::new(&[2, 2], DType::I64, (0.0, 3.0), View::Contiguous),
        Input::new(&[2, 2], DType::I64, (0.0, 3.0), View::Contiguous),
    ];
    ctx.check("matmul i64 (refused)".into(), &ints, None, |t| t[0].matmul(&t[1]));
}

pub(crate) fn views(ctx: &mut Ctx) {
    for dtype in DType::ALL {
        let r = range_for(dtype);
        let x = |shape: &[usize], view| Input::new(shape, dtype, r, view);
        let exact = Some(Tolerance::EXACT);
        for view in View::ALL {
            ctx.check(format!("contiguous {dtype} {view:?}"), &[x(&[3, 4], view)], exact, |t| t[0].contiguous());
        }
        ctx.check(format!("reshape (view) {dtype}"), &[x(&[2, 3, 4], View::Offset)], exact, |t| t[0].reshape([6, 4]));
        ctx.check(format!("reshape (copy) {dtype}"), &[x(&[3, 4], View::Transposed)], exact, |t| t[0].reshape([12]));
        ctx.check(format!("permute {dtype}"), &[x(&[2, 3, 4], View::Strided)], exact, |t| {
            t[0].permute(&[2, 0, 1])?.contiguous()
        });
        ctx.check(format!("slice step {dtype}"), &[x(&[5, 9], View::Transposed)], exact, |t| t[0].slice(1, 1, 5, 3));
        ctx.check(format!("narrow {dtype}"), &[x(&[5, 9], View::Contiguous)], exact, |t| t[0].narrow(0, 2, 3));
        ctx.check(format!("flatten {dtype}"), &[x(&[2, 3, 4], View::Transposed)], exact, |t| t[0].flatten(1, 2));
        ctx.check(format!("unsqueeze/squeeze {dtype}"), &[x(&[3, 4], View::Strided)], exact, |t| {
            t[0].unsqueeze(1)?.squeeze(1)?.unsqueeze(-1)
        });
        ctx.check(format!("broadcast_to {dtype}"), &[x(&[3, 1], View::Contiguous)], exact, |t| {
            t[0].broadcast_to([2, 3, 4])?.contiguous()
        });
        let pair = [x(&[2, 3], View::Transposed), x(&[2, 5], View::Strided)];
        ctx.check(format!("cat dim 1 {dtype}"), &pair, exact, |t| Tensor::cat(&[&t[0], &t[1]], 1));
        let pair = [x(&[2, 3], View::Contiguous), x(&[4, 3], View::Offset)];
        ctx.check(format!("cat dim 0 {dtype}"), &pair, exact, |t| Tensor::cat(&[&t[0], &t[1]], 0));
        let pair = [x(&[2, 3], View::Contiguous), x(&[2, 3], View::Transposed)];
        ctx.check(format!("stack {dtype}"), &pair, exact, |t| Tensor::stack(&[&t[0], &t[1]], 1));
        ctx.check(format!("split + cat {dtype}"), &[x(&[7, 3], View::Contiguous)], exact, |t| {
            let parts = t[0].split(3, 0)?;
            Tensor::cat(&parts.iter().rev().collect::<Vec<_>>(), 0)
        });
        ctx.check(format!("chunk {dtype}"), &[x(&[3, 8], View::Transposed)], exact, |t| {
            let parts = t[0].chunk(3, 1)?;
            Tensor::stack(&[&parts[0], &parts[1]], 0)
        });
    }
    let x = Input::new(&[3, 4], DType::F32, (0.0, 1.0), View::Contiguous);
    ctx.check("reshape 12 -> 5 (error)".into(), &[x.clone()], None, |t| t[0].reshape([5]));
    ctx.check("cat mismatched (error)".into(), &[x.clone(), x], None, |t| Tensor::cat(&[&t[0], &t[1].t()?], 0));
}

pub(crate) fn indexing(ctx: &mut Ctx) {
    for dtype in DType::ALL {
        let r = range_for(dtype);
        for idx_dtype in [DType::I64, DType::U32] {
            let src = Input::new(&[4, 5], dtype, r, View::Transposed);
            let idx = Input::values(&[4, 2], idx_dtype, vec![0.0, 4.0, 3.0, 3.0, 1.0, 0.0, 2.0, 1.0]);
            ctx.check(format!("gather dim 1 {dtype} idx {idx_dtype}"), &[src.clone(), idx], None, |t| {
                t[0].gather(1, &t[1])
            });
            let idx0 = Input::values(&[2, 4], idx_dtype, vec![4.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]);
            ctx.check(format!("gather dim 0 {dtype} idx {idx_dtype}"), &[src.clone(), idx0], None, |t| {
                t[0].t()?.gather(0, &t[1])
            });
            let ids = Input::values(&[5], idx_dtype, vec![4.0, 0.0, 4.0, 1.0, 2.0]);
            ctx.check(format!("index_select dim 0 {dtype} idx {idx_dtype}"), &[src.clone(), ids.clone()], None, |t| {
                t[0].index_select(0, &t[1])
            });
            ctx.check(format!("index_select dim 1 {dtype} idx {idx_dtype}"), &[src.clone(), ids], None, |t| {
                t[0].t()?.index_select(0, &t[1])
            });
            let base = Input::new(&[3, 4], dtype, r, View::Strided);
            let sidx = Input::values(&[2, 4], idx_dtype, vec![0.0, 2.0, 2.0, 1.0, 0.0, 0.0, 1.0, 2.0]);
            let ssrc = Input::new(&[2, 4], dtype, r, View::Transposed);
            ctx.check(format!("scatter_add dim 0 {dtype} idx {idx_dtype}"), &[base, sidx, ssrc], None, |t| {
                t[0].scatter_add(0, &t[1], &t[2])
            });
            let labels = Input::values(&[5], idx_dtype, vec![3.0, 0.0, 9.0, 3.0, 1.0]);
            ctx.check(format!("one_hot {dtype} idx {idx_dtype}"), &[labels], None, |t| t[0].one_hot(10, dtype));
        }
    }
    let src = Input::new(&[4, 5], DType::F32, (0.0, 1.0), View::Contiguous);
    let bad = Input::values(&[4, 1], DType::I64, vec![0.0, 5.0, 1.0, 2.0]);
    ctx.check("gather out of range (error)".into(), &[src.clone(), bad.clone()], None, |t| t[0].gather(1, &t[1]));
    let neg = Input::values(&[2], DType::I64, vec![0.0, -1.0]);
    ctx.check("index_select negative (error)".into(), &[src.clone(), neg], None, |t| t[0].index_select(0, &t[1]));
    let ones = Input::new(&[4, 1], DType::F32, (0.0, 1.0), View::Contiguous);
    ctx.check("scatter_add out of range (error)".into(), &[src, bad, ones], None, |t| {
        t[0].scatter_add(1, &t[1], &t[2])
    });
}

/// Builds a tensor on a device.
type Maker = Box<dyn Fn(&kiln_tensor::Device) -> kiln_tensor::Result<Tensor>>;

pub(crate) fn creation(ctx: &mut Ctx) {
    for dtype in DType::ALL {
        let exact = Some(Tolerance::EXACT);
        let cases: Vec<(&str, Maker)> = vec![
            ("zeros", Box::new(move |d| Tensor::zeros([2, 3], dtype, d))),
            ("ones", Box::new(move |d| Tensor::ones([0, 3], dtype, d))),
            ("full", Box::new(move |d| Tensor::full(7.0, [4], dtype, d))),
            ("arange", Box::new(move |d| Tensor::arange_step(1.0, 9.0, 2.0, dtype, d))),
            ("eye", Box::new(move |d| Tensor::eye(4, dtype, d))),
            ("rand_uniform", Box::new(move |d| Tensor::rand_uniform(-2.0, 2.0, [3, 7], dtype, 11, d))),
            ("randn", Box::new(move |d| Tensor::randn(0.5, 2.0, [64], dtype, 12, d))),
            // Long enough for a backend to fill in parallel pieces, with ragged ends.
            ("rand_uniform long", Box::new(move |d| Tensor::rand_uniform(0.0, 1.0, [40_003], dtype, 13, d))),
            ("randn long", Box::new(move |d| Tensor::randn(0.0, 1.0, [33_335], dtype, 14, d))),
        ];
        for (name, make) in cases {
            // A marker input on each side tells the closure which device to build on.
            let marker = Input::values(&[1], DType::U8, vec![0.0]);
            ctx.check(format!("{name} {dtype}"), &[marker], exact, |t| make(t[0].device()));
        }
    }
}

/// The gradients of `op(x, w, b)` (the inputs `t[0..3]`) for a loss over its output, as one flat
/// tensor. f32 and f64 (`weighed`) weigh the output by `t[3]`, so that a ReLU's mask decides which
/// gradients reach the op (an output within rounding of 0 could flip it, about once in 10^4
/// runs). Half types, whose rounding is coarser, take `y^2`: its gradient `2y` is about 0 where
/// the mask acts, so flipped signs cannot fail the comparison. Each of their gradients is then
/// divided by its largest magnitude (that scale is appended to the result), which makes the
/// tolerance's absolute floor a fraction of the gradient's scale: an element is a sum of terms as large as that scale (at a convolution's
/// shapes about 30), and where they cancel to near 0 both sides keep the rounding of those
/// terms. Unscaled, one f16 element in a few dozen runs failed that way (-0.172 against -0.203
/// for a weight gradient, against a floor of 0.008).
fn input_grads(
    t: &[Tensor],
    weighed: bool,
    op: impl Fn(&Tensor, &Tensor, &Tensor) -> kiln_tensor::Result<Tensor>,
) -> kiln_tensor::Result<Tensor> {
    let vars = [0, 1, 2].map(|i| kiln_tensor::Var::new(t[i].clone()));
    let y = op(&vars[0].as_tensor(), &vars[1].as_tensor(), &vars[2].as_tensor())?;
    let loss = if weighed { y.mul(&t[3])? } else { y.mul(&y)? };
    let grads = loss.sum((), false)?.backward()?;
    let flat = |v: &kiln_tensor::Var| -> kiln_tensor::Result<Tensor> {
        let g = grads.get(v).ok_or_else(|| kiln_tensor::Error::Msg("no gradient".into()))?;
        let g = g.reshape([g.elem_count()])?;
        if weighed {
            return Ok(g);
        }
        // The scale itself stays in the result, compared like any element, so a gradient off
        // by a constant factor still fails.
        let scale = g.abs()?.max((), false)?.reshape([1])?;
        Tensor::cat(&[&g.div(&scale)?, &scale], 0)
    };
    Tensor::cat(&[&flat(&vars[0])?, &flat(&vars[1])?, &flat(&vars[2])?], 0)
}
