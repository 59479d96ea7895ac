//! [`CudaBackend`]: one device, one stream, the kernel modules compiled so far, and a cuBLAS
//! handle; plus the few helpers every op uses (allocation, launch, error wording).
//!
//! All work goes to one stream, so the order of launches is the order of kiln's calls and no
//! event tracking is needed (cudarc's per-buffer events are switched off before the first
//! allocation). Allocation is stream-ordered (`cuMemAllocAsync` from the driver's pool), so
//! freeing a temporary never waits for the device.
#![allow(unsafe_code)]

use crate::storage::{CudaStorage, Scalar};
use crate::{cache, driver, kernels, nvrtc};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError, LaunchConfig,
};
use kiln_tensor::{DType, Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Threads per block for the grid-stride kernels, and for the row kernels (`reduce.cu` and
/// `softmax.cu` size their shared memory for exactly this many).
pub(crate) const THREADS: u32 = 256;

/// A CUDA device as a kiln backend: `kiln::device("cuda:0")`, or
/// `kiln_tensor::Device::new(CudaBackend::new(0)?)`.
pub struct CudaBackend {
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) info: driver::DeviceInfo,
    /// `sm_XY` of this device: kernels compile to a CUBIN for exactly it.
    arch: String,
    multiprocessors: u32,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    functions: Mutex<HashMap<String, CudaFunction>>,
    pub(crate) blas: Mutex<Option<cudarc::cublas::CudaBlas>>,
    pub(crate) tf32: AtomicBool,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaBackend(cuda:{}, {}, {})", self.info.ordinal, self.info.name, self.arch)
    }
}

impl CudaBackend {
    /// Opens `cuda:ordinal`. Fails with an error that says what was searched or found when there
    /// is no driver, no device, or no such ordinal; never panics.
    ///
    /// TF32 tensor-core matmuls are off unless `KILN_CUDA_TF32=1` (see [`CudaBackend::set_tf32`]).
    pub fn new(ordinal: usize) -> Result<CudaBackend> {
        let info = driver::probe(ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| cuda_error(format!("cuda:{ordinal}: {}", describe(&e))))?;
        // SAFETY: nothing has been allocated in this context by kiln yet, and kiln uses one
        // stream, so cudarc's cross-stream events are not needed.
        unsafe { ctx.disable_event_tracking() };
        let (major, minor) =
            ctx.compute_capability().map_err(|e| cuda_error(format!("cuda:{ordinal}: {}", describe(&e))))?;
        let multiprocessors = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .unwrap_or(1)
            .max(1) as u32;
        let tf32 = std::env::var("KILN_CUDA_TF32").is_ok_and(|v| v == "1");
        keep_freed_memory(&ctx);
        Ok(CudaBackend {
            stream: ctx.default_stream(),
            info,
            arch: format!("sm_{major}{minor}"),
            multiprocessors,
            modules: Mutex::new(HashMap::new()),
            functions: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
            tf32: AtomicBool::new(tf32),
        })
    }

