//! Bitwise determinism of CPU training across thread counts: the same seed gives the same final
//! weights, bit for bit, on 1 and on 2 threads (and on every run). The CPU backend's chunking,
//! reduction order, GEMM blocking and convolution weight-gradient sum are fixed independently of
//! the thread count; this test holds it to that over a few hundred steps.

use kiln::nn::optim::{Adadelta, AdadeltaConfig, Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, zoo, Module, Sequential};
use kiln::{DType, Device, Result, Tensor};

/// Every parameter's bits, in parameter order.
fn weights(model: &Sequential) -> Result<Vec<Vec<u32>>> {
    model
        .parameters()
        .iter()
        .map(|(_, p)| Ok(p.as_tensor().to_vec::<f32>()?.into_iter().map(f32::to_bits).collect()))
        .collect()
}

/// A batch whose label depends on the input, so that training has something to learn.
fn batch(n: usize, step: u64, dev: &Device) -> Result<(Tensor, Tensor)> {
    let x = Tensor::rand_uniform(0.0, 1.0, [n, 1, 28, 28], DType::F32, 100 + step, dev)?;
    let y = x.reshape([n, 784])?.narrow(1, 300, 10)?.argmax(-1, false)?;
    Ok((x, y))
}

/// The MNIST MLP after `steps` Adam steps of batch 32.
fn mlp(steps: u64) -> Result<Vec<Vec<u32>>> {
    let dev = kiln::device("cpu")?;
    kiln::nn::manual_seed(3);
    let model = zoo::mnist_mlp(&dev)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    for step in 0..steps {
        let (x, y) = batch(32, step, &dev)?;
        opt.step(&loss::cross_entropy(&model.forward(&x)?, &y)?.backward()?)?;
    }
    weights(&model)
}

/// The MNIST CNN (convolutions, max-pooling, dropout) after `steps` Adadelta steps of batch 16.
fn cnn(steps: u64) -> Result<Vec<Vec<u32>>> {
    let dev = kiln::device("cpu")?;
    kiln::nn::manual_seed(4);
    let model = zoo::mnist_cnn(&dev)?;
    let mut opt = Adadelta::new(model.parameters(), AdadeltaConfig::default());
    for step in 0..steps {
        let (x, y) = batch(16, step, &dev)?;
        opt.step(&loss::cross_entropy(&model.forward(&x)?, &y)?.backward()?)?;
    }
    weights(&model)
}

/// Runs `f` on a pool of `threads` rayon threads (the CPU backend's parallelism).
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| kiln::Error::Msg(format!("a pool of {threads} threads: {e}")))?;
    pool.install(f)
}

fn assert_same(what: &str, a: &[Vec<u32>], b: &[Vec<u32>]) {
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        let differ = p.iter().zip(q).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 0, "{what}: parameter {i} differs in {differ} of {} elements", p.len());
    }
    assert_eq!(a.len(), b.len());
}

#[test]
fn mlp_training_is_bitwise_identical_on_1_and_2_threads() -> Result<()> {
    let one = on_threads(1, || mlp(300))?;
    let two = on_threads(2, || mlp(300))?;
    assert_same("MLP, 300 steps, 1 vs 2 threads", &one, &two);
    assert_same("MLP, 300 steps, run to run", &two, &on_threads(2, || mlp(300))?);
    Ok(())
}

#[test]
fn cnn_training_is_bitwise_identical_on_1_and_2_threads() -> Result<()> {
    let one = on_threads(1, || cnn(12))?;
    let two = on_threads(2, || cnn(12))?;
    assert_same("CNN, 12 steps, 1 vs 2 threads", &one, &two);
    Ok(())
}
