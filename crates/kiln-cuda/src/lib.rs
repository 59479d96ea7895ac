//! # kiln-cuda
//!
//! kiln's CUDA backend: [`CudaBackend`] implements kiln's `Backend` trait with our own kernels
//! (`kernels/*.cu`, compiled by NVRTC at first use for the device's exact architecture and
//! cached on disk) and cuBLAS for matmul. It builds and starts on machines without CUDA: the
//! driver, NVRTC and cuBLAS are found at run time, and their absence is an error that says what
//! was searched, never a panic.
//!
//! - [`kernels`]: the kernel sources, one file per op family, dtype variants stamped by macros
//!   as `extern "C"` kernels named `{family}_{op}_{dtype}` from the same names kiln-tensor's
//!   ops use. `cargo xtask kernels` compiles every one for compute_80, compute_90 and sm_90 and
//!   prints registers and spills.
//! - [`driver`] and [`nvrtc`]: finding the driver, a device and NVRTC.
//! - [`CudaBackend`]: one device and one stream; storage is a byte buffer plus its dtype
//!   ([`CudaStorage`]); every op is a kernel launch or a cuBLAS call; the fused overrides
//!   (Adam, softmax, im2col, col2im, max-pool argmax) are kernels too.
//!
//! ```
//! // Every kernel name is derived from the op's own name:
//! use kiln_tensor::{DType, UnaryOp};
//! assert_eq!(kiln_cuda::kernels::unary_kernel(UnaryOp::Exp, DType::BF16), "unary_exp_bf16");
//!
//! // Opening a device fails with a message, not a panic, where there is none:
//! match kiln_cuda::device(0) {
//!     Ok(dev) => assert_eq!(dev.location(), "cuda:0"),
//!     Err(e) => assert!(e.to_string().contains("CUDA")),
//! }
//! ```

mod backend;
pub mod cache;
pub mod driver;
mod fused;
mod indexing;
pub mod kernels;
mod matmul;
pub mod nvrtc;
mod ops;
mod storage;

pub use backend::CudaBackend;
pub use storage::CudaStorage;

/// The device `cuda:ordinal` as a kiln [`kiln_tensor::Device`]: opened once per process, so
/// that every caller shares one context, stream, kernel modules and cuBLAS handle.
pub fn device(ordinal: usize) -> kiln_tensor::Result<kiln_tensor::Device> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static OPEN: OnceLock<Mutex<HashMap<usize, kiln_tensor::Device>>> = OnceLock::new();
    let mut open = OPEN.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dev) = open.get(&ordinal) {
        return Ok(dev.clone());
    }
    let dev = kiln_tensor::Device::new(CudaBackend::new(ordinal)?);
    open.insert(ordinal, dev.clone());
    Ok(dev)
}
