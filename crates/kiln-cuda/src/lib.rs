//! # kiln-cuda
//!
//! kiln's CUDA backend, in progress. What exists today is its foundation, checked on machines
//! without a GPU:
//!
//! - [`kernels`]: our kernels (`kernels/*.cu`), one file per op family, dtype variants stamped by
//!   macros as `extern "C"` kernels named `{family}_{op}_{dtype}` from the same names
//!   kiln-tensor's ops use.
//! - [`driver`]: finding the CUDA driver and a device, with an error that says what was
//!   searched when there is none (cudarc itself would panic).
//! - [`nvrtc`]: finding NVRTC (a CUDA toolkit or NVIDIA's pip wheels) and compiling a kernel
//!   file to PTX or CUBIN with the compiler's resource report. `cargo xtask kernels` compiles
//!   every file for compute_80, compute_90 and sm_90 and prints registers and spills per kernel.
//!
//! The `Backend` implementation (device, storage, launches, cuBLAS) is not written yet; until
//! it is, `kiln::device("cuda")` answers with an error that says so.
//!
//! ```
//! // Every kernel name is derived from the op's own name:
//! use kiln_tensor::{DType, UnaryOp};
//! assert_eq!(kiln_cuda::kernels::unary_kernel(UnaryOp::Exp, DType::BF16), "unary_exp_bf16");
//! ```

pub mod driver;
pub mod kernels;
pub mod nvrtc;
