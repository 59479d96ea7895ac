//! The primitive operations a backend implements, each defined once: its name (shared with
//! kernels and error messages) and its scalar semantics (shared by the CPU kernels and the
//! conformance oracle). Gradients live in `autograd/rules.rs`.

/// Element-wise functions of one float argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum UnaryOp {
    Neg,
    Abs,
    Exp,
    Log,
    Sqrt,
    Recip,
    Sin,
    Cos,
    Tanh,
    Sigmoid,
    Relu,
    /// GELU with the exact erf form.
    Gelu,
    /// GELU with the tanh approximation.
    GeluTanh,
    Silu,
    Softplus,
    Sign,
    Erf,
}

/// Functions that backends call with a concrete closure for one [`UnaryOp`]/[`BinaryOp`]; the
/// match over ops happens once per kernel launch, not once per element.
pub trait MapFn<T> {
    /// What the kernel returns.
    type Out;
    /// Runs the kernel with `f` as the element function.
    fn call<F: Fn(T) -> T + Send + Sync + Copy>(self, f: F) -> Self::Out;
}

/// Like [`MapFn`] for two arguments.
pub trait ZipFn<T, R> {
    /// What the kernel returns.
    type Out;
    /// Runs the kernel with `f` as the element function.
    fn call<F: Fn(T, T) -> R + Send + Sync + Copy>(self, f: F) -> Self::Out;
}

/// Floating-point element types the scalar semantics are written for (f32 and f64; f16 and bf16
/// compute through f32).
pub trait Float:
    Copy
    + Send
    + Sync
    + PartialOrd
    + std::ops::Neg<Output = Self>
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + 'static
{
    /// Converts an f64 constant.
    fn c(v: f64) -> Self;
    #[allow(missing_docs)]
    fn exp(self) -> Self;
    #[allow(missing_docs)]
    fn ln(self) -> Self;
    #[allow(missing_docs)]
    fn sqrt(self) -> Self;
    #[allow(missing_docs)]
    fn sin(self) -> Self;
    #[allow(missing_docs)]
    fn cos(self) -> Self;
    #[allow(missing_docs)]
    fn tanh(self) -> Self;
    #[allow(missing_docs)]
    fn erf(self) -> Self;
    #[allow(missing_docs)]
    fn abs(self) -> Self;
    #[allow(missing_docs)]
    fn powf(self, e: Self) -> Self;
    #[allow(missing_docs)]
    fn ln_1p(self) -> Self;
    #[allow(missing_docs)]
    fn is_nan(self) -> bool;
}

macro_rules! float_impl {
    ($t:ty, $erf:path) => {
        impl Float for $t {
            #[inline(always)]
            fn c(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline(always)]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline(always)]
            fn sin(self) -> Self {
                <$t>::sin(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                <$t>::cos(self)
            }
            #[inline(always)]
            fn tanh(self) -> Self {
                <$t>::tanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline(always)]
            fn powf(self, e: Self) -> Self {
                <$t>::powf(self, e)
            }
            #[inline(always)]
            fn ln_1p(self) -> Self {
                <$t>::ln_1p(self)
            }
            #[inline(always)]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
            }
        }
    };
}
float_impl!(f32, libm::erff);
float_impl!(f64, libm::erf);

#[inline(always)]
fn sigmoid<T: Float>(x: T) -> T {
    // Two branches keep exp from overflowing for large |x|.
    if x >= T::c(0.0) {
        T::c(1.0) / (T::c(1.0) + (-x).exp())
    } else {
        let e = x.exp();
        e / (T::c(1.0) + e)
    }
}

#[inline(always)]
fn softplus<T: Float>(x: T) -> T {
    // PyTorch's threshold of 20: above it softplus(x) == x to working precision.
    if x > T::c(20.0) {
        x
    } else {
        x.exp().ln_1p()
    }
}

#[inline(always)]
fn gelu_tanh<T: Float>(x: T) -> T {
    let inner = T::c(0.797_884_560_802_865_4) * (x + T::c(0.044715) * x * x * x);
    T::c(0.5) * x * (T::c(1.0) + inner.tanh())
}

