//! Checkpoints in the safetensors format, with PyTorch `state_dict` names, so a model saved here
//! loads in PyTorch (`safetensors.torch.load_file`) and back.
//!
//! Writes go to a temporary file in the same directory, are flushed to disk, then renamed over
//! the target: a crash never leaves a half-written checkpoint under the final name.

use crate::module::{Entry, Module};
use crate::optim::Optimizer;
use kiln_tensor::{DType, Device, Error, HostData, Result, Tensor};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

pub(crate) const OP_SAVE: &str = "save_checkpoint";
pub(crate) const OP_LOAD: &str = "load_checkpoint";

pub(crate) fn to_st(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        DType::I64 => Dtype::I64,
        DType::U32 => Dtype::U32,
        DType::U8 => Dtype::U8,
    }
}

pub(crate) fn from_st(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

pub(crate) fn io_err(op: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::invalid(op, format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| io_err(OP_SAVE, path, "not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable; not every platform can open a directory, hence `ok()`.
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err(OP_SAVE, path, e));
    }
    Ok(())
}

/// Saves named tensors (any dtype kiln has) with optional string metadata.
pub fn save_tensors(
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
    path: impl AsRef<Path>,
) -> Result<()> {
    let path = path.as_ref();
    write_host_tensors(&host_tensors(tensors)?, metadata, path)
}

/// Named tensors copied to the host, with their dims: what [`write_host_tensors`] writes.
pub(crate) type HostTensors = Vec<(String, HostData, Vec<usize>)>;

pub(crate) fn host_tensors(tensors: &[(String, Tensor)]) -> Result<HostTensors> {
    tensors.iter().map(|(n, t)| Ok((n.clone(), t.to_host()?, t.dims().to_vec()))).collect()
}

/// Serializes host tensors and metadata as safetensors and writes them atomically to `path`.
pub(crate) fn write_host_tensors(hosts: &HostTensors, metadata: HashMap<String, String>, path: &Path) -> Result<()> {
    let views = hosts
        .iter()
        .map(|(n, h, shape)| {
            TensorView::new(to_st(h.dtype()), shape.clone(), h.as_bytes())
                .map(|v| (n.as_str(), v))
                .map_err(|e| io_err(OP_SAVE, path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| io_err(OP_SAVE, path, e))?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file onto `device`, with the file's metadata.
pub fn load_tensors(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| io_err(OP_LOAD, path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| io_err(OP_LOAD, path, format!("not a valid safetensors file ({e})")))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| io_err(OP_LOAD, path, e))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let dtype = from_st(view.dtype()).ok_or_else(|| {
            io_err(OP_LOAD, path, format!("tensor '{name}' has dtype {:?}, which kiln does not support", view.dtype()))
        })?;
        let host = host_from_bytes(dtype, view.data());
        out.insert(name.clone(), Tensor::from_host(host, view.shape().to_vec(), device)?);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

pub(crate) fn host_from_bytes(dtype: DType, data: &[u8]) -> HostData {
    match dtype {
        DType::F32 => HostData::F32(le(data)),
        DType::F64 => HostData::F64(le(data)),
        DType::F16 => HostData::F16(le(data)),
        DType::BF16 => HostData::BF16(le(data)),
        DType::I64 => HostData::I64(le(data)),
        DType::U32 => HostData::U32(le(data)),
        DType::U8 => HostData::U8(data.to_vec()),
    }
}

/// Copies little-endian bytes into a vector of `T`; the file's buffer need not be aligned.
fn le<T: kiln_tensor::WithDType>(data: &[u8]) -> Vec<T> {
    let n = data.len() / std::mem::size_of::<T>();
    let mut v = vec![T::zeroed(); n];
    bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(&data[..n * std::mem::size_of::<T>()]);
    v
}

/// What [`load`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadReport {
    /// Keys loaded.
    pub loaded: Vec<String>,
    /// Keys the model has but the file lacks (non-strict mode only).
    pub missing: Vec<String>,
    /// Keys the file has but the model lacks (non-strict mode only).
    pub unexpected: Vec<String>,
    /// Keys skipped for a shape or dtype mismatch, with the reason (non-strict mode only).
    pub mismatched: Vec<String>,
}

/// Saves a module's parameters and buffers. Float tensors are stored as `dtype` (f32, f16 or
/// bf16; `None` keeps each tensor's own dtype); integer buffers keep theirs.
pub fn save(module: &dyn Module, path: impl AsRef<Path>, dtype: Option<DType>) -> Result<()> {
    if let Some(d) = dtype {
        if !d.is_float() {
            return Err(Error::UnsupportedDType { op: OP_SAVE, dtype: d, supported: "f32, f64, f16, bf16" });
        }
    }
    let mut tensors = Vec::new();
    let mut err = None;
    module.visit("", &mut |name, e| {
        let t = match e {
            Entry::Param(v) => v.as_tensor(),
            Entry::Buffer(b) => b.get(),
            Entry::Rng(_) => return,
        };
        let t = match dtype {
            Some(d) if t.dtype().is_float() => t.to_dtype(d),
            _ => Ok(t),
        };
        match t {
            Ok(t) => tensors.push((name.to_string(), t.detach())),
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let meta = HashMap::from([("format".to_string(), "pt".to_string()), ("writer".to_string(), "kiln".to_string())]);
    save_tensors(&tensors, meta, path)
}

/// Loads a checkpoint into a module. `strict` (the default in PyTorch) makes a missing or
/// unexpected key, or a shape or dtype mismatch, an error naming the key and both shapes;
/// otherwise they are skipped and listed in the report. Float tensors convert between float
/// dtypes (a bf16 checkpoint loads into an f32 model).
pub fn load(module: &dyn Module, path: impl AsRef<Path>, strict: bool) -> Result<LoadReport> {
    let path = path.as_ref();
    let mut entries: Vec<(String, Tensor, Device)> = Vec::new();
    module.visit("", &mut |name, e| {
        let t = match e {
            Entry::Param(v) => v.as_tensor(),
            Entry::Buffer(b) => b.get(),
            Entry::Rng(_) => return,
        };
        let dev = t.device().clone();
        entries.push((name.to_string(), t, dev));
    });
    let device = entries.first().map(|(_, _, d)| d.clone());
    let Some(device) = device else { return Ok(LoadReport::default()) };
    let (mut file, _) = load_tensors(path, &device)?;
    let mut report = LoadReport::default();
    let mut updates = Vec::new();
    for (name, current, _) in &entries {
        let Some(stored) = file.remove(name) else {
            report.missing.push(name.clone());
            continue;
        };
        let problem = if stored.shape() != current.shape() {
            Some(format!("'{name}': the file has shape {}, the model {}", stored.shape(), current.shape()))
        } else if stored.dtype() != current.dtype() && !(stored.dtype().is_float() && current.dtype().is_float()) {
            Some(format!("'{name}': the file has dtype {}, the model {}", stored.dtype(), current.dtype()))
        } else {
            None
        };
        match problem {
            Some(p) => report.mismatched.push(p),
            None => updates.push((name.clone(), stored.to_dtype(current.dtype())?)),
        }
    }
    report.unexpected = file.into_keys().collect();
    report.unexpected.sort();
    if strict && (!report.missing.is_empty() || !report.unexpected.is_empty() || !report.mismatched.is_empty()) {
        let mut parts = Vec::new();
        if !report.missing.is_empty() {
            parts.push(format!("missing keys {:?}", report.missing));
        }
        if !report.unexpected.is_empty() {
            parts.push(format!("unexpected keys {:?}", report.unexpected));
        }
        parts.extend(report.mismatched.iter().cloned());
        return Err(Error::invalid(OP_LOAD, format!("{}: {}", path.display(), parts.join("; "))));
    }
    let values: HashMap<String, Tensor> = updates.into_iter().collect();
    let mut err = None;
    module.visit("", &mut |name, e| {
        if let Some(t) = values.get(name) {
            let r = match e {
                Entry::Param(v) => v.set(t),
                Entry::Buffer(b) => {
                    b.set(t);
                    Ok(())
                }
                Entry::Rng(_) => Ok(()),
            };
            if let Err(e) = r {
                err = Some(e);
            }
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    report.loaded = values.into_keys().collect();
    report.loaded.sort();
    Ok(report)
}

/// Saves an optimizer's state (moments, step count) beside a model checkpoint.
pub fn save_optimizer(opt: &dyn Optimizer, path: impl AsRef<Path>) -> Result<()> {
    let meta = HashMap::from([("writer".to_string(), "kiln".to_string()), ("lr".to_string(), opt.lr().to_string())]);
    save_tensors(&opt.state(), meta, path)
}

/// Restores an optimizer's state saved by [`save_optimizer`].
pub fn load_optimizer(opt: &mut dyn Optimizer, path: impl AsRef<Path>, device: &Device) -> Result<()> {
    let (state, meta) = load_tensors(path, device)?;
    if let Some(lr) = meta.get("lr").and_then(|s| s.parse().ok()) {
        opt.set_lr(lr);
    }
    opt.load_state(&state)
}
