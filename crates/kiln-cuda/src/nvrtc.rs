//! NVRTC, which compiles the kernels at run time: finding the library (it is not always on the
//! loader's path: pip wheels, a CUDA toolkit without ld.so.cache entries) and compiling with the
//! compiler's log, which carries registers, shared memory and spills per kernel.
//!
//! cudarc loads libraries by name only, and panics when none is found. So the search happens
//! here first: the library found is opened by absolute path with `RTLD_GLOBAL`, after which
//! cudarc's own lookup by name finds it; when nothing is found the error lists every place
//! searched and cudarc is never touched.
#![allow(unsafe_code)]

use kiln_tensor::{Error, Result};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn cuda_error(msg: impl Into<String>) -> Error {
    Error::Backend { backend: "cuda".into(), msg: msg.into() }
}

/// Where NVRTC was found.
#[derive(Clone, Debug)]
pub struct Nvrtc {
    /// The library file opened.
    pub library: PathBuf,
    /// The CUDA headers for the kernels (`cuda_fp16.h`, `cuda_bf16.h`), when found.
    pub include_dir: Option<PathBuf>,
    /// NVRTC's version, `(major, minor)`.
    pub version: (i32, i32),
}

/// The directories searched, in order: `$KILN_CUDA_LIB_DIR`, `$CUDA_HOME/lib64`,
/// `/usr/local/cuda/lib64`, then the NVIDIA pip wheels in the active virtual environment and the
/// usual Python site-packages, then the system library directories.
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("KILN_CUDA_LIB_DIR") {
        dirs.push(PathBuf::from(d));
    }
    if let Some(home) = std::env::var_os("CUDA_HOME") {
        dirs.push(Path::new(&home).join("lib64"));
    }
    dirs.push(PathBuf::from("/usr/local/cuda/lib64"));
    let mut python_roots: Vec<PathBuf> = Vec::new();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        python_roots.push(Path::new(&venv).join("lib"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        python_roots.push(Path::new(&home).join(".local/lib"));
    }
    python_roots.extend(["/usr/local/lib", "/usr/lib"].map(PathBuf::from));
    for root in python_roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        let mut pythons: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("python3")))
            .collect();
        pythons.sort();
        for py in pythons {
            for packages in ["site-packages", "dist-packages"] {
                for wheel in ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"] {
                    dirs.push(py.join(packages).join(wheel));
                }
            }
        }
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map(PathBuf::from));
    dirs
}

/// Finds and opens NVRTC (once per process).
pub fn load() -> Result<&'static Nvrtc> {
    static FOUND: OnceLock<std::result::Result<Nvrtc, String>> = OnceLock::new();
    FOUND.get_or_init(find).as_ref().map_err(|e| cuda_error(e.clone()))
}

fn find() -> std::result::Result<Nvrtc, String> {
    let dirs = search_dirs();
    for dir in &dirs {
        for name in ["libnvrtc.so.13", "libnvrtc.so.12"] {
            let library = dir.join(name);
            if !library.is_file() {
                continue;
            }
            // NVRTC opens its builtins library by name at compile time: open it globally first.
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with("libnvrtc-builtins.so") {
                        open_global(&e.path())?;
                    }
                }
            }
            open_global(&library)?;
            let include_dir = [dir.join("../include"), dir.join("../../cuda_runtime/include")]
                .into_iter()
                .find(|d| d.join("cuda_fp16.h").is_file());
            let (mut major, mut minor) = (0, 0);
            // SAFETY: the library is loaded (above), so cudarc's lookup by name succeeds, and the
            // two pointers are valid for writes.
            let status = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
            status.result().map_err(|e| format!("{}: nvrtcVersion failed ({e:?})", library.display()))?;
            return Ok(Nvrtc { library, include_dir, version: (major, minor) });
        }
    }
    let searched: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    Err(format!(
        "NVRTC (libnvrtc.so.13 or .so.12) not found; searched {}. Install a CUDA toolkit, or \
         `pip install nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.96`, or set KILN_CUDA_LIB_DIR",
        searched.join(", ")
    ))
}

pub(crate) fn open_global(path: &Path) -> std::result::Result<(), String> {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: NVIDIA's libraries have no initialisers with preconditions; the handle is leaked
    // on purpose so that the library stays loaded for cudarc.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) }
        .map_err(|e| format!("{}: cannot be loaded ({e})", path.display()))?;
    std::mem::forget(lib);
    Ok(())
}

/// The options every kernel is compiled with besides the architecture and the include path (part
/// of the kernel cache's key: changing them recompiles). No FMA contraction: `a * b + c` rounds
/// twice, as in Rust, so element-wise results match the CPU backend's bit for bit where the
/// math functions allow; these kernels are bound by memory, not by arithmetic.
pub const OPTIONS_KEY: &str = "--std=c++17 --fmad=false";

/// What one compilation produced.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// PTX text for a `compute_XY` target, CUBIN bytes for an `sm_XY` one.
    pub code: Vec<u8>,
    /// The compiler's log (with `-Xptxas=-v` for CUBIN: per-kernel registers and spills).
    pub log: String,
}

/// Compiles `source` (named `name` in messages) for `arch`: `compute_80` or `compute_90` gives
/// PTX, `sm_90` a CUBIN with ptxas's resource report in the log.
pub fn compile(source: &str, name: &str, arch: &str) -> Result<Compiled> {
    let nvrtc = load()?;
    use cudarc::nvrtc::{result, sys};
    let bad = |what: &str, e: &dyn std::fmt::Debug| cuda_error(format!("{name} for {arch}: {what} ({e:?})"));
    let src = CString::new(source).map_err(|_| cuda_error(format!("{name}: the source holds a NUL byte")))?;
    let cname = CString::new(name).map_err(|_| cuda_error(format!("{name}: the name holds a NUL byte")))?;
    let mut options = vec![format!("--gpu-architecture={arch}")];
    options.extend(OPTIONS_KEY.split(' ').map(String::from));
    if let Some(inc) = &nvrtc.include_dir {
        options.push(format!("--include-path={}", inc.display()));
    }
    let cubin = arch.starts_with("sm_");
    if cubin {
        options.push("-Xptxas=-v".to_string());
    }
    let prog = result::create_program(&src, Some(&cname)).map_err(|e| bad("creating the program", &e))?;
    // SAFETY: `prog` was created above and is destroyed once, at the end; every buffer passed
    // to NVRTC is sized from NVRTC's own answer.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|raw| CStr::from_ptr(raw.as_ptr()).to_string_lossy().into_owned())
            .unwrap_or_default();
        let code = match compiled {
            Err(e) => Err(cuda_error(format!("{name} for {arch} does not compile ({e:?}):\n{log}"))),
            Ok(()) if cubin => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size).result().map_err(|e| bad("nvrtcGetCUBINSize", &e))?;
                let mut code = vec![0u8; size];
                sys::nvrtcGetCUBIN(prog, code.as_mut_ptr().cast()).result().map_err(|e| bad("nvrtcGetCUBIN", &e))?;
                Ok(code)
            }
            Ok(()) => result::get_ptx(prog)
                .map(|ptx| ptx.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect())
                .map_err(|e| bad("getting the PTX", &e)),
        };
        let _ = result::destroy_program(prog);
        code.map(|code| Compiled { code, log })
    };
    out
}
