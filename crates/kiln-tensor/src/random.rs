//! The random stream every backend reproduces: Philox-4x32-10, a counter-based generator, so
//! element `i` of a draw depends only on the seed and `i` — not on the device, the thread count
//! or how the work is split.

use crate::backend::Distribution;
use crate::{DType, HostData, WithDType};

const M0: u32 = 0xD251_1F53;
const M1: u32 = 0xCD9E_8D57;
const W0: u32 = 0x9E37_79B9;
const W1: u32 = 0xBB67_AE85;

/// One Philox-4x32-10 block: four 32-bit words for `counter` under `key`.
pub fn philox4x32(counter: [u32; 4], key: [u32; 2]) -> [u32; 4] {
    rounds(counter.map(|w| [w]), key).map(|[w]| w)
}

/// Philox-4x32-10 on `L` counters at once, word-major (`c[w][lane]`): the form compilers turn
/// into vector lanes when `L` is 16 (see [`fill_uniform_f32`]).
// Indexed lanes are the form LLVM vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn rounds<const L: usize>(mut c: [[u32; L]; 4], key: [u32; 2]) -> [[u32; L]; 4] {
    let mut k = key;
    for _ in 0..10 {
        let mut next = [[0u32; L]; 4];
        for l in 0..L {
            let p0 = (M0 as u64) * (c[0][l] as u64);
            let p1 = (M1 as u64) * (c[2][l] as u64);
            next[0][l] = ((p1 >> 32) as u32) ^ c[1][l] ^ k[0];
            next[1][l] = p1 as u32;
            next[2][l] = ((p0 >> 32) as u32) ^ c[3][l] ^ k[1];
            next[3][l] = p0 as u32;
        }
        c = next;
        k = [k[0].wrapping_add(W0), k[1].wrapping_add(W1)];
    }
    c
}

fn block(seed: u64, index: u64) -> [u32; 4] {
    philox4x32([index as u32, (index >> 32) as u32, 0, 0], [seed as u32, (seed >> 32) as u32])
}

/// Uniform in `[0, 1)` from a 32-bit word.
fn unit(x: u32) -> f64 {
    x as f64 * (1.0 / 4_294_967_296.0)
}

/// How many consecutive elements one Philox block feeds.
fn per_block(dist: Distribution) -> u64 {
    match dist {
        Distribution::Uniform { .. } => 4,
        Distribution::Normal { .. } => 2,
    }
}

/// Element `i` of the stream, given its block's words.
fn from_block(dist: Distribution, b: [u32; 4], i: u64) -> f64 {
    match dist {
        Distribution::Uniform { low, high } => low + (high - low) * unit(b[(i % 4) as usize]),
        Distribution::Normal { mean, std } => {
            let (a, c) = if i.is_multiple_of(2) { (b[0], b[1]) } else { (b[2], b[3]) };
            let u1 = 1.0 - unit(a); // (0, 1]: ln never sees 0
            let u2 = unit(c);
            // libm for log and cos, not std: the same bits on every platform. sqrt is correctly
            // rounded everywhere (IEEE 754), and std's runs under Miri (libm's is assembly).
            mean + std * (-2.0 * libm::log(u1)).sqrt() * libm::cos(std::f64::consts::TAU * u2)
        }
    }
}

/// Element `i` of the stream for `seed` under `dist`.
pub fn sample_one(dist: Distribution, seed: u64, i: u64) -> f64 {
    let per = per_block(dist);
    from_block(dist, block(seed, i / per), i)
}

/// The first `len` elements of the stream for `seed` under `dist`.
pub fn sample(dist: Distribution, len: usize, seed: u64) -> Vec<f64> {
    (0..len as u64).map(|i| sample_one(dist, seed, i)).collect()
}

/// Elements `start..start + out.len()` of the stream for `seed` under `dist`, rounded to `T`
/// exactly as [`sample_as`] rounds them. Each Philox block is computed once, so a backend can
/// fill disjoint ranges on different threads and get the bits of one sequential pass.
pub fn fill<T: WithDType>(dist: Distribution, seed: u64, start: u64, out: &mut [T]) {
    let per = per_block(dist);
    let mut cached: Option<(u64, [u32; 4])> = None;
    for (i, o) in (start..).zip(out) {
        let index = i / per;
        let words = match cached {
            Some((at, words)) if at == index => words,
            _ => {
                let words = block(seed, index);
                cached = Some((index, words));
                words
            }
        };
        let v = T::DTYPE.round_f64(from_block(dist, words, i));
        *o = T::from_f64(match dist {
            // Rounding to a short mantissa could otherwise produce `high` itself.
            Distribution::Uniform { high, .. } if v >= high => below(T::DTYPE, high),
            _ => v,
        });
    }
}

