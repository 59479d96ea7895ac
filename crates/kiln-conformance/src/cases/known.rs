//! Known values: each element-wise op at a few points, against constants computed with
//! Python's `math` module. This is independent of `op.rs`, which the oracle and the CPU kernels
//! share: a wrong constant in a formula there would pass every comparison but fail here.

use crate::harness::{Ctx, Input};
use crate::Tolerance;
use kiln_tensor::{BinaryOp, DType, UnaryOp};

#[rustfmt::skip]
const UNARY: [(UnaryOp, [f64; 4], [f64; 4]); 17] = [
        (UnaryOp::Neg, [-2.5, -0.7, 0.3, 1.9], [2.5, 0.7, -0.3, -1.9]),
        (UnaryOp::Abs, [-2.5, -0.7, 0.3, 1.9], [2.5, 0.7, 0.3, 1.9]),
        (UnaryOp::Exp, [-2.5, -0.7, 0.3, 1.9], [0.0820849986238988, 0.4965853037914095, 1.3498588075760032, 6.6858944422792685]),
        (UnaryOp::Log, [2.5, 0.7, 0.3, 1.9], [0.9162907318741551, -0.35667494393873245, -1.2039728043259361, 0.6418538861723947]),
        (UnaryOp::Sqrt, [2.5, 0.7, 0.3, 1.9], [1.5811388300841898, 0.8366600265340756, 0.5477225575051661, 1.378404875209022]),
        (UnaryOp::Recip, [-2.5, -0.7, 0.3, 1.9], [-0.4, -1.4285714285714286, 3.3333333333333335, 0.5263157894736842]),
        (UnaryOp::Sin, [-2.5, -0.7, 0.3, 1.9], [-0.5984721441039565, -0.644217687237691, 0.29552020666133955, 0.9463000876874145]),
        (UnaryOp::Cos, [-2.5, -0.7, 0.3, 1.9], [-0.8011436155469337, 0.7648421872844885, 0.955336489125606, -0.32328956686350335]),
        (UnaryOp::Tanh, [-2.5, -0.7, 0.3, 1.9], [-0.9866142981514303, -0.6043677771171636, 0.2913126124515909, 0.9562374581277391]),
        (UnaryOp::Sigmoid, [-2.5, -0.7, 0.3, 1.9], [0.07585818002124355, 0.3318122278318339, 0.574442516811659, 0.8698915256370021]),
        (UnaryOp::Relu, [-2.5, -0.7, 0.3, 1.9], [0.0, 0.0, 0.3, 1.9]),
        (UnaryOp::Gelu, [-2.5, -0.7, 0.3, 1.9], [-0.015524163314440398, -0.1693745565561511, 0.18537342665668577, 1.8454385363495966]),
        (UnaryOp::GeluTanh, [-2.5, -0.7, 0.3, 1.9], [-0.015084266089998577, -0.16942986529488321, 0.18537092354275922, 1.8454512344553327]),
        (UnaryOp::Silu, [-2.5, -0.7, 0.3, 1.9], [-0.18964545005310887, -0.2322685594822837, 0.1723327550434977, 1.652793898710304]),
        (UnaryOp::Softplus, [-2.5, -0.7, 0.3, 1.9], [0.07888973429254963, 0.4031860488854579, 0.8543552444685272, 2.0393867582829603]),
        (UnaryOp::Sign, [-2.5, -0.7, 0.3, 1.9], [-1.0, -1.0, 1.0, 1.0]),
        (UnaryOp::Erf, [-2.5, -0.7, 0.3, 1.9], [-0.999593047982555, -0.6778011938374184, 0.3286267594591274, 0.9927904292352575]),
];

const LHS: [f64; 4] = [-2.5, -0.7, 0.3, 1.9];
const RHS: [f64; 4] = [1.5, -0.7, 2.0, -0.4];

#[rustfmt::skip]
const BINARY: [(BinaryOp, [f64; 4]); 7] = [
        (BinaryOp::Add, [-1.0, -1.4, 2.3, 1.5]),
        (BinaryOp::Sub, [-4.0, 0.0, -1.7, 2.3]),
        (BinaryOp::Mul, [-3.75, 0.48999999999999994, 0.6, -0.76]),
        (BinaryOp::Div, [-1.6666666666666667, 1.0, 0.15, -4.749999999999999]),
        (BinaryOp::Maximum, [1.5, -0.7, 2.0, 1.9]),
        (BinaryOp::Minimum, [-2.5, -0.7, 0.3, -0.4]),
        (BinaryOp::Pow, [3.952847075210474, 1.283604916843771, 0.09, 0.773568113154586]),
];

pub(crate) fn known_values(ctx: &mut Ctx) {
    for dtype in DType::FLOATS {
        let tol = Some(Tolerance::for_dtype(dtype));
        for (op, x, want) in UNARY {
            let name = format!("{} {dtype} known values", op.name());
            let inputs = [Input::values(&[4], DType::F64, x.to_vec())];
            ctx.check_against(name, &inputs, &want, tol, |t| t[0].to_dtype(dtype)?.unary(op)?.to_dtype(DType::F64));
        }
        for (op, want) in BINARY {
            let name = format!("{} {dtype} known values", op.name());
            let lhs = if op == BinaryOp::Pow { LHS.map(f64::abs) } else { LHS };
            let inputs = [Input::values(&[4], DType::F64, lhs.to_vec()), Input::values(&[4], DType::F64, RHS.to_vec())];
            ctx.check_against(name, &inputs, &want, tol, |t| {
                t[0].to_dtype(dtype)?.binary(op, &t[1].to_dtype(dtype)?)?.to_dtype(DType::F64)
            });
        }
    }
}
