//! Runtime instruction-set dispatch for plain-Rust loops.
//!
//! kiln is built for the baseline x86-64 target (SSE2), so a loop compiled normally uses 128-bit
//! vectors. [`vectorized`] runs a closure inside a function compiled with AVX-512 (or AVX2+FMA)
//! enabled; the closure is inlined there and LLVM vectorizes it for the wider registers. Rust
//! never contracts `a * b + c` into an FMA, and an explicit `mul_add` rounds once everywhere,
//! so results are the same bits on every path.

// Much of this module serves x86-64 only; elsewhere it stays compiled but unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
// Calling a `#[target_feature]` function is `unsafe`: sound after the CPU check in `isa`.
#![allow(unsafe_code)]

use crate::gemm::{isa, Isa};

/// Runs `f` compiled for the widest instruction set this CPU has. Mark the closure
/// `#[inline(always)]`: only code inlined into the `#[target_feature]` function gets the wide
/// registers, and LLVM does not inline a large closure on its own (a softmax kernel stayed SSE).
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    match isa() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx512vl and fma.
        Isa::Avx512 => unsafe { avx512(f) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa()` returns Avx2 only after detecting avx2 and fma.
        Isa::Avx2 => unsafe { avx2(f) },
        _ => f(),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// Turns flush-to-zero and denormals-are-zero on or off for kiln's CPU kernels (PyTorch's
/// `torch.set_flush_denormal`): on the calling thread, every thread of rayon's global pool and
/// kiln-cpu's own helper threads. Returns `false` where the CPU has no such mode (non-x86-64),
/// changing nothing.
///
/// Off by default: results then follow IEEE 754, as PyTorch's do by default. With it on, values
/// below f32's smallest normal (1.2e-38) and f64's (2.2e-308) read and compute as zero, which
/// changes results wherever such tiny values occur. What it buys on the machine in
/// BENCHMARKS.md: a fused Adam step whose moments are denormal runs 1.33x slower than on
/// ordinary values, and at ordinary speed with this on.
pub fn set_flush_denormal(on: bool) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        FLUSH.store(if on { FLUSH_ON } else { FLUSH_OFF }, Ordering::SeqCst);
        rayon::broadcast(|_| apply_flush(on));
        apply_flush(on);
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = on;
        false
    }
}

use std::sync::atomic::{AtomicU8, Ordering};

/// The mode [`set_flush_denormal`] last set, for threads that apply it themselves before
/// their next job (kiln-cpu's helpers, which rayon's broadcast does not reach).
static FLUSH: AtomicU8 = AtomicU8::new(FLUSH_UNSET);
const FLUSH_UNSET: u8 = 0;
const FLUSH_OFF: u8 = 1;
const FLUSH_ON: u8 = 2;

/// Brings this thread's mode in line with [`set_flush_denormal`]'s last call; `applied` is the
/// thread's own record of what it last applied.
pub(crate) fn sync_flush(applied: &mut u8) {
    let want = FLUSH.load(Ordering::Relaxed);
    if want != *applied {
        #[cfg(target_arch = "x86_64")]
        if want != FLUSH_UNSET {
            apply_flush(want == FLUSH_ON);
        }
        *applied = want;
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(deprecated)]
fn apply_flush(on: bool) {
    use std::arch::x86_64::{_mm_getcsr, _mm_setcsr};
    // SAFETY: only the FTZ (bit 15) and DAZ (bit 6) bits of this thread's MXCSR change; SSE2,
    // which has them, is part of x86-64.
    unsafe {
        let csr = _mm_getcsr();
        _mm_setcsr(if on { csr | 0x8040 } else { csr & !0x8040 });
    }
}

/// [`prefetch`] into every cache level (`_MM_HINT_T0`).
pub(crate) const TO_L1: i32 = 3;
/// [`prefetch`] into L2 and the levels below it, not L1 (`_MM_HINT_T1`).
pub(crate) const TO_L2: i32 = 2;

/// Asks the CPU to bring the cache lines holding `len` elements from `start` (at least the first
/// line) into its caches, to the level `HINT` names ([`TO_L1`], [`TO_L2`]). For reads the
/// hardware prefetchers do not foresee: a few lines from each of many rows or planes. A hint:
/// it never faults, whatever the address, and does nothing off x86-64.
#[inline(always)]
pub(crate) fn prefetch<T, const HINT: i32>(start: *const T, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let first = start as usize;
        let last = first + len.max(1) * std::mem::size_of::<T>().max(1) - 1;
        let mut line = first & !63;
        while line <= last {
            // SAFETY: a prefetch is a hint that never faults; SSE is part of x86-64.
            unsafe { std::arch::x86_64::_mm_prefetch::<HINT>(line as *const i8) };
            line += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (start, len);
}

/// The mask of the lanes of a 16-lane vector starting at element `from` that lie below `width`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn lane_mask(width: usize, from: usize) -> std::arch::x86_64::__mmask16 {
    ((1u32 << width.saturating_sub(from).min(16)) - 1) as std::arch::x86_64::__mmask16
}
