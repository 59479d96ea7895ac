//! Fused optimizer updates: the Adam and Adadelta steps, each in one pass over parameter,
//! gradient and the two state tensors.
//!
//! The element arithmetic is `AdamStep::apply` / `AdadeltaStep::apply` from kiln-tensor, the
//! same roundings as the composed ops, so fusing changes speed and never results. The loop is compiled once per
//! instruction set (AVX-512, AVX2) and picked at run time, so `sqrt` and `div` run 16 (or 8)
//! lanes wide without `-C target-cpu`.

// Much of this module serves x86-64 only; elsewhere it stays compiled but unused.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
// The target-feature wrappers are `unsafe fn`s, sound after the CPU check in `gemm::isa`.
#![allow(unsafe_code)]
use crate::buffer::Buffer;

use crate::gemm::{isa, Isa};
use crate::parallel::{run_tasks, Pieces};
use crate::pool::Pooled;
use crate::storage::CpuStorage;
use crate::strided::alloc_for_overwrite;

/// Parameters per parallel piece, and the size below which one thread does it all: an Adam
/// update does a square root and a division per element, so it pays to split earlier than a
/// plain element-wise loop.
const CHUNK: usize = 1 << 13;
const PAR_THRESHOLD: usize = 1 << 15;
use kiln_tensor::{AdadeltaStep, AdamStep, Float, Layout, Result};
use std::sync::Mutex;

/// The new `[param, m, v]`, or `None` for inputs this kernel does not cover (non-contiguous
/// layouts, f16/bf16), which kiln then composes from primitive ops.
pub(crate) fn adam_step(step: &AdamStep, inputs: [(&CpuStorage, &Layout); 4]) -> Result<Option<[CpuStorage; 3]>> {
    four_in_three_out(inputs, Rule::Adam(step))
}

/// The new `[param, square_avg, acc_delta]`, or `None` as for [`adam_step`].
pub(crate) fn adadelta_step(
    step: &AdadeltaStep,
    inputs: [(&CpuStorage, &Layout); 4],
) -> Result<Option<[CpuStorage; 3]>> {
    four_in_three_out(inputs, Rule::Adadelta(step))
}

