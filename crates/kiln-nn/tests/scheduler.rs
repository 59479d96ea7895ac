//! Learning-rate schedules against values worked out from PyTorch's formulas.

use kiln_nn::optim::{Optimizer, Sgd, SgdConfig};
use kiln_nn::scheduler::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn schedules() {
    let step = StepLr { base: 1.0, step_size: 2, gamma: 0.7 };
    let lrs: Vec<f64> = (0..5).map(|t| step.lr_at(t)).collect();
    assert!(lrs.iter().zip([1.0, 1.0, 0.7, 0.7, 0.49]).all(|(a, b)| close(*a, b)), "{lrs:?}");
    let multi = MultiStepLr { base: 0.1, milestones: vec![2, 4], gamma: 0.1 };
    assert!(close(multi.lr_at(1), 0.1) && close(multi.lr_at(2), 0.01) && close(multi.lr_at(5), 0.001));
    assert!(close(ExponentialLr { base: 2.0, gamma: 0.5 }.lr_at(3), 0.25));
    let cos = CosineAnnealingLr { base: 1.0, t_max: 10, eta_min: 0.1 };
    assert!(close(cos.lr_at(0), 1.0) && close(cos.lr_at(5), 0.55) && close(cos.lr_at(10), 0.1));
    let warm = LinearWarmup { base: 0.4, start_factor: 0.25, warmup: 3 };
    assert!(close(warm.lr_at(0), 0.1) && close(warm.lr_at(3), 0.4) && close(warm.lr_at(9), 0.4));
    let one = OneCycleLr::new(1.0, 100);
    assert!(close(one.lr_at(0), 0.04));
    assert!(close(one.lr_at(29), 1.0), "{}", one.lr_at(29));
    assert!(close(one.lr_at(99), 0.04 / 1e4), "{}", one.lr_at(99));
    assert!(one.lr_at(60) < 1.0 && one.lr_at(60) > one.lr_at(80));

    let mut opt = Sgd::new(vec![], SgdConfig::new(5.0));
    let mut sched = Scheduler::new(StepLr { base: 1.0, step_size: 1, gamma: 0.5 }, &mut opt);
    assert_eq!(opt.lr(), 1.0);
    sched.step(&mut opt);
    assert_eq!(opt.lr(), 0.5);
}
