// Element-wise functions of one float argument: `unary_{op}_{dtype}`, op names as
// `UnaryOp::name()`, semantics as `UnaryOp::map` (kiln-tensor/src/op.rs).

template <typename T> __device__ __forceinline__ T k_sigmoid(T x) {
    // Two branches keep exp from overflowing for large |x|.
    if (x >= T(0)) return T(1) / (T(1) + exp(-x));
    T e = exp(x);
    return e / (T(1) + e);
}
template <typename T> __device__ __forceinline__ T k_softplus(T x) {
    return x > T(20) ? x : log1p(exp(x));
}
template <typename T> __device__ __forceinline__ T k_gelu_tanh(T x) {
    T inner = T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
    return T(0.5) * x * (T(1) + tanh(inner));
}
template <typename T> __device__ __forceinline__ T k_sign(T x) {
    return x > T(0) ? T(1) : (x < T(0) ? T(-1) : x);  // keeps 0, -0 and NaN
}
template <typename T> __device__ __forceinline__ T k_relu(T x) {
    return (x > T(0) || isnan(x)) ? x : T(0);  // NaN stays NaN, as in PyTorch
}

#define KILN_UNARY_OPS(X)                                              \
    X(neg, -x)                                                         \
    X(abs, fabs(x))                                                    \
    X(exp, exp(x))                                                     \
    X(log, log(x))                                                     \
    X(sqrt, sqrt(x))                                                   \
    X(recip, C(1) / x)                                                 \
    X(sin, sin(x))                                                     \
    X(cos, cos(x))                                                     \
    X(tanh, tanh(x))                                                   \
    X(sigmoid, k_sigmoid(x))                                           \
    X(relu, k_relu(x))                                                 \
    X(gelu, C(0.5) * x * (C(1) + erf(x * C(0.7071067811865476))))      \
    X(gelu_tanh, k_gelu_tanh(x))                                       \
    X(silu, x * k_sigmoid(x))                                          \
    X(softplus, k_softplus(x))                                         \
    X(sign, k_sign(x))                                                 \
    X(erf, erf(x))

// f32 and f64 compute in their own type; f16 and bf16 through f32.
#define KILN_UNARY_NATIVE(NAME, EXPR, T)                                                        \
    extern "C" __global__ void unary_##NAME##_##T(const T* in, Strided l, T* out, u64 n) {     \
        typedef T C;                                                                            \
        KILN_FOR_EACH(i, n) { T x = in[strided_index(l, i)]; out[i] = (EXPR); }                 \
    }
#define KILN_UNARY_HALF(NAME, EXPR, T)                                                          \
    extern "C" __global__ void unary_##NAME##_##T(const T* in, Strided l, T* out, u64 n) {     \
        typedef float C;                                                                        \
        KILN_FOR_EACH(i, n) { float x = to_f32(in[strided_index(l, i)]); out[i] = from_f32<T>(EXPR); } \
    }
#define KILN_UNARY_ALL(NAME, EXPR)       \
    KILN_UNARY_NATIVE(NAME, EXPR, f32)   \
    KILN_UNARY_NATIVE(NAME, EXPR, f64)   \
    KILN_UNARY_HALF(NAME, EXPR, f16)     \
    KILN_UNARY_HALF(NAME, EXPR, bf16)

KILN_UNARY_OPS(KILN_UNARY_ALL)
