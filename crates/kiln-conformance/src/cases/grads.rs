//! Gradient checks: autograd against central finite differences in f64, on the device under
//! test, through non-contiguous views and broadcasting.

use crate::harness::{Ctx, Input, View};
use crate::Tolerance;
use kiln_tensor::{no_grad, BinaryOp, DType, HostData, Result, Tensor, UnaryOp, Var};

const TOL: Tolerance = Tolerance { rel: 1e-4, abs: 1e-6 };

fn f64_input(shape: &[usize], range: (f64, f64), view: View) -> Input {
    Input::new(shape, DType::F64, range, view)
}

impl Ctx {
    /// Checks the gradient of `sum(f(inputs) * w)` for a random `w` against finite differences
    /// with step `h`, for every element of every input's base storage.
    pub fn grad_check(&mut self, name: String, inputs: &[Input], h: f64, f: impl Fn(&[Tensor]) -> Result<Tensor>) {
        let values: Vec<Vec<f64>> = inputs.iter().map(|i| self.values(i)).collect();
        let result = (|| -> std::result::Result<(), String> {
            let dev = self.dut.clone();
            let e = |e: kiln_tensor::Error| e.to_string();
            let flat = |i: &Input, v: &[f64]| Tensor::from_host(HostData::from_f64_slice(i.dtype, v), [v.len()], &dev);
            // Vars hold each input's base storage (flat); the view is part of the function.
            let vars: Vec<Var> =
                inputs.iter().zip(&values).map(|(i, v)| flat(i, v).map(Var::new)).collect::<Result<_>>().map_err(e)?;
            let apply = |bases: &[Tensor]| -> Result<Tensor> {
                let views = inputs
                    .iter()
                    .zip(bases)
                    .map(|(i, b)| {
                        let base = b.reshape(i.view.base_shape(&i.shape))?;
                        i.view.apply(&base, &i.shape)
                    })
                    .collect::<Result<Vec<_>>>()?;
                f(&views)
            };
            let out = apply(&vars.iter().map(Var::as_tensor).collect::<Vec<_>>()).map_err(e)?;
            let w_values = kiln_tensor::random::sample(
                kiln_tensor::Distribution::Uniform { low: -1.0, high: 1.0 },
                out.elem_count(),
                self.seed ^ 0x5eed,
            );
            let w = Tensor::from_host(HostData::F64(w_values), out.shape().clone(), &dev).map_err(e)?;
            let loss = |o: &Tensor| o.mul(&w)?.sum_all();
            let grads = loss(&out).and_then(|l| l.backward()).map_err(e)?;
            for (k, var) in vars.iter().enumerate() {
                if !inputs[k].dtype.is_float() {
                    continue; // masks and indices have no gradient
                }
                let analytic = match grads.get(var) {
                    Some(g) => g.to_f64_vec().map_err(e)?,
                    None => vec![0.0; values[k].len()],
                };
                for j in 0..values[k].len() {
                    let eval = |delta: f64| -> Result<f64> {
                        no_grad(|| {
                            let bases = vars
                                .iter()
                                .enumerate()
                                .map(|(m, v)| {
                                    if m != k {
                                        return Ok(v.as_tensor());
                                    }
                                    let mut p = values[k].clone();
                                    p[j] += delta;
                                    flat(&inputs[k], &p)
                                })
                                .collect::<Result<Vec<_>>>()?;
                            loss(&apply(&bases)?)?.to_scalar::<f64>()
                        })
                    };
                    let numeric = (eval(h).map_err(e)? - eval(-h).map_err(e)?) / (2.0 * h);
                    if !TOL.close(analytic[j], numeric) {
                        return Err(format!(
                            "d/d input{k}[{j}]: autograd {} vs finite difference {numeric}",
                            analytic[j]
                        ));
                    }
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.report.grad_checks += 1,
            Err(msg) => self.report.failures.push(format!("grad {name}: {msg}")),
        }
    }
}

pub(crate) fn grads(ctx: &mut Ctx) {
    const H: f64 = 1e-6;
    for op in UnaryOp::ALL {
        for view in [View::Contiguous, View::Transposed] {
            let x = f64_input(&[3, 4], op.test_domain(), view);
            ctx.grad_check(format!("{} {view:?}", op.name()), &[x], H, |t| t[0].unary(op));
        }
    }
    // Every arithmetic op: a new one gets its gradient check without touching this file.
    for op in BinaryOp::ALL.into_iter().filter(|op| !op.is_comparison()) {
        let (ra, rb) = match op {
            BinaryOp::Pow => ((0.5, 2.0), (-2.0, 2.0)),
            BinaryOp::Div => ((-3.0, 3.0), (0.5, 3.0)),
            _ => ((-3.0, 3.0), (-3.0, 3.0)),
        };
        let bcast = [f64_input(&[3, 1], ra, View::Contiguous), f64_input(&[1, 4], rb, View::Contiguous)];
        ctx.grad_check(format!("{} broadcast", op.name()), &bcast, H, |t| t[0].binary(op, &t[1]));
        let views = [f64_input(&[2, 3], ra, View::Transposed), f64_input(&[2, 3], rb, View::Strided)];
        ctx.grad_check(format!("{} views", op.name()), &views, H, |t| t[0].binary(op, &t[1]));
        let x = [f64_input(&[5], if op == BinaryOp::Pow { (0.5, 2.0) } else { (-3.0, 3.0) }, View::Offset)];
        ctx.grad_check(format!("{}_scalar", op.name()), &x, H, |t| t[0].binary_scalar(op, 0.7));
    }
    let x = || [f64_input(&[3, 4], (-2.0, 2.0), View::Strided)];
    ctx.grad_check("clamp".into(), &x(), H, |t| t[0].clamp(-1.0, 1.0));
    ctx.grad_check("sum dim".into(), &x(), H, |t| t[0].sum(1, false));
    ctx.grad_check("sum all".into(), &x(), H, |t| t[0].sum_all());
    ctx.grad_check("max dim".into(), &x(), H, |t| t[0].max(0, false));
    ctx.grad_check("min dims".into(), &x(), H, |t| t[0].min([0, 1], true));
    ctx.grad_check("mean".into(), &x(), H, |t| t[0].mean(-1, true));
    ctx.grad_check("var".into(), &x(), H, |t| t[0].var(0, false));
    ctx.grad_check("logsumexp".into(), &x(), H, |t| t[0].logsumexp(1, false));
    ctx.grad_check("softmax".into(), &x(), H, |t| t[0].softmax(1));
    ctx.grad_check("log_softmax".into(), &x(), H, |t| t[0].log_softmax(0));
    ctx.grad_check("cross_entropy_rows".into(), &x(), H, |t| {
        t[0].cross_entropy_rows(&Tensor::from_vec(vec![2i64, 0, 3], [3], t[0].device())?)
    });
    let mm = |sa: &[usize], va, sb: &[usize], vb| [f64_input(sa, (-1.0, 1.0), va), f64_input(sb, (-1.0, 1.0), vb)];
    ctx.grad_check("matmul".into(), &mm(&[3, 4], View::Contiguous, &[4, 2], View::Contiguous), H, |t| {
        t[0].matmul(&t[1])
    });
    ctx.grad_check("matmul transposed".into(), &mm(&[3, 4], View::Transposed, &[4, 2], View::Strided), H, |t| {
        t[0].matmul(&t[1])
    });
    ctx.grad_check(
        "matmul batched broadcast".into(),
        &mm(&[2, 1, 3, 4], View::Contiguous, &[3, 4, 2], View::Contiguous),
        H,
        |t| t[0].matmul(&t[1]),
    );
    ctx.grad_check("matmul vector".into(), &mm(&[4], View::Contiguous, &[4, 3], View::Contiguous), H, |t| {
        t[0].matmul(&t[1])
    });
    // Convolution and pooling, through the backend's im2col/col2im and pooling argmax if it has them.
    let win = kiln_tensor::Window2d { kernel: (3, 2), stride: (2, 1), padding: (1, 1), dilation: (1, 2) };
    let conv =
        [f64_input(&[2, 2, 5, 6], (-1.0, 1.0), View::Contiguous), f64_input(&[3, 2, 3, 2], (-1.0, 1.0), View::Strided)];
    ctx.grad_check("conv2d strided padded dilated".into(), &conv, H, move |t| t[0].conv2d(&t[1], None, win, 1));
    let conv_groups = [
        f64_input(&[1, 4, 5, 5], (-1.0, 1.0), View::Transposed),
        f64_input(&[2, 2, 3, 3], (-1.0, 1.0), View::Contiguous),
    ];
    ctx.grad_check("conv2d groups 2".into(), &conv_groups, H, |t| {
        t[0].conv2d(&t[1], None, kiln_tensor::Window2d::square(3), 2)
    });
    let pool = kiln_tensor::Window2d { kernel: (3, 3), stride: (2, 2), padding: (1, 1), dilation: (1, 1) };
    ctx.grad_check("max_pool2d".into(), &[f64_input(&[2, 3, 6, 5], (-1.0, 1.0), View::Contiguous)], H, move |t| {
        t[0].max_pool2d(pool)
    });
    let wc = [
        Input::values(&[2, 3], DType::U8, vec![1.0, 0.0, 1.0, 0.0, 0.0, 1.0]),
        f64_input(&[2, 3], (-1.0, 1.0), View::Transposed),
        f64_input(&[3], (-1.0, 1.0), View::Contiguous),
    ];
    ctx.grad_check("where_cond".into(), &wc, H, |t| t[0].where_cond(&t[1], &t[2]));
    let idx = Input::values(&[3, 2], DType::I64, vec![0.0, 3.0, 2.0, 2.0, 1.0, 0.0]);
    ctx.grad_check("gather".into(), &[x()[0].clone(), idx.clone()], H, |t| t[0].gather(1, &t[1]));
    let ids = Input::values(&[4], DType::I64, vec![2.0, 0.0, 2.0, 1.0]);
    ctx.grad_check("index_select".into(), &[x()[0].clone(), ids], H, |t| t[0].index_select(0, &t[1]));
    let src = f64_input(&[3, 2], (-1.0, 1.0), View::Transposed);
    ctx.grad_check("scatter_add".into(), &[x()[0].clone(), idx, src], H, |t| t[0].scatter_add(1, &t[1], &t[2]));
    ctx.grad_check("cast f64 -> f32 -> f64".into(), &x(), 1e-2, |t| {
        t[0].mul_scalar(3.0)?.to_dtype(DType::F32)?.to_dtype(DType::F64)
    });
    ctx.grad_check("reshape".into(), &x(), H, |t| t[0].reshape([2, 6])?.sqr());
    ctx.grad_check("permute".into(), &[f64_input(&[2, 3, 2], (-1.0, 1.0), View::Strided)], H, |t| {
        t[0].permute(&[2, 0, 1])?.exp()
    });
    ctx.grad_check("slice step".into(), &x(), H, |t| t[0].slice(1, 1, 4, 2)?.sqr());
    ctx.grad_check("broadcast_to".into(), &[f64_input(&[3, 1], (-1.0, 1.0), View::Contiguous)], H, |t| {
        t[0].broadcast_to([2, 3, 4])?.sqr()
    });
    let two = || [f64_input(&[2, 3], (-1.0, 1.0), View::Transposed), f64_input(&[2, 3], (-1.0, 1.0), View::Offset)];
    ctx.grad_check("cat".into(), &two(), H, |t| Tensor::cat(&[&t[0], &t[1]], 1)?.sqr());
    ctx.grad_check("stack".into(), &two(), H, |t| Tensor::stack(&[&t[0], &t[1]], 0)?.sqr());
    ctx.grad_check("split".into(), &x(), H, |t| {
        let p = t[0].split(3, 1)?;
        p[0].sum(1, true)?.mul(&p[1])
    });
    ctx.grad_check("chunk".into(), &x(), H, |t| {
        let p = t[0].chunk(2, 1)?;
        p[0].mul(&p[1])
    });
    ctx.grad_check("squeeze/unsqueeze/flatten".into(), &x(), H, |t| {
        t[0].unsqueeze(0)?.flatten(0, 1)?.squeeze(0)?.sqr()
    });
    ctx.grad_check("contiguous".into(), &x(), H, |t| t[0].t()?.contiguous()?.sqr());
    ctx.grad_check("reused input (diamond graph)".into(), &x(), H, |t| t[0].exp()?.mul(&t[0].sin()?)?.add(&t[0]));
}
