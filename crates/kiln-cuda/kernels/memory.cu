// Moving and converting elements: `copy_{dtype}` (strided to strided: contiguous copies,
// concatenation, downloads of views), `fill_{dtype}`, `where_{dtype}` (a u8 mask picks between
// two strided operands) and `cast_{from}_{to}`, with kiln's conversion rules: floats to integers
// truncate toward zero and saturate, NaN becomes 0; integers to a narrower integer saturate.

#define KILN_ALL_DTYPES(X) X(f32) X(f64) X(f16) X(bf16) X(i64) X(u32) X(u8)

#define KILN_COPY(T)                                                                             \
    extern "C" __global__ void copy_##T(const T* src, Strided ls, T* dst, Strided ld, u64 n) {   \
        KILN_FOR_EACH(i, n) { dst[strided_index(ld, i)] = src[strided_index(ls, i)]; }           \
    }
#define KILN_FILL(T)                                                                             \
    extern "C" __global__ void fill_##T(T* out, T value, u64 n) {                                \
        KILN_FOR_EACH(i, n) { out[i] = value; }                                                  \
    }
#define KILN_WHERE(T)                                                                            \
    extern "C" __global__ void where_##T(const u8* c, Strided lc, const T* a, Strided la,       \
                                         const T* b, Strided lb, T* out, u64 n) {                \
        KILN_FOR_EACH(i, n) {                                                                    \
            out[i] = c[strided_index(lc, i)] ? a[strided_index(la, i)] : b[strided_index(lb, i)]; \
        }                                                                                        \
    }
KILN_ALL_DTYPES(KILN_COPY)
KILN_ALL_DTYPES(KILN_FILL)
KILN_ALL_DTYPES(KILN_WHERE)

// Every value as a double (exact for all but i64 beyond 2^53) or, for integers, as an i64.
template <typename T> struct Conv;
template <> struct Conv<f32> { static const bool is_int = false; static __device__ double to(f32 x) { return x; } };
template <> struct Conv<f64> { static const bool is_int = false; static __device__ double to(f64 x) { return x; } };
template <> struct Conv<f16> { static const bool is_int = false; static __device__ double to(f16 x) { return __half2float(x); } };
template <> struct Conv<bf16> { static const bool is_int = false; static __device__ double to(bf16 x) { return __bfloat162float(x); } };
template <> struct Conv<i64> { static const bool is_int = true; static __device__ double to(i64 x) { return (double)x; } };
template <> struct Conv<u32> { static const bool is_int = true; static __device__ double to(u32 x) { return x; } };
template <> struct Conv<u8> { static const bool is_int = true; static __device__ double to(u8 x) { return x; } };

template <typename T> __device__ __forceinline__ i64 as_i64(T x) { return (i64)x; }
template <> __device__ __forceinline__ i64 as_i64<f16>(f16) { return 0; }
template <> __device__ __forceinline__ i64 as_i64<bf16>(bf16) { return 0; }

// Into an integer type with bounds [lo, hi]: saturate, NaN to 0, truncate toward zero.
template <typename TO, typename FROM>
__device__ __forceinline__ TO k_to_int(FROM x, double lo, double hi, i64 ilo, i64 ihi) {
    if (Conv<FROM>::is_int) {
        // Integer to integer stays in integers, so i64 values beyond 2^53 keep every bit.
        i64 v = as_i64(x);
        if (sizeof(FROM) == 8 || sizeof(TO) < 8) {
            // u32 and u8 sources are never negative; an i64 source may be.
            if (v < ilo) v = ilo;
            if (v > ihi) v = ihi;
        }
        return (TO)v;
    }
    double d = Conv<FROM>::to(x);
    if (d != d) return (TO)0;
    if (d <= lo) return (TO)ilo;
    if (d >= hi) return (TO)ihi;
    return (TO)trunc(d);
}

template <typename TO> struct Into;
template <> struct Into<f32> { template <typename F> static __device__ f32 from(F x) { return (f32)Conv<F>::to(x); } };
template <> struct Into<f64> { template <typename F> static __device__ f64 from(F x) { return Conv<F>::to(x); } };
template <> struct Into<f16> { template <typename F> static __device__ f16 from(F x) { return __double2half(Conv<F>::to(x)); } };
template <> struct Into<bf16> { template <typename F> static __device__ bf16 from(F x) { return __double2bfloat16(Conv<F>::to(x)); } };
template <> struct Into<i64> {
    template <typename F> static __device__ i64 from(F x) {
        return k_to_int<i64>(x, -9223372036854775808.0, 9223372036854775807.0, (i64)(-9223372036854775807LL - 1), 9223372036854775807LL);
    }
};
template <> struct Into<u32> { template <typename F> static __device__ u32 from(F x) { return k_to_int<u32>(x, 0.0, 4294967295.0, 0, 4294967295LL); } };
template <> struct Into<u8> { template <typename F> static __device__ u8 from(F x) { return k_to_int<u8>(x, 0.0, 255.0, 0, 255); } };

#define KILN_CAST(FROM, TO)                                                                        \
    extern "C" __global__ void cast_##FROM##_##TO(const FROM* in, Strided l, TO* out, u64 n) {     \
        KILN_FOR_EACH(i, n) { out[i] = Into<TO>::from(in[strided_index(l, i)]); }                 \
    }
#define KILN_CAST_FROM(FROM) \
    KILN_CAST(FROM, f32) KILN_CAST(FROM, f64) KILN_CAST(FROM, f16) KILN_CAST(FROM, bf16) \
    KILN_CAST(FROM, i64) KILN_CAST(FROM, u32) KILN_CAST(FROM, u8)
KILN_ALL_DTYPES(KILN_CAST_FROM)
