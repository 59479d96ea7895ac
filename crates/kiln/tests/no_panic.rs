//! A randomized test: random ops on random shapes, dtypes and views must return `Ok` or
//! `Err`, never panic.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln::prelude::*;
use kiln::random::philox4x32;

struct Rng(u64, u32);
impl Rng {
    fn next(&mut self) -> u32 {
        self.1 += 1;
        philox4x32([self.1, 0, 0, 0], [self.0 as u32, (self.0 >> 32) as u32])[0]
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() as usize) % n.max(1)
    }
    fn dim(&mut self) -> isize {
        self.below(7) as isize - 3
    }
}

fn random_tensor(rng: &mut Rng, dev: &Device) -> kiln::Result<Tensor> {
    let rank = rng.below(4);
    let shape: Vec<usize> = (0..rank).map(|_| rng.below(4)).collect();
    let dtype = DType::ALL[rng.below(7)];
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(|_| rng.below(9) as f64 - 4.0).collect();
    let t = Tensor::from_host(kiln::HostData::from_f64_slice(dtype, &values), shape, dev)?;
    Ok(match rng.below(3) {
        0 if t.rank() >= 2 => t.t()?,
        1 if t.rank() >= 1 => t.unsqueeze(0)?,
        _ => t,
    })
}

/// Mostly small sizes, sometimes ones that overflow any arithmetic done with them.
fn size(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => usize::MAX,
        1 => usize::MAX / 2 + 1,
        2 => 1 << 40,
        _ => rng.below(5),
    }
}

fn apply(rng: &mut Rng, a: &Tensor, b: &Tensor) -> kiln::Result<Tensor> {
    let d = rng.dim();
    let k = size(rng);
    Ok(match rng.below(36) {
        0 => a.add(b)?,
        1 => a.div(b)?,
        2 => a.pow(b)?,
        3 => a.matmul(b)?,
        4 => a.exp()?,
        5 => a.gelu()?,
        6 => a.sum(d, rng.below(2) == 0)?,
        7 => a.max(d, false)?,
        8 => a.argmax(d, true)?,
        9 => a.softmax(d)?,
        10 => a.log_softmax(d)?,
        11 => a.var(d, false)?,
        12 => a.reshape(vec![k, size(rng)])?,
        13 => a.reshape_infer(&[-1, k as isize])?,
        14 => a.permute(&[1, 0])?,
        15 => a.transpose(d, rng.dim())?,
        16 => a.narrow(d, k, size(rng))?,
        17 => a.slice(d, size(rng), k, size(rng))?,
        18 => a.broadcast_to(b.shape().clone())?,
        19 => a.squeeze(d)?.unsqueeze(d)?,
        20 => a.gather(d, b)?,
        21 => a.index_select(d, b)?,
        22 => a.scatter_add(d, b, a)?,
        23 => a.one_hot(k.min(1 << 20), DType::F32)?,
        24 => Tensor::cat(&[a, b], d)?,
        25 => Tensor::stack(&[a, b], d)?,
        26 => a.chunk(k, d)?.pop().map_or(Ok(a.clone()), Ok::<_, kiln::Error>)?,
        30 => Tensor::zeros(vec![k, size(rng)], DType::F32, a.device())?,
        31 => Tensor::eye(k, DType::U8, a.device())?,
        32 => Tensor::arange(0.0, k as f64, DType::F32, a.device())?,
        33 => a.broadcast_to(vec![k, size(rng), 1])?,
        34 => a.conv2d(
            b,
            None,
            kiln::Window2d { kernel: (k, 2), stride: (size(rng), 1), padding: (size(rng), 0), dilation: (1, k) },
            1,
        )?,
        35 => a.max_pool2d(kiln::Window2d::square(k))?,
        27 => b.where_cond(a, a)?,
        28 => a.to_dtype(DType::ALL[k % 7])?.clamp(-1.0, k as f64)?,
        _ => a.flatten(d, rng.dim())?,
    })
}

#[test]
fn random_ops_never_panic() {
    let dev = kiln::device("cpu").unwrap();
    let seed = kiln_conformance::seed();
    let mut rng = Rng(seed, 0);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..20_000 {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> kiln::Result<()> {
            let a = random_tensor(&mut rng, &dev)?;
            let b = random_tensor(&mut rng, &dev)?;
            // Half of the time the first operand is trainable and the result is backpropagated.
            let var = (rng.below(2) == 0).then(|| Var::new(a.clone()));
            let a = var.as_ref().map_or(a, Var::as_tensor);
            let out = apply(&mut rng, &a, &b)?;
            let _ = format!("{out}");
            // (Backpropagating through a 2^40-element broadcast is legal, just slow.)
            if var.is_some() && out.dtype().is_float() && out.elem_count() < 1 << 16 {
                out.sum_all()?.backward()?;
            }
            Ok(())
        }));
        match result {
            Ok(Ok(())) => ok += 1,
            Ok(Err(_)) => err += 1,
            Err(_) => panic!("an op panicked (replay with KILN_SEED={seed})"),
        }
    }
    println!("{ok} calls returned Ok, {err} returned Err, none panicked (seed {seed})");
    assert!(ok > 100 && err > 100, "the generator should exercise both paths: {ok} ok, {err} err");
}
