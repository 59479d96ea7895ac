//! `mnist predict`: reading PNG and PGM images of any size into 28x28 grayscale inputs.

use crate::{model, PredictArgs};
use kiln::nn::checkpoint;
use kiln::prelude::*;
use std::path::Path;

fn bad(path: &Path, msg: impl std::fmt::Display) -> kiln::Error {
    kiln::Error::Msg(format!("{}: {msg}", path.display()))
}

/// A grayscale image: width, height and pixels in [0, 255], row-major.
pub struct Gray {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

fn read_png(path: &Path, bytes: &[u8]) -> kiln::Result<Gray> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(|e| bad(path, format!("not a readable PNG ({e})")))?;
    let size = reader.output_buffer_size().ok_or_else(|| bad(path, "the PNG is too large"))?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(|e| bad(path, format!("corrupt PNG ({e})")))?;
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let pixels = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|px| match channels {
            1 | 2 => px[0] as f32,
            _ => 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32,
        })
        .collect::<Vec<_>>();
    Ok(Gray { width: w, height: h, pixels: pixels[..w * h].to_vec() })
}

/// Binary (P5) and plain (P2) PGM.
fn read_pgm(path: &Path, bytes: &[u8]) -> kiln::Result<Gray> {
    let mut fields = Vec::new();
    let mut i = 0;
    while fields.len() < 4 && i < bytes.len() {
        if bytes[i] == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
        } else if bytes[i].is_ascii_whitespace() {
            i += 1;
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            fields.push(String::from_utf8_lossy(&bytes[start..i]).to_string());
        }
    }
    let num =
        |k: usize| fields.get(k).and_then(|f| f.parse::<usize>().ok()).ok_or_else(|| bad(path, "malformed PGM header"));
    let (w, h, max) = (num(1)?, num(2)?, num(3)?.max(1));
    let n = w.checked_mul(h).ok_or_else(|| bad(path, "PGM dimensions overflow"))?;
    let scale = 255.0 / max as f32;
    let pixels: Vec<f32> = match fields[0].as_str() {
        "P5" if max < 256 => bytes
            .get(i + 1..i + 1 + n)
            .ok_or_else(|| bad(path, "truncated PGM data"))?
            .iter()
            .map(|&p| p as f32 * scale)
            .collect(),
        "P2" => String::from_utf8_lossy(&bytes[i..])
            .split_ascii_whitespace()
            .take(n)
            .map(|s| s.parse::<f32>().unwrap_or(0.0) * scale)
            .collect(),
        other => return Err(bad(path, format!("unsupported PGM variant {other}"))),
    };
    if pixels.len() != n {
        return Err(bad(path, format!("PGM has {} of {n} pixels", pixels.len())));
    }
    Ok(Gray { width: w, height: h, pixels })
}

/// Reads a PNG or PGM file (by content, not extension).
pub fn read(path: &Path) -> kiln::Result<Gray> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    let img = if bytes.starts_with(b"\x89PNG") {
        read_png(path, &bytes)?
    } else if bytes.starts_with(b"P5") || bytes.starts_with(b"P2") {
        read_pgm(path, &bytes)?
    } else {
        return Err(bad(path, "not a PNG or PGM image"));
    };
    if img.width == 0 || img.height == 0 {
        return Err(bad(path, "the image is empty"));
    }
    Ok(img)
}

/// 28x28 by area averaging, white-on-black like MNIST (a light background is inverted), scaled
/// to [0, 1] and normalised with `mean` and `std`.
pub fn to_input(img: &Gray, mean: f32, std: f32) -> Vec<f32> {
    let avg = img.pixels.iter().sum::<f32>() / img.pixels.len() as f32;
    let invert = avg > 127.0;
    let mut out = vec![0f32; 28 * 28];
    for (oy, row) in out.chunks_mut(28).enumerate() {
        let (y0, y1) = (oy * img.height / 28, ((oy + 1) * img.height).div_ceil(28).max(oy * img.height / 28 + 1));
        for (ox, o) in row.iter_mut().enumerate() {
            let (x0, x1) = (ox * img.width / 28, ((ox + 1) * img.width).div_ceil(28).max(ox * img.width / 28 + 1));
            let (mut sum, mut n) = (0.0, 0.0);
            for y in y0..y1.min(img.height) {
                for x in x0..x1.min(img.width) {
                    sum += img.pixels[y * img.width + x];
                    n += 1.0;
                }
            }
            let v = if n > 0.0 { sum / n } else { 0.0 };
            let v = if invert { 255.0 - v } else { v };
            *o = (v / 255.0 - mean) / std;
        }
    }
    out
}

/// `mnist predict`.
pub fn predict(args: &PredictArgs, dev: &Device) -> kiln::Result<()> {
    let c = &args.common;
    let model = model::build(c.model, dev)?;
    checkpoint::load(&model, &args.load, true)?;
    model.eval();
    let kind = if c.dataset == crate::DatasetKind::Mnist {
        kiln_data::mnist::Kind::Mnist
    } else {
        kiln_data::mnist::Kind::Fashion
    };
    let (mean, std) = c.scaling().mean_std(kind);
    let classes = kind.classes();
    for path in &args.images {
        let input = to_input(&read(path)?, mean, std);
        let x = Tensor::from_vec(input, [1, 1, 28, 28], dev)?;
        let probs = no_grad(|| model.forward(&x)?.softmax(-1))?.to_vec::<f32>()?;
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> =
            ranked.iter().take(3).map(|(k, p)| format!("{} {:.1}%", classes[*k], 100.0 * p)).collect();
        println!("{}: {} (top 3: {})", path.display(), classes[ranked[0].0], top.join(", "));
    }
    Ok(())
}
