// Reductions over the last dim of a contiguous [rows, cols] input (the host moves the reduced
// dims last first): `reduce_{op}_{dtype}`, one block per row at a time, warp shuffles within a
// warp and shared memory across warps, so a row's result does not depend on the grid size.
// sum accumulates floats in f64, as the CPU backend does (an f32 accumulator drifts by about 1e-4
// over a million elements), and integers in i64, which it returns; max and min
// propagate NaN; argmax and argmin return the first best index as i64, a NaN counting as best.

#define KILN_REDUCE_THREADS 256

template <typename T> struct Acc { typedef double type; };
template <> struct Acc<i64> { typedef i64 type; };
template <> struct Acc<u32> { typedef i64 type; };
template <> struct Acc<u8> { typedef i64 type; };

template <typename T> __device__ __forceinline__ typename Acc<T>::type widen(T x) { return (typename Acc<T>::type)x; }
template <> __device__ __forceinline__ double widen<f16>(f16 x) { return __half2float(x); }
template <> __device__ __forceinline__ double widen<bf16>(bf16 x) { return __bfloat162float(x); }

template <typename A> __device__ __forceinline__ bool r_isnan(A x) { return x != x; }

// Combines (value, index) pairs: NaN first, then the better value, then the smaller index.
template <typename A, bool MAX>
__device__ __forceinline__ void best_of(A& v, i64& i, A ov, i64 oi) {
    bool take;
    if (r_isnan(v) || r_isnan(ov)) {
        take = r_isnan(ov) && (!r_isnan(v) || oi < i);
    } else if (ov == v) {
        take = oi < i;
    } else {
        take = MAX ? ov > v : ov < v;
    }
    if (take) { v = ov; i = oi; }
}

// Block-wide reduction of one value per thread; every thread gets the result.
template <typename A, typename F>
__device__ __forceinline__ A block_reduce(A v, F combine) {
    __shared__ A partial[KILN_REDUCE_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) v = combine(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x / 32) ? partial[lane] : partial[0];
        for (int o = 16; o > 0; o >>= 1) {
            A other = __shfl_down_sync(0xffffffffu, v, o);
            if (lane + o < (int)(blockDim.x / 32)) v = combine(v, other);
        }
        if (lane == 0) partial[0] = v;
    }
    __syncthreads();
    A out = partial[0];
    __syncthreads();
    return out;
}

template <typename T, typename OUT>
__device__ void row_sum(const T* in, OUT* out, u64 rows, u64 cols) {
    typedef typename Acc<T>::type A;
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        A s = A(0);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += widen(in[r * cols + c]);
        s = block_reduce(s, [](A a, A b) { return a + b; });
        if (threadIdx.x == 0) out[r] = (OUT)s;
    }
}

template <typename T, bool MAX>
__device__ void row_extreme(const T* in, T* out_value, i64* out_index, u64 rows, u64 cols) {
    typedef typename Acc<T>::type A;
    if (cols == 0) return;  // the host refuses max, min and arg over nothing
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        A v = widen(in[r * cols]);
        i64 idx = 0;
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) best_of<A, MAX>(v, idx, widen(in[r * cols + c]), (i64)c);
        // Reduce values and indices together, warp by warp, then across warps.
        __shared__ A vs[KILN_REDUCE_THREADS];
        __shared__ i64 is[KILN_REDUCE_THREADS];
        vs[threadIdx.x] = v;
        is[threadIdx.x] = idx;
        __syncthreads();
        for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                A a = vs[threadIdx.x];
                i64 ai = is[threadIdx.x];
                best_of<A, MAX>(a, ai, vs[threadIdx.x + s], is[threadIdx.x + s]);
                vs[threadIdx.x] = a;
                is[threadIdx.x] = ai;
            }
            __syncthreads();
        }
        if (threadIdx.x == 0) {
            if (out_value) out_value[r] = in[r * cols + is[0]];
            if (out_index) out_index[r] = is[0];
        }
        __syncthreads();
    }
}

#define KILN_REDUCE_EXTREMES(T)                                                                      \
    extern "C" __global__ void reduce_max_##T(const T* in, T* out, u64 rows, u64 cols) {             \
        row_extreme<T, true>(in, out, nullptr, rows, cols);                                          \
    }                                                                                                \
    extern "C" __global__ void reduce_min_##T(const T* in, T* out, u64 rows, u64 cols) {             \
        row_extreme<T, false>(in, out, nullptr, rows, cols);                                         \
    }                                                                                                \
    extern "C" __global__ void reduce_argmax_##T(const T* in, i64* out, u64 rows, u64 cols) {        \
        row_extreme<T, true>(in, nullptr, out, rows, cols);                                          \
    }                                                                                                \
    extern "C" __global__ void reduce_argmin_##T(const T* in, i64* out, u64 rows, u64 cols) {        \
        row_extreme<T, false>(in, nullptr, out, rows, cols);                                         \
    }

#define KILN_REDUCE(T, SUM_OUT)                                                                      \
    extern "C" __global__ void reduce_sum_##T(const T* in, SUM_OUT* out, u64 rows, u64 cols) {       \
        row_sum<T, SUM_OUT>(in, out, rows, cols);                                                    \
    }                                                                                                \
    KILN_REDUCE_EXTREMES(T)

KILN_REDUCE(f32, f32)
KILN_REDUCE(f64, f64)
KILN_REDUCE(i64, i64)
KILN_REDUCE(u32, i64)
KILN_REDUCE(u8, i64)

// Half types: the sum rounds once from its f64 accumulator (correctly, as the host's from_f64).
#define KILN_REDUCE_HALF(T)                                                                          \
    extern "C" __global__ void reduce_sum_##T(const T* in, T* out, u64 rows, u64 cols) {             \
        for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {                                         \
            double s = 0.0;                                                                          \
            for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += to_f32(in[r * cols + c]);      \
            s = block_reduce(s, [](double a, double b) { return a + b; });                           \
            if (threadIdx.x == 0) out[r] = from_f64<T>(s);                                           \
        }                                                                                            \
    }                                                                                                \
    KILN_REDUCE_EXTREMES(T)
KILN_REDUCE_HALF(f16)
KILN_REDUCE_HALF(bf16)
