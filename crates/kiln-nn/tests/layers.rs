//! Every layer's forward pass and parameter gradients against the reference backend, and its
//! input gradient against finite differences, through the conformance machinery.

use kiln_conformance::{Ctx, Input, View};
use kiln_nn::*;
use kiln_tensor::{DType, Device, Result, Tensor, Window2d};

type Build = fn(&Device) -> Result<Box<dyn Module>>;

/// The layer's output and every parameter gradient of `sum(output * w)`, flattened into one
/// tensor so one comparison checks them all.
fn forward_and_grads(layer: &dyn Module, x: &Tensor) -> Result<Tensor> {
    let y = layer.forward(x)?;
    let w = Tensor::arange(0.0, y.elem_count() as f64, y.dtype(), y.device())?
        .mul_scalar(0.01)?
        .sin()?
        .reshape(y.shape().clone())?;
    let grads = y.mul(&w)?.sum_all()?.backward()?;
    let mut parts = vec![y.flatten_all()?];
    for (_, p) in layer.parameters() {
        if let Some(g) = grads.get(&p) {
            parts.push(g.flatten_all()?);
        }
    }
    Tensor::cat(&parts.iter().collect::<Vec<_>>(), 0)
}

fn layers() -> Vec<(&'static str, Vec<usize>, Build)> {
    vec![
        ("Linear", vec![5, 7], |d| Ok(Box::new(LinearConfig::new(7, 4).init(d)?))),
        ("Linear no bias, 3-D input", vec![2, 3, 7], |d| Ok(Box::new(LinearConfig::new(7, 4).no_bias().init(d)?))),
        ("Conv2d", vec![2, 3, 7, 6], |d| Ok(Box::new(Conv2dConfig::new(3, 4, 3).init(d)?))),
        ("Conv2d stride 2 padding 1", vec![2, 3, 7, 6], |d| {
            Ok(Box::new(Conv2dConfig::new(3, 2, 3).stride(2).padding(1).init(d)?))
        }),
        ("Conv2d dilation 2", vec![1, 2, 8, 8], |d| Ok(Box::new(Conv2dConfig::new(2, 3, 3).dilation(2).init(d)?))),
        ("Conv2d groups 2", vec![2, 4, 5, 5], |d| {
            Ok(Box::new(Conv2dConfig::new(4, 6, 3).groups(2).padding(1).init(d)?))
        }),
        ("MaxPool2d", vec![2, 3, 6, 6], |_| Ok(Box::new(MaxPool2d::new(2)))),
        ("MaxPool2d 3 stride 2 padding 1", vec![1, 2, 7, 7], |_| Ok(Box::new(MaxPool2d::new(3).stride(2).padding(1)))),
        ("AvgPool2d", vec![2, 3, 6, 6], |_| Ok(Box::new(AvgPool2d::new(2)))),
        ("AdaptiveAvgPool2d", vec![2, 3, 7, 5], |_| Ok(Box::new(AdaptiveAvgPool2d((3, 2))))),
        ("BatchNorm1d train", vec![6, 4], |d| Ok(Box::new(BatchNorm::new_1d(4, d)?))),
        ("BatchNorm2d train", vec![3, 4, 3, 3], |d| Ok(Box::new(BatchNorm::new_2d(4, d)?))),
        ("BatchNorm2d eval", vec![3, 4, 3, 3], |d| {
            let bn = BatchNorm::new_2d(4, d)?;
            bn.running_mean.set(&Tensor::from_vec(vec![0.1f32, -0.2, 0.3, 0.0], [4], d)?);
            bn.running_var.set(&Tensor::from_vec(vec![1.5f32, 0.5, 2.0, 1.0], [4], d)?);
            bn.eval();
            Ok(Box::new(bn))
        }),
        ("LayerNorm", vec![3, 2, 5], |d| Ok(Box::new(LayerNorm::new(&[2, 5], d)?))),
        ("Dropout train", vec![4, 6], |_| Ok(Box::new(Dropout::new(0.3)?))),
        ("Flatten", vec![2, 3, 4], |_| Ok(Box::new(Flatten::default()))),
        ("ReLU", vec![3, 4], |_| Ok(Box::new(Activation::ReLU))),
        ("GELU", vec![3, 4], |_| Ok(Box::new(Activation::GELU))),
        ("GELU tanh", vec![3, 4], |_| Ok(Box::new(Activation::GELUTanh))),
        ("Sigmoid", vec![3, 4], |_| Ok(Box::new(Activation::Sigmoid))),
        ("Tanh", vec![3, 4], |_| Ok(Box::new(Activation::Tanh))),
        ("SiLU", vec![3, 4], |_| Ok(Box::new(Activation::SiLU))),
        ("Softmax", vec![3, 4], |_| Ok(Box::new(Activation::Softmax(-1)))),
        ("LogSoftmax", vec![3, 4], |_| Ok(Box::new(Activation::LogSoftmax(0)))),
        ("Sequential MLP", vec![4, 6], |d| {
            Ok(Box::new(
                Sequential::new()
                    .add(LinearConfig::new(6, 8).init(d)?)
                    .add(Activation::ReLU)
                    .add(Dropout::new(0.25)?)
                    .add(LinearConfig::new(8, 3).init(d)?),
            ))
        }),
    ]
}

