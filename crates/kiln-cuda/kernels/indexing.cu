// Indexing along one dim: `gather_{dtype}_{index}`, `index_select_{dtype}_{index}` and
// `scatter_add_{dtype}_{index}`, indices i64 or u32. An out-of-range index is not a crash: the
// kernel records it in `*bad` (the first offending position + 1) and the host turns that into
// kiln's IndexOutOfRange error after the launch.

// The multi-index of logical element i of `l` along `dim`, replacing that dim's coordinate by
// `idx`: the storage position in `target`.
__device__ __forceinline__ u64 retarget(const Strided& shape, const Strided& target, u64 i, unsigned dim, u64 idx) {
    u64 at = target.offset;
    for (int d = (int)shape.rank - 1; d >= 0; --d) {
        u64 n = shape.dims[d];
        u64 c = i % n;
        i /= n;
        at += ((unsigned)d == dim ? idx : c) * target.strides[d];
    }
    return at;
}

template <typename I> __device__ __forceinline__ bool in_range(I v, u64 size) { return v >= 0 && (u64)v < size; }
template <> __device__ __forceinline__ bool in_range<u32>(u32 v, u64 size) { return (u64)v < size; }

// out[i] = src[..., index[i], ...] along dim; `out` has the index's shape (li).
#define KILN_GATHER(T, I)                                                                              \
    extern "C" __global__ void gather_##T##_##I(const T* src, Strided ls, const I* index, Strided li,   \
                                                 unsigned dim, T* out, u64 n, u64* bad) {               \
        KILN_FOR_EACH(i, n) {                                                                          \
            I k = index[strided_index(li, i)];                                                         \
            if (!in_range(k, ls.dims[dim])) { atomicMin(bad, i + 1); continue; }                       \
            out[i] = src[retarget(li, ls, i, dim, (u64)k)];                                            \
        }                                                                                              \
    }
// out = src with dim `dim` replaced by ids (1-D); `lo` is the output's contiguous shape.
#define KILN_INDEX_SELECT(T, I)                                                                        \
    extern "C" __global__ void index_select_##T##_##I(const T* src, Strided ls, const I* ids,          \
                                                       Strided lid, Strided lo, unsigned dim, T* out,  \
                                                       u64 n, u64* bad) {                              \
        KILN_FOR_EACH(i, n) {                                                                          \
            u64 inner = 1;                                                                             \
            for (unsigned d = dim + 1; d < lo.rank; ++d) inner *= lo.dims[d];                          \
            u64 pos = (i / inner) % lo.dims[dim];                                                      \
            I k = ids[strided_index(lid, pos)];                                                        \
            if (!in_range(k, ls.dims[dim])) { atomicMin(bad, i + 1); continue; }                       \
            out[i] = src[retarget(lo, ls, i, dim, (u64)k)];                                            \
        }                                                                                              \
    }
// dst[..., index[i], ...] += src[i] along dim, dst contiguous (ld); atomic, so the order of
// additions into one element is not fixed (kiln promises bitwise determinism on the CPU only).
#define KILN_SCATTER_ADD(T, I)                                                                         \
    extern "C" __global__ void scatter_add_##T##_##I(T* dst, Strided ld, const I* index, Strided li,   \
                                                      const T* src, Strided ls, unsigned dim, u64 n,   \
                                                      u64* bad) {                                      \
        KILN_FOR_EACH(i, n) {                                                                          \
            I k = index[strided_index(li, i)];                                                         \
            if (!in_range(k, ld.dims[dim])) { atomicMin(bad, i + 1); continue; }                       \
            atomicAdd(&dst[retarget(li, ld, i, dim, (u64)k)], src[strided_index(ls, i)]);              \
        }                                                                                              \
    }

#define KILN_INDEXING_ALL(T) KILN_GATHER(T, i64) KILN_GATHER(T, u32) KILN_INDEX_SELECT(T, i64) KILN_INDEX_SELECT(T, u32)
KILN_INDEXING_ALL(f32)
KILN_INDEXING_ALL(f64)
KILN_INDEXING_ALL(f16)
KILN_INDEXING_ALL(bf16)
KILN_INDEXING_ALL(i64)
KILN_INDEXING_ALL(u32)
KILN_INDEXING_ALL(u8)
// atomicAdd exists for these element types (integers: i64 through its unsigned form below).
#define KILN_SCATTER_ALL(T) KILN_SCATTER_ADD(T, i64) KILN_SCATTER_ADD(T, u32)
KILN_SCATTER_ALL(f32)
KILN_SCATTER_ALL(f64)
KILN_SCATTER_ALL(f16)
KILN_SCATTER_ALL(bf16)
KILN_SCATTER_ALL(u32)
__device__ __forceinline__ void atomicAdd(i64* p, i64 v) {
    atomicAdd((unsigned long long*)p, (unsigned long long)v);  // two's complement: wraps as kiln's i64
}
KILN_SCATTER_ALL(i64)
