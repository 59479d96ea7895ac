//! Each optimizer against an independent plain-Rust implementation of the algorithm as PyTorch
//! documents it (the pseudo-code in the `torch.optim` reference pages), over 100 steps on a
//! fixed quadratic and on a small linear-regression network, in f64.

use kiln_nn::optim::*;
use kiln_tensor::{Gradients, Result, Tensor, Var};

/// The reference algorithms, written from PyTorch's documentation, on flat f64 vectors.
#[derive(Clone, Copy, Debug)]
enum Alg {
    Sgd { lr: f64, momentum: f64, dampening: f64, wd: f64, nesterov: bool },
    Adam { lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, decoupled: bool },
    Adadelta { lr: f64, rho: f64, eps: f64, wd: f64 },
    RmsProp { lr: f64, alpha: f64, eps: f64, wd: f64, momentum: f64, centered: bool },
}

struct RefState {
    t: i32,
    a: Vec<f64>,
    b: Vec<f64>,
    c: Vec<f64>,
}

impl Alg {
    fn step(&self, p: &mut [f64], g: &[f64], s: &mut RefState) {
        s.t += 1;
        let t = s.t;
        for i in 0..p.len() {
            match *self {
                Alg::Sgd { lr, momentum, dampening, wd, nesterov } => {
                    let mut gi = g[i] + wd * p[i];
                    if momentum != 0.0 {
                        s.a[i] = if t > 1 { momentum * s.a[i] + (1.0 - dampening) * gi } else { gi };
                        gi = if nesterov { gi + momentum * s.a[i] } else { s.a[i] };
                    }
                    p[i] -= lr * gi;
                }
                Alg::Adam { lr, b1, b2, eps, wd, decoupled } => {
                    let mut gi = g[i];
                    if decoupled {
                        p[i] -= lr * wd * p[i];
                    } else {
                        gi += wd * p[i];
                    }
                    s.a[i] = b1 * s.a[i] + (1.0 - b1) * gi;
                    s.b[i] = b2 * s.b[i] + (1.0 - b2) * gi * gi;
                    let m_hat = s.a[i] / (1.0 - b1.powi(t));
                    let v_hat = s.b[i] / (1.0 - b2.powi(t));
                    p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
                }
                Alg::Adadelta { lr, rho, eps, wd } => {
                    let gi = g[i] + wd * p[i];
                    s.a[i] = rho * s.a[i] + (1.0 - rho) * gi * gi;
                    let dx = (s.b[i] + eps).sqrt() / (s.a[i] + eps).sqrt() * gi;
                    s.b[i] = rho * s.b[i] + (1.0 - rho) * dx * dx;
                    p[i] -= lr * dx;
                }
                Alg::RmsProp { lr, alpha, eps, wd, momentum, centered } => {
                    let gi = g[i] + wd * p[i];
                    s.a[i] = alpha * s.a[i] + (1.0 - alpha) * gi * gi;
                    let mut v = s.a[i];
                    if centered {
                        s.c[i] = alpha * s.c[i] + (1.0 - alpha) * gi;
                        v -= s.c[i] * s.c[i];
                    }
                    if momentum > 0.0 {
                        s.b[i] = momentum * s.b[i] + gi / (v.sqrt() + eps);
                        p[i] -= lr * s.b[i];
                    } else {
                        p[i] -= lr * gi / (v.sqrt() + eps);
                    }
                }
            }
        }
    }

    fn kiln(&self, params: Vec<(String, Var)>) -> Box<dyn Optimizer> {
        match *self {
            Alg::Sgd { lr, momentum, dampening, wd, nesterov } => {
                Box::new(Sgd::new(params, SgdConfig { lr, momentum, dampening, weight_decay: wd, nesterov }))
            }
            Alg::Adam { lr, b1, b2, eps, wd, decoupled } => {
                let c = AdamConfig { lr, betas: (b1, b2), eps, weight_decay: wd };
                if decoupled {
                    Box::new(AdamW::new(params, AdamWConfig(c)))
                } else {
                    Box::new(Adam::new(params, c))
                }
            }
            Alg::Adadelta { lr, rho, eps, wd } => {
                Box::new(Adadelta::new(params, AdadeltaConfig { lr, rho, eps, weight_decay: wd }))
            }
            Alg::RmsProp { lr, alpha, eps, wd, momentum, centered } => {
                Box::new(RmsProp::new(params, RmsPropConfig { lr, alpha, eps, weight_decay: wd, momentum, centered }))
            }
        }
    }
}

