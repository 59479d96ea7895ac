//! `Buffer<T>`: the memory behind a CPU tensor, placed so that kernels run at the same speed
//! whatever the process allocated before.
//!
//! A `Vec` of 400 KB lands wherever `malloc` has room. Once glibc has raised its mmap threshold
//! it comes from the heap, at an address that depends on every allocation made before, down to
//! the size of the process's environment. Kernels that stream several buffers at once then ran
//! at a speed set by chance. The MLP training step bench took 110 µs started from a shell and
//! 117-126 µs started by `cargo bench`: the same binary, only the environment differed. Under
//! `cargo`, Adam's seven streams sat within 200 bytes of each other in their pages (4 KiB
//! aliasing between loads and earlier stores); from the shell, glibc had `mmap`ed them, each 16
//! bytes past a page start.
//!
//! So kiln places every buffer it allocates itself, by size (figures from this 2-core Zen 4 VM,
//! 2026-12-01, in BENCHMARKS.md):
//! - under 64 KiB: on a cache line;
//! - 64 KiB to 1 MiB: 16 bytes past a page start, the place `mmap`ed chunks get. Every other
//!   place tried was slower in the MLP step: on the page start itself 116 µs against 111 when
//!   the two vCPUs share a chip, and 205-222 against 155-164 when they do not (Adam and the
//!   weight-gradient product both slowed); a page offset varying per buffer (a multiple of 64)
//!   was as slow. Why a 64-byte-aligned start costs this much here is not settled.
//! - 1 MiB and up: on a page start. At 1024x1024x1024, 16 bytes past it cost 2-3 % (10.33-10.42
//!   ms against 10.55-10.74), and convolutions lost nothing.

// The one place kiln-cpu allocates and frees raw memory; each `unsafe` says why it is sound.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::ptr::NonNull;

const PAGE: usize = 4096;
const CACHE_LINE: usize = 64;
/// From this many bytes a buffer's place within its page is fixed.
const PAGE_PLACED_BYTES: usize = 64 << 10;
/// From this many bytes a buffer starts exactly on a page.
const PAGE_ALIGNED_BYTES: usize = 1 << 20;
/// Where a buffer between the two sizes starts after its page begins.
const MID_SHIFT: usize = 16;

/// `(alignment, bytes past it)` of a buffer of `bytes`: see the module docs for the figures.
fn placement(bytes: usize) -> (usize, usize) {
    match bytes {
        b if b >= PAGE_ALIGNED_BYTES => (PAGE, 0),
        b if b >= PAGE_PLACED_BYTES => (PAGE, MID_SHIFT),
        _ => (CACHE_LINE, 0),
    }
}

/// A fixed-length array of `T` on the heap, aligned as described in the module docs.
///
/// Dereferences to `[T]`. Kiln's CPU kernels allocate every output as one; a `Vec` converts
/// in without a copy ([`From<Vec<T>>`]) and [`Buffer::into_vec`] converts back.
pub struct Buffer<T> {
    repr: Repr<T>,
    /// Where the buffer goes when dropped instead of back to the system: the CPU pool, for
    /// buffers kiln hands out (see [`Buffer::returning_to`]).
    home: Option<fn(Buffer<T>)>,
}

enum Repr<T> {
    /// Memory some caller handed in as a `Vec` (kept as it is, never copied).
    Vec(Vec<T>),
    /// Memory this module allocated with `layout`, holding `len` initialized elements.
    Aligned { ptr: NonNull<T>, len: usize, layout: Layout, shift: usize },
}

// SAFETY: a `Buffer` owns its elements exactly as a `Vec` does; the raw pointer is never shared.
unsafe impl<T: Send> Send for Buffer<T> {}
// SAFETY: as above; shared access only hands out `&[T]`.
unsafe impl<T: Sync> Sync for Buffer<T> {}

impl<T: Copy> Buffer<T> {
    /// `len` copies of `v` in freshly allocated, aligned memory, or `None` when the system has
    /// no memory for them (the caller turns that into an error naming the op).
    pub fn filled(len: usize, v: T) -> Option<Self> {
        // SAFETY: `write` stores `len` elements, one per index below `len`.
        unsafe { Self::written(len, |p| (0..len).for_each(|i| p.add(i).write(v))) }
    }

    /// A buffer of `len` elements that `write` initializes, all of them, through the pointer.
    ///
    /// # Safety
    /// `write` must initialize every one of the `len` elements.
    unsafe fn written(len: usize, write: impl FnOnce(*mut T)) -> Option<Self> {
        let bytes = len.checked_mul(std::mem::size_of::<T>())?;
        if bytes == 0 {
            return Some(Buffer { repr: Repr::Vec(Vec::new()), home: None });
        }
        let (align, shift) = placement(bytes);
        // A shift must keep the elements aligned (always so for kiln's dtypes).
        let shift = if shift.is_multiple_of(std::mem::align_of::<T>()) { shift } else { 0 };
        let layout = Layout::from_size_align(bytes.checked_add(shift)?, align.max(std::mem::align_of::<T>())).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let base = unsafe { std::alloc::alloc(layout) };
        if base.is_null() {
            return None;
        }
        // SAFETY: `shift` is within the allocation.
        let ptr = NonNull::new(unsafe { base.add(shift) }.cast::<T>())?;
        write(ptr.as_ptr());
        Some(Buffer { repr: Repr::Aligned { ptr, len, layout, shift }, home: None })
    }

