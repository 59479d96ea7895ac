// Element-wise functions of two arguments of one dtype, both strided (broadcast dims have
// stride 0): `binary_{op}_{dtype}`, op names as `BinaryOp::name()`. Comparisons write a u8 mask.
// Integer division by zero is checked by the host before launch; pow is float-only.

template <typename T> __device__ __forceinline__ bool k_isnan(T x) { return x != x; }
template <typename T> __device__ __forceinline__ T k_max(T a, T b) { return (k_isnan(a) || a > b) ? a : b; }
template <typename T> __device__ __forceinline__ T k_min(T a, T b) { return (k_isnan(a) || a < b) ? a : b; }

#define KILN_BINARY_ARITH(X, T)         \
    X(add, a + b, T)                    \
    X(sub, a - b, T)                    \
    X(mul, a * b, T)                    \
    X(div, a / b, T)                    \
    X(maximum, k_max(a, b), T)          \
    X(minimum, k_min(a, b), T)
#define KILN_BINARY_CMP(X, T)           \
    X(eq, a == b, T)                    \
    X(ne, a != b, T)                    \
    X(lt, a < b, T)                     \
    X(le, a <= b, T)                    \
    X(gt, a > b, T)                     \
    X(ge, a >= b, T)

#define KILN_BINARY_KERNEL(NAME, EXPR, T, OUT, LOAD, STORE)                                        \
    extern "C" __global__ void binary_##NAME##_##T(const T* x, Strided lx, const T* y, Strided ly, \
                                                    OUT* out, u64 n) {                            \
        KILN_FOR_EACH(i, n) {                                                                      \
            auto a = LOAD(x[strided_index(lx, i)]);                                                \
            auto b = LOAD(y[strided_index(ly, i)]);                                                \
            out[i] = STORE(EXPR);                                                                  \
        }                                                                                          \
    }
#define KILN_SAME(v) (v)
#define KILN_MASK(v) ((u8)((v) ? 1 : 0))
#define KILN_ARITH_NATIVE(NAME, EXPR, T) KILN_BINARY_KERNEL(NAME, EXPR, T, T, KILN_SAME, KILN_SAME)
#define KILN_ARITH_HALF(NAME, EXPR, T) KILN_BINARY_KERNEL(NAME, EXPR, T, T, to_f32, from_f32<T>)
#define KILN_CMP_NATIVE(NAME, EXPR, T) KILN_BINARY_KERNEL(NAME, EXPR, T, u8, KILN_SAME, KILN_MASK)
#define KILN_CMP_HALF(NAME, EXPR, T) KILN_BINARY_KERNEL(NAME, EXPR, T, u8, to_f32, KILN_MASK)

KILN_BINARY_ARITH(KILN_ARITH_NATIVE, f32)
KILN_BINARY_ARITH(KILN_ARITH_NATIVE, f64)
KILN_BINARY_ARITH(KILN_ARITH_HALF, f16)
KILN_BINARY_ARITH(KILN_ARITH_HALF, bf16)
KILN_BINARY_CMP(KILN_CMP_NATIVE, f32)
KILN_BINARY_CMP(KILN_CMP_NATIVE, f64)
KILN_BINARY_CMP(KILN_CMP_HALF, f16)
KILN_BINARY_CMP(KILN_CMP_HALF, bf16)

// Integers: add, sub and mul wrap (two's complement, as in PyTorch), computed unsigned so that
// overflow is defined; division truncates, and MIN / -1 wraps instead of trapping.
template <typename T, typename U> __device__ __forceinline__ T k_int_div(T a, T b) {
    return (T(-1) < T(0) && b == T(-1)) ? (T)(U(0) - (U)a) : a / b;
}
#define KILN_BINARY_INT(X, T, U)                      \
    X(add, (T)((U)a + (U)b), T)                       \
    X(sub, (T)((U)a - (U)b), T)                       \
    X(mul, (T)((U)a * (U)b), T)                       \
    X(div, (k_int_div<T, U>(a, b)), T)                \
    X(maximum, (a > b ? a : b), T)                    \
    X(minimum, (a < b ? a : b), T)
#define KILN_INT_NATIVE(NAME, EXPR, T) KILN_BINARY_KERNEL(NAME, EXPR, T, T, KILN_SAME, KILN_SAME)
KILN_BINARY_INT(KILN_INT_NATIVE, i64, u64)
KILN_BINARY_INT(KILN_INT_NATIVE, u32, u32)
KILN_BINARY_INT(KILN_INT_NATIVE, u8, u32)
KILN_BINARY_CMP(KILN_CMP_NATIVE, i64)
KILN_BINARY_CMP(KILN_CMP_NATIVE, u32)
KILN_BINARY_CMP(KILN_CMP_NATIVE, u8)

// pow: floats only.
KILN_ARITH_NATIVE(pow, pow(a, b), f32)
KILN_ARITH_NATIVE(pow, pow(a, b), f64)
KILN_ARITH_HALF(pow, powf(a, b), f16)
KILN_ARITH_HALF(pow, powf(a, b), bf16)
