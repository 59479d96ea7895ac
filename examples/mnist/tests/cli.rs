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