    /// The device's name as the driver gives it (`NVIDIA H200`).
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The architecture the kernels are compiled for (`sm_90` on an H100 or H200).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Lets f32 matmuls use TF32 tensor cores (about 10 mantissa bits per product, as PyTorch's
    /// `allow_tf32`). Off by default, so f32 results match the CPU's to f32 rounding.
    pub fn set_tf32(&self, on: bool) {
        self.tf32.store(on, Ordering::Relaxed);
    }

    /// Whether f32 matmuls may use TF32.
    pub fn tf32(&self) -> bool {
        self.tf32.load(Ordering::Relaxed)
    }

    /// New uninitialised storage of `len` elements (kernels overwrite every element).
    pub(crate) fn alloc(&self, op: &'static str, dtype: DType, len: usize) -> Result<CudaStorage> {
        // A zero-byte request is not portable across drivers: every buffer has at least one element.
        let bytes = len.max(1) * dtype.size_in_bytes();
        // SAFETY: the buffer is uninitialised; every caller writes all `len` elements before any read.
        let buf = unsafe { self.stream.alloc::<u8>(bytes) }.map_err(|e| self.oom_or(op, bytes, e))?;
        Ok(CudaStorage { buf, dtype, len })
    }

    /// The error for a failed allocation: out-of-memory names what was asked and what is free.
    pub(crate) fn oom_or(&self, op: &'static str, bytes: usize, e: DriverError) -> Error {
        use cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY;
        if e.0 == CUDA_ERROR_OUT_OF_MEMORY {
            let free = self.stream.context().mem_get_info().map(|(free, total)| {
                format!(" ({:.1} MiB free of {:.1} MiB)", free as f64 / 1048576.0, total as f64 / 1048576.0)
            });
            return cuda_error(format!(
                "{op}: out of memory on cuda:{} allocating {:.1} MiB{}",
                self.info.ordinal,
                bytes as f64 / 1048576.0,
                free.unwrap_or_default()
            ));
        }
        self.driver_error(op, e)
    }

    /// A driver error during `op`, worded for a user.
    pub(crate) fn driver_error(&self, op: &'static str, e: DriverError) -> Error {
        cuda_error(format!("{op} on cuda:{}: {}", self.info.ordinal, describe(&e)))
    }

    /// The kernel `name`, compiling (or loading from the disk cache) its file on first use.
    fn function(&self, kernel: &'static kernels::Kernel) -> Result<CudaFunction> {
        let name = kernel.name.as_str();
        if let Some(f) = self.functions.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(f.clone());
        }
        let module = self.module(kernel.file)?;
        let f = module.load_function(name).map_err(|e| {
            cuda_error(format!(
                "kernel {name} is not in {} as compiled for {}: {}",
                kernel.file,
                self.arch,
                describe(&e)
            ))
        })?;
        self.functions.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), f.clone());
        Ok(f)
    }

    /// Starts a launch of the kernel `name`: push its arguments in order, then [`Launch::run`].
    pub(crate) fn launch(&self, op: &'static str, name: &str) -> Result<Launch<'_>> {
        let kernel = kernels::lookup(name).ok_or_else(|| {
            cuda_error(format!("{op}: no kernel named {name} (kiln-cuda's kernel table is out of date)"))
        })?;
        Ok(Launch {
            dev: self,
            op,
            kernel,
            function: self.function(kernel)?,
            addresses: Vec::new(),
            args: Vec::new(),
            sizes: Vec::new(),
            _borrows: std::marker::PhantomData,
        })
    }

    fn module(&self, file: &'static str) -> Result<Arc<CudaModule>> {
        let mut modules = self.modules.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = modules.get(file) {
            return Ok(m.clone());
        }
        let source = kernels::FILES
            .iter()
            .find(|f| f.name == file)
            .ok_or_else(|| cuda_error(format!("no kernel file {file}")))?
            .program();
        let cubin = cache::cubin(&source, file, &self.arch, || nvrtc::compile(&source, file, &self.arch))?;
        let module = self.stream.context().load_module(cudarc::nvrtc::Ptx::from_binary(cubin)).map_err(|e| {
            let nv = nvrtc::load().map(|n| format!("{}.{}", n.version.0, n.version.1)).unwrap_or_default();
            cuda_error(format!(
                "cuda:{}: the driver refuses {file} compiled for {} by NVRTC {nv}: {} (an NVRTC newer than \
                     the driver produces code the driver cannot load; use the toolkit that matches the driver, \
                     or point KILN_CUDA_LIB_DIR at it)",
                self.info.ordinal,
                self.arch,
                describe(&e)
            ))
        })?;
        modules.insert(file, module.clone());
        Ok(module)
    }

    /// A launch over `n` elements with a grid-stride kernel.
    pub(crate) fn grid(&self, n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(THREADS as usize).clamp(1, self.multiprocessors as usize * 32) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// A launch with one block per row (up to a bound; the kernels loop over the rest).
    pub(crate) fn rows(&self, rows: usize) -> LaunchConfig {
        let blocks = rows.clamp(1, self.multiprocessors as usize * 64) as u32;
        LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// Waits for the stream: the point where asynchronous kernel faults surface.
    pub(crate) fn sync(&self, op: &'static str) -> Result<()> {
        self.stream.synchronize().map_err(|e| self.driver_error(op, e))
    }
}

/// One kernel launch being assembled. Each argument's byte size is recorded, and [`Launch::run`]
/// refuses to launch unless they match the kernel's parameters in `kernels::expected` (which
/// `cargo xtask kernels` checks against the compiled PTX): a wrong argument list is an error
/// naming the kernel, never a kernel reading garbage.
pub(crate) struct Launch<'a> {
    dev: &'a CudaBackend,
    op: &'static str,
    kernel: &'static kernels::Kernel,
    function: CudaFunction,
    /// The device addresses of the buffer arguments (the driver reads each through a pointer).
    addresses: Vec<u64>,
    args: Vec<Arg>,
    sizes: Vec<usize>,
    /// Buffers and values must outlive the launch.
    _borrows: std::marker::PhantomData<&'a ()>,
}

enum Arg {
    /// Index into `addresses`.
    Buffer(usize),
    /// A value's bytes, borrowed for `'a`.
    Value(*mut std::ffi::c_void),
}

impl<'a> Launch<'a> {
    /// A device buffer (or a view into one) the kernel reads.
    pub(crate) fn buf<T>(&mut self, buffer: &'a impl DevicePtr<T>) -> &mut Self {
        // With one stream and event tracking off, the guard records nothing and may go.
        let (address, _guard) = buffer.device_ptr(&self.dev.stream);
        self.address(address)
    }

    /// A device buffer the kernel writes.
    pub(crate) fn buf_mut<T>(&mut self, buffer: &'a mut impl DevicePtrMut<T>) -> &mut Self {
        let (address, _guard) = buffer.device_ptr_mut(&self.dev.stream);
        self.address(address)
    }

    fn address(&mut self, address: u64) -> &mut Self {
        self.args.push(Arg::Buffer(self.addresses.len()));
        self.addresses.push(address);
        self.sizes.push(std::mem::size_of::<u64>());
        self
    }

    /// A scalar of `dtype` (its first `dtype.size_in_bytes()` bytes are the parameter).
    pub(crate) fn scalar(&mut self, v: &'a Scalar, dtype: DType) -> &mut Self {
        self.sizes.push(dtype.size_in_bytes());
        self.args.push(Arg::Value((v as *const Scalar).cast_mut().cast()));
        self
    }

    /// A scalar or struct passed by value.
    pub(crate) fn value<T: DeviceRepr>(&mut self, v: &'a T) -> &mut Self {
        self.sizes.push(std::mem::size_of::<T>());
        self.args.push(Arg::Value((v as *const T).cast_mut().cast()));
        self
    }

    /// Checks the arguments against the kernel's parameters and launches it with `cfg`.
    pub(crate) fn run(&mut self, cfg: LaunchConfig) -> Result<()> {
        if self.sizes != self.kernel.params {
            return Err(cuda_error(format!(
                "{}: kernel {} takes parameters of {:?} bytes but was given {:?} (a bug in kiln-cuda)",
                self.op, self.kernel.name, self.kernel.params, self.sizes
            )));
        }
        self.dev.stream.context().bind_to_thread().map_err(|e| self.dev.driver_error(self.op, e))?;
        let mut raw: Vec<*mut std::ffi::c_void> = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Buffer(i) => (&self.addresses[*i] as *const u64).cast_mut().cast(),
                Arg::Value(p) => *p,
            })
            .collect();
        // SAFETY: the argument count and sizes match the kernel's parameters (checked above);
        // every buffer is a live allocation of this context whose extent the op checked against
        // the views it passes; the addresses and values outlive this call, which copies them.
        let launched = unsafe {
            cudarc::driver::result::launch_kernel(
                self.function.cu_function(),
                cfg.grid_dim,
                cfg.block_dim,
                cfg.shared_mem_bytes,
                self.dev.stream.cu_stream(),
                &mut raw,
            )
        };
        launched.map_err(|e| self.dev.driver_error(self.op, e))
    }
}

/// Lets the driver's memory pool keep freed memory for reuse instead of returning it to the
/// system at every synchronization (its default threshold is 0): without this, every training
/// step would allocate its temporaries from the system again. Best effort: a device without
/// memory pools allocates synchronously through cudarc anyway.
fn keep_freed_memory(ctx: &CudaContext) {
    use cudarc::driver::sys;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `pool` and `threshold` are valid for the calls; the attribute takes a u64.
    unsafe {
        if sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) == sys::CUresult::CUDA_SUCCESS {
            let attr = sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD;
            let _ = sys::cuMemPoolSetAttribute(pool, attr, (&mut threshold as *mut u64).cast());
        }
    }
}

/// An error of the CUDA backend.
pub(crate) fn cuda_error(msg: impl Into<String>) -> Error {
    Error::Backend { backend: "cuda".into(), msg: msg.into() }
}

/// A driver error as its name and the driver's own description.
pub(crate) fn describe(e: &DriverError) -> String {
    match e.error_string() {
        Ok(s) => format!("{:?} ({})", e.0, s.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}
