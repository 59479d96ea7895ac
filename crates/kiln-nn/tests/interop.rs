//! A checkpoint written by kiln is read by Python (`safetensors` + `numpy`), whose plain numpy
//! forward pass predicts the same classes; a checkpoint written by Python loads into kiln and
//! gives the same logits to 1e-5. Needs `python3` with numpy and safetensors (`.ci/run`
//! installs them); elsewhere it prints "skipped" — except under CI, where that is a failure.

use kiln_nn::checkpoint::{load, load_tensors, save, save_tensors};
use kiln_nn::*;
use kiln_tensor::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use std::process::Command;

fn mlp(dev: &Device) -> Result<Sequential> {
    Ok(Sequential::new()
        .add(LinearConfig::new(784, 128).init(dev)?)
        .add(Activation::ReLU)
        .add(LinearConfig::new(128, 10).init(dev)?))
}

fn python_ready() -> bool {
    Command::new("python3")
        .args(["-c", "import numpy, safetensors"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn safetensors_interop_with_python() -> Result<()> {
    if !python_ready() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with numpy and safetensors (.ci/run installs them)"
        );
        println!("skipped: python3 with numpy and safetensors not found (pip install numpy safetensors)");
        return Ok(());
    }
    let dev = kiln_cpu::cpu();
    let dir = tempfile::tempdir().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    let d = dir.path();
    manual_seed(5);
    let model = mlp(&dev)?;
    let x = Tensor::rand_uniform(0.0, 1.0, [1000, 784], DType::F32, 9, &dev)?;
    let logits = model.forward(&x)?;
    save(&model, d.join("kiln_mlp.safetensors"), Some(DType::F32))?;
    save_tensors(&[("x".into(), x), ("logits".into(), logits)], HashMap::new(), d.join("kiln_data.safetensors"))?;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop.py");
    let out =
        Command::new("python3").arg(script).arg(d).output().map_err(|e| kiln_tensor::Error::Msg(e.to_string()))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(out.status.success(), "interop.py failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let theirs = mlp(&dev)?;
    let report = load(&theirs, d.join("py_mlp.safetensors"), true)?;
    assert_eq!(report.loaded.len(), 4);
    let (data, _) = load_tensors(d.join("py_data.safetensors"), &dev)?;
    let (x2, want) = (&data["x"], &data["logits"]);
    let got = theirs.forward(x2)?;
    let diff = got.sub(want)?.abs()?.max((), false)?.to_scalar::<f32>()?;
    println!("kiln: Python checkpoint -> kiln logits, max |diff| {diff:.2e} over {} logits", want.elem_count());
    assert!(diff <= 1e-5, "max |logit diff| {diff}");
    Ok(())
}
