// Shared by every kernel file (kiln-cuda prepends it): the strided view of a tensor, passed by
// value as a kernel argument so that a launch needs no host-to-device copy of dims and strides.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define KILN_MAX_RANK 8

typedef unsigned long long u64;

struct Strided {
    unsigned int rank;
    u64 offset;
    u64 dims[KILN_MAX_RANK];
    u64 strides[KILN_MAX_RANK];
};

// The storage index of logical (row-major) element i.
__device__ __forceinline__ u64 strided_index(const Strided& l, u64 i) {
    u64 at = l.offset;
    for (int d = (int)l.rank - 1; d >= 0; --d) {
        u64 n = l.dims[d];
        at += (i % n) * l.strides[d];
        i /= n;
    }
    return at;
}

// Grid-stride loop over n elements.
#define KILN_FOR_EACH(i, n) \
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (u64)blockDim.x * gridDim.x)

// Half types compute in f32 and round once, as kiln's other backends do.
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <typename T> __device__ __forceinline__ T from_f64(double x);
template <> __device__ __forceinline__ __half from_f64<__half>(double x) { return __double2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double x) { return __double2bfloat16(x); }

typedef float f32;
typedef double f64;
typedef __half f16;
typedef __nv_bfloat16 bf16;
typedef long long i64;
typedef unsigned int u32;
typedef unsigned char u8;

// Loads into the compute type (f32 and the half types as float, f64 as double) and stores back,
// rounding once: what every kernel that computes in a wider type than it stores uses.
__device__ __forceinline__ float load_acc(f32 x) { return x; }
__device__ __forceinline__ double load_acc(f64 x) { return x; }
__device__ __forceinline__ float load_acc(f16 x) { return __half2float(x); }
__device__ __forceinline__ float load_acc(bf16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T store_acc(float x) { return from_f32<T>(x); }
template <> __device__ __forceinline__ f32 store_acc<f32>(float x) { return x; }
template <typename T> __device__ __forceinline__ T store_acc(double x) { return x; }
