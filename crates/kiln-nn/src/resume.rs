//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! One safetensors file holds the model's parameters and buffers (`model.<name>`, in their own
//! dtypes), the optimizer's state (`optim.<name>`), every random-number state of the model
//! (dropout's seed and draws), and the caller's progress (epoch, step, data order, running sums) as metadata. A
//! format version and a SHA-256 of all of it travel in the file: a corrupt file, a truncated one,
//! or one written by a newer kiln is a clear error, never a silently wrong resume. Writes are
//! atomic ([`crate::checkpoint::write_atomic`]: temporary file, fsync, rename), so a crash or a
//! `SIGKILL` mid-write leaves the previous checkpoint intact.
//!
//! ```
//! use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
//! use kiln_nn::{resume, zoo, Module};
//! use std::collections::BTreeMap;
//! # fn main() -> kiln_tensor::Result<()> {
//! let dev = kiln_cpu::cpu();
//! let model = zoo::mnist_mlp(&dev)?;
//! let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
//! let path = std::env::temp_dir().join(format!("kiln-resume-doc-{}.ckpt", std::process::id()));
//! let progress = BTreeMap::from([("epoch".to_string(), "3".to_string())]);
//! resume::save(&path, &model, &opt, &progress)?;
//! let restored = resume::load(&path, &model, &mut opt)?;
//! assert_eq!(restored["epoch"], "3");
//! # std::fs::remove_file(&path).ok();
//! # Ok(()) }
//! ```

use crate::checkpoint::{from_st, host_from_bytes, host_tensors, io_err, write_host_tensors, OP_LOAD};
use crate::module::{Entry, Module};
use crate::optim::Optimizer;
use kiln_tensor::{Result, Tensor};
use safetensors::tensor::SafeTensors;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the `format` metadata of a training checkpoint says.
pub const FORMAT: &str = "kiln-training-checkpoint";
/// The newest format version this build writes and reads.
pub const VERSION: u32 = 1;

/// The checksum of a checkpoint's tensors (name, dtype, shape, bytes, in name order) and of its
/// metadata other than the checksum itself.
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
    meta: &BTreeMap<String, String>,
) -> String {
    let mut h = Sha256::new();
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, bytes) in sorted {
        h.update(format!("{name}\0{dtype}\0{shape:?}\0{}\0", bytes.len()));
        h.update(bytes);
    }
    for (k, v) in meta.iter().filter(|(k, _)| k.as_str() != "checksum") {
        h.update(format!("{k}\0{v}\0"));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Saves `model`, `opt`, the model's RNG counters and `progress` (the caller's own keys) to
/// `path`, atomically.
pub fn save(
    path: impl AsRef<Path>,
    model: &dyn Module,
    opt: &dyn Optimizer,
    progress: &BTreeMap<String, String>,
) -> Result<()> {
    let path = path.as_ref();
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let mut meta = BTreeMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("lr".to_string(), opt.lr().to_string()),
    ]);
    model.visit("", &mut |name, e| match e {
        Entry::Param(v) => tensors.push((format!("model.{name}"), v.as_tensor().detach())),
        Entry::Buffer(b) => tensors.push((format!("model.{name}"), b.get())),
        Entry::Rng(r) => {
            let (seed, draws) = r.get();
            meta.insert(format!("rng.{name}"), format!("{seed} {draws}"));
        }
    });
    tensors.extend(opt.state().into_iter().map(|(n, t)| (format!("optim.{n}"), t)));
    for (k, v) in progress {
        meta.insert(format!("progress.{k}"), v.clone());
    }
    let hosts = host_tensors(&tensors)?;
    let sum =
        checksum(hosts.iter().map(|(n, h, s)| (n.as_str(), h.dtype().to_string(), s.as_slice(), h.as_bytes())), &meta);
    meta.insert("checksum".to_string(), sum);
    write_host_tensors(&hosts, meta.into_iter().collect(), path)
}