#[inline(always)]
fn sign<T: Float>(x: T) -> T {
    if x > T::c(0.0) {
        T::c(1.0)
    } else if x < T::c(0.0) {
        T::c(-1.0)
    } else {
        x // keeps 0, -0 and NaN
    }
}

impl UnaryOp {
    /// Every unary op.
    pub const ALL: [UnaryOp; 17] = [
        UnaryOp::Neg,
        UnaryOp::Abs,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Sin,
        UnaryOp::Cos,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Silu,
        UnaryOp::Softplus,
        UnaryOp::Sign,
        UnaryOp::Erf,
    ];

    /// The op's name, as used by tensor methods, kernels and error messages.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Recip => "recip",
            UnaryOp::Sin => "sin",
            UnaryOp::Cos => "cos",
            UnaryOp::Tanh => "tanh",
            UnaryOp::Sigmoid => "sigmoid",
            UnaryOp::Relu => "relu",
            UnaryOp::Gelu => "gelu",
            UnaryOp::GeluTanh => "gelu_tanh",
            UnaryOp::Silu => "silu",
            UnaryOp::Softplus => "softplus",
            UnaryOp::Sign => "sign",
            UnaryOp::Erf => "erf",
        }
    }

    /// Where the op is smooth and finite, as `(low, high)`: what tests draw inputs from.
    pub fn test_domain(self) -> (f64, f64) {
        match self {
            UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Recip => (0.2, 4.0),
            _ => (-3.0, 3.0),
        }
    }

    /// Calls `k` with this op's element function for `T`.
    #[inline]
    pub fn map<T: Float, K: MapFn<T>>(self, k: K) -> K::Out {
        let zero = T::c(0.0);
        match self {
            UnaryOp::Neg => k.call(|x: T| -x),
            UnaryOp::Abs => k.call(|x: T| x.abs()),
            UnaryOp::Exp => k.call(|x: T| x.exp()),
            UnaryOp::Log => k.call(|x: T| x.ln()),
            UnaryOp::Sqrt => k.call(|x: T| x.sqrt()),
            UnaryOp::Recip => k.call(|x: T| T::c(1.0) / x),
            UnaryOp::Sin => k.call(|x: T| x.sin()),
            UnaryOp::Cos => k.call(|x: T| x.cos()),
            UnaryOp::Tanh => k.call(|x: T| x.tanh()),
            UnaryOp::Sigmoid => k.call(sigmoid),
            // NaN stays NaN, as in PyTorch.
            UnaryOp::Relu => k.call(move |x: T| if x > zero || x.is_nan() { x } else { zero }),
            UnaryOp::Gelu => {
                k.call(|x: T| T::c(0.5) * x * (T::c(1.0) + (x * T::c(std::f64::consts::FRAC_1_SQRT_2)).erf()))
            }
            UnaryOp::GeluTanh => k.call(gelu_tanh),
            UnaryOp::Silu => k.call(|x: T| x * sigmoid(x)),
            UnaryOp::Softplus => k.call(softplus),
            UnaryOp::Sign => k.call(sign),
            UnaryOp::Erf => k.call(|x: T| x.erf()),
        }
    }

    /// The op applied to one value (slow: for oracles and tests).
    pub fn eval<T: Float>(self, x: T) -> T {
        struct One<T>(T);
        impl<T: Float> MapFn<T> for One<T> {
            type Out = T;
            fn call<F: Fn(T) -> T>(self, f: F) -> T {
                f(self.0)
            }
        }
        self.map(One(x))
    }
}

