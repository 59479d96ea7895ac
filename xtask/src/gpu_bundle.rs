//! `cargo xtask gpu-bundle`: everything a GPU host needs to check the CUDA backend, built here,
//! for a host with no Rust toolchain and no network: the release CUDA test binaries, the MNIST
//! example and the CUDA benches (stripped), the sm_90 kernel CUBINs (for a host without
//! NVRTC), MNIST as gzip IDX files, and `run.sh`, which runs each check under `timeout` and
//! prints a summary table last.
//!
//! Output: `target/gpu-bundle/kiln-gpu/` and `target/gpu-bundle/kiln-gpu.tar.gz` (must stay
//! under 60 MiB).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const LIMIT_MIB: f64 = 60.0;

/// The executables one cargo invocation built, from its JSON messages (`(target name, path)`).
fn cargo_executables(root: &Path, args: &[&str]) -> Result<Vec<(String, PathBuf)>, String> {
    println!("==> cargo {}", args.join(" "));
    let out = Command::new("cargo")
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .current_dir(root)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo {} failed ({})", args.join(" "), out.status));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if let (Some(exe), Some(name)) = (msg["executable"].as_str(), msg["target"]["name"].as_str()) {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

fn copy_stripped(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to).map_err(|e| format!("{} -> {}: {e}", from.display(), to.display()))?;
    // Debug info is most of a test binary's size; without `strip` the bundle is just larger.
    match Command::new("strip").arg(to).status() {
        Ok(s) if s.success() => {}
        _ => println!("note: `strip` failed or is missing; {} keeps its symbols", to.display()),
    }
    Ok(())
}

fn gzip(from: &Path, to: &Path) -> Result<(), String> {
    let data = std::fs::read(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let file = std::fs::File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    enc.write_all(&data).and_then(|_| enc.finish().map(drop)).map_err(|e| format!("{}: {e}", to.display()))
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => dir_size(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

pub fn gpu_bundle(root: &Path) -> Result<(), String> {
    let out = root.join("target/gpu-bundle");
    let bundle = out.join("kiln-gpu");
    if bundle.exists() {
        std::fs::remove_dir_all(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    }
    for sub in ["bin", "tests", "benches", "kernels", "data/mnist"] {
        std::fs::create_dir_all(bundle.join(sub)).map_err(|e| format!("{sub}: {e}"))?;
    }

    // 1. The binaries, release mode with the CUDA feature.
    let builds: [(&str, &[&str]); 4] = [
        ("bin", &["build", "--release", "-p", "mnist", "--features", "cuda"]),
        ("tests", &["test", "--release", "--no-run", "-p", "kiln-cuda"]),
        ("tests", &["test", "--release", "--no-run", "-p", "kiln", "--features", "cuda", "--test", "cuda"]),
        ("benches", &["bench", "--no-run", "-p", "kiln-benches", "--features", "cuda", "--bench", "cuda"]),
    ];
    for (sub, args) in builds {
        for (name, exe) in cargo_executables(root, args)? {
            // Test binaries are named after their target: kiln_cuda (unit tests), conformance, cuda.
            let file = if name == "kiln_cuda" { "unit".to_string() } else { name.replace('-', "_") };
            copy_stripped(&exe, &bundle.join(sub).join(&file))?;
        }
    }

    // 2. The kernels, prebuilt for sm_90 (Hopper: H100, H200), for a host without NVRTC.
    match crate::kernels::kernels(root, &["--require-nvrtc".to_string()]) {
        Ok(()) => {
            for e in std::fs::read_dir(root.join("target/kernels/prebuilt")).map_err(|e| e.to_string())?.flatten() {
                std::fs::copy(e.path(), bundle.join("kernels").join(e.file_name())).map_err(|e| e.to_string())?;
            }
        }
        Err(e) => println!("note: no prebuilt kernels in the bundle (the GPU host must have NVRTC): {e}"),
    }

    // 3. MNIST, gzip-compressed (kiln-data reads .gz and checks the SHA-256 of the contents).
    let dir = kiln_data::fetch::fetch(&kiln_data::mnist::Kind::Mnist.spec()).map_err(|e| e.to_string())?;
    for f in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    {
        gzip(&dir.join(f), &bundle.join("data/mnist").join(format!("{f}.gz")))?;
    }

    // 4. The script.
    let script = bundle.join("run.sh");
    std::fs::write(&script, RUN_SH).map_err(|e| format!("{}: {e}", script.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }

    // 5. One archive, and the size check.
    let tarball = out.join("kiln-gpu.tar.gz");
    let status = Command::new("tar")
        .args(["czf", "kiln-gpu.tar.gz", "kiln-gpu"])
        .current_dir(&out)
        .status()
        .map_err(|e| format!("cannot start tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar failed ({status})"));
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    let (unpacked, packed) = (mib(dir_size(&bundle)), mib(std::fs::metadata(&tarball).map_or(0, |m| m.len())));
    println!("\nbundle: {} ({unpacked:.1} MiB)\narchive: {} ({packed:.1} MiB)", bundle.display(), tarball.display());
    println!("on the GPU host: tar xzf kiln-gpu.tar.gz && kiln-gpu/run.sh   (logs in kiln-gpu/out, or $OUT)");
    if unpacked > LIMIT_MIB {
        return Err(format!("the bundle is {unpacked:.1} MiB, over the {LIMIT_MIB} MiB limit"));
    }
    Ok(())
}

/// The script the bundle runs on the GPU host.
const RUN_SH: &str = include_str!("gpu_run.sh");
