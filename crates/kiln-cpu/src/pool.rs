//! A pool of large element buffers, so that a training step reuses the buffers of the previous one
//! instead of asking the system for fresh memory.
//!
//! Large `Vec`s come from `mmap` and go back to the system when freed, so every new one costs a
//! page fault per 4 KiB on first touch: for a CNN layer's 40 MB im2col buffer that was half the
//! layer's time. Smaller ones come from `malloc`, but are filled before use. Buffers of at
//! least [`MIN_BYTES`] are kept here when their storage is dropped
//! (`CpuStorage`'s `Drop`) and handed out again for the same length, most recent first. At most
//! `KILN_CPU_POOL_MB` MiB (default 1024) are kept per dtype; when full, buffers of other lengths
//! are freed first. `KILN_CPU_POOL_MB=0` turns the pool off.

use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Buffers smaller than this go straight back to the allocator. 4 KiB rather than more: a fresh
/// buffer is filled before a kernel overwrites it, and for an MLP's small outputs that `malloc`
/// and fill were a quarter of a product (32x10x128: 1.79 → 1.36 µs pooled; MLP step -5 %).
pub(crate) const MIN_BYTES: usize = 4 << 10;

/// Element types with a pool.
pub(crate) trait Pooled: Copy + Send + 'static {
    fn pool() -> &'static Pool<Self>;
}

/// Free buffers of one element type, by length.
pub(crate) struct Pool<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    free: HashMap<usize, Vec<Vec<T>>>,
    bytes: usize,
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
        Pool { inner: Mutex::new(Inner { free: HashMap::new(), bytes: 0 }) }
    }

    /// A buffer of exactly `len` elements (contents unspecified), if one is free.
    pub(crate) fn take(&self, len: usize) -> Option<Vec<T>> {
        if len * std::mem::size_of::<T>() < MIN_BYTES {
            return None;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = inner.free.get_mut(&len)?.pop()?;
        inner.bytes -= v.capacity() * std::mem::size_of::<T>();
        Some(v)
    }

    /// Keeps `v` for reuse when it is large and the pool has room; frees it otherwise.
    pub(crate) fn give(&self, v: Vec<T>) {
        let bytes = v.capacity() * std::mem::size_of::<T>();
        if bytes < MIN_BYTES || v.len() != v.capacity() {
            return;
        }
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
            inner.bytes -= freed.iter().map(|b| b.capacity() * std::mem::size_of::<T>()).sum::<usize>();
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
    fn large_buffers_come_back_and_small_ones_do_not() {
        let pool: Pool<f32> = Pool::new();
        let len = MIN_BYTES / 4 + 7;
        let v = vec![1f32; len];
        let ptr = v.as_ptr();
        pool.give(v);
        let again = pool.take(len).expect("a pooled buffer of the same length");
        assert_eq!(again.as_ptr(), ptr);
        assert!(pool.take(len).is_none(), "each buffer is handed out once");
        pool.give(vec![0f32; 16]);
        assert!(pool.take(16).is_none(), "small buffers are not pooled");
    }

    #[test]
    fn a_full_pool_frees_other_lengths_first() {
        let pool: Pool<u8> = Pool::new();
        let (a, b) = (limit_bytes() / 2 + 1, limit_bytes() / 2);
        pool.give(vec![0u8; a]);
        pool.give(vec![0u8; b]);
        assert!(pool.take(a).is_none(), "the older length made room for the newer");
        assert!(pool.take(b).is_some());
    }
}
