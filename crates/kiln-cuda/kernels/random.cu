// Uniform random numbers on the device: `random_uniform_{dtype}`, the stream of
// kiln-tensor/src/random.rs bit for bit. Element i is word i % 4 of Philox-4x32-10 block i / 4
// under the seed, mapped to low + (high - low) * word / 2^32 in f64 with round-to-nearest
// intrinsics that the compiler may not contract into an FMA, then rounded once to the dtype; a
// value that rounds up to `high` becomes `below_high` (the largest value under it, from the
// host). Normal draws use libm's log and cos on the host, which no GPU reproduces exactly.

__device__ __forceinline__ uint4 philox4x32_10(uint4 c, uint2 k) {
    for (int r = 0; r < 10; ++r) {
        unsigned int hi0 = __umulhi(0xD2511F53u, c.x), lo0 = 0xD2511F53u * c.x;
        unsigned int hi1 = __umulhi(0xCD9E8D57u, c.z), lo1 = 0xCD9E8D57u * c.z;
        c = make_uint4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
        k.x += 0x9E3779B9u;
        k.y += 0xBB67AE85u;
    }
    return c;
}

template <typename T> __device__ __forceinline__ T round_to(double v);
template <> __device__ __forceinline__ f32 round_to<f32>(double v) { return __double2float_rn(v); }
template <> __device__ __forceinline__ f64 round_to<f64>(double v) { return v; }
template <> __device__ __forceinline__ f16 round_to<f16>(double v) { return __double2half(v); }
template <> __device__ __forceinline__ bf16 round_to<bf16>(double v) { return __double2bfloat16(v); }
template <typename T> __device__ __forceinline__ double widen_back(T v) { return (double)v; }
template <> __device__ __forceinline__ double widen_back<f16>(f16 v) { return (double)__half2float(v); }
template <> __device__ __forceinline__ double widen_back<bf16>(bf16 v) { return (double)__bfloat162float(v); }

template <typename T>
__device__ void uniform(T* out, u64 n, u64 seed, double low, double high, double below_high) {
    uint2 key = make_uint2((unsigned int)seed, (unsigned int)(seed >> 32));
    KILN_FOR_EACH(i, n) {
        u64 b = i / 4;
        uint4 w = philox4x32_10(make_uint4((unsigned int)b, (unsigned int)(b >> 32), 0u, 0u), key);
        unsigned int word = (i % 4 == 0) ? w.x : (i % 4 == 1) ? w.y : (i % 4 == 2) ? w.z : w.w;
        double unit = __dmul_rn((double)word, 1.0 / 4294967296.0);
        double v = __dadd_rn(low, __dmul_rn(__dsub_rn(high, low), unit));
        T r = round_to<T>(v);
        out[i] = widen_back(r) >= high ? round_to<T>(below_high) : r;
    }
}

#define KILN_RANDOM(T)                                                                           \
    extern "C" __global__ void random_uniform_##T(T* out, u64 n, u64 seed, double low, double high, \
                                                  double below_high) {                           \
        uniform<T>(out, n, seed, low, high, below_high);                                         \
    }
KILN_RANDOM(f32)
KILN_RANDOM(f64)
KILN_RANDOM(f16)
KILN_RANDOM(bf16)