    /// This buffer, handed to `home` when it is dropped (which then owns it, home cleared).
    /// Every buffer the CPU backend allocates goes back to its pool this way, including
    /// temporaries no tensor ever holds: freed to the system, a 5.5 MB one came back as a fresh
    /// `mmap` every iteration, page faults and all (a convolution's backward 3.4 -> 5.8 ms).
    pub(crate) fn returning_to(mut self, home: fn(Buffer<T>)) -> Self {
        self.home = Some(home);
        self
    }

    /// This buffer with no home: dropped, it goes back to the system.
    pub(crate) fn homeless(mut self) -> Self {
        self.home = None;
        self
    }

    /// The elements as a `Vec`: free for a buffer that came from one, a copy otherwise.
    pub fn into_vec(self) -> Vec<T> {
        self.try_into_vec().unwrap_or_else(|b| b.to_vec())
    }

    /// The `Vec` this buffer came from, or the buffer itself when it was allocated here.
    pub fn try_into_vec(mut self) -> Result<Vec<T>, Self> {
        match &mut self.repr {
            Repr::Vec(v) => Ok(std::mem::take(v)),
            Repr::Aligned { .. } => Err(self),
        }
    }

    /// Elements the memory has room for: more than `len()` only for a `Vec` with spare room.
    pub(crate) fn capacity(&self) -> usize {
        match &self.repr {
            Repr::Vec(v) => v.capacity(),
            Repr::Aligned { len, .. } => *len,
        }
    }
}

impl<T: Copy> std::ops::Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.repr {
            Repr::Vec(v) => v,
            // SAFETY: `ptr` holds `len` initialized elements for as long as `self` lives.
            Repr::Aligned { ptr, len, .. } => unsafe { std::slice::from_raw_parts(ptr.as_ptr(), *len) },
        }
    }
}

impl<T: Copy> std::ops::DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        match &mut self.repr {
            Repr::Vec(v) => v,
            // SAFETY: as in `deref`, and `&mut self` makes this the only access.
            Repr::Aligned { ptr, len, .. } => unsafe { std::slice::from_raw_parts_mut(ptr.as_ptr(), *len) },
        }
    }
}

impl<T> Drop for Buffer<T> {
    fn drop(&mut self) {
        if let Some(home) = self.home.take() {
            home(Buffer { repr: std::mem::replace(&mut self.repr, Repr::Vec(Vec::new())), home: None });
            return;
        }
        if let Repr::Aligned { ptr, layout, shift, .. } = self.repr {
            // SAFETY: allocated in `written` with this very layout, `shift` bytes before `ptr`,
            // and freed only here.
            unsafe { std::alloc::dealloc(ptr.as_ptr().cast::<u8>().sub(shift), layout) }
        }
    }
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Buffer { repr: Repr::Vec(Vec::new()), home: None }
    }
}

impl<T: Copy> From<Vec<T>> for Buffer<T> {
    fn from(v: Vec<T>) -> Self {
        Buffer { repr: Repr::Vec(v), home: None }
    }
}

impl<'a, T: Copy> IntoIterator for &'a Buffer<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<T: Copy> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        // SAFETY: the copy initializes all `len` elements.
        let copy =
            unsafe { Self::written(self.len(), |p| std::ptr::copy_nonoverlapping(self.as_ptr(), p, self.len())) };
        match copy {
            // A copy of a pooled buffer goes back to the same pool.
            Some(mut b) => {
                b.home = self.home;
                b
            }
            // Out of memory: what `Vec::clone` does too.
            None => std::alloc::handle_alloc_error(Layout::array::<T>(self.len()).unwrap_or(Layout::new::<T>())),
        }
    }
}

impl<T: Copy + std::fmt::Debug> std::fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T: Copy + PartialEq> PartialEq for Buffer<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn page_offset<T: Copy>(b: &Buffer<T>) -> usize {
        b.as_ptr() as usize % PAGE
    }

    #[test]
    fn buffers_are_placed_by_size() {
        for len in [1usize, 15, 1000, (64 << 10) / 4 - 1] {
            let b = Buffer::filled(len, 1.5f32).unwrap();
            assert_eq!(page_offset(&b) % CACHE_LINE, 0, "{len} elements on a cache line");
            assert!(b.iter().all(|&x| x == 1.5));
        }
        for len in [(64 << 10) / 4, 100_352, (1 << 20) / 4 - 1] {
            let b = Buffer::filled(len, 2u32).unwrap();
            assert_eq!(page_offset(&b), MID_SHIFT, "{len} elements");
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 2));
        }
        for len in [(1 << 20) / 8, 1 << 20] {
            assert_eq!(page_offset(&Buffer::filled(len, 0f64).unwrap()), 0, "{len} f64 on a page start");
        }
    }

    #[test]
    fn vecs_convert_both_ways_and_clones_are_aligned_copies() {
        let v = vec![1u8, 2, 3];
        let ptr = v.as_ptr();
        let b = Buffer::from(v);
        let c = b.clone();
        assert_eq!(c, b);
        assert_eq!(page_offset(&c) % CACHE_LINE, 0, "a clone is allocated here");
        let back = b.into_vec();
        assert_eq!(back.as_ptr(), ptr, "a Vec comes back without a copy");
        assert_eq!(c.into_vec(), vec![1, 2, 3]);
        assert!(Buffer::<f64>::filled(0, 0.0).unwrap().is_empty());
        assert!(Buffer::<f64>::filled(usize::MAX / 4, 0.0).is_none(), "too large: None, not a panic");
    }
}