/// [`fill`] for uniform f32 draws (dropout masks, `rand`), with the same bits: 16 Philox
/// blocks (64 elements) per step, written lane by lane so that a caller compiled for AVX2 or
/// AVX-512 runs them as vector multiplies (`#[inline(always)]`: it takes the caller's target
/// features). `fill` computes one block at a time and spent about 4 ns per element.
// Indexed lanes (c[w][l]) are the form LLVM turns into vector lanes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
pub fn fill_uniform_f32(low: f64, high: f64, seed: u64, start: u64, out: &mut [f32]) {
    const LANES: usize = 16;
    let dist = Distribution::Uniform { low, high };
    // Up to the next whole block, and the tail after the last whole step, go through `fill`.
    let head = (start.next_multiple_of(4) - start).min(out.len() as u64) as usize;
    let (head_out, mut rest) = out.split_at_mut(head);
    fill(dist, seed, start, head_out);
    let mut block_index = (start + head as u64) / 4;
    let key = [seed as u32, (seed >> 32) as u32];
    let top = below(DType::F32, high) as f32;
    let unit_range = low == 0.0 && high == 1.0;
    while rest.len() >= 4 * LANES {
        let (now, tail) = rest.split_at_mut(4 * LANES);
        let mut c = [[0u32; LANES]; 4];
        for l in 0..LANES {
            let index = block_index + l as u64;
            (c[0][l], c[1][l]) = (index as u32, (index >> 32) as u32);
        }
        let c = rounds(c, key);
        // Word by word (vector lanes), then interleaved: element 4 * l + w is word w of block l.
        let mut v = [[0f32; LANES]; 4];
        if unit_range {
            // In [0, 1) the f64 value `x * 2^-32` rounded to f32 is `x` rounded to f32, times
            // 2^-32 (a power of two scales exactly): the same bits in f32 lanes, twice as
            // many per vector and without the conversions to f64.
            for (v, words) in v.iter_mut().zip(&c) {
                for (v, &x) in v.iter_mut().zip(words) {
                    *v = unit_f32(x, top);
                }
            }
        } else {
            for (v, words) in v.iter_mut().zip(&c) {
                for (v, &x) in v.iter_mut().zip(words) {
                    let r = (low + (high - low) * unit(x)) as f32;
                    *v = if r as f64 >= high { top } else { r };
                }
            }
        }
        for (l, out) in now.chunks_exact_mut(4).enumerate() {
            for (w, o) in out.iter_mut().enumerate() {
                *o = v[w][l];
            }
        }
        block_index += LANES as u64;
        rest = tail;
    }
    fill(dist, seed, block_index * 4, rest);
}

/// A uniform draw in `[0, 1)` from a 32-bit word as f32, `top` (the float below 1) where it
/// rounds up to 1: the bits of `unit(x) as f32` with that clamp.
#[inline(always)]
fn unit_f32(x: u32, top: f32) -> f32 {
    let r = x as f32 * (1.0 / 4_294_967_296.0);
    if r >= 1.0 {
        top
    } else {
        r
    }
}

/// The stream rounded to `dtype`, keeping uniform draws below `high`.
pub fn sample_as(dist: Distribution, len: usize, seed: u64, dtype: DType) -> HostData {
    fn filled<T: WithDType + Default>(dist: Distribution, len: usize, seed: u64) -> HostData {
        let mut v = vec![T::default(); len];
        fill(dist, seed, 0, &mut v);
        T::into_host(v)
    }
    match dtype {
        DType::F32 => filled::<f32>(dist, len, seed),
        DType::F64 => filled::<f64>(dist, len, seed),
        DType::F16 => filled::<half::f16>(dist, len, seed),
        DType::BF16 => filled::<half::bf16>(dist, len, seed),
        DType::I64 => filled::<i64>(dist, len, seed),
        DType::U32 => filled::<u32>(dist, len, seed),
        DType::U8 => filled::<u8>(dist, len, seed),
    }
}