/// Restores a checkpoint written by [`save`] into `model` (same architecture: every name, shape
/// and dtype must match) and `opt`, sets the model's RNG counters, and returns the progress
/// keys. The file is verified first (format, version, checksum); nothing is changed when it is
/// rejected.
pub fn load(path: impl AsRef<Path>, model: &dyn Module, opt: &mut dyn Optimizer) -> Result<BTreeMap<String, String>> {
    let path = path.as_ref();
    let bad = |msg: String| io_err(OP_LOAD, path, msg);
    let bytes = std::fs::read(path).map_err(|e| io_err(OP_LOAD, path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a kiln training checkpoint: not a valid safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(format!(
            "not a kiln training checkpoint (its format is {:?}; a model saved with --save loads with `mnist eval --load`)",
            meta.get("format")
        )));
    }
    let version: u32 =
        meta.get("version").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no format version".into()))?;
    if version > VERSION {
        return Err(bad(format!(
            "written by a newer kiln (checkpoint format version {version}; this build reads versions up to {VERSION})"
        )));
    }
    let mut views = Vec::new();
    for (name, view) in st.tensors() {
        let dtype = from_st(view.dtype()).ok_or_else(|| bad(format!("tensor '{name}' has an unsupported dtype")))?;
        views.push((name, dtype, view));
    }
    let expected = meta.get("checksum").cloned().unwrap_or_default();
    let actual = checksum(views.iter().map(|(n, d, v)| (n.as_str(), d.to_string(), v.shape(), v.data())), &meta);
    if expected != actual {
        return Err(bad(format!(
            "checksum mismatch, the file is corrupt (stored {expected:.16}..., computed {actual:.16}...)"
        )));
    }

    // Match every model entry with the file before changing anything.
    let mut stored: HashMap<String, Tensor> = HashMap::new();
    let mut model_entries = Vec::new();
    let mut counters = Vec::new();
    model.visit("", &mut |name, e| match e {
        Entry::Param(v) => model_entries.push((name.to_string(), v.as_tensor())),
        Entry::Buffer(b) => model_entries.push((name.to_string(), b.get())),
        Entry::Rng(_) => counters.push(name.to_string()),
    });
    let device = model_entries.first().map(|(_, t)| t.device().clone());
    let mut optim_state = HashMap::new();
    for (name, dtype, view) in &views {
        let Some(device) = &device else { break };
        let t = Tensor::from_host(host_from_bytes(*dtype, view.data()), view.shape().to_vec(), device)?;
        if let Some(n) = name.strip_prefix("model.") {
            stored.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("optim.") {
            optim_state.insert(n.to_string(), t);
        }
    }
    for (name, current) in &model_entries {
        match stored.get(name) {
            None => {
                return Err(bad(format!("the model has '{name}', the checkpoint does not (a different architecture?)")))
            }
            Some(t) if t.shape() != current.shape() || t.dtype() != current.dtype() => {
                return Err(bad(format!(
                    "'{name}' is {} {} in the checkpoint and {} {} in the model",
                    t.dtype(),
                    t.shape(),
                    current.dtype(),
                    current.shape()
                )))
            }
            Some(_) => {}
        }
    }
    let mut rng_states = HashMap::new();
    for name in counters {
        let state = meta.get(&format!("rng.{name}")).and_then(|v| {
            let (seed, draws) = v.split_once(' ')?;
            Some((seed.parse::<u64>().ok()?, draws.parse::<u64>().ok()?))
        });
        let state =
            state.ok_or_else(|| bad(format!("no random-number state for '{name}' (a different architecture?)")))?;
        rng_states.insert(name, state);
    }
    if stored.len() != model_entries.len() {
        let extra: Vec<&String> = stored.keys().filter(|k| !model_entries.iter().any(|(n, _)| n == *k)).collect();
        return Err(bad(format!("the checkpoint has entries the model lacks: {extra:?}")));
    }

    let mut result = Ok(());
    model.visit("", &mut |name, e| {
        let r = match e {
            Entry::Param(v) => stored.get(name).map_or(Ok(()), |t| v.set(t)),
            Entry::Buffer(b) => {
                if let Some(t) = stored.get(name) {
                    b.set(t);
                }
                Ok(())
            }
            Entry::Rng(r) => {
                if let Some(&state) = rng_states.get(name) {
                    r.set(state);
                }
                Ok(())
            }
        };
        if result.is_ok() {
            result = r;
        }
    });
    result?;
    opt.load_state(&optim_state)?;
    if let Some(lr) = meta.get("lr").and_then(|v| v.parse().ok()) {
        opt.set_lr(lr);
    }
    Ok(meta.iter().filter_map(|(k, v)| k.strip_prefix("progress.").map(|k| (k.to_string(), v.clone()))).collect())
}
