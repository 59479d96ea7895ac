//! Steady-state allocations of a training step, counted by a wrapping global allocator.
//!
//! After warm-up, an MLP step (784-128-10, batch 32, Adam) must take no large buffer (64 KiB and
//! up) from the system: those come from the CPU backend's pool. Small allocations (tensor
//! handles, layouts, the autograd graph) are counted and printed, and held under a ceiling so a
//! regression shows.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests: a failed unwrap is a failed test, with its message.

// A global allocator is an `unsafe impl`; this one only counts and forwards to `System`.
#![allow(unsafe_code)]

use kiln::nn::optim::{Adam, AdamConfig, Optimizer};
use kiln::nn::{loss, Activation, LinearConfig, Module, Sequential};
use kiln::{DType, Tensor};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static SMALL: AtomicUsize = AtomicUsize::new(0);
static LARGE: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

fn count(size: usize) {
    if COUNTING.load(Relaxed) {
        if size >= 64 << 10 {
            LARGE.fetch_add(1, Relaxed);
        } else {
            SMALL.fetch_add(1, Relaxed);
        }
        BYTES.fetch_add(size, Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_steady_state_training_step_takes_no_large_buffer_from_the_system() {
    let dev = kiln::kiln_cpu::cpu();
    let model = Sequential::new()
        .add(LinearConfig::new(784, 128).init(&dev).unwrap())
        .add(Activation::ReLU)
        .add(LinearConfig::new(128, 10).init(&dev).unwrap());
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    let x = Tensor::randn(0.0, 1.0, [32, 784], DType::F32, 1, &dev).unwrap();
    let y = Tensor::from_vec((0..32i64).map(|i| i % 10).collect::<Vec<_>>(), [32], &dev).unwrap();
    let mut step = || {
        let l = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
    };
    for _ in 0..20 {
        step();
    }
    let steps = 50;
    COUNTING.store(true, Relaxed);
    for _ in 0..steps {
        step();
    }
    COUNTING.store(false, Relaxed);
    let (small, large, bytes) = (SMALL.load(Relaxed), LARGE.load(Relaxed), BYTES.load(Relaxed));
    println!(
        "per steady-state step: {} large allocations, {} small allocations, {} bytes",
        large as f64 / steps as f64,
        small as f64 / steps as f64,
        bytes / steps
    );
    assert_eq!(large, 0, "large buffers must come from the pool after warm-up");
    assert!(small / steps < 2_000, "{} small allocations per step: a regression", small / steps);
}
