//! The `mnist` binary end to end, on a subset of the real data (fetched into the cache once):
//! same seed gives the same losses, `predict` reads a PNG drawn here and names the digit, and a
//! file that is not an image is a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failed unwrap is a failed test, with its message.

use std::path::Path;
use std::process::Command;

fn mnist(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mnist")).args(args).output().expect("the mnist binary runs")
}

/// The table rows without the timing columns.
fn losses(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()) && l.contains('%'))
        .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>().join(" "))
        .collect()
}

/// A 56x56 white-background PNG with a black digit drawn by `ink(x, y)` (scaled from 28x28).
fn draw(path: &Path, ink: impl Fn(f32, f32) -> bool) {
    let size = 56u32;
    let mut pixels = Vec::new();
    for y in 0..size {
        for x in 0..size {
            let (u, v) = (x as f32 / 2.0, y as f32 / 2.0);
            pixels.push(if ink(u, v) { 0u8 } else { 255u8 });
        }
    }
    let file = std::fs::File::create(path).expect("create png");
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), size, size);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().expect("png header");
    w.write_image_data(&pixels).expect("png data");
}

#[test]
fn train_is_deterministic_and_predict_reads_drawn_digits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = dir.path().join("m.safetensors");
    let model_s = model.to_str().expect("utf-8 path");
    let args = ["train", "--limit", "12000", "--epochs", "2", "--seed", "3", "--save", model_s];
    let first = mnist(&args);
    assert!(first.status.success(), "train failed: {}", String::from_utf8_lossy(&first.stderr));
    let second = mnist(&args);
    let (a, b) = (String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&second.stdout));
    println!("{a}");
    assert_eq!(losses(&a).len(), 2, "{a}");
    assert_eq!(losses(&a), losses(&b), "same seed, same losses");
    assert!(dir.path().join("m.svg").exists(), "training curve written beside the checkpoint");

    let one = dir.path().join("one.png");
    draw(&one, |x, y| (13.0..16.0).contains(&x) && (4.0..24.0).contains(&y));
    let zero = dir.path().join("zero.png");
    draw(&zero, |x, y| {
        let r = (((x - 14.0) / 6.0).powi(2) + ((y - 14.0) / 9.0).powi(2)).sqrt();
        (0.75..1.15).contains(&r)
    });
    let out = mnist(&["predict", "--load", model_s, one.to_str().expect("utf-8"), zero.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("one.png: 1 (top 3"), "{text}");
    assert!(text.contains("zero.png: 0 (top 3"), "{text}");

    let junk = dir.path().join("notes.txt");
    std::fs::write(&junk, "not an image").expect("write");
    let out = mnist(&["predict", "--load", model_s, junk.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("notes.txt: not a PNG or PGM image"), "{err}");
}

/// Every tensor of a safetensors file, by name, as raw bits.
fn tensors(path: &Path) -> Vec<(String, Vec<u32>)> {
    let dev = kiln::device("cpu").unwrap();
    let (map, _) = kiln::nn::checkpoint::load_tensors(path, &dev).unwrap();
    let mut out: Vec<(String, Vec<u32>)> =
        map.into_iter().map(|(k, t)| (k, t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect())).collect();
    out.sort();
    out
}

#[test]
fn a_run_stopped_mid_epoch_and_resumed_ends_with_the_same_weights() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |name: &str| dir.path().join(name).to_str().expect("utf-8 path").to_string();
    // The CNN (dropout, Adadelta with its LR schedule): 10 steps per epoch, stopped at step 3
    // of epoch 2.
    let common = ["--model", "cnn", "--limit", "640", "--epochs", "2", "--seed", "4"];
    let whole = mnist(&[&common[..], &["--save", &p("whole.safetensors")]].concat());
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
    let ckpt = p("run.ckpt");
    let first = mnist(
        &[&common[..], &["--save", &p("parts.safetensors"), "--checkpoint", &ckpt, "--stop-after", "13"]].concat(),
    );
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(130), "{err}");
    assert!(err.contains("stopped after step 3 of epoch 2") && err.contains("resume with:"), "{err}");
    let second = mnist(&[&common[..], &["--save", &p("parts.safetensors"), "--resume", &ckpt]].concat());
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(losses(&String::from_utf8_lossy(&second.stdout)), losses(&String::from_utf8_lossy(&whole.stdout)));
    assert_eq!(tensors(Path::new(&p("parts.safetensors"))), tensors(Path::new(&p("whole.safetensors"))));

    // Resuming with other settings is refused with both settings named.
    let other = mnist(&["--model", "cnn", "--limit", "640", "--epochs", "2", "--seed", "5", "--resume", &ckpt]);
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("a run with other settings"), "{err}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_writes_a_checkpoint_that_resumes_to_the_same_weights() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("temp dir");
    let p = |name: &str| dir.path().join(name).to_str().expect("utf-8 path").to_string();
    let common = ["--limit", "12800", "--epochs", "3", "--seed", "6"];
    let whole = mnist(&[&common[..], &["--save", &p("whole.safetensors")]].concat());
    assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));

    let (ckpt, parts) = (p("run.ckpt"), p("parts.safetensors"));
    let args = [&common[..], &["--save", &parts, "--checkpoint", &ckpt]].concat();
    let mut child = Command::new(env!("CARGO_BIN_EXE_mnist"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the mnist binary runs");
    // Interrupt once the first epoch's row is printed, somewhere in the second epoch.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while stdout.read_line(&mut line).expect("read") > 0 && !line.trim_start().starts_with("1 ") {
        line.clear();
    }
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    // Epochs 2 and 3 are still ahead when the signal is sent: a run that ends normally failed
    // to handle it.
    assert_eq!(out.status.code(), Some(130), "the interrupt did not stop the run: {err}");
    assert!(err.contains("wrote a checkpoint to") && err.contains("resume with:"), "{err}");
    let resumed = mnist(&[&args[..], &["--resume", &ckpt]].concat());
    assert!(resumed.status.success(), "{}", String::from_utf8_lossy(&resumed.stderr));
    assert_eq!(tensors(Path::new(&p("parts.safetensors"))), tensors(Path::new(&p("whole.safetensors"))));
}

#[test]
fn the_same_weights_bit_for_bit_on_1_and_2_threads() {
    let dir = tempfile::tempdir().expect("temp dir");
    // One count through the environment, the other through `--threads` (which once failed:
    // the flush-to-zero setup had already started rayon's pool).
    let run = |threads: &str, flag: bool| {
        let path = dir.path().join(format!("cnn-{threads}.safetensors"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mnist"));
        cmd.args(["--model", "cnn", "--limit", "640", "--epochs", "2", "--seed", "8", "--save"]).arg(&path);
        match flag {
            true => cmd.args(["--threads", threads]),
            false => cmd.env("RAYON_NUM_THREADS", threads),
        };
        let out = cmd.output().expect("the mnist binary runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tensors(&path)
    };
    assert_eq!(run("1", true), run("2", false), "--threads 1 and RAYON_NUM_THREADS=2 trained different weights");
}