fn algorithms() -> Vec<Alg> {
    vec![
        Alg::Sgd { lr: 0.05, momentum: 0.0, dampening: 0.0, wd: 0.0, nesterov: false },
        Alg::Sgd { lr: 0.05, momentum: 0.9, dampening: 0.1, wd: 0.01, nesterov: false },
        Alg::Sgd { lr: 0.05, momentum: 0.9, dampening: 0.0, wd: 0.0, nesterov: true },
        Alg::Adam { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.0, decoupled: false },
        Alg::Adam { lr: 1e-2, b1: 0.8, b2: 0.99, eps: 1e-6, wd: 0.05, decoupled: false },
        Alg::Adam { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.01, decoupled: true },
        Alg::Adadelta { lr: 1.0, rho: 0.9, eps: 1e-6, wd: 0.0 },
        Alg::Adadelta { lr: 0.5, rho: 0.95, eps: 1e-6, wd: 0.01 },
        Alg::RmsProp { lr: 0.01, alpha: 0.99, eps: 1e-8, wd: 0.0, momentum: 0.0, centered: false },
        Alg::RmsProp { lr: 0.005, alpha: 0.9, eps: 1e-8, wd: 0.01, momentum: 0.5, centered: true },
    ]
}

fn close(kiln: &[f64], reference: &[f64]) -> bool {
    kiln.iter().zip(reference).all(|(a, b)| (a - b).abs() <= 1e-6 * b.abs().max(1e-3))
}

/// f(p) = 0.5 sum(a p^2) - sum(b p), gradient a p - b.
#[test]
fn optimizers_follow_pytorch_rules_on_a_quadratic() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let a = [1.0, 3.0, 0.5, 2.0, 10.0];
    let b = [0.5, -1.0, 2.0, 0.0, 3.0];
    let p0 = [1.0, -2.0, 0.3, 4.0, -0.5];
    for alg in algorithms() {
        let var = Var::new(Tensor::from_vec(p0.to_vec(), [5], &dev)?);
        let mut opt = alg.kiln(vec![("p".into(), var.clone())]);
        let (at, bt) = (Tensor::from_vec(a.to_vec(), [5], &dev)?, Tensor::from_vec(b.to_vec(), [5], &dev)?);
        let mut p = p0.to_vec();
        let mut s = RefState { t: 0, a: vec![0.0; 5], b: vec![0.0; 5], c: vec![0.0; 5] };
        for step in 0..100 {
            let x = var.as_tensor();
            let loss = x.sqr()?.mul(&at)?.mul_scalar(0.5)?.sub(&x.mul(&bt)?)?.sum_all()?;
            opt.step(&loss.backward()?)?;
            let g: Vec<f64> = (0..5).map(|i| a[i] * p[i] - b[i]).collect();
            alg.step(&mut p, &g, &mut s);
            let got = var.as_tensor().to_vec::<f64>()?;
            assert!(close(&got, &p), "{alg:?} step {step}: kiln {got:?} vs reference {p:?}");
        }
    }
    Ok(())
}

