//! A pool of element buffers, so that a training step reuses the buffers of the previous one
//! instead of asking the system for fresh memory.
//!
//! Large `Vec`s come from `mmap` and go back to the system when freed, so every new one costs a
//! page fault per 4 KiB on first touch: for a CNN layer's 40 MB im2col buffer that was half the
//! layer's time. Smaller ones come from `malloc`, but are filled before use. Every buffer
//! `strided::alloc` hands out comes back here when dropped (`Buffer::returning_to`), held by a
//! tensor or not, and is handed out again for the same length, most recent first, so a training step's steady state makes no system
//! allocation. At most `KILN_CPU_POOL_MB` MiB (default 1024) are kept per dtype, each buffer
//! counted as at least [`MIN_CHARGE`] bytes; when full, buffers of other lengths are freed
//! first. `KILN_CPU_POOL_MB=0` turns the pool off.

use crate::buffer::Buffer;
use half::{bf16, f16};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

/// What a buffer counts against the pool's limit at least: a small buffer costs the allocator a
/// header and rounding beyond its elements, and its entry here costs a `Vec`.
pub(crate) const MIN_CHARGE: usize = 64;

/// The bytes a buffer of `capacity` elements counts against the limit.
fn charge<T>(capacity: usize) -> usize {
    (capacity * std::mem::size_of::<T>()).max(MIN_CHARGE)
}

/// Element types with a pool.
pub(crate) trait Pooled: Copy + Send + 'static {
    fn pool() -> &'static Pool<Self>;
}

/// Free buffers of one element type, by length.
pub(crate) struct Pool<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    free: HashMap<usize, Vec<Buffer<T>>, BuildHasherDefault<LenHasher>>,
    bytes: usize,
}

/// Hashes a buffer length with one multiply (Fibonacci hashing): every op takes and gives a
/// buffer, and the default SipHash was a visible part of a 1-element op.
#[derive(Default)]
struct LenHasher(u64);

impl Hasher for LenHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

fn limit_bytes() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let mb = std::env::var("KILN_CPU_POOL_MB").ok().and_then(|s| s.trim().parse::<usize>().ok()).unwrap_or(1024);
        mb.saturating_mul(1 << 20)
    })
}

impl<T: Copy> Pool<T> {
    fn new() -> Self {
        Pool { inner: Mutex::new(Inner { free: HashMap::default(), bytes: 0 }) }
    }

    /// A buffer of exactly `len` elements (contents unspecified), if one is free.
    pub(crate) fn take(&self, len: usize) -> Option<Buffer<T>> {
        if len == 0 {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = inner.free.get_mut(&len)?.pop()?;
        inner.bytes -= charge::<T>(v.len());
        Some(v)
    }

    /// How many buffers of exactly `len` elements are free.
    pub(crate) fn free_count(&self, len: usize) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.free.get(&len).map_or(0, Vec::len)
    }

    /// Keeps `v` for reuse when the pool has room; frees it otherwise.
    pub(crate) fn give(&self, v: Buffer<T>) {
        // Kept or freed here, never sent home again (home is this very function).
        let v = v.homeless();
        if v.is_empty() || v.len() != v.capacity() {
            return;
        }
        let bytes = charge::<T>(v.len());
        let limit = limit_bytes();
        if bytes > limit {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Full: free buffers of other lengths (the workload has moved on to new shapes).
        while inner.bytes + bytes > limit {
            let Some(&len) = inner.free.keys().find(|&&l| l != v.len()).or_else(|| inner.free.keys().next()) else {
                break;
            };
            let freed = inner.free.remove(&len).unwrap_or_default();
            inner.bytes -= freed.iter().map(|b| charge::<T>(b.len())).sum::<usize>();
        }
        inner.bytes += bytes;
        inner.free.entry(v.len()).or_default().push(v);
    }
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn pool() -> &'static Pool<$t> {
                static POOL: OnceLock<Pool<$t>> = OnceLock::new();
                POOL.get_or_init(Pool::new)
            }
        }
    )*};
}
pooled!(f32, f64, f16, bf16, i64, u32, u8);

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_once_for_their_length() {
        let pool: Pool<f32> = Pool::new();
        for len in [1, 16, 4096 + 7] {
            let v = Buffer::filled(len, 1f32).unwrap();
            let ptr = v.as_ptr();
            pool.give(v);
            assert!(pool.take(len + 1).is_none(), "only the same length is handed out");
            let again = pool.take(len).expect("a pooled buffer of the same length");
            assert_eq!(again.as_ptr(), ptr);
            assert!(pool.take(len).is_none(), "each buffer is handed out once");
        }
        let mut short = Vec::with_capacity(8);
        short.push(1f32);
        pool.give(short.into());
        assert!(pool.take(1).is_none(), "a buffer with spare capacity is not kept");
    }

    #[test]
    fn a_full_pool_frees_other_lengths_first() {
        let pool: Pool<u8> = Pool::new();
        let (a, b) = (limit_bytes() / 2 + 1, limit_bytes() / 2);
        pool.give(Buffer::filled(a, 0u8).unwrap());
        pool.give(Buffer::filled(b, 0u8).unwrap());
        assert!(pool.take(a).is_none(), "the older length made room for the newer");
        assert!(pool.take(b).is_some());
    }
}
