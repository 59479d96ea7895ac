//! Steady-state allocations of a training step, counted by a wrapping global allocator.
//!
//! After warm-up, a training step must not call the system allocator at all: element buffers
//! come from the CPU backend's pool, tensor handles and storage cells from kiln-tensor's
//! per-thread free lists, dims and strides are inline, and autograd reuses its containers.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// Tests: a failed unwrap is a failed test, with its message.

// A global allocator is an `unsafe impl`; this one only counts and forwards to `System`.
#![allow(unsafe_code)]

use kiln::nn::optim::{Adadelta, AdadeltaConfig, Adam, AdamConfig, Optimizer};
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

/// Runs `step` `warmup` times, then counts the system allocations of `steps` more, per step:
/// `(small, large, bytes)`, large being 64 KiB and up.
fn per_step(warmup: usize, steps: usize, mut step: impl FnMut()) -> (f64, f64, usize) {
    for _ in 0..warmup {
        step();
    }
    let before = (SMALL.load(Relaxed), LARGE.load(Relaxed), BYTES.load(Relaxed));
    COUNTING.store(true, Relaxed);
    for _ in 0..steps {
        step();
    }
    COUNTING.store(false, Relaxed);
    let (small, large, bytes) = (SMALL.load(Relaxed), LARGE.load(Relaxed), BYTES.load(Relaxed));
    let n = steps as f64;
    ((small - before.0) as f64 / n, (large - before.1) as f64 / n, (bytes - before.2) / steps)
}

// Both steps run in one test: the counters are global, and tests run on parallel threads.
#[test]
fn a_steady_state_training_step_makes_no_system_allocation() {
    let dev = kiln::kiln_cpu::cpu();

    let model = Sequential::new()
        .add(LinearConfig::new(784, 128).init(&dev).unwrap())
        .add(Activation::ReLU)
        .add(LinearConfig::new(128, 10).init(&dev).unwrap());
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    // Batch 32, and batch 1024: its bias gradients sum columns of 1024 rows, past the 64
    // offsets a short reduction keeps inline.
    let mut mlp_step = |batch: usize, (warmup, steps): (usize, usize)| {
        let x = Tensor::randn(0.0, 1.0, [batch, 784], DType::F32, batch as u64, &dev).unwrap();
        let y = Tensor::from_vec((0..batch as i64).map(|i| i % 10).collect::<Vec<_>>(), [batch], &dev).unwrap();
        let counts = per_step(warmup, steps, || {
            let l = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
            opt.step(&l.backward().unwrap()).unwrap();
        });
        println!(
            "MLP step (784-128-10, b{batch}, Adam): {} large, {} small allocations, {} bytes",
            counts.1, counts.0, counts.2
        );
        counts
    };
    let (mlp, wide) = (mlp_step(32, (20, 50)), mlp_step(1024, (3, 3)));
    // Inference on a batch of 1000 mostly-zero rows, as MNIST's pixels are: the first layer's
    // product skips the zeros, with a copy of the weight per thread.
    let images = Tensor::randn(0.0, 1.0, [1000, 784], DType::F32, 5, &dev).unwrap().affine(1.0, -0.9).unwrap();
    let images = images.relu().unwrap();
    let infer = per_step(3, 5, || drop(kiln::no_grad(|| model.forward(&images)).unwrap()));
    println!(
        "MLP inference on mostly-zero rows (b1000): {} large, {} small allocations, {} bytes",
        infer.1, infer.0, infer.2
    );

    // Batch 64, as in the benchmarks: more than 64 images, planes and pieces per op, past what
    // a split keeps inline.
    let model = kiln::nn::zoo::mnist_cnn(&dev).unwrap();
    let mut opt = Adadelta::new(model.parameters(), AdadeltaConfig::default());
    let x = Tensor::randn(0.0, 1.0, [64, 1, 28, 28], DType::F32, 2, &dev).unwrap();
    let y = Tensor::from_vec((0..64i64).map(|i| i % 10).collect::<Vec<_>>(), [64], &dev).unwrap();
    let cnn = per_step(3, 3, || {
        let l = loss::cross_entropy(&model.forward(&x).unwrap(), &y).unwrap();
        opt.step(&l.backward().unwrap()).unwrap();
    });
    println!("CNN step (MNIST CNN, b64, Adadelta): {} large, {} small allocations, {} bytes", cnn.1, cnn.0, cnn.2);

    // Element-wise ops, row reductions and softmax over 4M elements: 128 pieces of work each.
    let big = Tensor::randn(0.0, 1.0, [4096, 1024], DType::F32, 6, &dev).unwrap();
    // And sums and maxima over several dims of a feature map (10,816 elements per channel).
    let maps = Tensor::randn(0.0, 1.0, [16, 32, 26, 26], DType::F32, 7, &dev).unwrap();
    let ops = per_step(2, 3, || {
        let s = big.add(&big).unwrap().softmax(1).unwrap();
        drop(s.sum(1isize, false).unwrap());
        drop(maps.sum([0, 2, 3], false).unwrap());
        drop(maps.max([0, 2, 3], false).unwrap());
    });
    println!(
        "add, softmax and row sums over 4096x1024, channel sums and maxima: {} large, {} small allocations, {} bytes",
        ops.1, ops.0, ops.2
    );

    // A convolution's gradients for its input as well, through `sum()`: the broadcast gradient
    // is packed into a temporary that no tensor holds, which once went back to the system and
    // came back as a fresh `mmap` every step.
    let (xv, wv) = (
        kiln::Var::new(Tensor::randn(0.0, 1.0, [8, 1, 28, 28], DType::F32, 3, &dev).unwrap()),
        kiln::Var::new(Tensor::randn(0.0, 0.1, [32, 1, 3, 3], DType::F32, 4, &dev).unwrap()),
    );
    let conv = per_step(3, 5, || {
        let y = xv.as_tensor().conv2d(&wv.as_tensor(), None, kiln::Window2d::square(3), 1).unwrap();
        drop(y.sum((), false).unwrap().backward().unwrap());
    });
    println!(
        "conv2d forward and backward (b8, 1->32): {} large, {} small allocations, {} bytes",
        conv.1, conv.0, conv.2
    );

    assert_eq!((mlp.0, mlp.1), (0.0, 0.0), "the MLP step called the system allocator");
    assert_eq!((wide.0, wide.1), (0.0, 0.0), "the MLP step at batch 1024 called the system allocator");
    assert_eq!((infer.0, infer.1), (0.0, 0.0), "MLP inference on mostly-zero rows called the system allocator");
    assert_eq!((cnn.0, cnn.1), (0.0, 0.0), "the CNN step called the system allocator");
    assert_eq!((ops.0, ops.1), (0.0, 0.0), "ops over 4M elements called the system allocator");
    assert_eq!(conv.1, 0.0, "conv2d's backward made a large system allocation");
}
