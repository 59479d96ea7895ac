//! Non-temporal stores for outputs too large for the caches.
//!
//! An ordinary store first reads its cache line from memory (to own it), so an element-wise op
//! over `a` and `b` into a fresh `out` moves four streams: `a`, `b`, `out` read, `out` written.
//! A non-temporal store writes whole lines without reading them, so the same op moves three.
//! `memcpy` does the same above a size, and so the copy that `cargo xtask bench` takes as this
//! machine's bandwidth. It only pays where the output would not stay in the caches for the next
//! op anyway: see [`STREAM_BYTES`].

// The stores are SSE2 intrinsics (baseline on x86-64); elsewhere this is a plain copy.
#![allow(unsafe_code)]

/// Outputs of at least this many bytes are written with non-temporal stores: twice a Zen 4
/// chiplet's 32 MiB L3, so an output that the next op could still find in the cache keeps
/// ordinary stores. Measured on `add` over 16M f32 (64 MiB out): see BENCHMARKS.md, 2026-12-01
/// (session 16).
pub(crate) const STREAM_BYTES: usize = 64 << 20;

/// Copies `src` into `dst` (equal lengths), bypassing the caches where the CPU can. Call
/// [`fence`] before another thread may read `dst`.
#[inline(always)]
pub(crate) fn copy<U: Copy>(dst: &mut [U], src: &[U]) {
    let n = dst.len().min(src.len());
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let bytes = n * std::mem::size_of::<U>();
        let (d, s) = (dst.as_mut_ptr().cast::<u8>(), src.as_ptr().cast::<u8>());
        // Up to the first 16-byte boundary, ordinary copies; then 16 bytes a store.
        let head = d.align_offset(16).min(bytes);
        // SAFETY: `d` and `s` hold `bytes` bytes each (the slices' first `n` elements), the two
        // slices cannot overlap (one is borrowed mutably), every stream store is at a 16-byte
        // aligned `d + i` with `i + 16 <= bytes`, and SSE2 is part of the x86-64 baseline.
        unsafe {
            std::ptr::copy_nonoverlapping(s, d, head);
            let mut i = head;
            while i + 16 <= bytes {
                _mm_stream_si128(d.add(i).cast::<__m128i>(), _mm_loadu_si128(s.add(i).cast::<__m128i>()));
                i += 16;
            }
            std::ptr::copy_nonoverlapping(s.add(i), d.add(i), bytes - i);
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri))))]
    dst[..n].copy_from_slice(&src[..n]);
}

/// Orders this thread's non-temporal stores before its later stores (they are weakly ordered:
/// without it another thread could see the op as done and read stale lines).
#[inline(always)]
pub(crate) fn fence() {
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    // SAFETY: SSE is part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
}

#[cfg(test)]
mod tests {
    /// Every length and start offset around the 16-byte blocks, for 1-, 2-, 4- and 8-byte types.
    #[test]
    fn copies_exactly_at_any_alignment() {
        fn check<U: Copy + PartialEq + std::fmt::Debug + From<u8>>() {
            let src: Vec<U> = (0..200u8).map(U::from).collect();
            for start in 0..17 {
                for len in [0, 1, 3, 15, 16, 17, 33, 64, 100, 150] {
                    let mut dst: Vec<U> = vec![U::from(255); 200];
                    super::copy(&mut dst[start..start + len], &src[..len]);
                    super::fence();
                    assert_eq!(&dst[start..start + len], &src[..len], "start {start}, len {len}");
                    assert!(dst[..start].iter().chain(&dst[start + len..]).all(|&v| v == U::from(255)));
                }
            }
        }
        check::<u8>();
        check::<u16>();
        check::<f32>();
        check::<f64>();
    }
}