/// The updates that read a parameter, its gradient and two state tensors and write the
/// parameter and both states: one loop serves them all.
#[derive(Clone, Copy)]
enum Rule<'a> {
    Adam(&'a AdamStep),
    Adadelta(&'a AdadeltaStep),
}

fn four_in_three_out(inputs: [(&CpuStorage, &Layout); 4], rule: Rule) -> Result<Option<[CpuStorage; 3]>> {
    let mut ranges = [(0, 0); 4];
    for (r, (_, l)) in ranges.iter_mut().zip(&inputs) {
        match l.contiguous_range() {
            Some(range) => *r = range,
            None => return Ok(None),
        }
    }
    let [p, g, m, v] = inputs.map(|(s, _)| s);
    let slice = |i: usize| ranges[i].0..ranges[i].1;
    Ok(Some(match (p, g, m, v) {
        (CpuStorage::F32(p), CpuStorage::F32(g), CpuStorage::F32(m), CpuStorage::F32(v)) => {
            let [p, m, v] = run(rule, [&p[slice(0)], &g[slice(1)], &m[slice(2)], &v[slice(3)]])?;
            [CpuStorage::F32(p), CpuStorage::F32(m), CpuStorage::F32(v)]
        }
        (CpuStorage::F64(p), CpuStorage::F64(g), CpuStorage::F64(m), CpuStorage::F64(v)) => {
            let [p, m, v] = run(rule, [&p[slice(0)], &g[slice(1)], &m[slice(2)], &v[slice(3)]])?;
            [CpuStorage::F64(p), CpuStorage::F64(m), CpuStorage::F64(v)]
        }
        _ => return Ok(None),
    }))
}

fn run<T: Float + Default + Pooled>(rule: Rule, [p, g, m, v]: [&[T]; 4]) -> Result<[Buffer<T>; 3]> {
    let n = p.len();
    let (mut po, mut mo, mut vo) = (
        alloc_for_overwrite(n, T::default())?,
        alloc_for_overwrite(n, T::default())?,
        alloc_for_overwrite(n, T::default())?,
    );
    let chunk = |start: usize, (po, mo, vo): (&mut [T], &mut [T], &mut [T])| {
        let end = start + po.len();
        let src = [&p[start..end], &g[start..end], &m[start..end], &v[start..end]];
        let dst = [po, mo, vo];
        // One `#[target_feature]` function per rule and instruction set: through the generic
        // `simd::vectorized` wrapper, the Adam loop ran 10-25 % slower (measured).
        match (rule, isa()) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa()` returns Avx512 only after detecting avx512f, avx512vl and fma.
            (Rule::Adam(step), Isa::Avx512) => unsafe { adam_avx512(step, src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `isa()` returns Avx2 only after detecting avx2 and fma.
            (Rule::Adam(step), Isa::Avx2) => unsafe { adam_avx2(step, src, dst) },
            (Rule::Adam(step), _) => adam(step, src, dst),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Rule::Adadelta(step), Isa::Avx512) => unsafe { adadelta_avx512(step, src, dst) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Rule::Adadelta(step), Isa::Avx2) => unsafe { adadelta_avx2(step, src, dst) },
            (Rule::Adadelta(step), _) => adadelta(step, src, dst),
        }
    };
    if !crate::parallel::worth_splitting(n, PAR_THRESHOLD) {
        chunk(0, (&mut po, &mut mo, &mut vo));
    } else {
        // At most 64 pieces, so that they fit inline in `Pieces`, and a multiple of the thread
        // count, so that each thread's own pieces are an equal contiguous part.
        let threads = rayon::current_num_threads().clamp(1, 64);
        let pieces = n.div_ceil(CHUNK).next_multiple_of(threads).min(64 / threads * threads);
        let size = n.div_ceil(pieces).next_multiple_of(16);
        let pieces: Pieces<_> = po
            .chunks_mut(size)
            .zip(mo.chunks_mut(size))
            .zip(vo.chunks_mut(size))
            .map(|((a, b), c)| Mutex::new((a, b, c)))
            .collect();
        run_tasks(pieces.len(), rayon::current_num_threads(), |i| {
            let mut piece = pieces[i].lock().unwrap_or_else(|e| e.into_inner());
            let (a, b, c) = &mut *piece;
            chunk(i * size, (a, b, c));
            Ok(())
        })?;
    }
    Ok([po, mo, vo])
}

/// Adam over a chunk, with the constants prepared once per chunk.
#[inline(always)]
fn adam<T: Float>(step: &AdamStep, [p, g, m, v]: [&[T]; 4], [po, mo, vo]: [&mut [T]; 3]) {
    let (k, eps) = step.prepare::<T>();
    let n = po.len().min(p.len()).min(g.len()).min(m.len()).min(v.len()).min(mo.len()).min(vo.len());
    for i in 0..n {
        (po[i], mo[i], vo[i]) = step.apply(&k, eps, p[i], g[i], m[i], v[i]);
    }
}

/// Adadelta over a chunk (`m` and `v` are the squared-gradient and squared-update averages).
#[inline(always)]
fn adadelta<T: Float>(step: &AdadeltaStep, [p, g, m, v]: [&[T]; 4], [po, mo, vo]: [&mut [T]; 3]) {
    let k = step.prepare::<T>();
    let n = po.len().min(p.len()).min(g.len()).min(m.len()).min(v.len()).min(mo.len()).min(vo.len());
    for i in 0..n {
        (po[i], mo[i], vo[i]) = step.apply(&k, p[i], g[i], m[i], v[i]);
    }
}

/// `#[target_feature]` copies of a rule's loop, one per instruction set.
macro_rules! wide {
    ($rule:ident, $step:ty, $avx512:ident, $avx2:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f,avx512vl,fma")]
        unsafe fn $avx512<T: Float>(step: &$step, src: [&[T]; 4], dst: [&mut [T]; 3]) {
            $rule(step, src, dst)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $avx2<T: Float>(step: &$step, src: [&[T]; 4], dst: [&mut [T]; 3]) {
            $rule(step, src, dst)
        }
    };
}
wide!(adam, AdamStep, adam_avx512, adam_avx2);
wide!(adadelta, AdadeltaStep, adadelta_avx512, adadelta_avx2);
