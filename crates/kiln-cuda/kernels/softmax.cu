// Softmax and log-softmax over the last dim of a contiguous [rows, cols] input, one block per
// row: the maximum (a non-finite maximum counts as 0, as in kiln's composed form), then the sum
// of exp(x - max), then the outputs. `softmax_{dtype}` and `log_softmax_{dtype}`; halves
// compute in f32 and round once.

#define KILN_SOFTMAX_THREADS 256



template <typename A> __device__ __forceinline__ A neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double neg_inf<double>() { return __longlong_as_double(0xfff0000000000000ULL); }

template <typename A> __device__ __forceinline__ A sm_block_sum(A v) {
    __shared__ A s[KILN_SOFTMAX_THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) s[threadIdx.x] += s[threadIdx.x + k];
        __syncthreads();
    }
    A out = s[0];
    __syncthreads();
    return out;
}
template <typename A> __device__ __forceinline__ A sm_block_max(A v) {
    __shared__ A s[KILN_SOFTMAX_THREADS];
    s[threadIdx.x] = v;
    __syncthreads();
    for (unsigned k = blockDim.x / 2; k > 0; k >>= 1) {
        if (threadIdx.x < k) {
            A o = s[threadIdx.x + k];
            if (o != o || o > s[threadIdx.x]) s[threadIdx.x] = o;  // NaN propagates
        }
        __syncthreads();
    }
    A out = s[0];
    __syncthreads();
    return out;
}

template <typename T, typename A, bool LOG>
__device__ void softmax_rows(const T* in, T* out, u64 rows, u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* x = in + r * cols;
        T* y = out + r * cols;
        A m = neg_inf<A>();
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            A v = (A)load_acc(x[c]);
            if (v != v || v > m) m = v;
        }
        m = sm_block_max(m);
        if (isinf(m)) m = A(0);  // a row of -inf gives NaN, not a division by zero that hides
        A s = A(0);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += exp((A)load_acc(x[c]) - m);
        s = sm_block_sum(s);
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            A z = (A)load_acc(x[c]) - m;
            y[c] = store_acc<T>(LOG ? z - log(s) : exp(z) / s);
        }
    }
}

#define KILN_SOFTMAX(T, A)                                                                        \
    extern "C" __global__ void softmax_##T(const T* in, T* out, u64 rows, u64 cols) {             \
        softmax_rows<T, A, false>(in, out, rows, cols);                                           \
    }                                                                                             \
    extern "C" __global__ void log_softmax_##T(const T* in, T* out, u64 rows, u64 cols) {         \
        softmax_rows<T, A, true>(in, out, rows, cols);                                            \
    }
KILN_SOFTMAX(f32, float)
KILN_SOFTMAX(f64, double)
KILN_SOFTMAX(f16, float)
KILN_SOFTMAX(bf16, float)

// Cross-entropy per row of logits [rows, cols] against class indices: `cross_entropy_{T}_{I}`
// writes lse(x_r) - x_r[t_r] (the log-softmax at the class, negated, with the same shift and
// roundings as above); a class outside 0..cols sets *bad to its row + 1. Its gradient,
// `cross_entropy_backward_{T}_{I}`, writes (softmax(x_r)[c] - [c == t_r]) * g_r.
template <typename I> __device__ __forceinline__ bool class_ok(I k, u64 cols) { return k >= 0 && (u64)k < cols; }
template <> __device__ __forceinline__ bool class_ok<u32>(u32 k, u64 cols) { return (u64)k < cols; }

// The row's shift (its maximum; 0 when that is not finite) and sum of exp(x - shift).
template <typename T, typename A>
__device__ __forceinline__ void row_stats(const T* x, u64 cols, A& m, A& s) {
    m = neg_inf<A>();
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
        A v = (A)load_acc(x[c]);
        if (v != v || v > m) m = v;
    }
    m = sm_block_max(m);
    if (isinf(m)) m = A(0);
    s = A(0);
    for (u64 c = threadIdx.x; c < cols; c += blockDim.x) s += exp((A)load_acc(x[c]) - m);
    s = sm_block_sum(s);
}

template <typename T, typename A, typename I>
__device__ void cross_entropy_rows(const T* in, const I* t, T* out, u64 rows, u64 cols, u64* bad) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* x = in + r * cols;
        A m, s;
        row_stats<T, A>(x, cols, m, s);
        if (threadIdx.x == 0) {
            I k = t[r];
            if (!class_ok(k, cols)) {
                atomicMin(bad, r + 1);
            } else {
                A z = (A)load_acc(x[(u64)k]) - m;
                out[r] = store_acc<T>(-(z - log(s)));
            }
        }
    }
}

template <typename T, typename A, typename I>
__device__ void cross_entropy_backward_rows(const T* in, const I* t, const T* g, T* out, u64 rows, u64 cols) {
    for (u64 r = blockIdx.x; r < rows; r += gridDim.x) {
        const T* x = in + r * cols;
        T* y = out + r * cols;
        A m, s;
        row_stats<T, A>(x, cols, m, s);
        A gr = (A)load_acc(g[r]);
        u64 k = (u64)t[r];
        for (u64 c = threadIdx.x; c < cols; c += blockDim.x) {
            A p = exp((A)load_acc(x[c]) - m) / s;
            y[c] = store_acc<T>((p - (c == k ? A(1) : A(0))) * gr);
        }
    }
}

#define KILN_CROSS_ENTROPY(T, A, I)                                                                    \
    extern "C" __global__ void cross_entropy_##T##_##I(const T* x, const I* t, T* out, u64 rows,       \
                                                       u64 cols, u64* bad) {                           \
        cross_entropy_rows<T, A, I>(x, t, out, rows, cols, bad);                                       \
    }                                                                                                  \
    extern "C" __global__ void cross_entropy_backward_##T##_##I(const T* x, const I* t, const T* g,    \
                                                                T* out, u64 rows, u64 cols) {          \
        cross_entropy_backward_rows<T, A, I>(x, t, g, out, rows, cols);                                \
    }
#define KILN_CROSS_ENTROPY_BOTH(T, A) KILN_CROSS_ENTROPY(T, A, i64) KILN_CROSS_ENTROPY(T, A, u32)
KILN_CROSS_ENTROPY_BOTH(f32, float)
KILN_CROSS_ENTROPY_BOTH(f64, double)
KILN_CROSS_ENTROPY_BOTH(f16, float)
KILN_CROSS_ENTROPY_BOTH(bf16, float)
