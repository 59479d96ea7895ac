//! A pool of large element buffers, so that a training step reuses the buffers of the previous one
//! instead of asking the system for fresh memory.
//!
//! Large `Vec`s come from `mmap` and go back to the system when freed, so every new one costs a
//! page fault per 4 KiB on first touch: for a CNN layer's 40 MB im2col buffer that was half the
//! layer's time. Buffers of at least [`MIN_BYTES`] are kept here when their storage is dropped
//! (`CpuStorage`'s `Drop`) and handed out again for the same length, most recent first. At most
//! `KILN_CPU_POOL_MB` MiB (default 1024) are kept; `KILN_CPU_POOL_MB=0` turns the pool off.

use half::{bf16, f16};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// Buffers smaller than this go straight back to the allocator (which recycles them cheaply).
pub(crate) const MIN_BYTES: usize = 64 << 10;

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
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.bytes + bytes > limit_bytes() {
            return;
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
