//! Learning-rate schedules with PyTorch's formulas, as closed forms of the step count, and a
//! [`Scheduler`] that applies one to an optimizer.

use crate::optim::Optimizer;
use std::f64::consts::PI;

/// A learning rate as a function of the step (epoch or batch, as the caller counts).
pub trait LrSchedule {
    /// The learning rate at step `t` (0 is the start).
    fn lr_at(&self, t: usize) -> f64;
}

/// `base * gamma^(t / step_size)` (`torch.optim.lr_scheduler.StepLR`).
#[derive(Clone, Copy, Debug)]
pub struct StepLr {
    /// Initial learning rate.
    pub base: f64,
    /// Steps between decays.
    pub step_size: usize,
    /// Decay factor.
    pub gamma: f64,
}
impl LrSchedule for StepLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.base * self.gamma.powi((t / self.step_size.max(1)) as i32)
    }
}

/// `base * gamma^(milestones passed)` (`MultiStepLR`).
#[derive(Clone, Debug)]
pub struct MultiStepLr {
    /// Initial learning rate.
    pub base: f64,
    /// Steps at which to decay.
    pub milestones: Vec<usize>,
    /// Decay factor.
    pub gamma: f64,
}
impl LrSchedule for MultiStepLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.base * self.gamma.powi(self.milestones.iter().filter(|&&m| m <= t).count() as i32)
    }
}

/// `base * gamma^t` (`ExponentialLR`).
#[derive(Clone, Copy, Debug)]
pub struct ExponentialLr {
    /// Initial learning rate.
    pub base: f64,
    /// Decay per step.
    pub gamma: f64,
}
impl LrSchedule for ExponentialLr {
    fn lr_at(&self, t: usize) -> f64 {
        self.base * self.gamma.powi(t as i32)
    }
}

/// Cosine from `base` down to `eta_min` over `t_max` steps (`CosineAnnealingLR`, closed form).
#[derive(Clone, Copy, Debug)]
pub struct CosineAnnealingLr {
    /// Initial learning rate.
    pub base: f64,
    /// Half-period in steps.
    pub t_max: usize,
    /// Minimum learning rate.
    pub eta_min: f64,
}
impl LrSchedule for CosineAnnealingLr {
    fn lr_at(&self, t: usize) -> f64 {
        let x = t as f64 / self.t_max.max(1) as f64;
        self.eta_min + (self.base - self.eta_min) * (1.0 + (PI * x).cos()) / 2.0
    }
}

/// Linear warm-up from `base * start_factor` to `base` over `warmup` steps, then constant
/// (`LinearLR` with `end_factor = 1`).
#[derive(Clone, Copy, Debug)]
pub struct LinearWarmup {
    /// Target learning rate.
    pub base: f64,
    /// Fraction of `base` at step 0.
    pub start_factor: f64,
    /// Warm-up length in steps.
    pub warmup: usize,
}
impl LrSchedule for LinearWarmup {
    fn lr_at(&self, t: usize) -> f64 {
        let frac = (t.min(self.warmup) as f64) / self.warmup.max(1) as f64;
        self.base * (self.start_factor + (1.0 - self.start_factor) * frac)
    }
}

/// The 1cycle policy (`OneCycleLR`, cosine annealing, two phases): from `max_lr / div_factor`
/// up to `max_lr` over `pct_start` of the steps, then down to
/// `max_lr / div_factor / final_div_factor` at step `total_steps - 1`.
#[derive(Clone, Copy, Debug)]
pub struct OneCycleLr {
    /// Peak learning rate.
    pub max_lr: f64,
    /// Total steps of training.
    pub total_steps: usize,
    /// Fraction of steps spent increasing (default 0.3).
    pub pct_start: f64,
    /// `initial_lr = max_lr / div_factor` (default 25).
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor` (default 1e4).
    pub final_div_factor: f64,
}
impl OneCycleLr {
    /// PyTorch's defaults for `max_lr` and `total_steps`.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        OneCycleLr { max_lr, total_steps, pct_start: 0.3, div_factor: 25.0, final_div_factor: 1e4 }
    }
}
impl LrSchedule for OneCycleLr {
    fn lr_at(&self, t: usize) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min = initial / self.final_div_factor;
        let up_end = self.pct_start * self.total_steps as f64 - 1.0;
        let down_end = self.total_steps as f64 - 1.0;
        let cos = |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0);
        let t = t as f64;
        if t <= up_end {
            cos(initial, self.max_lr, if up_end > 0.0 { t / up_end } else { 1.0 })
        } else {
            let span = (down_end - up_end).max(1e-12);
            cos(self.max_lr, min, ((t - up_end) / span).min(1.0))
        }
    }
}

/// Counts steps and sets an optimizer's learning rate from a schedule.
pub struct Scheduler<S: LrSchedule> {
    /// The schedule.
    pub schedule: S,
    /// Steps taken so far (part of a checkpoint).
    pub step: usize,
}

impl<S: LrSchedule> Scheduler<S> {
    /// Starts at step 0 and sets the optimizer's learning rate to the schedule's first value.
    pub fn new(schedule: S, opt: &mut dyn Optimizer) -> Self {
        opt.set_lr(schedule.lr_at(0));
        Scheduler { schedule, step: 0 }
    }
    /// Advances one step and updates the optimizer's learning rate; returns it.
    pub fn step(&mut self, opt: &mut dyn Optimizer) -> f64 {
        self.step += 1;
        let lr = self.schedule.lr_at(self.step);
        opt.set_lr(lr);
        lr
    }
}
