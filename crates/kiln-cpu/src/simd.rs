//! Runtime instruction-set dispatch for plain-Rust loops.
//!
//! kiln is built for the baseline x86-64 target (SSE2), so a loop compiled normally uses 128-bit
//! vectors. [`vectorized`] runs a closure inside a function compiled with AVX-512 (or AVX2+FMA)
//! enabled; the closure is inlined there and LLVM vectorizes it for the wider registers. Rust
//! never contracts `a * b + c` into an FMA, so results are the same bits on every path.

// Calling a `#[target_feature]` function is `unsafe`: sound after the CPU check in `isa`.
#![allow(unsafe_code)]

use crate::gemm::{isa, Isa};

/// Runs `f` compiled for the widest instruction set this CPU has.
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