/// The smallest positive value of `dtype`.
fn tiny(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => f64::from_bits(1),
        DType::F32 => f32::from_bits(1) as f64,
        DType::F16 => half::f16::from_bits(1).to_f64(),
        DType::BF16 => half::bf16::from_bits(1).to_f64(),
        _ => 1.0,
    }
}

/// The largest value of `dtype` below `x`.
/// The largest value of `dtype` below `x` rounded to `dtype`: what a uniform draw that rounds
/// up to its exclusive upper bound becomes (a device generating the stream itself needs it).
pub fn largest_below(dtype: DType, x: f64) -> f64 {
    below(dtype, x)
}

fn below(dtype: DType, x: f64) -> f64 {
    let r = dtype.round_f64(x);
    if r == 0.0 {
        // The negative value closest to zero.
        return -tiny(dtype);
    }
    let step = |bits: u64, positive: bool| if positive { bits - 1 } else { bits + 1 };
    match dtype {
        DType::F64 => f64::from_bits(step(r.to_bits(), r > 0.0)),
        DType::F32 => f32::from_bits(step((r as f32).to_bits() as u64, r > 0.0) as u32) as f64,
        DType::F16 => {
            half::f16::from_bits(step(crate::dtype::f16_from_f64(r).to_bits() as u64, r > 0.0) as u16).to_f64()
        }
        DType::BF16 => {
            half::bf16::from_bits(step(crate::dtype::bf16_from_f64(r).to_bits() as u64, r > 0.0) as u16).to_f64()
        }
        _ => r - 1.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batched_uniform_fill_gives_fill_s_bits() {
        // Starts inside a block and lengths that leave heads and tails; bounds whose rounding
        // reaches `high` (so the clamp to the value below it runs).
        for (low, high) in [(0.0, 1.0), (-1.0, 3.0), (0.25, 0.25 + 2e-8)] {
            for (start, len) in [(0, 64), (0, 200), (3, 130), (7, 1), (1 << 33, 77)] {
                let dist = Distribution::Uniform { low, high };
                let (mut want, mut got) = (vec![0f32; len], vec![0f32; len]);
                fill(dist, 11, start, &mut want);
                fill_uniform_f32(low, high, 11, start, &mut got);
                let same = want.iter().zip(&got).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "[{low}, {high}) from {start}, {len} elements");
            }
        }
    }

    #[test]
    fn the_f32_unit_draw_gives_the_f64_path_s_bits() {
        let top = below(DType::F32, 1.0) as f32;
        // A sweep of the words, and every word whose f32 rounds up to 2^32.
        let words = (0..u32::MAX - 200_000).step_by(9_973).chain(u32::MAX - 200_000..=u32::MAX);
        for x in words {
            let want = unit(x) as f32;
            let want = if want as f64 >= 1.0 { top } else { want };
            assert_eq!(unit_f32(x, top).to_bits(), want.to_bits(), "word {x}");
        }
    }

    #[test]
    fn philox_matches_the_published_known_answer() {
        // Random123's kat_vectors: philox4x32_10 with counter and key all ones.
        let out = philox4x32([u32::MAX; 4], [u32::MAX; 2]);
        assert_eq!(out, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
        let out = philox4x32([0; 4], [0; 2]);
        assert_eq!(out, [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    }

    #[test]
    // Statistics over 200,000 draws take ten minutes under Miri and check no memory safety.
    #[cfg_attr(miri, ignore)]
    fn uniform_and_normal_have_the_right_moments() {
        let u = sample(Distribution::Uniform { low: -1.0, high: 3.0 }, 100_000, 7);
        let mean = u.iter().sum::<f64>() / u.len() as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
        assert!(u.iter().all(|&x| (-1.0..3.0).contains(&x)));
        let n = sample(Distribution::Normal { mean: 2.0, std: 0.5 }, 100_000, 7);
        let m = n.iter().sum::<f64>() / n.len() as f64;
        let v = n.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n.len() as f64;
        assert!((m - 2.0).abs() < 0.01 && (v.sqrt() - 0.5).abs() < 0.01, "{m} {v}");
    }
}