fn build(b: Build, d: &Device) -> Result<Box<dyn Module>> {
    manual_seed(7); // the same weights and dropout masks on every device
    b(d)
}

#[test]
fn layers_match_the_reference_backend_and_finite_differences() {
    let seed = kiln_conformance::seed();
    let mut ctx = Ctx::new(kiln_cpu::cpu(), seed);
    for (name, shape, make) in layers() {
        let x = Input::new(&shape, DType::F32, (-2.0, 2.0), View::Contiguous);
        ctx.check(format!("{name} forward + parameter gradients"), &[x], None, |t| {
            forward_and_grads(&*build(make, t[0].device())?, &t[0])
        });
        let x64 = Input::new(&shape, DType::F64, (-2.0, 2.0), View::Contiguous);
        ctx.grad_check(format!("{name} input gradient"), &[x64], 1e-6, |t| {
            let layer = build(make, t[0].device())?;
            layer.to_dtype(DType::F64)?;
            layer.forward(&t[0])
        });
    }
    // Embedding takes integer ids, so it is checked against the oracle only (its weight
    // gradient is part of the comparison).
    let ids = Input::values(&[2, 3], DType::I64, vec![4.0, 0.0, 2.0, 2.0, 9.0, 1.0]);
    ctx.check("Embedding forward + weight gradient".into(), &[ids], None, |t| {
        manual_seed(7);
        forward_and_grads(&Embedding::new(10, 4, t[0].device())?, &t[0])
    });
    println!("{} layer cases, {} gradient checks (seed {seed})", ctx.report.passed, ctx.report.grad_checks);
    assert!(ctx.report.failures.is_empty(), "replay with KILN_SEED={seed}:\n{}", ctx.report.failures.join("\n"));
}

#[test]
fn conv2d_weight_and_bias_gradients_match_finite_differences() {
    let mut ctx = Ctx::new(kiln_cpu::cpu(), kiln_conformance::seed());
    let x = Input::new(&[2, 4, 6, 5], DType::F64, (-1.0, 1.0), View::Contiguous);
    let w = Input::new(&[6, 2, 3, 2], DType::F64, (-1.0, 1.0), View::Contiguous);
    let b = Input::new(&[6], DType::F64, (-1.0, 1.0), View::Contiguous);
    let win = Window2d { kernel: (3, 2), stride: (2, 1), padding: (1, 0), dilation: (1, 2) };
    ctx.grad_check("conv2d groups 2".into(), &[x, w, b], 1e-6, |t| t[0].conv2d(&t[1], Some(&t[2]), win, 2));
    assert!(ctx.report.failures.is_empty(), "{}", ctx.report.failures.join("\n"));
    assert_eq!(ctx.report.grad_checks, 1);
}

#[test]
fn default_init_follows_pytorch() -> Result<()> {
    let dev = kiln_cpu::cpu();
    manual_seed(1);
    let l = LinearConfig::new(400, 300).init(&dev)?;
    let w = l.weight.as_tensor().to_vec::<f32>()?;
    let bound = 1.0 / 400f32.sqrt(); // kaiming_uniform(a = sqrt 5) on fan_in 400
    assert!(w.iter().all(|v| v.abs() <= bound));
    let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    assert!((var - bound * bound / 3.0).abs() < 0.05 * bound * bound / 3.0, "variance {var}");
    let b = l.bias.as_ref().map(|b| b.as_tensor().to_vec::<f32>()).transpose()?.unwrap_or_default();
    assert!(b.iter().all(|v| v.abs() <= bound) && b.iter().any(|v| v.abs() > bound / 2.0));
    manual_seed(1);
    let again = LinearConfig::new(400, 300).init(&dev)?;
    assert_eq!(again.weight.as_tensor().to_vec::<f32>()?, w, "same seed, same weights");
    Ok(())
}

#[test]
fn state_dict_names_and_summary() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let cnn = Sequential::new()
        .add(Conv2dConfig::new(1, 32, 3).init(&dev)?)
        .add(Activation::ReLU)
        .add(Conv2dConfig::new(32, 64, 3).init(&dev)?)
        .add(Activation::ReLU)
        .add(MaxPool2d::new(2))
        .add(Dropout::new(0.25)?)
        .add(Flatten::default())
        .add(LinearConfig::new(9216, 128).init(&dev)?)
        .add(Activation::ReLU)
        .add(Dropout::new(0.5)?)
        .add(LinearConfig::new(128, 10).init(&dev)?);
    let names: Vec<String> = cnn.parameters().into_iter().map(|(n, v)| format!("{n} {}", v.shape())).collect();
    assert_eq!(
        names,
        [
            "0.weight [32, 1, 3, 3]",
            "0.bias [32]",
            "2.weight [64, 32, 3, 3]",
            "2.bias [64]",
            "7.weight [128, 9216]",
            "7.bias [128]",
            "10.weight [10, 128]",
            "10.bias [10]"
        ]
    );
    assert_eq!(cnn.num_parameters(), 1_199_882); // PyTorch's MNIST example network
    cnn.eval();
    let x = Tensor::zeros([1, 1, 28, 28], DType::F32, &dev)?;
    insta::assert_snapshot!(summary(&cnn, &x)?);
    Ok(())
}
