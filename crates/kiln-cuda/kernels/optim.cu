// The Adam/AdamW update in one pass: `adam_{dtype}` over contiguous parameter, gradient and
// moments, writing the new three. The arithmetic is `AdamStep::apply` (kiln-tensor/src/fused.rs)
// op for op, with round-to-nearest intrinsics that the compiler may not fuse into FMAs, so the
// result is the composed form's, bit for bit; halves round to their type after every op, as the
// composed form on half tensors does. The constants k[8] are `AdamStep::prepare`'s, as doubles.

struct AdamArgs {
    double k[8];  // decay, wd, b1, 1-b1, b2, 1-b2, sqrt(bc2), lr/bc1
    double eps;
    int decoupled;
    int has_weight_decay;
};

struct OpsF32 {
    typedef float T;
    static __device__ T c(double x) { return (float)x; }
    static __device__ T add(T a, T b) { return __fadd_rn(a, b); }
    static __device__ T sub(T a, T b) { return __fsub_rn(a, b); }
    static __device__ T mul(T a, T b) { return __fmul_rn(a, b); }
    static __device__ T div(T a, T b) { return __fdiv_rn(a, b); }
    static __device__ T sqrt(T a) { return __fsqrt_rn(a); }
};
struct OpsF64 {
    typedef double T;
    static __device__ T c(double x) { return x; }
    static __device__ T add(T a, T b) { return __dadd_rn(a, b); }
    static __device__ T sub(T a, T b) { return __dsub_rn(a, b); }
    static __device__ T mul(T a, T b) { return __dmul_rn(a, b); }
    static __device__ T div(T a, T b) { return __ddiv_rn(a, b); }
    static __device__ T sqrt(T a) { return __dsqrt_rn(a); }
};
// A half type: each op in f32, rounded to H.
template <typename H> struct OpsHalf {
    typedef float T;
    static __device__ T r(float x) { return to_f32(from_f32<H>(x)); }
    static __device__ T c(double x) { return r((float)x); }
    static __device__ T add(T a, T b) { return r(__fadd_rn(a, b)); }
    static __device__ T sub(T a, T b) { return r(__fsub_rn(a, b)); }
    static __device__ T mul(T a, T b) { return r(__fmul_rn(a, b)); }
    static __device__ T div(T a, T b) { return r(__fdiv_rn(a, b)); }
    static __device__ T sqrt(T a) { return r(__fsqrt_rn(a)); }
};



template <typename S, typename O>
__device__ void adam(const S* p_in, const S* g_in, const S* m_in, const S* v_in, S* p_out, S* m_out, S* v_out,
                     AdamArgs a, u64 n) {
    typedef typename O::T T;
    T decay = O::c(a.k[0]), wd = O::c(a.k[1]), b1 = O::c(a.k[2]), one_b1 = O::c(a.k[3]);
    T b2 = O::c(a.k[4]), one_b2 = O::c(a.k[5]), sqrt_bc2 = O::c(a.k[6]), step = O::c(a.k[7]), eps = O::c(a.eps);
    KILN_FOR_EACH(i, n) {
        T p = load_acc(p_in[i]), g = load_acc(g_in[i]), m = load_acc(m_in[i]), v = load_acc(v_in[i]);
        if (a.decoupled && a.has_weight_decay) p = O::mul(p, decay);
        if (!a.decoupled && a.has_weight_decay) g = O::add(g, O::mul(p, wd));
        m = O::add(O::mul(m, b1), O::mul(g, one_b1));
        v = O::add(O::mul(v, b2), O::mul(O::mul(g, g), one_b2));
        T denom = O::add(O::div(O::sqrt(v), sqrt_bc2), eps);
        p = O::sub(p, O::mul(O::div(m, denom), step));
        p_out[i] = store_acc<S>(p);
        m_out[i] = store_acc<S>(m);
        v_out[i] = store_acc<S>(v);
    }
}

#define KILN_ADAM(S, OPS)                                                                               \
    extern "C" __global__ void adam_##S(const S* p, const S* g, const S* m, const S* v, S* p_out,        \
                                        S* m_out, S* v_out, AdamArgs a, u64 n) {                         \
        adam<S, OPS>(p, g, m, v, p_out, m_out, v_out, a, n);                                            \
    }
KILN_ADAM(f32, OpsF32)
KILN_ADAM(f64, OpsF64)
KILN_ADAM(f16, OpsHalf<f16>)
KILN_ADAM(bf16, OpsHalf<bf16>)

// The SGD update in one pass: `sgd_{dtype}` over contiguous parameter, gradient and momentum
// buffer, writing the new parameter and buffer; `SgdStep::apply` op for op (kiln-tensor's
// fused.rs). k = weight_decay, momentum, 1 - dampening, lr, already rounded to the dtype.
struct SgdArgs {
    double k[4];
    int first;
    int nesterov;
    int has_weight_decay;
    int has_momentum;
};

template <typename S, typename O>
__device__ void sgd(const S* p_in, const S* g_in, const S* b_in, S* p_out, S* b_out, SgdArgs a, u64 n) {
    typedef typename O::T T;
    T wd = O::c(a.k[0]), momentum = O::c(a.k[1]), undamped = O::c(a.k[2]), lr = O::c(a.k[3]);
    KILN_FOR_EACH(i, n) {
        T p = load_acc(p_in[i]), g = load_acc(g_in[i]);
        if (a.has_weight_decay) g = O::add(g, O::mul(p, wd));
        T buf = g;
        if (a.has_momentum) {
            buf = a.first ? g : O::add(O::mul(load_acc(b_in[i]), momentum), O::mul(g, undamped));
            g = a.nesterov ? O::add(g, O::mul(buf, momentum)) : buf;
        }
        p_out[i] = store_acc<S>(O::sub(p, O::mul(g, lr)));
        b_out[i] = store_acc<S>(buf);
    }
}

#define KILN_SGD(S, OPS)                                                                                \
    extern "C" __global__ void sgd_##S(const S* p, const S* g, const S* b, S* p_out, S* b_out,          \
                                       SgdArgs a, u64 n) {                                             \
        sgd<S, OPS>(p, g, b, p_out, b_out, a, n);                                                       \
    }
KILN_SGD(f32, OpsF32)
KILN_SGD(f64, OpsF64)
KILN_SGD(f16, OpsHalf<f16>)
KILN_SGD(bf16, OpsHalf<bf16>)
