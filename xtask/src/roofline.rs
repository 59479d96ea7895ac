//! This machine's roofline, measured by xtask itself: streaming-copy bandwidth and the peak
//! rate of f32 fused multiply-adds, each on every core at once.

use std::time::Instant;

/// What one run of the probes found.
#[derive(Clone, Copy, Debug)]
pub struct Roofline {
    /// Streaming bandwidth in GB/s (bytes read plus bytes written, per second).
    pub bandwidth_gbs: f64,
    /// f32 FMA peak in GFLOP/s (an FMA counts as 2).
    pub peak_gflops: f64,
    /// Threads the probes ran on.
    pub threads: usize,
    /// The instruction set of the FMA probe.
    pub isa: &'static str,
}

impl Roofline {
    /// The higher reading of each probe.
    pub fn max(self, other: Roofline) -> Roofline {
        Roofline {
            bandwidth_gbs: self.bandwidth_gbs.max(other.bandwidth_gbs),
            peak_gflops: self.peak_gflops.max(other.peak_gflops),
            ..self
        }
    }
}

/// Measures both probes on `threads` threads, best of several runs each.
pub fn measure(threads: usize) -> Roofline {
    let (peak_gflops, isa) = peak(threads);
    Roofline { bandwidth_gbs: bandwidth(threads), peak_gflops, threads, isa }
}

/// Streaming-copy bandwidth on `threads` threads (GB/s, bytes read plus written), best of 5.
pub fn bandwidth(threads: usize) -> f64 {
    // 256 MiB each way: far past the last-level cache.
    let n = 64 << 20;
    let src = vec![1f32; n];
    let mut dst = vec![0f32; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        std::thread::scope(|s| {
            for (d, sc) in dst.chunks_mut(n.div_ceil(threads)).zip(src.chunks(n.div_ceil(threads))) {
                s.spawn(move || d.copy_from_slice(sc));
            }
        });
        best = best.min(start.elapsed().as_secs_f64());
        std::hint::black_box(&mut dst);
    }
    (2 * n * 4) as f64 / best / 1e9
}

fn peak(threads: usize) -> (f64, &'static str) {
    let iters = 20_000_000u64;
    let mut best = f64::MAX;
    let mut isa = "scalar";
    // Best of several: a run that shares the cores with anything else reads low.
    for _ in 0..7 {
        let start = Instant::now();
        let per_thread: Vec<(u64, &'static str)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(move || fma::run(iters))).collect();
            handles.into_iter().map(|h| h.join().unwrap_or((0, "failed"))).collect()
        });
        let secs = start.elapsed().as_secs_f64();
        let flops: u64 = per_thread.iter().map(|p| p.0).sum();
        isa = per_thread[0].1;
        best = best.min(secs / flops as f64);
    }
    (1.0 / best / 1e9, isa)
}

mod fma {
    //! Twelve independent FMA chains: enough to cover the latency of every FMA unit we target.
    #![allow(unsafe_code)]

    /// Runs the widest loop this CPU has; returns (flops done, instruction set).
    pub fn run(iters: u64) -> (u64, &'static str) {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                // SAFETY: avx512f was detected just above.
                return (unsafe { avx512(iters) }, "avx512");
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                // SAFETY: avx2 and fma were detected just above.
                return (unsafe { avx2(iters) }, "avx2+fma");
            }
        }
        (scalar(iters), "scalar")
    }

    macro_rules! chains {
        ($vec:ty, $set1:ident, $fma:ident, $lanes:expr, $iters:ident) => {{
            use std::arch::x86_64::*;
            let (a, b) = ($set1(0.999_9), $set1(1e-7));
            let (mut c0, mut c1, mut c2, mut c3, mut c4, mut c5) =
                ($set1(1.0), $set1(1.1), $set1(1.2), $set1(1.3), $set1(1.4), $set1(1.5));
            let (mut c6, mut c7, mut c8, mut c9, mut c10, mut c11) =
                ($set1(1.6), $set1(1.7), $set1(1.8), $set1(1.9), $set1(2.0), $set1(2.1));
            for _ in 0..$iters {
                c0 = $fma(c0, a, b);
                c1 = $fma(c1, a, b);
                c2 = $fma(c2, a, b);
                c3 = $fma(c3, a, b);
                c4 = $fma(c4, a, b);
                c5 = $fma(c5, a, b);
                c6 = $fma(c6, a, b);
                c7 = $fma(c7, a, b);
                c8 = $fma(c8, a, b);
                c9 = $fma(c9, a, b);
                c10 = $fma(c10, a, b);
                c11 = $fma(c11, a, b);
            }
            let all: [$vec; 12] = [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11];
            std::hint::black_box(all);
            $iters * 12 * $lanes * 2
        }};
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(iters: u64) -> u64 {
        chains!(__m512, _mm512_set1_ps, _mm512_fmadd_ps, 16, iters)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(iters: u64) -> u64 {
        chains!(__m256, _mm256_set1_ps, _mm256_fmadd_ps, 8, iters)
    }

    fn scalar(iters: u64) -> u64 {
        let mut c = [1f32; 12];
        for _ in 0..iters {
            for x in c.iter_mut() {
                *x = x.mul_add(0.999_9, 1e-7);
            }
        }
        std::hint::black_box(c);
        iters * 12 * 2
    }
}