/// Element-wise functions of two arguments of the same dtype, broadcast NumPy-style.
/// Comparisons return a `u8` mask (1 where true).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Maximum,
    Minimum,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    /// Every binary op.
    pub const ALL: [BinaryOp; 13] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Maximum,
        BinaryOp::Minimum,
        BinaryOp::Eq,
        BinaryOp::Ne,
        BinaryOp::Lt,
        BinaryOp::Le,
        BinaryOp::Gt,
        BinaryOp::Ge,
    ];

    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
        }
    }

    /// True for the comparisons, whose result is a `u8` mask.
    pub fn is_comparison(self) -> bool {
        matches!(self, BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge)
    }

    /// True when integer dtypes are accepted (everything but `pow`).
    pub fn supports_int(self) -> bool {
        self != BinaryOp::Pow
    }

    /// Calls `k` with this arithmetic op's float function (`None` for comparisons).
    #[inline]
    pub fn zip_float<T: Float, K: ZipFn<T, T>>(self, k: K) -> Option<K::Out> {
        Some(match self {
            BinaryOp::Add => k.call(|a: T, b: T| a + b),
            BinaryOp::Sub => k.call(|a: T, b: T| a - b),
            BinaryOp::Mul => k.call(|a: T, b: T| a * b),
            BinaryOp::Div => k.call(|a: T, b: T| a / b),
            BinaryOp::Pow => k.call(|a: T, b: T| a.powf(b)),
            // NaN propagates, as in PyTorch's maximum/minimum.
            BinaryOp::Maximum => k.call(|a: T, b: T| if a.is_nan() || a > b { a } else { b }),
            BinaryOp::Minimum => k.call(|a: T, b: T| if a.is_nan() || a < b { a } else { b }),
            _ => return None,
        })
    }

    /// Calls `k` with this comparison's function (`None` for arithmetic ops).
    #[inline]
    pub fn zip_cmp<T: PartialOrd + Copy + Send + Sync, K: ZipFn<T, u8>>(self, k: K) -> Option<K::Out> {
        Some(match self {
            BinaryOp::Eq => k.call(|a: T, b: T| (a == b) as u8),
            BinaryOp::Ne => k.call(|a: T, b: T| (a != b) as u8),
            BinaryOp::Lt => k.call(|a: T, b: T| (a < b) as u8),
            BinaryOp::Le => k.call(|a: T, b: T| (a <= b) as u8),
            BinaryOp::Gt => k.call(|a: T, b: T| (a > b) as u8),
            BinaryOp::Ge => k.call(|a: T, b: T| (a >= b) as u8),
            _ => return None,
        })
    }

    /// The op on two f64 values; comparisons give 0.0 or 1.0 (slow: for oracles and tests).
    pub fn eval_f64(self, a: f64, b: f64) -> f64 {
        struct Two(f64, f64);
        impl ZipFn<f64, f64> for Two {
            type Out = f64;
            fn call<F: Fn(f64, f64) -> f64>(self, f: F) -> f64 {
                f(self.0, self.1)
            }
        }
        impl ZipFn<f64, u8> for Two {
            type Out = f64;
            fn call<F: Fn(f64, f64) -> u8>(self, f: F) -> f64 {
                f(self.0, self.1) as f64
            }
        }
        match self.zip_float::<f64, _>(Two(a, b)) {
            Some(v) => v,
            None => self.zip_cmp::<f64, _>(Two(a, b)).unwrap_or(f64::NAN),
        }
    }
}

/// Reductions over a set of dims. The result keeps the reduced dims with size 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReduceOp {
    /// Sum (0 over an empty set).
    Sum,
    /// Maximum (NaN if any element is NaN; error over an empty set).
    Max,
    /// Minimum (NaN if any element is NaN; error over an empty set).
    Min,
    /// Index of the first maximum along one dim, as i64.
    ArgMax,
    /// Index of the first minimum along one dim, as i64.
    ArgMin,
}

impl ReduceOp {
    /// The op's name.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
            ReduceOp::Min => "min",
            ReduceOp::ArgMax => "argmax",
            ReduceOp::ArgMin => "argmin",
        }
    }
    /// True for argmax/argmin, which reduce exactly one dim and return i64.
    pub fn is_arg(self) -> bool {
        matches!(self, ReduceOp::ArgMax | ReduceOp::ArgMin)
    }
}