/// A 3 -> 2 linear layer with MSE loss on a fixed batch; its gradient computed by hand.
#[test]
fn optimizers_follow_pytorch_rules_on_a_small_network() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let xs = [[0.5, -1.0, 2.0], [1.5, 0.2, -0.3], [-0.7, 0.9, 0.1], [0.0, -0.4, 1.2]];
    let ys = [[1.0, -1.0], [0.5, 2.0], [-1.5, 0.0], [0.3, 0.7]];
    let w0 = [0.1, -0.2, 0.3, 0.05, 0.4, -0.1];
    let c0 = [0.0, 0.1];
    let x = Tensor::from_vec(xs.concat(), [4, 3], &dev)?;
    let y = Tensor::from_vec(ys.concat(), [4, 2], &dev)?;
    for alg in algorithms() {
        let w = Var::new(Tensor::from_vec(w0.to_vec(), [2, 3], &dev)?);
        let c = Var::new(Tensor::from_vec(c0.to_vec(), [2], &dev)?);
        let mut opt = alg.kiln(vec![("w".into(), w.clone()), ("c".into(), c.clone())]);
        let mut p: Vec<f64> = w0.iter().chain(&c0).copied().collect();
        let mut s = RefState { t: 0, a: vec![0.0; 8], b: vec![0.0; 8], c: vec![0.0; 8] };
        for step in 0..100 {
            let pred = x.matmul(&w.as_tensor().t()?)?.add(&c.as_tensor())?;
            let grads: Gradients = pred.sub(&y)?.sqr()?.mean_all()?.backward()?;
            opt.step(&grads)?;
            // d mean((W x + c - y)^2) = 2 / 8 * err, summed over the batch.
            let mut g = vec![0.0; 8];
            for (xi, yi) in xs.iter().zip(&ys) {
                for o in 0..2 {
                    let err = (0..3).map(|k| p[o * 3 + k] * xi[k]).sum::<f64>() + p[6 + o] - yi[o];
                    for k in 0..3 {
                        g[o * 3 + k] += 2.0 / 8.0 * err * xi[k];
                    }
                    g[6 + o] += 2.0 / 8.0 * err;
                }
            }
            alg.step(&mut p, &g, &mut s);
            let got: Vec<f64> =
                w.as_tensor().to_vec::<f64>()?.into_iter().chain(c.as_tensor().to_vec::<f64>()?).collect();
            assert!(close(&got, &p), "{alg:?} step {step}: kiln {got:?} vs reference {p:?}");
        }
    }
    Ok(())
}

#[test]
fn optimizer_state_round_trips() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let run = |steps_before_save: usize, total: usize| -> Result<Vec<f64>> {
        let var = Var::new(Tensor::from_vec(vec![1.0f64, -2.0, 3.0], [3], &dev)?);
        let mut opt = Adam::new(vec![("p".into(), var.clone())], AdamConfig::lr(0.1));
        let loss = |v: &Var| v.as_tensor().sqr()?.sum_all();
        for _ in 0..steps_before_save {
            opt.step(&loss(&var)?.backward()?)?;
        }
        let dir = tempfile::tempdir().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
        let path = dir.path().join("opt.safetensors");
        kiln_nn::checkpoint::save_optimizer(&opt, &path)?;
        let mut fresh = Adam::new(vec![("p".into(), var.clone())], AdamConfig::lr(0.5));
        kiln_nn::checkpoint::load_optimizer(&mut fresh, &path, &dev)?;
        assert_eq!(fresh.lr(), 0.1);
        for _ in steps_before_save..total {
            fresh.step(&loss(&var)?.backward()?)?;
        }
        var.as_tensor().to_vec::<f64>()
    };
    // Saving after 7 of 20 steps and resuming in a fresh optimizer equals 20 uninterrupted steps.
    assert_eq!(run(7, 20)?, run(20, 20)?);
    Ok(())
}

#[test]
fn gradient_clipping() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let a = Var::new(Tensor::from_vec(vec![3.0f32, 0.0], [2], &dev)?);
    let b = Var::new(Tensor::from_vec(vec![4.0f32], [1], &dev)?);
    let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
    // loss = sum(a^2)/2 + b^2/2: gradients are a and b, global norm 5.
    let loss = a.as_tensor().sqr()?.sum_all()?.add(&b.as_tensor().sqr()?.sum_all()?)?.mul_scalar(0.5)?;
    let mut grads = loss.backward()?;
    let norm = clip_grad_norm(&mut grads, &params, 1.0)?;
    assert!((norm - 5.0).abs() < 1e-6);
    let ga = grads.get(&a).map(|g| g.to_vec::<f32>()).transpose()?.unwrap_or_default();
    assert!((ga[0] - 0.6).abs() < 1e-5, "{ga:?}");
    clip_grad_value(&mut grads, &params, 0.5)?;
    assert_eq!(grads.get(&a).map(|g| g.to_vec::<f32>()).transpose()?.unwrap_or_default()[0], 0.5);
    assert!(clip_grad_norm(&mut grads, &params, -1.0).is_err());
    Ok(())
}
