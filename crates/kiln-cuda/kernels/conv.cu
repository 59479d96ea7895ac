// Convolution and pooling helpers over contiguous [N, C, H, W] inputs: `im2col_{dtype}`, its
// adjoint `col2im_{dtype}` and `max_pool2d_indices_{dtype}`, with the column order and the
// tie rules of `Backend::im2col` and `Backend::max_pool2d_indices` (kiln-tensor/src/backend.rs).
// col2im gathers instead of scattering: each input element sums the windows that read it, in
// kernel-row-major order, on one thread, so the result is deterministic and needs no atomics.

struct Window {
    u64 n, c, h, w;    // input
    u64 kh, kw;        // kernel
    u64 oh, ow;        // output
    i64 sh, sw, ph, pw, dh, dw;
};

// out[n][(c * KH + i) * KW + j][oy * OW + ox] = x[n][c][oy * sh - ph + i * dh][ox * sw - pw + j * dw]
template <typename T>
__device__ void im2col(const T* x, T* out, Window g) {
    u64 l = g.oh * g.ow, rows = g.c * g.kh * g.kw;
    KILN_FOR_EACH(e, g.n * rows * l) {
        u64 col = e % l, row = (e / l) % rows, n = e / (l * rows);
        u64 j = row % g.kw, i = (row / g.kw) % g.kh, c = row / (g.kw * g.kh);
        i64 y = (i64)(col / g.ow) * g.sh - g.ph + (i64)i * g.dh;
        i64 xx = (i64)(col % g.ow) * g.sw - g.pw + (i64)j * g.dw;
        bool inside = y >= 0 && y < (i64)g.h && xx >= 0 && xx < (i64)g.w;
        out[e] = inside ? x[((n * g.c + c) * g.h + (u64)y) * g.w + (u64)xx] : T(0.0f);
    }
}

// The sum, over every (i, j) in kernel order, of the column entries that read input (y, x).
template <typename T, typename A>
__device__ void col2im(const T* cols, T* out, Window g) {
    u64 l = g.oh * g.ow;
    KILN_FOR_EACH(e, g.n * g.c * g.h * g.w) {
        i64 xx = (i64)(e % g.w), y = (i64)((e / g.w) % g.h);
        u64 plane = e / (g.h * g.w);  // n * C + c
        const T* base = cols + plane * g.kh * g.kw * l;
        A s = A(0);
        for (u64 i = 0; i < g.kh; ++i) {
            i64 ty = y + g.ph - (i64)i * g.dh;
            if (ty < 0 || ty % g.sh != 0 || ty / g.sh >= (i64)g.oh) continue;
            for (u64 j = 0; j < g.kw; ++j) {
                i64 tx = xx + g.pw - (i64)j * g.dw;
                if (tx < 0 || tx % g.sw != 0 || tx / g.sw >= (i64)g.ow) continue;
                s += (A)load_acc(base[(i * g.kw + j) * l + (u64)(ty / g.sh) * g.ow + (u64)(tx / g.sw)]);
            }
        }
        out[e] = store_acc<T>(s);
    }
}

// The index within its H * W plane of each window's maximum: the first in window order on ties,
// the first NaN over any number, padding never.
template <typename T>
__device__ void max_pool_indices(const T* x, i64* out, Window g) {
    KILN_FOR_EACH(e, g.n * g.c * g.oh * g.ow) {
        u64 ox = e % g.ow, oy = (e / g.ow) % g.oh, plane = e / (g.oh * g.ow);
        const T* p = x + plane * g.h * g.w;
        bool found = false;
        double best = 0.0;
        i64 at = 0;
        for (u64 i = 0; i < g.kh; ++i) {
            i64 y = (i64)oy * g.sh - g.ph + (i64)i * g.dh;
            if (y < 0 || y >= (i64)g.h) continue;
            for (u64 j = 0; j < g.kw; ++j) {
                i64 xx = (i64)ox * g.sw - g.pw + (i64)j * g.dw;
                if (xx < 0 || xx >= (i64)g.w) continue;
                double v = (double)load_acc(p[(u64)y * g.w + (u64)xx]);
                bool take = !found || (best == best && (v != v || v > best));
                if (take) { best = v; at = y * (i64)g.w + xx; found = true; }
            }
        }
        out[e] = at;
    }
}

#define KILN_CONV(T, A)                                                                            \
    extern "C" __global__ void im2col_##T(const T* x, T* out, Window g) { im2col<T>(x, out, g); } \
    extern "C" __global__ void col2im_##T(const T* cols, T* out, Window g) { col2im<T, A>(cols, out, g); } \
    extern "C" __global__ void max_pool2d_indices_##T(const T* x, i64* out, Window g) {            \
        max_pool_indices<T>(x, out, g);                                                            \
    }
KILN_CONV(f32, float)
KILN_CONV(f64, double)
KILN_CONV(f16, float)
KILN_CONV(bf16, float)
