//! safetensors checkpoints: round trips in f32/f16/bf16, strict and non-strict loading, and
//! every kind of malformed file giving an error (never a panic), atomic writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_nn::checkpoint::{load, save};
use kiln_nn::*;
use kiln_tensor::{DType, Device, Result, Tensor};
use std::path::Path;

fn mlp(dev: &Device, seed: u64) -> Result<Sequential> {
    manual_seed(seed);
    Ok(Sequential::new()
        .add(LinearConfig::new(6, 5).init(dev)?)
        .add(Activation::ReLU)
        .add(LinearConfig::new(5, 3).init(dev)?))
}

fn params(m: &dyn Module) -> Result<Vec<Vec<f32>>> {
    m.parameters().iter().map(|(_, v)| v.as_tensor().to_vec::<f32>()).collect()
}

#[test]
fn round_trip_in_each_dtype() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let dir = tempfile::tempdir().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let a = mlp(&dev, 1)?;
    for (dtype, tol) in [(DType::F32, 0.0), (DType::F16, 1e-3), (DType::BF16, 1e-2)] {
        let path = dir.path().join(format!("m-{dtype}.safetensors"));
        save(&a, &path, Some(dtype))?;
        let b = mlp(&dev, 2)?;
        let report = load(&b, &path, true)?;
        assert_eq!(report.loaded, ["0.bias", "0.weight", "2.bias", "2.weight"]);
        for (x, y) in params(&a)?.iter().flatten().zip(params(&b)?.iter().flatten()) {
            assert!((x - y).abs() <= tol * x.abs().max(1.0), "{dtype}: {x} vs {y}");
        }
    }
    // Buffers travel too: BatchNorm's running statistics and its i64 counter.
    let bn = BatchNorm::new_1d(3, &dev)?;
    bn.forward(&Tensor::rand_uniform(0.0, 1.0, [4, 3], DType::F32, 3, &dev)?)?;
    let path = dir.path().join("bn.safetensors");
    save(&bn, &path, None)?;
    let fresh = BatchNorm::new_1d(3, &dev)?;
    load(&fresh, &path, true)?;
    assert_eq!(fresh.running_mean.get().to_vec::<f32>()?, bn.running_mean.get().to_vec::<f32>()?);
    assert_eq!(fresh.num_batches_tracked.get().to_vec::<i64>()?, vec![1]);
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty());
    Ok(())
}

fn err_text(r: Result<impl std::fmt::Debug>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn strict_and_non_strict_loading() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let dir = tempfile::tempdir().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let path = dir.path().join("m.safetensors");
    save(&mlp(&dev, 1)?, &path, None)?;
    // A model with an extra layer and a different hidden width.
    manual_seed(3);
    let other = Sequential::new()
        .add(LinearConfig::new(6, 4).init(&dev)?)
        .add(Activation::ReLU)
        .add(LinearConfig::new(4, 3).init(&dev)?)
        .add(LinearConfig::new(3, 3).init(&dev)?);
    let msg = err_text(load(&other, &path, true));
    assert!(msg.contains("missing keys [\"3.weight\", \"3.bias\"]"), "{msg}");
    assert!(msg.contains("'0.weight': the file has shape [5, 6], the model [4, 6]"), "{msg}");
    let before = params(&other)?;
    let report = load(&other, &path, false)?;
    assert_eq!(report.missing, ["3.weight", "3.bias"]);
    assert_eq!(report.mismatched.len(), 3, "{report:?}");
    assert_eq!(report.loaded, ["2.bias"]);
    assert_ne!(params(&other)?[3], before[3], "2.bias was loaded");
    // Unexpected keys: a smaller model than the file.
    let small = Sequential::new().add(LinearConfig::new(6, 5).init(&dev)?);
    let msg = err_text(load(&small, &path, true));
    assert!(msg.contains("unexpected keys [\"2.bias\", \"2.weight\"]"), "{msg}");
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("temp dir is writable");
}

#[test]
fn malformed_files_are_errors_not_panics() -> Result<()> {
    let dev = kiln_cpu::cpu();
    let dir = tempfile::tempdir().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let good = dir.path().join("good.safetensors");
    let model = mlp(&dev, 1)?;
    save(&model, &good, None)?;
    let bytes = std::fs::read(&good).map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let header = |json: &str| {
        let mut b = (json.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(json.as_bytes());
        b
    };
    let mut past_end = bytes.clone();
    past_end[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty file", vec![]),
        ("truncated data", bytes[..bytes.len() - 10].to_vec()),
        ("truncated header", bytes[..20].to_vec()),
        ("header length past the end", past_end),
        ("not JSON", header("this is not json")),
        ("unsupported dtype", {
            let mut b = header(r#"{"0.weight":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}}"#);
            b.extend([1, 2]);
            b
        }),
        ("wrong dtype for the model", {
            let mut b = header(r#"{"0.weight":{"dtype":"I64","shape":[5,6],"data_offsets":[0,240]}}"#);
            b.extend(vec![0u8; 240]);
            b
        }),
        ("wrong shape", {
            let mut b = header(r#"{"0.weight":{"dtype":"F32","shape":[6,5],"data_offsets":[0,120]}}"#);
            b.extend(vec![0u8; 120]);
            b
        }),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join("bad.safetensors");
        write(&path, &bytes);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(&model, &path, true)));
        match outcome {
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("bad.safetensors") || msg.contains("0.weight"), "{name}: {msg}");
                println!("{name}: {msg}");
            }
            Ok(Ok(r)) => panic!("{name}: loaded {r:?}"),
            Err(_) => panic!("{name}: panicked"),
        }
    }
    let missing = dir.path().join("does-not-exist.safetensors");
    assert!(err_text(load(&model, &missing, true)).contains("does-not-exist.safetensors"));
    // A save into a missing directory fails cleanly and leaves nothing behind.
    assert!(save(&model, dir.path().join("no/such/dir/m.safetensors"), None).is_err());
    Ok(())
}
