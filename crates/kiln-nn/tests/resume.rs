//! Training checkpoints (`kiln_nn::resume`): an exact round trip, clear errors for corrupt,
//! truncated, foreign and newer-version files, and a process killed with SIGKILL while writing
//! one leaves the previous checkpoint loadable.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use kiln_nn::optim::{Adam, AdamConfig, Optimizer};
use kiln_nn::{loss, resume, zoo, Module, Sequential};
use kiln_tensor::{DType, Result, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

fn trained_cnn_step(model: &Sequential, opt: &mut Adam) -> Result<f32> {
    let dev = kiln_cpu::cpu();
    let x = Tensor::rand_uniform(0.0, 1.0, [4, 1, 28, 28], DType::F32, 9, &dev)?;
    let y = Tensor::from_vec(vec![1i64, 2, 3, 4], [4], &dev)?;
    let loss = loss::cross_entropy(&model.forward(&x)?, &y)?;
    opt.step(&loss.backward()?)?;
    loss.to_scalar::<f32>()
}

fn bits(model: &Sequential) -> Result<Vec<Vec<u32>>> {
    model
        .parameters()
        .iter()
        .map(|(_, p)| Ok(p.as_tensor().to_vec::<f32>()?.into_iter().map(f32::to_bits).collect()))
        .collect()
}

#[test]
fn round_trip_restores_weights_optimizer_and_dropout_exactly() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let dev = kiln_cpu::cpu();
    kiln_nn::manual_seed(5);
    let model = zoo::mnist_cnn(&dev)?;
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    trained_cnn_step(&model, &mut opt)?;
    let progress = BTreeMap::from([("epoch".to_string(), "2".to_string()), ("step".to_string(), "17".to_string())]);
    resume::save(&path, &model, &opt, &progress)?;
    // The uninterrupted run goes on...
    let next = trained_cnn_step(&model, &mut opt)?;
    let after = bits(&model)?;

    // ...and a fresh process (a new model with other weights) resumes from the file.
    kiln_nn::manual_seed(99);
    let resumed = zoo::mnist_cnn(&dev)?;
    let mut opt2 = Adam::new(resumed.parameters(), AdamConfig::lr(0.5));
    assert_eq!(resume::load(&path, &resumed, &mut opt2)?, progress);
    assert_eq!(opt2.lr(), 1e-3);
    assert_eq!(trained_cnn_step(&resumed, &mut opt2)?.to_bits(), next.to_bits(), "same loss (dropout masks too)");
    assert_eq!(bits(&resumed)?, after, "same weights, bit for bit");
    Ok(())
}

fn load_err(path: &Path) -> String {
    let dev = kiln_cpu::cpu();
    let model = zoo::mnist_mlp(&dev).unwrap();
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    resume::load(path, &model, &mut opt).unwrap_err().to_string()
}

#[test]
fn corrupt_truncated_foreign_and_newer_files_are_clear_errors() -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.ckpt");
    let dev = kiln_cpu::cpu();
    let model = zoo::mnist_mlp(&dev)?;
    let opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    resume::save(&path, &model, &opt, &BTreeMap::new())?;
    let good = std::fs::read(&path).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    std::fs::write(&path, &flipped).unwrap();
    let err = load_err(&path);
    assert!(err.contains("checksum mismatch, the file is corrupt") && err.contains("run.ckpt"), "{err}");

    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let err = load_err(&path);
    assert!(err.contains("not a valid safetensors file"), "{err}");

    let model_only = dir.path().join("model.safetensors");
    kiln_nn::checkpoint::save(&model, &model_only, None)?;
    let err = load_err(&model_only);
    assert!(err.contains("not a kiln training checkpoint"), "{err}");

    let meta = std::collections::HashMap::from([
        ("format".to_string(), resume::FORMAT.to_string()),
        ("version".to_string(), (resume::VERSION + 1).to_string()),
    ]);
    let newer = dir.path().join("newer.ckpt");
    kiln_nn::checkpoint::save_tensors(&[], meta, &newer)?;
    let err = load_err(&newer);
    assert!(err.contains("written by a newer kiln (checkpoint format version 2"), "{err}");

    let other = zoo::mnist_cnn(&dev)?;
    std::fs::write(&path, &good).unwrap();
    let mut opt = Adam::new(other.parameters(), AdamConfig::lr(1e-3));
    let err = resume::load(&path, &other, &mut opt).unwrap_err().to_string();
    assert!(err.contains("the model has '0.weight', the checkpoint does not"), "{err}");
    Ok(())
}

const WRITER: &str = "KILN_TEST_CHECKPOINT_WRITER";

/// Writes checkpoints of a 16 MB model to `path` forever (run as a child process).
fn write_forever(path: &Path) -> Result<()> {
    let dev = kiln_cpu::cpu();
    let model = Sequential::new().add(kiln_nn::LinearConfig::new(2048, 2048).init(&dev)?);
    let opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    for n in 1u64.. {
        resume::save(path, &model, &opt, &BTreeMap::from([("n".to_string(), n.to_string())]))?;
    }
    Ok(())
}

#[test]
fn sigkill_while_writing_leaves_the_previous_checkpoint_loadable() -> Result<()> {
    if let Ok(path) = std::env::var(WRITER) {
        return write_forever(Path::new(&path));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.ckpt");
    let dev = kiln_cpu::cpu();
    let model = Sequential::new().add(kiln_nn::LinearConfig::new(2048, 2048).init(&dev)?);
    let mut opt = Adam::new(model.parameters(), AdamConfig::lr(1e-3));
    resume::save(&path, &model, &opt, &BTreeMap::from([("n".to_string(), "0".to_string())]))?;
    let temps = |dir: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().contains(".tmp."))
            .collect()
    };
    let mut killed_mid_write = 0;
    // Kill as soon as the writer's temporary file appears, then a little later each time, so the
    // kills land at different points of creating, writing and syncing it.
    for delay_ms in [0u64, 1, 3, 6, 10, 20] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "sigkill_while_writing_leaves_the_previous_checkpoint_loadable", "--nocapture"])
            .env(WRITER, &path)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while temps(dir.path()).is_empty() && start.elapsed().as_secs() < 20 {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let left = temps(dir.path());
        killed_mid_write += !left.is_empty() as usize;
        for t in left {
            std::fs::remove_file(t).unwrap();
        }
        let progress = resume::load(&path, &model, &mut opt)?;
        assert!(progress["n"].parse::<u64>().is_ok(), "{progress:?}");
    }
    println!("{killed_mid_write} of 6 kills landed while a checkpoint was being written; every load succeeded");
    assert!(killed_mid_write >= 3, "only {killed_mid_write} of 6 kills landed mid-write: the test proved too little");
    Ok(())
}
